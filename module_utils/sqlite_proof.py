"""Prove, before a change commits, that the daemon's writes still work on the database as it will be.

The proof inserts one row into each table the change alters, and into each table whose triggers
write into or read from such a table, inside a SAVEPOINT that is always rolled back:
  - before the change, as the code running now writes it (the columns the table has now); a row
    that this table refuses already is not the change's doing, so that table is left out of the
    proof with a note (the baseline: only what the change breaks refuses it);
  - after the change, as the old code writes it (without the added column) and as the new code
    writes it (with it); for a downgrade, as v1 code writes it (without the removed column).
The inserts fire the database's own triggers, CHECK/NOT NULL/UNIQUE constraints and, with
PRAGMA foreign_keys on, its foreign keys. Every view that could be read before the change must
still be readable after it. A failure names the trigger (found by dropping each trigger in turn
inside a nested savepoint until the insert passes), view or constraint, gives SQLite's error and
the fix.

The row: a copy of the table's newest row with a new rowid (an INTEGER PRIMARY KEY is left to
SQLite, every other column of a UNIQUE key or primary key gets a value no row has), its foreign-key
columns pointing at an existing parent row; when the table is empty (or that copy is refused), a
row made from the declared types (a NOT NULL column without a default gets 1, 'riskmgr-proof',
1.0 or x'00' by its affinity). Nothing of it outlives the savepoint.
"""
from __future__ import annotations

import re
import sqlite3
import time
from dataclasses import dataclass, field

from ansible.module_utils.sqlite_common import identifier_list, placeholders, quote_identifier
from ansible.module_utils.sqlite_history import HISTORY_TABLES
from ansible.module_utils.sqlite_shapes import fold, table_shape

PROOF_SAVEPOINT = "riskmgr_write_proof"
TEXT_MARK = "riskmgr-proof"
AFFINITY_VALUES = {"INTEGER": 1, "TEXT": TEXT_MARK, "REAL": 1.0, "NUMERIC": 1, "BLOB": b"\x00"}


@dataclass
class ProofRow:
    table: str
    values: dict  # column -> value, as the code running before the change writes it
    added: dict = field(default_factory=dict)  # column -> value the new code also writes


@dataclass
class Proof:
    """The baseline taken before the change, and what the change broke."""

    targets: dict  # table -> [columns the change adds] (up) or [] (down, or a table copying from it)
    removed: dict  # table -> [columns the change removes] (down)
    rows: list = field(default_factory=list)
    views: list = field(default_factory=list)  # views readable before the change
    notes: list = field(default_factory=list)
    failures: list = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"tables": sorted(r.table for r in self.rows), "views": list(self.views), "notes": self.notes,
                "failures": self.failures}


def foreign_keys_declared(conn: sqlite3.Connection) -> bool:
    """Whether any table declares a foreign key: then the application uses them, and the proof
    connection turns PRAGMA foreign_keys on so the inserts check them as an enforcing daemon would."""
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                         "AND name NOT LIKE 'sqlite_%'")]
    return any(conn.execute(f"PRAGMA foreign_key_list({quote_identifier(t)})").fetchone() for t in tables)


def mentions(sql: str | None, name: str) -> bool:
    return bool(sql) and re.search(rf"(?<![\w$]){re.escape(name)}(?![\w$])", sql, re.I) is not None


def triggers(conn: sqlite3.Connection) -> list[tuple[str, str, str]]:
    """(name, table, sql) of every trigger."""
    return [tuple(r) for r in conn.execute("SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'trigger' "
                                           "ORDER BY name")]


def proof_tables(conn: sqlite3.Connection, altered: dict) -> dict:
    """The altered tables, and every table with a trigger naming one of them (it copies from or into it).
    The history tables are this tool's, not the daemon's: the migration's own inserts there prove them."""
    found = {fold(t): (t, list(cols)) for t, cols in altered.items() if fold(t) not in HISTORY_TABLES}
    for _name, table, sql in triggers(conn):
        if fold(table) not in found and any(mentions(sql, t) for t in altered):
            found[fold(table)] = (table, [])
    return dict(found.values())


