"""The integrity check of what a migration wrote, and nothing else: the one that runs while the daemon is down.

An upgrade writes new b-trees (each new index, each new table) and the schema; an ALTER TABLE ADD
COLUMN rewrites no row, and a CREATE INDEX only reads its table. The rest of the file is, page for
page, the v1 database that the preflight checked while the daemon ran and that the backup's
quick_check read again, byte-identical, beside the DDL. So, while the daemon is down:

- each new index is read entry by entry (a covering scan that decodes every key: a damaged page
  raises SQLITE_CORRUPT) and must hold one entry per row of its table, counted through another
  index of that table (or the table itself): a few percent of the file;
- each new or rebuilt table gets PRAGMA quick_check(TABLE) (or integrity_check(TABLE)), which
  SQLite 3.33+ limits to that table and its indexes; an older SQLite reads the whole file, so there
  a new table is scanned row by row instead, and a rebuilt one still gets the whole-file check;
- level "integrity" holds each table that got a new index to integrity_check(TABLE) as well
  (every index entry matched against its row: slower, the operator's choice).

Untouched tables are never read here. Plain Python, no Ansible import.
"""
from __future__ import annotations

import re
import sqlite3
import time

from ansible.module_utils.sqlite_common import (
    INTEGRITY_LINES, INTEGRITY_PRAGMAS, identifier_list, integrity_result, quote_identifier)

TABLE_ARGUMENT = (3, 33, 0)  # PRAGMA quick_check(TABLE) checks only that table from this SQLite on


def touched_objects(steps: list[dict]) -> dict[str, list[str]]:
    """{"tables": new or rebuilt tables, "indexes": new indexes} from a migration result's steps."""
    tables, indexes = [], []
    for step in steps:
        kind, _, name = step.get("object", "").partition(" ")
        if kind == "table" and step.get("action") in ("create", "rebuild"):
            tables.append(name)
        elif kind == "index" and step.get("action") == "create":
            indexes.append(name)
    return {"tables": tables, "indexes": indexes}


def table_argument_supported(version: tuple[int, int, int] | None = None) -> bool:
    return (version or sqlite3.sqlite_version_info) >= TABLE_ARGUMENT


def pragma_lines(conn: sqlite3.Connection, level: str, table: str | None) -> list[str]:
    """The errors of quick_check / integrity_check, of one table (SQLite 3.33+) or of the whole file."""
    if table is None:
        return integrity_result(conn, level)["errors"]
    if level == "integrity":
        lines = [row[0] for row in conn.execute(f"PRAGMA integrity_check({quote_identifier(table)})")]
    else:
        lines = [row[0] for row in conn.execute(f"PRAGMA quick_check({quote_identifier(table)})")]
    return [] if lines == ["ok"] else lines[:INTEGRITY_LINES]


def index_facts(conn: sqlite3.Connection, index: str) -> tuple[str, list[str], bool] | None:
    """(table, key columns, partial) of an index; None when it has none we can name (an expression)."""
    row = conn.execute("SELECT tbl_name, sql FROM sqlite_master WHERE type = 'index' AND name = ? COLLATE NOCASE",
                       (index,)).fetchone()
    if row is None:
        raise sqlite3.DatabaseError(f"no such index: {index}")
    columns = [r[2] for r in conn.execute(f"PRAGMA index_info({quote_identifier(index)})")]
    if not columns or any(c is None for c in columns):
        return None
    partial = bool(row[1] and re.search(r"\)\s*WHERE\s", row[1], re.I))
    return row[0], columns, partial


def table_rows(conn: sqlite3.Connection, table: str, besides: str) -> int:
    """COUNT(*) of a table read through an index other than `besides` (the smallest), else the table."""
    others = [r[1] for r in conn.execute(f"PRAGMA index_list({quote_identifier(table)})")
              if r[1].lower() != besides.lower() and not r[4]]  # r[4]: partial
    if others:
        return conn.execute(f"SELECT COUNT(*) FROM {quote_identifier(table)} "
                            f"INDEXED BY {quote_identifier(others[0])}").fetchone()[0]
    return conn.execute(f"SELECT COUNT(*) FROM {quote_identifier(table)} NOT INDEXED").fetchone()[0]


