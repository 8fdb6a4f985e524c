"""Read-only facts about a state database: what a preflight needs before the daemon stops."""
from __future__ import annotations

import math
import os
import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from ansible.module_utils.daemon_watch import read_pending
from ansible.module_utils.host_processes import live_file_names, process_cmdline, processes_holding
from ansible.module_utils.releases import Releases
from ansible.module_utils.sqlite_baseline import foreign_key_state, preexisting_notes
from ansible.module_utils.sqlite_catalog import as_catalog
from ansible.module_utils.sqlite_common import (
    DEFAULT_BUSY_TIMEOUT_S, INTEGRITY_PRAGMAS, MigrationError, RiskmgrError, connect_readonly, database_bytes, free_bytes,
    integrity_result, migration_write_problems, sqlite_error_text, table_row_counts)
from ansible.module_utils.sqlite_dependents import dependents, downgrade_blockers, upgrade_breakers
from ansible.module_utils.sqlite_migration import prove_change
from ansible.module_utils.sqlite_proof import altered_by
from ansible.module_utils.sqlite_plan import IrreversibleError, data_dropped, plan
from ansible.module_utils.sqlite_schema import (
    INCOMPLETE, USABLE, index_names, inspect, read_versions, table_names)

def file_facts(path: str, backup_dir: str | None) -> dict:
    db_size = os.path.getsize(path)
    wal = f"{path}-wal"
    facts = {
        "size": db_size,
        "wal_size": os.path.getsize(wal) if os.path.exists(wal) else 0,
        "backup_bytes_needed": database_bytes(path),
        "free_bytes_db_dir": free_bytes(Path(os.path.realpath(path)).parent),
        "real_path": os.path.realpath(path),
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


@dataclass
class FactsRequest:
    """What a caller wants read, and what it would refuse (the preflight, while the daemon runs)."""

    backup_dir: str | None = None
    options: dict = field(default_factory=dict)
    target_version: int | None = None
    integrity: str = "none"  # integrity | quick | none
    count_rows: bool = True
    busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S
    process_match: str | None = None
    plan: bool = False  # also the steps a migration to target_version would take (its check mode)
    free_space_margin: float = 1.1  # the backup needs the database and its -wal times this
    require_wal: bool = False  # online mode: backup and migration run while the daemon writes
    releases: Releases | None = None  # the release link: which release it names, and whether it must switch
    prove_writes: bool = False  # with plan: the daemon's inserts tried on the changed schema, rolled back


def gather(path: str, migrations_dir=None, request: FactsRequest | None = None) -> dict:
    """Everything known about the database, from one read snapshot. Never writes a byte.

    `refusals` lists every reason the preflight stops this host, each with its remedy: a database
    that cannot be migrated (problems), that fails its integrity check, that a migration could not
    write in place, whose backup does not fit, or that online mode cannot work on.
    """
    request = request or FactsRequest()
    catalog = as_catalog(migrations_dir) if migrations_dir else None
    check_request(path, catalog, request)
    # The host's clock when the database was read: a later recovery takes the backups made since as this run's.
    facts = {"path": path, "exists": os.path.exists(path), "read_at": time.time()}
    if not facts["exists"]:
        raise RiskmgrError(f"{path}: no such file; check riskmgr_db_path for this host")
    facts.update(file_facts(path, request.backup_dir))
    facts["write_problems"] = migration_write_problems(path)
    # Before our own connection opens it (it would not count anyway: processes_holding skips us).
    facts["open_by"] = open_by(path, request.process_match)
    try:
        with closing(connect_readonly(path, request.busy_timeout_s)) as conn:
            conn.execute("BEGIN")  # one snapshot: schema, history, counts and plan agree with each other
            facts["journal_mode"] = conn.execute("PRAGMA journal_mode").fetchone()[0]
            facts["page_size"] = conn.execute("PRAGMA page_size").fetchone()[0]
            facts["page_count"] = conn.execute("PRAGMA page_count").fetchone()[0]
            facts["tables"] = sorted(table_names(conn))
            facts["indexes"] = sorted(index_names(conn))
            facts["row_counts"] = table_row_counts(conn) if request.count_rows else None
            facts.update(schema_state(conn, catalog, request.options, request.target_version))
            facts["integrity"] = integrity_result(conn, request.integrity) if request.integrity != "none" else None
            # Read with the integrity check (a scan as well): what the database has wrong before any change.
            facts["baseline_problems"] = foreign_key_state(conn) if request.integrity != "none" else None
            facts["baseline_notes"] = preexisting_notes(facts["baseline_problems"]) \
                if facts["baseline_problems"] else []
            facts["plan"] = planned(conn, catalog, request, path) if request.plan and catalog else None
            conn.execute("COMMIT")
    except sqlite3.Error as err:
        raise RiskmgrError(sqlite_error_text(path, err, request.busy_timeout_s)) from err
    facts["write_proof"] = write_proof(path, catalog, facts, request)
    facts["refusals"] = refusals(path, facts, request)
    # Beside the database, not in it: an upgrade started and never accepted, and the code that runs.
    facts["pending_upgrade"] = read_pending(path)
    wanted = request.target_version or (catalog.newest_version if catalog else None)
    facts["release"] = request.releases.facts(wanted) if request.releases else None
    return facts


def check_request(path: str, catalog, request: FactsRequest) -> None:
    """Options that contradict each other or lack what they need: one line saying what to pass."""
    if (request.plan or request.prove_writes) and catalog is None:
        raise RiskmgrError(f"{path}: plan and prove_writes need the migrations: pass migrations_dir (or migrations); "
                           "nothing was read")
    if request.prove_writes and not request.plan:
        raise RiskmgrError(f"{path}: prove_writes proves the planned change: pass plan: true with it; nothing was read")
    if catalog is not None and request.target_version is not None and request.target_version not in catalog.files:
        raise RiskmgrError(f"{path}: target_version {request.target_version} is not one of the versions in "
                           f"{catalog.directory} ({', '.join(str(v) for v in sorted(catalog.files))}); fix target_version")


def planned(conn: sqlite3.Connection, catalog, request: FactsRequest, path: str) -> dict | None:
    """The migration's check mode on this snapshot: direction, steps, and for a downgrade what it drops."""
    target = request.target_version or catalog.newest_version
    try:
        _inspection, steps, direction = plan(conn, catalog, request.options, target, path)
    except IrreversibleError as err:  # no problem of the database's: the way down it asks for is refused
        return {"preview": True, "direction": "down", "steps": [], "data_dropped": {}, "dependents": [],
                "blockers": [str(err)], "breakers": []}
    except MigrationError:
        return None  # a database that cannot be migrated: its problems are the refusal
    changing = [s for s in steps if s.action != "skip"]
    added, removed = altered_by(steps, direction)
    # A preview: the run plans again, once, under its write lock (sqlite_migration.write_transaction).
    return {"preview": True, "direction": direction if changing else "none", "steps": [s.as_dict() for s in changing],
            "data_dropped": data_dropped(conn, steps) if direction == "down" else {},
            # The triggers, views and indexes on what the change touches; for a downgrade, those in its way.
            "dependents": dependents(conn, {**added, **removed}),
            "blockers": downgrade_blockers(conn, steps, path, target) if direction == "down" else [],
            "breakers": upgrade_breakers(conn, added) if direction == "up" else []}


def write_proof(path: str, catalog, facts: dict, request: FactsRequest) -> dict | None:
    """sqlite_migration.prove_change on the live file, when a change is planned and the file can take it."""
    if not (request.prove_writes and catalog and facts.get("plan") and facts["plan"]["direction"] != "none"):
        return None
    if facts["plan"]["blockers"]:
        return {"ok": False, "failures": [], "notes": ["not run: the objects in the downgrade's way come first"]}
    if facts["write_problems"]:
        return {"ok": False, "failures": [], "notes": ["not run: the file cannot be written (see write_problems)"]}
    target = request.target_version or catalog.newest_version
    try:
        return prove_change(path, catalog, request.options, target, request.busy_timeout_s)
    except MigrationError as err:
        return {"ok": False, "failures": [f"{err}; the write proof could not run"], "notes": []}
    except sqlite3.Error as err:
        return {"ok": False, "failures": [f"{sqlite_error_text(path, err, request.busy_timeout_s)}; the proof of the "
                                          "daemon's writes could not take the write lock or run"], "notes": []}


def refusals(path: str, facts: dict, request: FactsRequest) -> list[str]:
    """Why the preflight stops this host before its daemon is stopped; empty when nothing does."""
    found = [f"{path} is in state {facts['state']}: {problem}" for problem in facts.get("problems") or []]
    found += (facts.get("plan") or {}).get("blockers", [])
    found += (facts.get("write_proof") or {}).get("failures", [])
    # A trigger that breaks by its text, on a table the proof did not try (it refused every row before the
    # change, or the proof was not asked for): refused all the same.
    proof = facts.get("write_proof") or {}
    proven, named = {t.lower() for t in proof.get("tables", [])}, " ".join(proof.get("failures", []))
    found += [f"{path}: {b['text']}" for b in (facts.get("plan") or {}).get("breakers", [])
              if b["table"].lower() not in proven and f"trigger {b['trigger']}" not in named]
    integrity = facts.get("integrity")
    if integrity and not integrity["ok"]:
        errors = " | ".join(" ".join(line.split()) for line in integrity["errors"][:5])
        found.append(f"{path} fails PRAGMA {INTEGRITY_PRAGMAS[integrity['level']]}: {errors}; restore it from a "
                     "backup or repair it before migrating")
    change = facts.get("plan") and facts["plan"]["direction"] != "none"
    if change and facts["write_problems"]:
        found.append(f"{path} cannot be changed in place: {'; '.join(facts['write_problems'])}")
    needed = math.ceil(facts["backup_bytes_needed"] * request.free_space_margin)
    if change and request.backup_dir and facts["free_bytes_backup_dir"] < needed:
        found.append(f"{request.backup_dir} has {facts['free_bytes_backup_dir']} bytes free, the backup of {path} "
                     f"needs {needed} (database and -wal x {request.free_space_margin:g}); free space there or set "
                     "riskmgr_backup_dir to a larger filesystem")
    if change and request.require_wal and facts["journal_mode"].lower() != "wal":
        found.append(f"riskmgr_migration_mode=online needs {path} in WAL mode, so that the backup and the migration "
                     f"can run while the daemon writes; it is in journal mode {facts['journal_mode']}. Use "
                     "riskmgr_migration_mode=offline for this host (or switch the daemon to WAL)")
    return found


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
