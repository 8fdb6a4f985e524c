"""Apply a plan (sqlite_plan) in one transaction: up to the target, or down to any earlier version.

The plan is computed once, from the database's real state inside the write transaction, so what is
applied is what the locked database needs; a plan read before (check mode, the preflight) is a
preview. Every object the upgrade creates or adopts is recorded in the provenance in the same
transaction as the object itself.
"""
from __future__ import annotations

import os
import sqlite3
import time
from contextlib import closing
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from ansible.module_utils.sqlite_catalog import Catalog, as_catalog
from ansible.module_utils.sqlite_common import (
    DEFAULT_BUSY_TIMEOUT_S, MigrationError, connect_readonly, connect_writable, equality_clause, identifier_list,
    placeholders, quote_identifier, rolled_back_writer, set_autoincrement_sequence, sqlite_error_text)
from ansible.module_utils.sqlite_history import (
    LEDGER_TABLE, current_version, read_versions, PROVENANCE_TABLE, VERSION_TABLE, insert_history_row, record, record_table_change)
from ansible.module_utils.sqlite_dependents import downgrade_blockers
from ansible.module_utils.sqlite_plan import Step, data_dropped, plan
from ansible.module_utils.sqlite_proof import after, altered_by, baseline, foreign_keys_declared
from ansible.module_utils.sqlite_rebuild import (
    check_no_new_violations, foreign_key_violations, rebuild_definition, rebuild_table, rebuilt_as_recorded)
from ansible.module_utils.sqlite_schema import Inspection

TRANSACTION_MODES = ("single", "per_step")


def utc_now() -> str:
    # The seed's rows use datetime('now'): 'YYYY-MM-DD HH:MM:SS' in UTC; keep one format.
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


# --- applying steps, inside the caller's transaction -------------------------------------------------

def apply_step(conn: sqlite3.Connection, step: Step, now: str) -> None:
    if step.action == "create":
        if step.kind == "column":
            table = step.name.split(".", 1)[0]
            record_table_change(conn, step.version, table, step.table_action, now)
        conn.execute(step.sql)
        record(conn, step.version, step.kind, step.name, step.provenance, step.file, now)
    elif step.action == "adopt":
        record(conn, step.version, step.kind, step.name, step.provenance, step.file, now)
    elif step.action == "drop":
        conn.execute(step.sql)
    elif step.action == "rebuild":
        rebuild_table(conn, step.name, step.data["original_sql"])
    elif step.action == "delete":
        delete_history_rows(conn, step.data)
    elif step.action == "restore":
        restore_history_rows(conn, step.data)


def delete_history_rows(conn: sqlite3.Connection, data: dict) -> None:
    if "provenance_above" in data:
        conn.execute(f"DELETE FROM {PROVENANCE_TABLE} WHERE version > ?", (data["provenance_above"],))
        return
    if "above" in data:  # a history table this tool created and a downgrade keeps
        conn.execute(f"DELETE FROM {quote_identifier(data['table'])} WHERE version > ?", (data["above"],))
        return
    conn.execute(f"DELETE FROM {quote_identifier(data['table'])} WHERE {equality_clause(data['key'])}",
                 tuple(data["key"].values()))
    if data.get("counted"):  # the row moved the table's AUTOINCREMENT counter on
        set_autoincrement_sequence(conn, data["table"], data["sequence"])


def restore_history_rows(conn: sqlite3.Connection, data: dict) -> None:
    """Put back, with their rowids, the rows a version row replaced (only the columns the table has now)."""
    existing = {row[1].lower() for row in conn.execute(f"PRAGMA table_info({quote_identifier(data['table'])})")}
    for row in data["replaced"]:
        values = {column: value for column, value in row.items() if column.lower() in existing | {"rowid"}}
        conn.execute(f"INSERT INTO {quote_identifier(data['table'])} ({identifier_list(values)}) "
                     f"VALUES ({placeholders(len(values))})", tuple(values.values()))


def write_history(conn: sqlite3.Connection, catalog: Catalog, options: dict[str, bool], steps: list[Step],
                  elapsed_ms: int, now: str) -> None:
    for step in (s for s in steps if s.action == "record"):
        if "version" in step.data:
            version = step.data["version"]
            files = catalog.files_for(version, options)
            later = version > catalog.baseline_version
            values = {"version": version, "applied_at": now,
                      "description": f"Schema v{version}: " + "; ".join(f.description for f in files),
                      "migration_script": ",".join(f.ledger_name for f in files) or None,
                      "rollback_script": rollback_script(catalog, version) if later else None,
                      "execution_time_ms": elapsed_ms if later else None, "success": 1, "error_message": None}
            insert_history_row(conn, VERSION_TABLE, values, ("version",), step.version, step.data["adopted"], now)
        else:
            migration = catalog.find(step.data["file"])
            values = {"version": migration.version, "filename": migration.ledger_name, "sha256": migration.sha256,
                      "applied_at": now}
            insert_history_row(conn, LEDGER_TABLE, values, ("version", "filename"), step.version,
                               step.data["adopted"], now)


