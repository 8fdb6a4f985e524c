"""Read-only facts about a state database: what a preflight needs before the daemon stops."""
from __future__ import annotations

import os
import sqlite3
from contextlib import closing
from pathlib import Path

from ansible.module_utils.riskmgr_daemon import process_cmdline
from ansible.module_utils.host_processes import live_file_names, processes_holding
from ansible.module_utils.sqlite_catalog import as_catalog
from ansible.module_utils.sqlite_common import (
    DEFAULT_BUSY_TIMEOUT_S, RiskmgrError, integrity_result, connect_readonly, database_bytes, free_bytes, migration_write_problems,
    sqlite_error_text, table_row_counts)
from ansible.module_utils.sqlite_schema import (
    INCOMPLETE, USABLE, index_names, inspect, read_versions, table_names)

def file_facts(path: str, backup_dir: str | None) -> dict:
    db_size = os.path.getsize(path)
    wal = f"{path}-wal"
    facts = {
        "size": db_size,
        "wal_size": os.path.getsize(wal) if os.path.exists(wal) else 0,
        "backup_bytes_needed": database_bytes(path),
        "free_bytes_db_dir": free_bytes(Path(path).parent),
        "free_bytes_backup_dir": free_bytes(backup_dir) if backup_dir else None,
        "owner_uid": os.stat(path).st_uid,
        "owner_gid": os.stat(path).st_gid,
        "mode": oct(os.stat(path).st_mode & 0o777),
    }
    return facts


def open_by(path: str, process_match: str | None) -> list[dict]:
    """The processes that have the database (or its -wal/-shm) open, those matching process_match only.

    A running daemon holds its database open, whatever manages it: a host whose database needs
    no change and is open by its daemon needs nothing at all (not even the run lock). Processes
    of other users are invisible without root, so an empty list means "not seen", not "down".
    """
    found = []
    for pid, files in sorted(processes_holding(live_file_names(Path(path))).items()):
        cmdline = process_cmdline(pid)
        if not process_match or process_match in cmdline:
            found.append({"pid": pid, "cmdline": cmdline, "files": files})
    return found


def gather(path: str, migrations_dir: str | None = None, backup_dir: str | None = None,
           options: dict[str, bool] | None = None, target_version: int | None = None,
           integrity: str = "none", count_rows: bool = True,
           busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S, process_match: str | None = None) -> dict:
    """Everything known about the database, from one read snapshot. Never writes a byte."""
    options = options or {}
    catalog = as_catalog(migrations_dir) if migrations_dir else None
    facts = {"path": path, "exists": os.path.exists(path)}
    if not facts["exists"]:
        raise RiskmgrError(f"{path}: no such file; check riskmgr_db_path for this host")
    facts.update(file_facts(path, backup_dir))
    facts["write_problems"] = migration_write_problems(path)
    # Before our own connection opens it (it would not count anyway: processes_holding skips us).
    facts["open_by"] = open_by(path, process_match)
    try:
        with closing(connect_readonly(path, busy_timeout_s)) as conn:
            conn.execute("BEGIN")  # one snapshot: schema, history and counts agree with each other
            facts["journal_mode"] = conn.execute("PRAGMA journal_mode").fetchone()[0]
            facts["page_size"] = conn.execute("PRAGMA page_size").fetchone()[0]
            facts["page_count"] = conn.execute("PRAGMA page_count").fetchone()[0]
            facts["tables"] = sorted(table_names(conn))
            facts["indexes"] = sorted(index_names(conn))
            facts["row_counts"] = table_row_counts(conn) if count_rows else None
            facts.update(schema_state(conn, catalog, options, target_version))
            facts["integrity"] = integrity_result(conn, integrity) if integrity != "none" else None
            conn.execute("COMMIT")
    except sqlite3.Error as err:
        raise RiskmgrError(sqlite_error_text(path, err, busy_timeout_s)) from err
    return facts


def schema_state(conn: sqlite3.Connection, catalog, options: dict[str, bool], target_version: int | None) -> dict:
    if catalog is None:
        versions = read_versions(conn)
        return {"state": "unknown", "version": versions.version, "newest_version": None, "target_version": None,
                "migration_needed": None, "objects": [], "version_rows": versions.rows,
                "problems": [], "schema_warnings": ["migrations_dir not given: objects were not compared; "
                                             "give migrations_dir to learn the state"]}
    inspection = inspect(conn, catalog, options, target_version)
    return {
        "state": inspection.state,
        "version": inspection.version,
        "newest_version": catalog.newest_version,
        "target_version": inspection.target_version,
        "migration_needed": inspection.migration_needed,
        "objects": [o.as_dict() for o in inspection.objects],
        "missing": [f"{o.obj}" for o in inspection.missing()],
        "adoptable": [f"{o.obj}" for o in inspection.objects
                      if o.required and o.status in USABLE + (INCOMPLETE,) and o.provenance is None],
        "version_rows": inspection.versions.rows,
        "recorded_files": inspection.versions.ledger,
        "baseline": inspection.baseline,
        "problems": inspection.problems,
        "schema_warnings": inspection.warnings,
    }
