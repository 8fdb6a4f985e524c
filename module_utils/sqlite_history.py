"""The database's own record of its schema: version rows, the file ledger, and what each migration made.

Three tables, all created by the migration files of v2 (or adopted when a field database already
had one):
  schema_version            one row per version, as the daemon reads it (MAX(version) WHERE success = 1)
  schema_migration_files    the sha256 of every migration file applied, so an edited file is refused
  schema_migration_objects  provenance: per object, whether the migration that brought it created it
                            or adopted it from the database as it found it, the exact sqlite_master
                            text of every table whose definition the migration changed, and the
                            history rows it wrote into tables it did not create. A downgrade undoes
                            exactly this and nothing else.
Reading tolerates any shape of these tables (a field database may have its own schema_version);
writing happens inside the caller's transaction.
"""
from __future__ import annotations

import json
import os
import sqlite3
from contextlib import closing
from dataclasses import dataclass, field

from ansible.module_utils.sqlite_common import (
    DEFAULT_BUSY_TIMEOUT_S, autoincrement_sequence, connect_readonly, has_autoincrement, equality_clause, identifier_list, placeholders,
    quote_identifier)
from ansible.module_utils.sqlite_shapes import MISSING, PRESENT, Names, fold, table_shape

VERSION_TABLE = "schema_version"
LEDGER_TABLE = "schema_migration_files"
PROVENANCE_TABLE = "schema_migration_objects"
HISTORY_TABLES = (VERSION_TABLE, LEDGER_TABLE, PROVENANCE_TABLE)
PROVENANCE_COLUMNS = ("version", "kind", "name", "action", "filename", "original_sql", "original_rows", "recorded_at")
# action values
CREATED, ADOPTED, ALTERED, INSERTED, REPLACED = "created", "adopted", "altered", "inserted", "replaced"


@dataclass(frozen=True)
class Provenance:
    version: int
    kind: str  # table | index | column | row
    name: str  # table or index name, table.column, or table:key for a history row
    action: str  # created | adopted | altered | inserted | replaced
    filename: str | None
    original_sql: str | None  # a table's sqlite_master.sql before the migration changed it
    original_rows: str | None  # JSON of history rows the migration replaced

    @property
    def key(self) -> tuple[int, str, str]:
        return (self.version, self.kind, fold(self.name))


@dataclass
class VersionInfo:
    table: str  # missing | present
    version: int | None  # highest successful version recorded, None when nothing is recorded
    rows: list[dict] = field(default_factory=list)
    ledger: dict[str, str] = field(default_factory=dict)  # "v2/010_x.sql" -> sha256 recorded
    provenance: dict[tuple[int, str, str], Provenance] = field(default_factory=dict)
    provenance_table: bool = False

    def made_by(self, version: int, kind: str, name: str) -> Provenance | None:
        return self.provenance.get((version, kind, fold(name)))

    def since(self, version: int) -> list[Provenance]:
        """Provenance of every migration above `version`, the last made first (undoing goes backwards)."""
        made = [p for p in self.provenance.values() if p.version > version]  # in the order they were recorded
        return [p for _order, p in sorted(enumerate(made), key=lambda item: (item[1].version, item[0]), reverse=True)]

    @property
    def traces(self) -> bool:
        """Whether this tool's engine has written anything here (a migration of it began)."""
        return bool(self.ledger or self.provenance or self.provenance_table)


def read_versions(conn: sqlite3.Connection, names: Names | None = None) -> VersionInfo:
    """What the database's own history says, whatever shape its tables have."""
    names = names or Names(conn)
    real = names.table(VERSION_TABLE)
    info = VersionInfo(table=MISSING if real is None else PRESENT, version=None)
    if real is not None:
        columns = table_shape(conn, real)
        if "version" in columns:
            success = "success" if "success" in columns else "1"
            applied = "applied_at" if "applied_at" in columns else "NULL"
            select = f"SELECT version, {success}, {applied} FROM {VERSION_TABLE} ORDER BY version"
            for version, ok, applied_at in conn.execute(select):
                info.rows.append({"version": version, "success": bool(ok), "applied_at": applied_at})
            good = [row["version"] for row in info.rows if row["success"] and isinstance(row["version"], int)]
            info.version = max(good) if good else None
    ledger = names.table(LEDGER_TABLE)
    if ledger is not None and {"filename", "sha256"} <= set(table_shape(conn, ledger)):
        info.ledger = dict(conn.execute(f"SELECT filename, sha256 FROM {LEDGER_TABLE}"))
    provenance = names.table(PROVENANCE_TABLE)
    if provenance is not None:
        info.provenance_table = True
        if set(PROVENANCE_COLUMNS) <= set(table_shape(conn, provenance)):
            for row in conn.execute(f"SELECT version, kind, name, action, filename, original_sql, original_rows "
                                    f"FROM {PROVENANCE_TABLE} ORDER BY rowid"):
                entry = Provenance(*row)
                info.provenance[entry.key] = entry
    return info