def rollback_script(catalog: Catalog, version: int) -> str:
    """How this version is undone, as the history row says it (v2's text is the design card's)."""
    if version == catalog.baseline_version + 1:
        return "rollback_v2.yml (restore or downgrade)"
    below = catalog.below(version)
    return f"sqlite_migrate target_version={below} (downgrade) or sqlite_restore schema_version={below} (restore)"


def apply_steps(conn: sqlite3.Connection, catalog: Catalog, options: dict[str, bool], steps: list[Step]) -> None:
    started, now = time.monotonic(), utc_now()
    for step in steps:
        begun = time.monotonic()
        try:
            apply_step(conn, step, now)
        except sqlite3.Error as err:
            # Same class, so the caller's locked/read-only/disk-full wording still applies.
            raise type(err)(f"{step.file} failed at {step.object}: {err}") from err
        if step.action not in ("skip", "record"):
            step.seconds = time.monotonic() - begun
    write_history(conn, catalog, options, steps, int((time.monotonic() - started) * 1000), now)


def apply_downgrade(conn: sqlite3.Connection, catalog: Catalog, options: dict[str, bool], steps: list[Step],
                    path: str) -> None:
    """The downgrade's steps, then the checks that it did what the provenance says and nothing else."""
    rebuilds = [s for s in steps if s.action == "rebuild"]
    before = foreign_key_violations(conn) if rebuilds else {}
    apply_steps(conn, catalog, options, steps)
    if rebuilds:
        check_no_new_violations(conn, before, path)
    wrong = [s.name for s in rebuilds if not rebuilt_as_recorded(conn, s.name, s.data["original_sql"])]
    if wrong:
        raise MigrationError(f"{path}: table(s) {', '.join(wrong)} did not get back their recorded definition; "
                             "the transaction was rolled back, database left unchanged")


# --- the transactions ----------------------------------------------------------------------------------

def migrate_database(path: str, migrations_dir: Catalog | str | Path, target_version: int | None = None,
                     options: dict[str, bool] | None = None, check_mode: bool = False,
                     want_diff: bool = False, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
                     before_commit: Callable[[], None] | None = None, transactions: str = "single") -> dict:
    """Bring the database to target_version, or refuse and change nothing. Returns the module result.

    before_commit runs inside the write transaction just before COMMIT; whatever it raises rolls
    the migration back (riskmgr_migrate waits there for the check of the backup it runs meanwhile).
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
    directory = Path(os.path.realpath(path)).parent  # a link's target: where SQLite writes its journal
    if not check_mode and directory.is_dir() and not os.access(directory, os.W_OK):
        raise MigrationError(f"{path}: directory {directory} is not writable by this user; SQLite must "
                             "create its journal there: run as the database owner (become); nothing was changed")
    try:
        if check_mode or transactions == "per_step":
            return preview_then_steps(path, catalog, options, target, check_mode, want_diff, busy_timeout_s)
        with closing(connect_writable(path, busy_timeout_s)) as conn:
            result: dict = {}
            write_transaction(conn, catalog, options, target, path, busy_timeout_s, result, before_commit, want_diff)
            return result
    except sqlite3.Error as err:
        raise MigrationError(sqlite_error_text(path, err, busy_timeout_s) + "; database left unchanged") from err


def preview_then_steps(path: str, catalog: Catalog, options: dict[str, bool], target: int, check_mode: bool,
                       want_diff: bool, busy_timeout_s: float) -> dict:
    """Check mode: the plan read from one snapshot, a preview (the daemon may write before a real run, which
    plans again under its lock). Online mode: the preview says whether there is anything to do, and each of
    its transactions plans under its own lock (write_in_steps)."""
    connect = connect_readonly if check_mode else connect_writable
    with closing(connect(path, busy_timeout_s)) as conn:
        conn.execute("BEGIN")  # a read transaction: one consistent state while the daemon writes
        preview = planned_result(conn, catalog, options, target, path, want_diff)
        preview.pop("steps_planned")
        conn.execute("COMMIT")
        if not preview["changed"] or check_mode:
            return dict(preview, preview=True)
        if preview["direction"] != "up":
            raise MigrationError(f"{path}: a downgrade runs in one transaction (transactions=single); "
                                 "nothing was changed")
        write_in_steps(conn, catalog, options, target, path, busy_timeout_s, preview)
        return dict(preview, preview=False)


def planned_result(conn: sqlite3.Connection, catalog: Catalog, options: dict[str, bool], target: int, path: str,
                   want_diff: bool) -> dict:
    """The plan on this connection's snapshot as the module result: steps, what a downgrade drops, the diff."""
    inspection, steps, direction = plan(conn, catalog, options, target, path)
    refuse_blockers(conn, steps, direction, path, target)
    result = result_skeleton(inspection, steps, direction, target, catalog)
    if direction == "down":
        result["data_dropped"] = data_dropped(conn, steps)
    if result["changed"] and want_diff:
        result["diff"] = {"before_header": f"{path} (schema v{result['from_version']})",
                          "after_header": f"{path} (schema v{target})",
                          "before": schema_sql(conn), "after": planned_schema(conn, steps)}
    result["steps_planned"] = steps  # popped by the caller: the Step objects, for the same transaction
    return result