def scan_index(conn: sqlite3.Connection, index: str, table: str, columns: list[str]) -> str | None:
    """Read every entry of a new index; the problem found, or None."""
    entries = conn.execute(f"SELECT COUNT(*) FROM {quote_identifier(table)} INDEXED BY {quote_identifier(index)} "
                           f"WHERE coalesce({identifier_list(columns)}, 0) IS NOT NULL").fetchone()[0]
    rows = table_rows(conn, table, index)
    return None if entries == rows else f"index {index} holds {entries} entries, table {table} {rows} rows"


def scan_table(conn: sqlite3.Connection, table: str) -> None:
    """Read every column of every row of a (new, small) table: what an old SQLite can check of it alone."""
    columns = [r[1] for r in conn.execute(f"PRAGMA table_info({quote_identifier(table)})")]
    conn.execute(f"SELECT COUNT(*) FROM {quote_identifier(table)} NOT INDEXED "
                 f"WHERE coalesce({identifier_list(columns)}, 0) IS NOT NULL").fetchone()


def check_touched(conn: sqlite3.Connection, level: str, touched: dict[str, list[str]],
                  rebuilt: frozenset[str] = frozenset()) -> tuple[bool, str]:
    """(ok, detail) of the check of what the change wrote (see the module doc); level quick or integrity."""
    started = time.monotonic()
    per_table = table_argument_supported()
    errors: list[str] = []
    checked: list[str] = []
    whole_file = False
    by_pragma: list[str] = []
    for index in touched.get("indexes", []):
        try:
            facts = index_facts(conn, index)
            if facts is None or facts[2]:
                # An expression or partial index cannot be counted against its table: its table's check.
                by_pragma.append(facts[0] if facts else conn.execute(
                    "SELECT tbl_name FROM sqlite_master WHERE name = ? COLLATE NOCASE", (index,)).fetchone()[0])
                continue
            problem = scan_index(conn, index, facts[0], facts[1])
            if level == "integrity":
                by_pragma.append(facts[0])
        except sqlite3.DatabaseError as err:
            problem = f"index {index} could not be read: {err}"
        checked.append(f"index {index}")
        if problem:
            errors.append(problem)
    for table in touched.get("tables", []):
        if per_table or table in rebuilt:
            by_pragma.append(table)
            continue
        try:
            scan_table(conn, table)
        except sqlite3.DatabaseError as err:
            errors.append(f"table {table} could not be read: {err}")
        checked.append(f"table {table}")
    for table in dict.fromkeys(by_pragma):
        if not per_table:
            whole_file = True
            continue
        try:
            errors += [f"{table}: {line}" for line in pragma_lines(conn, level, table)]
        except sqlite3.DatabaseError as err:
            errors.append(f"{INTEGRITY_PRAGMAS[level]}({table}) could not finish: {err}")
        checked.append(f"{INTEGRITY_PRAGMAS[level]}({table})")
    if whole_file:
        try:
            errors += pragma_lines(conn, level, None)
        except sqlite3.DatabaseError as err:
            errors.append(f"{INTEGRITY_PRAGMAS[level]} could not finish: {err}")
        checked.append(f"{INTEGRITY_PRAGMAS[level]} of the whole file (SQLite {sqlite3.sqlite_version} < 3.33 "
                       "cannot check one table alone)")
    seconds = round(time.monotonic() - started, 3)
    if errors:
        lines = [line.strip() for error in errors for line in error.splitlines() if line.strip()]
        return False, f"what the change wrote is damaged: {'; '.join(lines)}"
    return True, (f"what the change wrote checked in {seconds}s: {', '.join(checked) or 'nothing written'} "
                  "(the untouched v1 b-trees were checked before the stop and in the backup)")
