"""Give a table back the definition it had before a migration changed it, keeping every row.

This is SQLite's documented table rebuild (lang_altertable.html, "Making Other Kinds Of Table
Schema Changes"), on every SQLite from 3.31 on, so no downgrade needs ALTER TABLE DROP COLUMN
(3.35+). The caller runs it inside one transaction with PRAGMA foreign_keys=OFF (it cannot change
inside a transaction) and PRAGMA legacy_alter_table=ON, and checks foreign keys afterwards.

One difference from the documented order, on purpose: the documented order creates `new_X`, copies,
drops X and renames new_X to X, and ALTER TABLE RENAME writes the new name into the stored text
quoted (CREATE TABLE "X" ...), so the table would not get back its exact original text. Here X is
renamed away first and the new X is created from the recorded original text itself, so sqlite_master
holds that text byte for byte. With legacy_alter_table=ON the rename rewrites nothing else: views,
triggers of other tables and other tables' REFERENCES clauses keep their text (3.26+ would otherwise
point them at the renamed table). The table's own indexes and triggers go with the renamed table and
are made again from their saved text.
"""
from __future__ import annotations

import re
import sqlite3

from ansible.module_utils.sqlite_baseline import describe, foreign_key_state, introduced, is_clean
from ansible.module_utils.sqlite_common import (
    MigrationError, autoincrement_sequence, has_autoincrement, identifier_list, quote_identifier,
    set_autoincrement_sequence)
from ansible.module_utils.sqlite_shapes import table_shape

WITHOUT_ROWID = re.compile(r"\)\s*(STRICT\s*,\s*)?WITHOUT\s+ROWID\s*(,\s*STRICT\s*)?$", re.I)
ROWID_NAMES = ("rowid", "_rowid_", "oid")
ASIDE_PREFIX = "__riskmgr_rebuild_"


def table_entries(conn: sqlite3.Connection, table: str) -> list[tuple[str, str, str]]:
    """(type, name, sql) of the indexes and triggers that belong to table and were written as SQL."""
    return [tuple(row) for row in conn.execute(
        "SELECT type, name, sql FROM sqlite_master WHERE tbl_name = ? COLLATE NOCASE AND type IN ('index', 'trigger') "
        "AND sql IS NOT NULL ORDER BY rowid", (table,))]


def rowid_column(conn: sqlite3.Connection, table: str, sql: str) -> str | None:
    """The name to copy the rowid by, or None when the rows carry it already (an INTEGER PRIMARY KEY
    alias) or have none (WITHOUT ROWID). Without this, a table with no integer key would get new
    rowids, and rows are only "identical" with their rowid."""
    if WITHOUT_ROWID.search(" ".join(sql.split())):
        return None
    columns = table_shape(conn, table)
    keys = [c for c in columns.values() if c.pk]
    pk_index = any(row[3] == "pk" for row in conn.execute(f"PRAGMA index_list({quote_identifier(table)})"))
    if len(keys) == 1 and keys[0].declared == "INTEGER" and not pk_index:
        return None  # the column is the rowid: copying it copies the rowid
    for name in ROWID_NAMES:
        if name not in columns:
            return name
    raise MigrationError(f"table {table} names columns rowid, _rowid_ and oid, so its rowids cannot be copied; "
                         "restore the backup instead of downgrading")


def rebuild_table(conn: sqlite3.Connection, table: str, original_sql: str) -> None:
    """Turn `table` back into `original_sql`, its rows, rowids, indexes, triggers and sequence kept.

    The columns copied are those of the original definition; the ones the migration added (and
    their values) are left behind with the old table. Runs inside the caller's transaction.
    """
    kept_entries = table_entries(conn, table)
    current_sql = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ? COLLATE NOCASE",
                               (table,)).fetchone()[0]
    rowid = rowid_column(conn, table, current_sql)
    counted = has_autoincrement(conn, table)
    sequence = autoincrement_sequence(conn, table) if counted else None
    aside = ASIDE_PREFIX + table
    conn.execute(f"ALTER TABLE {quote_identifier(table)} RENAME TO {quote_identifier(aside)}")
    conn.execute(original_sql)
    current = table_shape(conn, aside)
    copied = [c.name for key, c in table_shape(conn, table).items() if c.hidden == 0 and key in current]
    names = ([rowid] if rowid else []) + copied
    conn.execute(f"INSERT INTO {quote_identifier(table)} ({identifier_list(names)}) "
                 f"SELECT {identifier_list(names)} FROM {quote_identifier(aside)}")
    conn.execute(f"DROP TABLE {quote_identifier(aside)}")
    for _kind, _name, sql in kept_entries:
        conn.execute(sql)
    if counted and has_autoincrement(conn, table):
        set_autoincrement_sequence(conn, table, sequence)


def rebuild_definition(conn: sqlite3.Connection, table: str, original_sql: str) -> None:
    """For the write proof only, in a transaction that is rolled back: `table` with its original definition and
    its triggers, empty. The rows stay with the renamed table, so this costs the same for any size; indexes
    are left out (the proof inserts one row: no index can refuse it, and an index on a removed column is the
    dependents check's to refuse)."""
    triggers = [(name, sql) for kind, name, sql in table_entries(conn, table) if kind == "trigger"]
    conn.execute(f"ALTER TABLE {quote_identifier(table)} RENAME TO {quote_identifier(ASIDE_PREFIX + table)}")
    for name, _sql in triggers:
        conn.execute(f"DROP TRIGGER {quote_identifier(name)}")
    conn.execute(original_sql)
    for _name, sql in triggers:
        conn.execute(sql)


def foreign_key_violations(conn: sqlite3.Connection) -> dict:
    """The foreign key state (sqlite_baseline): counted table by table, a mismatch named, not raised."""
    return foreign_key_state(conn)


def check_no_new_violations(conn: sqlite3.Connection, before: dict, path: str) -> None:
    """The documented last step: the rebuild must not leave a row without its parent that had one. Problems
    the database had before the downgrade (orphans, a foreign key into a non-unique column) stay as they were."""
    new = introduced(before, foreign_key_state(conn))
    if not is_clean(new):
        raise MigrationError(f"{path}: the table rebuild would leave rows without their parent ({describe(new)}); "
                             "the transaction was rolled back, database left unchanged")


def rebuilt_as_recorded(conn: sqlite3.Connection, table: str, original_sql: str) -> bool:
    row = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ? COLLATE NOCASE",
                       (table,)).fetchone()
    return row is not None and row[0] == original_sql
