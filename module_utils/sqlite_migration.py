"""Plan and apply schema changes in one transaction: up to the target, or back down to v1.

The plan is computed from the database's real state (sqlite_schema.inspect), and computed
again inside the write transaction, so what is applied is what the locked database needs.
"""
from __future__ import annotations

import os
import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from ansible.module_utils.sqlite_catalog import Catalog, MigrationFile, SchemaObject, as_catalog
from ansible.module_utils.sqlite_common import (
    DEFAULT_BUSY_TIMEOUT_S, MigrationError, connect_readonly, connect_writable, quote_identifier,
    sqlite_error_text)
from ansible.module_utils.sqlite_schema import (
    LEDGER_TABLE, PRESENT, VERSION_TABLE, Inspection, inspect)

DROP_COLUMN_MIN_SQLITE = (3, 35, 0)
TRANSACTION_MODES = ("single", "per_step")


@dataclass
class Step:
    file: str  # ledger name, v2/030_analytics_indexes.sql
    object: str  # "index idx_positions_updated"
    sql: str
    action: str  # create | skip | drop | record
    seconds: float | None = None

    def as_dict(self) -> dict:
        result = {"file": self.file, "object": self.object, "action": self.action, "sql": self.sql}
        if self.seconds is not None:
            result["seconds"] = round(self.seconds, 4)
        return result


def utc_now() -> str:
    # The seed's rows use datetime('now'): 'YYYY-MM-DD HH:MM:SS' in UTC; keep one format.
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def upgrade_steps(inspection: Inspection, catalog: Catalog, options: dict[str, bool]) -> list[Step]:
    """Every statement of every file up to the target: create what is missing, skip the rest."""
    status = {(o.obj, o.version): o.status for o in inspection.objects}
    steps = []
    for version in range(catalog.baseline_version + 1, inspection.target_version + 1):
        for migration in catalog.files_for(version, options):
            for statement in migration.statements:
                present = status.get((statement.obj, version)) == PRESENT
                steps.append(Step(migration.ledger_name, str(statement.obj), statement.sql,
                                  "skip" if present else "create"))
    return steps


def history_steps(inspection: Inspection, catalog: Catalog, options: dict[str, bool]) -> list[Step]:
    """The version rows and file checksums the history still lacks."""
    recorded = {row["version"] for row in inspection.versions.rows if row["success"]}
    steps = []
    for version in range(catalog.baseline_version, inspection.target_version + 1):
        files = catalog.files_for(version, options)
        if version not in recorded:
            steps.append(Step(f"v{version}", f"{VERSION_TABLE} row {version}",
                              f"INSERT INTO {VERSION_TABLE} (version, ...) VALUES ({version}, ...)", "record"))
        if version == catalog.baseline_version:
            continue
        for migration in files:
            if migration.ledger_name not in inspection.versions.ledger:
                steps.append(Step(migration.ledger_name, f"{LEDGER_TABLE} row {migration.ledger_name}",
                                  f"INSERT INTO {LEDGER_TABLE} VALUES ({version}, '{migration.ledger_name}', "
                                  f"'{migration.sha256}', ...)", "record"))
    return steps


def downgrade_steps(inspection: Inspection, catalog: Catalog, target: int) -> list[Step]:
    """Drop every object of the versions above the target, newest first; keep every v1 row."""
    status = {(o.obj, o.version): o.status for o in inspection.objects}
    steps = []
    for version in sorted((v for v in catalog.files if v > target), reverse=True):
        for migration in reversed(catalog.files[version]):
            for statement in reversed(migration.statements):
                if status.get((statement.obj, version)) == PRESENT:
                    steps.append(Step(migration.ledger_name, str(statement.obj), drop_sql(statement.obj), "drop"))
    return steps


def drop_sql(obj: SchemaObject) -> str:
    if obj.kind == "table":
        return f"DROP TABLE {quote_identifier(obj.name)}"
    if obj.kind == "index":
        return f"DROP INDEX {quote_identifier(obj.name)}"
    table, column = obj.name.split(".", 1)
    return f"ALTER TABLE {quote_identifier(table)} DROP COLUMN {quote_identifier(column)}"