def write_transaction(conn: sqlite3.Connection, catalog: Catalog, options: dict[str, bool], target: int,
                      path: str, busy_timeout_s: float, result: dict,
                      before_commit: Callable[[], None] | None = None, want_diff: bool = False) -> None:
    """One BEGIN IMMEDIATE transaction: the plan, computed once under the write lock, applied and recorded.

    What is applied is what the locked database needs: no plan read earlier (a preview) is used. With
    nothing to do the transaction ends without a write. Python's sqlite3 would commit an open
    transaction before DDL and executescript() always commits first; with isolation_level=None and
    explicit BEGIN/COMMIT every statement of every file commits together or not at all. A downgrade's
    table rebuild needs foreign keys off (a no-op inside a transaction, so it is set before) and the
    legacy ALTER TABLE rename (sqlite_rebuild explains why); both are put back afterwards.
    """
    started = time.monotonic()
    settings = rebuild_settings(conn) if downgrading(conn, catalog, target) else proof_settings(conn)
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            result.update(planned_result(conn, catalog, options, target, path, want_diff), preview=False)
            steps, direction = result.pop("steps_planned"), result["direction"]
            if not result["changed"]:
                conn.execute("ROLLBACK")
                return
            proof = baseline(conn, *altered_by(steps, direction))
            if direction == "down":
                apply_downgrade(conn, catalog, options, steps, path)
            else:
                apply_steps(conn, catalog, options, steps)
            refuse_broken_writes(after(conn, proof, direction, path, (result["from_version"], target)),
                                 "the transaction was rolled back, "
                                 "database left unchanged")
            result["write_proof"] = proof.as_dict()
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
    finally:
        put_back(conn, settings)
    result["steps"] = [s.as_dict() for s in steps if s.action != "skip"]  # with their seconds
    result["seconds"] = round(time.monotonic() - started, 4)


def downgrading(conn: sqlite3.Connection, catalog: Catalog, target: int) -> bool:
    """Whether the change goes down (its settings are set before the transaction, where PRAGMAs act): to the
    baseline always (a partial run is undone), else when the database records a later version or began one."""
    versions = read_versions(conn)
    return target == catalog.baseline_version or target < current_version(conn) or \
        any(p.version > target for p in versions.provenance.values())


REBUILD_PRAGMAS = {"foreign_keys": 0, "legacy_alter_table": 1}


def put_back(conn: sqlite3.Connection, settings: dict[str, int]) -> None:
    """The PRAGMAs rebuild_settings or proof_settings changed, back to what they were."""
    for pragma, value in settings.items():
        conn.execute(f"PRAGMA {pragma} = {int(value)}")


def proof_settings(conn: sqlite3.Connection) -> dict[str, int]:
    """An upgrade runs with PRAGMA foreign_keys on when the application declares foreign keys, so the
    write proof before its commit checks them as an enforcing daemon would (adding columns, tables and
    indexes is not affected by it). Returns the value to put back."""
    previous = conn.execute("PRAGMA foreign_keys").fetchone()[0]
    if foreign_keys_declared(conn):
        conn.execute("PRAGMA foreign_keys = 1")
    return {"foreign_keys": previous}


def refuse_blockers(conn: sqlite3.Connection, steps: list[Step], direction: str, path: str,
                    target: int | None = None) -> None:
    """A downgrade refuses, before writing, the objects made since the migration that use what it removes."""
    blockers = downgrade_blockers(conn, steps, path, target) if direction == "down" else []
    if blockers:
        raise MigrationError(" | ".join(blockers) + "; nothing was changed")