def database_version(path: str | os.PathLike, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S) -> int:
    """current_version of a database file, read-only."""
    with closing(connect_readonly(path, busy_timeout_s)) as conn:
        return current_version(conn)


def current_version(conn: sqlite3.Connection) -> int:
    """The schema version a daemon would read: recorded history, else 1 (v1 has no history)."""
    recorded = read_versions(conn).version
    return recorded if recorded is not None else 1


# --- writing, inside the caller's transaction ------------------------------------------------------

def record(conn: sqlite3.Connection, version: int, kind: str, name: str, action: str, filename: str | None,
           now: str, original_sql: str | None = None, original_rows: str | None = None) -> None:
    """One provenance row; a row already there (a rerun finishing what a run began) stays as it is."""
    conn.execute(f"INSERT OR IGNORE INTO {PROVENANCE_TABLE} (version, kind, name, action, filename, original_sql, "
                 "original_rows, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                 (version, kind, name, action, filename, original_sql, original_rows, now))


def record_table_change(conn: sqlite3.Connection, version: int, table: str, action: str, now: str) -> None:
    """Before the first change to a table's definition: its sqlite_master text, kept for the downgrade."""
    original = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ? COLLATE NOCASE",
                            (table,)).fetchone()[0]
    record(conn, version, "table", table, action, None, now)
    conn.execute(f"UPDATE {PROVENANCE_TABLE} SET original_sql = COALESCE(original_sql, ?) "
                 "WHERE version = ? AND kind = 'table' AND name = ?", (original, version, table))


def insert_history_row(conn: sqlite3.Connection, table: str, values: dict, key_columns: tuple,
                       version: int, adopted: bool, now: str) -> None:
    """Insert a version or ledger row. Into a table the migration did not create, the insert is recorded
    in the provenance with the row's key, and so are the rows it replaces (a failed attempt recorded by
    hand), so that a downgrade deletes exactly this row and puts those back."""
    key = {column: values[column] for column in key_columns}
    replaced = []
    counted = adopted and has_autoincrement(conn, table)
    sequence = autoincrement_sequence(conn, table) if counted else None
    if adopted:
        cursor = conn.execute(f"SELECT rowid, * FROM {quote_identifier(table)} WHERE {equality_clause(key)}",
                              tuple(key.values()))
        names = [d[0] for d in cursor.description]
        replaced = [dict(zip(names, row)) for row in cursor.fetchall()]
    if replaced:
        conn.execute(f"DELETE FROM {quote_identifier(table)} WHERE {equality_clause(key)}", tuple(key.values()))
    conn.execute(f"INSERT INTO {quote_identifier(table)} ({identifier_list(values)}) "
                 f"VALUES ({placeholders(len(values))})", tuple(values.values()))
    if adopted:
        name = f"{table}:{list(key.values())[-1]}"  # schema_version:2, schema_migration_files:v2/010_x.sql
        record(conn, version, "row", name, REPLACED if replaced else INSERTED, None, now,
               original_rows=json.dumps({"table": table, "key": key, "replaced": replaced, "counted": counted,
                                         "sequence": sequence},
                                        default=blob_as_json))


def blob_as_json(value):
    """History rows may hold blobs, which JSON cannot: {"$hex": ...}, read back by rows_from_json."""
    if isinstance(value, (bytes, bytearray)):
        return {"$hex": bytes(value).hex()}
    raise TypeError(f"{type(value).__name__} in a history row")


def rows_from_json(text: str) -> dict:
    def decode(item):
        return bytes.fromhex(item["$hex"]) if set(item) == {"$hex"} else item
    return json.loads(text, object_hook=decode)