# --- the row ------------------------------------------------------------------------------------------

def unique_columns(conn: sqlite3.Connection, table: str) -> set[str]:
    """Folded names of the columns in a UNIQUE index or a primary key that is not the rowid."""
    found = set()
    for row in conn.execute(f"PRAGMA index_list({quote_identifier(table)})"):
        if row[2]:
            found.update(fold(r[2]) for r in conn.execute(f"PRAGMA index_info({quote_identifier(row[1])})") if r[2])
    return found


def rowid_alias(columns: dict) -> str | None:
    keys = [c for c in columns.values() if c.pk]
    return fold(keys[0].name) if len(keys) == 1 and keys[0].declared == "INTEGER" else None


def fresh_value(conn: sqlite3.Connection, table: str, column, value):
    """A value of the column's kind that no row of the table has."""
    if isinstance(value, (int, float)) or (value is None and column.affinity in ("INTEGER", "REAL", "NUMERIC")):
        top = conn.execute(f"SELECT MAX({quote_identifier(column.name)}) FROM {quote_identifier(table)} "
                           f"WHERE typeof({quote_identifier(column.name)}) IN ('integer', 'real')").fetchone()[0]
        return (top or 0) + 1
    if isinstance(value, bytes) or column.affinity == "BLOB":
        return (value or b"") + TEXT_MARK.encode() + str(time.time_ns()).encode()
    return f"{value or ''}~{TEXT_MARK}-{time.time_ns()}"


def parent_values(conn: sqlite3.Connection, table: str) -> dict:
    """folded child column -> a value an existing parent row has, None when the parent table is empty
    (a NULL child key satisfies any foreign key)."""
    values = {}
    for row in conn.execute(f"PRAGMA foreign_key_list({quote_identifier(table)})").fetchall():
        parent, child, parent_col = row[2], row[3], row[4]
        if not parent_col:  # REFERENCES parent: its primary key
            keys = [r[1] for r in conn.execute(f"PRAGMA table_info({quote_identifier(parent)})") if r[5]]
            parent_col = keys[row[1]] if row[1] < len(keys) else None
        parent_col = parent_col or "rowid"
        try:
            found = conn.execute(f"SELECT {quote_identifier(parent_col)} FROM {quote_identifier(parent)} "
                                 f"WHERE {quote_identifier(parent_col)} IS NOT NULL LIMIT 1").fetchone()
        except sqlite3.Error:
            continue
        values[fold(child)] = found[0] if found is not None else None
    return values


def typed_value(conn: sqlite3.Connection, table: str, column):
    """A value by the column's affinity, the first literal of a `column IN (...)` check when it has one,
    a timestamp for a column named like one."""
    sql = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ? COLLATE NOCASE",
                       (table,)).fetchone()
    listed = re.search(rf"[\"`\[]?{re.escape(column.name)}[\"`\]]?\s+IN\s*\(\s*('(?:[^']|'')*'|[-+]?\d+(?:\.\d+)?)",
                       (sql or [""])[0] or "", re.I)
    if listed:
        literal = listed.group(1)
        return literal[1:-1].replace("''", "'") if literal.startswith("'") else float(literal) \
            if "." in literal else int(literal)
    if column.affinity in ("TEXT", "NUMERIC") and re.search(r"time|date|_at$", column.name, re.I):
        return "2026-01-01 00:00:00"
    return AFFINITY_VALUES[column.affinity]


