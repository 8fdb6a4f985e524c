"""The witness: what "the same schema" and "every row identical" mean, read with plain SQL.

Standard library only, no pytest and no project code, so the same checks run in pytest and in
tests/shape_roundtrip.py under any target interpreter (Python 3.8 with SQLite 3.31, say): the
witness must not share code with the suspect.
"""
from __future__ import annotations

import os
import sqlite3
from contextlib import closing


def master_entries(path: str | os.PathLike) -> set[tuple]:
    """(type, name, tbl_name, sql) of every schema entry: "the same schema" means this set is equal."""
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        return set(conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master"))


def every_row(path: str | os.PathLike) -> dict[str, list[tuple]]:
    """Every row of every table with its rowid (where the table has one), and sqlite_sequence: what
    "every row identical" compares. Read with plain SQL through a fresh connection, not the engine."""
    rows = {}
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
            quoted = '"' + table.replace('"', '""') + '"'
            if table == "sqlite_sequence":  # its rowids mean nothing: one row per table, by name
                rows[table] = sorted(conn.execute("SELECT name, seq FROM sqlite_sequence").fetchall())
                continue
            try:
                rows[table] = conn.execute(f"SELECT _rowid_, * FROM {quoted} ORDER BY _rowid_").fetchall()
            except sqlite3.OperationalError:  # WITHOUT ROWID (or a column named _rowid_): by its content
                rows[table] = sorted(conn.execute(f"SELECT * FROM {quoted}").fetchall(), key=repr)
    return rows


def rows_kept(before: dict[str, list[tuple]], after: dict[str, list[tuple]], tables=None) -> list[str]:
    """The tables of `before` whose rows are not all in `after` with the same values in their first
    columns (a migration may add columns at the end): empty when every row is identical."""
    lost = []
    for table in tables or before:
        now = {row[:len(before[table][0])] for row in after.get(table, [])} if before[table] else set()
        if not set(before[table]) <= now:
            lost.append(table)
    return lost