def data_dropped(conn: sqlite3.Connection, steps: list[Step]) -> dict[str, int]:
    """What a downgrade discards: rows of dropped tables, non-null values of dropped columns."""
    lost = {}
    for step in steps:
        kind, name = step.object.split(" ", 1)
        if kind == "table":
            lost[name] = conn.execute(f"SELECT COUNT(*) FROM {quote_identifier(name)}").fetchone()[0]
        elif kind == "column":
            table, column = name.split(".", 1)
            lost[name] = conn.execute(f"SELECT COUNT({quote_identifier(column)}) FROM {quote_identifier(table)}"
                                      ).fetchone()[0]
    return lost


def schema_sql(conn: sqlite3.Connection) -> str:
    """The whole schema as SQL, one statement per object, for diffs and reports."""
    rows = conn.execute("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' "
                        "ORDER BY tbl_name, type DESC, name").fetchall()
    return "".join(f"{' '.join(row[0].split())};\n" for row in rows)


def planned_schema(conn: sqlite3.Connection, steps: list[Step]) -> str:
    """The schema after the steps, from a schema-only in-memory copy (kilobytes, never the data)."""
    with closing(sqlite3.connect(":memory:", isolation_level=None)) as scratch:
        for (sql,) in conn.execute("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' "
                                   "ORDER BY rowid"):
            scratch.execute(sql)
        for step in steps:
            if step.action in ("create", "drop"):
                scratch.execute(step.sql)
        history = [f"-- {step.sql}\n" for step in steps if step.action == "record"]
        return schema_sql(scratch) + "".join(history)


def check_can_run(inspection: Inspection, path: str) -> None:
    if inspection.state in ("newer", "unknown"):
        raise MigrationError(f"{path}: refused, database state is {inspection.state}: "
                             + " | ".join(inspection.problems) + "; nothing was changed")


def check_drop_column_supported(path: str, steps: list[Step]) -> None:
    if any(step.sql.startswith("ALTER TABLE") for step in steps) and \
            sqlite3.sqlite_version_info < DROP_COLUMN_MIN_SQLITE:
        raise MigrationError(f"{path}: downgrade needs SQLite >= 3.35 for DROP COLUMN, this host has "
                             f"{sqlite3.sqlite_version}; use riskmgr_rollback_method=restore instead")


def plan(conn: sqlite3.Connection, catalog: Catalog, options: dict[str, bool], target: int,
         path: str) -> tuple[Inspection, list[Step], str]:
    """(inspection, steps, direction) for the database as it is now on this connection."""
    if target == catalog.baseline_version:
        inspection = inspect(conn, catalog, options)
        check_can_run(inspection, path)
        if inspection.state == f"v{catalog.baseline_version}":
            return inspection, [], "none"
        steps = downgrade_steps(inspection, catalog, target)
        check_drop_column_supported(path, steps)
        return inspection, steps, "down"
    inspection = inspect(conn, catalog, options, target)
    check_can_run(inspection, path)
    if inspection.version is not None and inspection.version > target:
        raise MigrationError(f"{path}: database is at schema v{inspection.version}, above target_version {target}; "
                             f"only a downgrade to the baseline (target_version {catalog.baseline_version}) is "
                             "supported; nothing was changed")
    return inspection, upgrade_steps(inspection, catalog, options) + history_steps(inspection, catalog, options), "up"


def write_history(conn: sqlite3.Connection, catalog: Catalog, options: dict[str, bool], steps: list[Step],
                  elapsed_ms: int) -> None:
    now = utc_now()
    for step in (s for s in steps if s.action == "record"):
        if step.object.startswith(VERSION_TABLE):
            version = int(step.file[1:])
            files = catalog.files_for(version, options)
            description = "; ".join(f.description for f in files)
            script = ",".join(f.ledger_name for f in files) or None
            # INSERT OR REPLACE: a failed attempt recorded by hand (success = 0) is superseded.
            conn.execute(f"INSERT OR REPLACE INTO {VERSION_TABLE} (version, applied_at, description, "
                         "migration_script, rollback_script, execution_time_ms, success, error_message) "
                         "VALUES (?, ?, ?, ?, ?, ?, 1, NULL)",
                         (version, now, f"Schema v{version}: {description}", script,
                          "rollback_v2.yml (restore or downgrade)" if version > catalog.baseline_version else None,
                          elapsed_ms if version > catalog.baseline_version else None))
        else:
            migration: MigrationFile = catalog.find(step.file)
            conn.execute(f"INSERT INTO {LEDGER_TABLE} (version, filename, sha256, applied_at) VALUES (?, ?, ?, ?)",
                         (migration.version, migration.ledger_name, migration.sha256, now))