def candidate_rows(conn: sqlite3.Connection, table: str, skip: set[str]) -> list[dict]:
    """Rows to try, best first: the newest row copied, then one made from the declared types."""
    columns = {k: c for k, c in table_shape(conn, table).items() if c.hidden == 0 and k not in skip}
    alias, unique = rowid_alias(columns), unique_columns(conn, table)
    parents = parent_values(conn, table)
    candidates = []
    sql = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ? COLLATE NOCASE",
                       (table,)).fetchone()
    if re.search(r"WITHOUT\s+ROWID", (sql or [""])[0] or "", re.I):
        cursor = conn.execute(f"SELECT * FROM {quote_identifier(table)} LIMIT 1")
    else:
        cursor = conn.execute(f"SELECT * FROM {quote_identifier(table)} ORDER BY rowid DESC LIMIT 1")
    newest = cursor.fetchone()
    if newest is not None:
        row = {fold(d[0]): v for d, v in zip(cursor.description, newest)}
        copy = {}
        for key, column in columns.items():
            if key == alias:
                continue
            value = row.get(key)
            if key in parents:
                value = parents[key]
            if key in unique or (column.pk and key != alias):
                value = fresh_value(conn, table, column, value)
            copy[column.name] = value
        candidates.append(copy)
    for only_required in (False, True):
        made = {}
        for key, column in columns.items():
            if key == alias or (only_required and not column.notnull and key not in parents) or (
                    only_required and column.default is not None and key not in unique):
                continue
            value = parents[key] if key in parents else typed_value(conn, table, column)
            if key in unique or column.pk:
                value = fresh_value(conn, table, column, None if column.affinity != "TEXT" else "")
            made[column.name] = value
        candidates.append(made)
    return candidates


def insert(conn: sqlite3.Connection, table: str, values: dict) -> str | None:
    """Insert in a nested savepoint, always undone; SQLite's error text, or None when it passed."""
    conn.execute("SAVEPOINT riskmgr_proof_row")
    try:
        if values:
            conn.execute(f"INSERT INTO {quote_identifier(table)} ({identifier_list(values)}) "
                         f"VALUES ({placeholders(len(values))})", tuple(values.values()))
        else:
            conn.execute(f"INSERT INTO {quote_identifier(table)} DEFAULT VALUES")
        return None
    except sqlite3.Error as err:
        return str(err)
    finally:
        conn.execute("ROLLBACK TO riskmgr_proof_row")
        conn.execute("RELEASE riskmgr_proof_row")


def refreshed(conn: sqlite3.Connection, table: str, values: dict) -> dict:
    """The row with new values for its unique columns: the change itself may have written rows meanwhile."""
    shape, unique = table_shape(conn, table), unique_columns(conn, table)
    return {name: fresh_value(conn, table, shape[fold(name)], value) if fold(name) in unique and fold(name) in shape
            else value for name, value in values.items()}


def added_value(column) -> object:
    return AFFINITY_VALUES.get(column.affinity, 1)


def readable_views(conn: sqlite3.Connection) -> list[str]:
    views = []
    for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'view' ORDER BY name").fetchall():
        try:
            conn.execute(f"SELECT * FROM {quote_identifier(name)} LIMIT 0").fetchall()
            views.append(name)
        except sqlite3.Error:
            continue
    return views


# --- before and after -----------------------------------------------------------------------------------

def baseline(conn: sqlite3.Connection, altered: dict, removed: dict | None = None) -> Proof:
    """Choose, before the change, the row each table accepts as the running code writes it."""
    removed = removed or {}
    proof = Proof(proof_tables(conn, {**altered, **{t: [] for t in removed}}), removed)
    for table in proof.targets:
        # A downgrade's row is written as v1 code writes it, without the columns it removes.
        skip = {fold(c) for c in removed.get(table, [])}
        errors = []
        for values in candidate_rows(conn, table, skip):
            error = insert(conn, table, values)
            if error is None:
                proof.rows.append(ProofRow(table, values))
                break
            errors.append(error)
        else:
            proof.notes.append(f"table {table} refuses every row the proof could make before the change "
                               f"({'; '.join(dict.fromkeys(errors))}), so the change cannot be blamed for it; "
                               "its writes were not proven")
    proof.views = readable_views(conn)
    return proof


def passes_without(conn: sqlite3.Connection, table: str, values: dict, dropped: list[str]) -> bool:
    """Whether the insert passes with these triggers dropped (in a nested savepoint, always undone)."""
    conn.execute("SAVEPOINT riskmgr_blame")
    try:
        for name in dropped:
            conn.execute(f"DROP TRIGGER {quote_identifier(name)}")
        return insert(conn, table, values) is None
    finally:
        conn.execute("ROLLBACK TO riskmgr_blame")
        conn.execute("RELEASE riskmgr_blame")