def refuse_broken_writes(failures: list[str], outcome: str) -> None:
    """Roll the change back when the daemon's writes would fail on it (sqlite_proof)."""
    if failures:
        raise MigrationError(" | ".join(failures) + f"; {outcome}")


def prove_change(path: str, catalog: Catalog, options: dict[str, bool], target: int,
                 busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S) -> dict:
    """The write proof on the live file, before any stop: the change applied and the daemon's inserts
    tried inside one BEGIN IMMEDIATE transaction that is always rolled back (nothing reaches the file).
    Indexes the change makes or drops are left out unless UNIQUE (building one is the slow part, and a
    non-unique index changes no insert), and a downgrade's table gets its v1 definition and triggers
    without its rows (sqlite_rebuild.rebuild_definition), so the lock is held for milliseconds. Returns {"ok", "failures", "notes", "tables", "views", "lock_ms", ...}."""
    with rolled_back_writer(path, busy_timeout_s) as conn:
        settings = rebuild_settings(conn) if downgrading(conn, catalog, target) else proof_settings(conn)
        try:
            enforced = bool(conn.execute("PRAGMA foreign_keys").fetchone()[0])
            conn.execute("BEGIN IMMEDIATE")
            locked = time.monotonic()
            try:
                result = proof_transaction(conn, catalog, options, target, path)
            finally:
                conn.execute("ROLLBACK")
            result["lock_ms"] = round((time.monotonic() - locked) * 1000, 1)
            result["foreign_keys"] = enforced
            return result
        finally:
            put_back(conn, settings)


def proof_transaction(conn: sqlite3.Connection, catalog: Catalog, options: dict[str, bool], target: int,
                      path: str) -> dict:
    inspection, steps, direction = plan(conn, catalog, options, target, path)
    if not [s for s in steps if s.action != "skip"]:
        return {"ok": True, "failures": [], "notes": ["no change planned"], "tables": [], "views": []}
    added, removed = altered_by(steps, direction)
    proof = baseline(conn, added, removed)
    now = utc_now()
    for step in steps:
        if step.action == "skip" or (step.kind == "index" and step.action in ("create", "drop")
                                     and "UNIQUE" not in step.sql.upper().split("INDEX", 1)[0]):
            continue
        try:
            if step.action == "rebuild":
                # The table's v1 definition and its triggers, without copying its rows: milliseconds
                # whatever its size, and what the daemon's inserts meet is the same.
                rebuild_definition(conn, step.name, step.data["original_sql"])
            else:
                apply_step(conn, step, now)
        except sqlite3.Error as err:
            proof.failures = [f"{path}: {step.file} fails at {step.object}: {err}; " + clash_fix(conn, step, str(err))]
            break
    else:
        after(conn, proof, direction, path, (inspection.version, target))
    return dict(proof.as_dict(), ok=not proof.failures)


def clash_fix(conn: sqlite3.Connection, step: Step, error: str) -> str:
    """What to do when a step of the change fails in the proof (an object of another kind holds its name)."""
    name = step.name.split(".", 1)[0]
    row = conn.execute("SELECT type, name FROM sqlite_master WHERE name = ? COLLATE NOCASE", (name,)).fetchone()
    if "already" in error and row:
        return (f"the database has a {row[0]} named {row[1]}, which the change needs for its {step.kind}: rename or "
                "drop it after review, then rerun")
    return "fix what the error names, then rerun"


def rebuild_settings(conn: sqlite3.Connection) -> dict[str, int]:
    """Set what a table rebuild needs; return the values to put back."""
    previous = {pragma: conn.execute(f"PRAGMA {pragma}").fetchone()[0] for pragma in REBUILD_PRAGMAS}
    for pragma, value in REBUILD_PRAGMAS.items():
        conn.execute(f"PRAGMA {pragma} = {value}")
    return previous