def apply_steps(conn: sqlite3.Connection, catalog: Catalog, options: dict[str, bool], steps: list[Step]) -> None:
    started = time.monotonic()
    for step in steps:
        if step.action in ("create", "drop"):
            begun = time.monotonic()
            try:
                conn.execute(step.sql)
            except sqlite3.Error as err:
                # Same class, so the caller's locked/read-only/disk-full wording still applies.
                raise type(err)(f"{step.file} failed at {step.object}: {err}") from err
            step.seconds = time.monotonic() - begun
    write_history(conn, catalog, options, steps, int((time.monotonic() - started) * 1000))


def migrate_database(path: str, migrations_dir: Catalog | str | Path, target_version: int | None = None,
                     options: dict[str, bool] | None = None, check_mode: bool = False,
                     want_diff: bool = False, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
                     before_commit: Callable[[], None] | None = None, transactions: str = "single") -> dict:
    """Bring the database to target_version, or refuse and change nothing. Returns the module result.

    before_commit runs inside the write transaction just before COMMIT; whatever it raises rolls
    the migration back (riskmgr_upgrade waits there for the check of the backup it runs meanwhile).
    transactions="per_step" (online mode) commits each object on its own instead (see
    write_in_steps); the daemon's writes then wait at most for the longest single step.
    """
    if transactions not in TRANSACTION_MODES:
        raise MigrationError(f"transactions must be one of {', '.join(TRANSACTION_MODES)}, not {transactions!r}")
    options = options or {}
    catalog = as_catalog(migrations_dir)
    target = target_version if target_version is not None else catalog.newest_version
    if target not in catalog.files:
        raise MigrationError(f"{path}: target_version {target} is not one of the versions in {catalog.directory} "
                             f"({', '.join(str(v) for v in sorted(catalog.files))})")
    if not check_mode and Path(path).parent.is_dir() and not os.access(Path(path).parent, os.W_OK):
        raise MigrationError(f"{path}: directory {Path(path).parent} is not writable by this user; SQLite must "
                             "create its journal there: run as the database owner (become); nothing was changed")
    connect = connect_readonly if check_mode else connect_writable
    try:
        with closing(connect(path, busy_timeout_s)) as conn:
            # A read transaction, so the plan sees one consistent state while the daemon writes.
            conn.execute("BEGIN")
            inspection, steps, direction = plan(conn, catalog, options, target, path)
            result = result_skeleton(inspection, steps, direction, target, catalog)
            if direction == "down":
                result["data_dropped"] = data_dropped(conn, steps)
            if result["changed"] and want_diff:
                result["diff"] = {"before_header": f"{path} (schema v{result['from_version']})",
                                  "after_header": f"{path} (schema v{target})",
                                  "before": schema_sql(conn), "after": planned_schema(conn, steps)}
            conn.execute("COMMIT")
            if not result["changed"] or check_mode:
                return result
            if transactions == "per_step":
                if direction != "up":
                    raise MigrationError(f"{path}: a downgrade runs in one transaction (transactions=single); "
                                         "nothing was changed")
                write_in_steps(conn, catalog, options, target, path, busy_timeout_s, result)
            else:
                write_transaction(conn, catalog, options, target, path, busy_timeout_s, result, before_commit)
            return result
    except sqlite3.Error as err:
        raise MigrationError(sqlite_error_text(path, err, busy_timeout_s) + "; database left unchanged") from err