def blame(conn: sqlite3.Connection, table: str, values: dict, error: str) -> str:
    """The object that makes the insert fail: the trigger whose removal lets it pass; when it takes more than
    one, each trigger that fails the insert on its own (every other one dropped); else the constraint."""
    names = [name for name, _table, _sql in triggers(conn)]
    for name in names:
        if passes_without(conn, table, values, [name]):
            return f"trigger {name}"
    if names and passes_without(conn, table, values, names):
        alone = [name for name in names if not passes_without(conn, table, values, [n for n in names if n != name])]
        if alone:
            return f"trigger {alone[0]}" if len(alone) == 1 else f"triggers {', '.join(alone)}"
    match = re.search(r"(CHECK|NOT NULL|UNIQUE) constraint failed: (\S+)", error)
    if match:
        return f"{match.group(1)} constraint {match.group(2)}"
    if "FOREIGN KEY" in error or "foreign key mismatch" in error:
        return f"a foreign key of or into {table}"
    return f"table {table}"


def fix_for(conn: sqlite3.Connection, culprit: str, columns: list[str], error: str) -> str:
    if culprit.startswith("triggers "):
        return "rewrite each of them to name its columns, or drop them and recreate them after the change"
    if culprit.startswith("trigger "):
        name = culprit.split(" ", 1)[1]
        sql = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = ?", (name,)).fetchone()
        why = ""
        if sql and re.search(r"SELECT\s+\*|\bNEW\.\*|\bOLD\.\*", sql[0], re.I):
            why = " (it copies with SELECT *, so its column count follows the table's)"
        elif sql and re.search(r"INSERT\s+(OR\s+\w+\s+)?INTO\s+[\w\"`\[\].]+\s+VALUES", sql[0], re.I):
            why = " (its INSERT ... VALUES names no columns)"
        return (f"rewrite trigger {name}{why} to name its columns, or drop it (DROP TRIGGER {quote_identifier(name)}) "
                "and recreate it after the change")
    if "no such column" in error and columns:
        return f"drop or rewrite the object that uses {', '.join(columns)}"
    return "fix the object named, or restore the database from a backup, then rerun"


def code_of(version: int | None, fallback: str) -> str:
    """Whose inserts a proof row stands for: "v3 code", or the fallback when the version is not known."""
    return f"v{version} code" if version is not None else fallback