def write_in_steps(conn: sqlite3.Connection, catalog: Catalog, options: dict[str, bool], target: int,
                   path: str, busy_timeout_s: float, result: dict) -> None:
    """Online mode: one short BEGIN IMMEDIATE transaction per object, then one for the history rows.

    Every v2 object is additive (a nullable column, indexes, new tables), so v1 code keeps
    working on each intermediate state, and each of them is a "partial" database the engine
    recognises: a rerun finishes it, a downgrade undoes it (each object's provenance commits with
    it). The version row comes last, so nothing claims v2 before all of v2 is there. Each
    transaction plans again under its lock, so a step done meanwhile (by hand, or by a run that
    died) is skipped, never repeated.
    """
    started = time.monotonic()
    applied: list[Step] = []
    windows: list[tuple[float, float]] = []  # (began, ended) of each transaction, epoch seconds
    settings = proof_settings(conn)
    try:
        write_steps(conn, catalog, options, target, path, busy_timeout_s, applied, windows)
    finally:
        put_back(conn, settings)
    result["steps"] = [s.as_dict() for s in applied]
    result["changed"] = bool(applied)
    result["to_version"] = target
    result["seconds"] = round(time.monotonic() - started, 4)
    result["longest_transaction_seconds"] = round(max((s.data.get("transaction_seconds", 0) for s in applied),
                                                      default=0.0), 4)
    result["transactions"] = len({s.data.get("transaction") for s in applied})
    result["transaction_windows"] = windows


def write_steps(conn: sqlite3.Connection, catalog: Catalog, options: dict[str, bool], target: int, path: str,
                busy_timeout_s: float, applied: list[Step], windows: list) -> None:
    transactions = 0
    while True:
        begun = time.monotonic()
        conn.execute("BEGIN IMMEDIATE")
        try:
            inspection, steps, _direction = plan(conn, catalog, options, target, path)
            creates = [s for s in steps if s.action == "create"]
            batch = creates[:1] or [s for s in steps if s.action in ("adopt", "record")]
            # The v1 daemon writes on each committed step: a step that breaks its inserts never commits.
            proof = baseline(conn, *altered_by(batch, "up"))
            apply_steps(conn, catalog, options, batch)
            refuse_broken_writes(after(conn, proof, "up", path, (inspection.version, target)),
                                 "this step was rolled back")
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
        transactions += 1
        windows.append((round(time.time() - (time.monotonic() - begun), 4), round(time.time(), 4)))
        for step in batch:
            step.data = dict(step.data, transaction=transactions, transaction_seconds=time.monotonic() - begun)
        applied.extend(batch)
        # An index build leaves its pages in the -wal; copied into the database here (PASSIVE: the
        # daemon's writes never wait for it), the daemon's own next commit does not have to, and
        # its stop at the restart does not either.
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        if not creates:
            break
        yield_to_writers(conn)


WRITER_TURN_S = 0.15  # longer than SQLite's longest busy-handler sleep (100 ms) plus one short write


def yield_to_writers(conn: sqlite3.Connection, turn_s: float = WRITER_TURN_S) -> float:
    """Let a writer that waited for this step's lock commit before the next step takes it (it sleeps in its
    busy handler, up to 100 ms a time: without this the next BEGIN IMMEDIATE wins, and it waits through
    several steps in a row). Returns the seconds waited: until another connection committed (PRAGMA
    data_version moved), or turn_s when nobody writes."""
    began = time.monotonic()
    seen = conn.execute("PRAGMA data_version").fetchone()[0]
    while time.monotonic() - began < turn_s:
        time.sleep(0.002)
        if conn.execute("PRAGMA data_version").fetchone()[0] != seen:
            break
    return time.monotonic() - began


# --- showing what changes ------------------------------------------------------------------------------

def schema_sql(conn: sqlite3.Connection) -> str:
    """The whole schema as SQL, one statement per object, for diffs and reports."""
    rows = conn.execute("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' "
                        "ORDER BY tbl_name, type DESC, name").fetchall()
    return "".join(f"{' '.join(row[0].split())};\n" for row in rows)


def planned_schema(conn: sqlite3.Connection, steps: list[Step]) -> str:
    """The schema after the steps: the same steps run on a schema-only in-memory copy (kilobytes, never
    the data), so the diff shows what the real run will leave, rebuilt tables included."""
    with closing(sqlite3.connect(":memory:", isolation_level=None)) as scratch:
        scratch.execute("PRAGMA legacy_alter_table = 1")
        for (sql,) in conn.execute("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' "
                                   "ORDER BY CASE type WHEN 'table' THEN 0 WHEN 'index' THEN 1 WHEN 'view' THEN 2 "
                                   "ELSE 3 END, rowid"):
            try:
                scratch.execute(sql)
            except sqlite3.OperationalError:
                continue  # a virtual table's shadow tables, made again by the virtual table itself
        now = utc_now()
        for step in steps:
            if step.action in ("create", "drop", "rebuild"):
                apply_step(scratch, step, now)
        history = [f"-- {step.sql}\n" for step in steps if step.action in ("record", "adopt", "delete", "restore")]
        return schema_sql(scratch) + "".join(history)


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
        "adopted": [s.object for s in steps if s.action == "adopt" and s.provenance == "adopted"],
        "schema_warnings": inspection.warnings,
    }