def write_transaction(conn: sqlite3.Connection, catalog: Catalog, options: dict[str, bool], target: int,
                      path: str, busy_timeout_s: float, result: dict,
                      before_commit: Callable[[], None] | None = None) -> None:
    """One BEGIN IMMEDIATE transaction: re-plan under the write lock, apply, record, commit.

    Python's sqlite3 would commit an open transaction before DDL and executescript() always
    commits first; with isolation_level=None and explicit BEGIN/COMMIT every statement of
    every file commits together or not at all.
    """
    started = time.monotonic()
    conn.execute("BEGIN IMMEDIATE")
    try:
        inspection, steps, direction = plan(conn, catalog, options, target, path)
        if direction == "down":
            result["data_dropped"] = data_dropped(conn, steps)
        apply_steps(conn, catalog, options, steps)
        if before_commit is not None:
            before_commit()
        conn.execute("COMMIT")
    except BaseException as err:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        if isinstance(err, MigrationError):
            raise
        if isinstance(err, sqlite3.Error):
            raise MigrationError(f"{sqlite_error_text(path, err, busy_timeout_s)}; "
                                 "the transaction was rolled back, database left unchanged") from err
        raise
    result.update(result_skeleton(inspection, steps, direction, target, catalog))
    result["seconds"] = round(time.monotonic() - started, 4)
    result["to_version"] = target


def write_in_steps(conn: sqlite3.Connection, catalog: Catalog, options: dict[str, bool], target: int,
                   path: str, busy_timeout_s: float, result: dict) -> None:
    """Online mode: one short BEGIN IMMEDIATE transaction per object, then one for the history rows.

    Every v2 object is additive (a nullable column, indexes, new tables), so v1 code keeps
    working on each intermediate state, and each of them is a "partial" database the engine
    recognises: a rerun finishes it, a downgrade undoes it. The version row comes last, so
    nothing claims v2 before all of v2 is there. Each transaction plans again under its lock,
    so a step done meanwhile (by hand, or by a run that died) is skipped, never repeated.
    """
    started = time.monotonic()
    applied: list[Step] = []
    longest, transactions = 0.0, 0
    while True:
        begun = time.monotonic()
        conn.execute("BEGIN IMMEDIATE")
        try:
            inspection, steps, _direction = plan(conn, catalog, options, target, path)
            creates = [s for s in steps if s.action == "create"]
            batch = creates[:1] or [s for s in steps if s.action == "record"]
            apply_steps(conn, catalog, options, batch)
            conn.execute("COMMIT")
        except BaseException as err:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            done = f"; committed before it: {', '.join(s.object for s in applied)} (a rerun finishes the rest)" \
                if applied else "; database left unchanged"
            if isinstance(err, MigrationError):
                raise MigrationError(f"{err}{done}") from err
            if isinstance(err, sqlite3.Error):
                raise MigrationError(f"{sqlite_error_text(path, err, busy_timeout_s)}{done}") from err
            raise
        longest = max(longest, time.monotonic() - begun)
        transactions += 1
        applied.extend(batch)
        # An index build leaves its pages in the -wal; copied into the database here (PASSIVE: the
        # daemon's writes never wait for it), the daemon's own next commit does not have to, and
        # its stop at the restart does not either.
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        if not creates:
            break
    result["steps"] = [s.as_dict() for s in applied]
    result["changed"] = bool(applied)
    result["to_version"] = target
    result["seconds"] = round(time.monotonic() - started, 4)
    result["longest_transaction_seconds"] = round(longest, 4)
    result["transactions"] = transactions


def result_skeleton(inspection: Inspection, steps: list[Step], direction: str, target: int,
                    catalog: Catalog) -> dict:
    changing = [s for s in steps if s.action != "skip"]
    from_version = inspection.version if inspection.version is not None else catalog.baseline_version
    return {
        "changed": bool(changing),
        "state_before": inspection.state,
        "from_version": from_version,
        "to_version": target if changing else from_version,
        "direction": direction if changing else "none",
        "steps": [s.as_dict() for s in changing],
        # Not "skipped": Ansible reads a truthy result["skipped"] as "the task was skipped".
        "skipped_steps": [s.as_dict() for s in steps if s.action == "skip"],
        "schema_warnings": inspection.warnings,
    }