def after(conn: sqlite3.Connection, proof: Proof, direction: str, path: str,
          versions: tuple | None = None) -> list[str]:
    """The inserts and view reads again, on the changed schema; one refusal line per object it broke.
    `versions` (from, to) names whose code each insert stands for."""
    start, to = versions or (None, None)
    old, new_code = code_of(start, "the code before the change"), code_of(to, "the new code")
    failures = []
    for row in proof.rows:
        shape = table_shape(conn, row.table)
        if not shape:
            continue  # a table the change drops (a downgrade undoing the version that created it)
        writers = [(f"as {old} and {new_code} write it" if direction == "up" else "as the code writes it",
                    dict(row.values))]
        added = [c for c in proof.targets.get(row.table, []) if fold(c) in shape]
        if direction == "up" and added:
            new = dict(row.values, **{shape[fold(c)].name: added_value(shape[fold(c)]) for c in added})
            writers = [(f"as {old} writes it (without {', '.join(added)})", dict(row.values)),
                       (f"as {new_code} writes it (with {', '.join(added)})", new)]
        elif direction == "down":
            gone = proof.removed.get(row.table, [])
            writers = [(f"as {new_code} writes it (without {', '.join(gone)})" if gone else f"as {new_code} writes it",
                        dict(row.values))]
        broken: dict = {}  # (culprit, error) -> the writers it breaks: one line each, not one per writer
        for how, values in writers:
            values = refreshed(conn, row.table, values)
            error = insert(conn, row.table, values)
            if error is not None:
                broken.setdefault((blame(conn, row.table, values, error), error), []).append(how)
        for (culprit, error), hows in broken.items():
            failures.append(f"{path}: an insert into {row.table} {' and '.join(hows)} fails after the change, because "
                            f"of {culprit}: {error}; "
                            f"{fix_for(conn, culprit, added or proof.removed.get(row.table, []), error)}")
    remaining = {fold(name) for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'view'")}
    for view in proof.views:
        if fold(view) not in remaining:
            continue  # dropped by the change itself (a downgrade undoing the version that made it)
        try:
            conn.execute(f"SELECT * FROM {quote_identifier(view)} LIMIT 0").fetchall()
        except sqlite3.Error as err:
            failures.append(f"{path}: view {view} can no longer be read after the change: {err}; rewrite it to name "
                            f"its columns, or drop it (DROP VIEW {quote_identifier(view)}) and recreate it after the "
                            "change")
    proof.failures = failures
    return failures


def altered_by(steps, direction: str) -> tuple[dict, dict]:
    """({table: added columns}, {table: removed columns}) from a plan's steps."""
    added, removed = {}, {}
    # A table the same run creates has no rows nor writer before the change: nothing to prove on it.
    created = {fold(s.name) for s in steps if direction == "up" and s.action == "create" and s.kind == "table"}
    for step in steps:
        if direction == "up" and step.action == "create" and step.kind == "column":
            table, column = step.name.split(".", 1)
            if fold(table) not in created:
                added.setdefault(table, []).append(column)
        elif direction == "down" and step.action == "rebuild":
            removed[step.name] = list(step.data.get("columns_removed", []))
    return added, removed


# --- after the change: verify -----------------------------------------------------------------------------

SCHEMA_ERRORS = ("no such column", "values were supplied", "no such table", "has no column named", "no such function")


def prove_current(conn: sqlite3.Connection, later_columns: dict,
                  version: int | None = None) -> tuple[list[str], list[str], list[str]]:
    """(failures, notes, tables proven) for the schema as it is now, inside the caller's savepoint-free
    write transaction (every insert is undone): each table later versions add columns to, and each table
    whose triggers name one, written as code without the later columns writes it and, when a column is there,
    as the code of `version` does.

    With no state before to compare with, only what cannot be the row's fault fails: an error about the
    schema itself (a trigger naming a column that is gone, a copy whose column count no longer matches).
    A row refused for its values (a CHECK the proof's row does not meet) is a note."""
    failures, notes, proven = [], [], []
    tables = proof_tables(conn, {t: cols for t, cols in later_columns.items()
                                 if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ? "
                                                 "COLLATE NOCASE", (t,)).fetchone()})
    for table, added in tables.items():
        shape = table_shape(conn, table)
        here = [c for c in added if fold(c) in shape]
        refused = []
        for values in candidate_rows(conn, table, {fold(c) for c in added}):
            without = f" (without {', '.join(here)})" if here else ""
            writers = [(f"as earlier code writes it{without}" if here else f"as {code_of(version, 'the code')} "
                        "writes it", values)]
            if here:
                writers.append((f"as {code_of(version, 'the new code')} writes it (with {', '.join(here)})",
                                dict(values, **{shape[fold(c)].name: added_value(shape[fold(c)]) for c in here})))
            errors = [(how, v, insert(conn, table, v)) for how, v in writers]
            broken = [(how, v, e) for how, v, e in errors if e and any(s in e for s in SCHEMA_ERRORS)]
            if broken:
                for how, v, error in broken:
                    culprit = blame(conn, table, v, error)
                    failures.append(f"an insert into {table} {how} fails because of {culprit}: {error}; "
                                    f"{fix_for(conn, culprit, added, error)}")
                break
            if not any(e for _how, _v, e in errors):
                proven.append(table)
                break
            refused += [e for _how, _v, e in errors if e]
        else:
            notes.append(f"table {table} refused every row the proof could make ({'; '.join(dict.fromkeys(refused))})"
                         "; its writes were not proven")
    return failures, notes, proven
