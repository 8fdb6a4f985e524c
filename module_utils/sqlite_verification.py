"""Verify a state database against a schema version: DB-SCHEMA-006 Phase 4, made complete.

Every check runs, and every failed one is reported, so one run tells the operator everything
that is wrong. All of them read one snapshot: a single read transaction on a read-only
connection, safe while the daemon writes (in WAL mode the daemon is not even slowed down).

The seed's seven checks (schema_version, v1_tables, schema_version_table, optional_table, indexes,
integrity, sample_queries) plus: definitions (every object has the shape the migration files intend,
sqlite_schema.inspect), foreign_keys, row_counts (against a backup manifest), query_plans (each index
serves its `-- used-by:` query) and checksums (the recorded applied files are still those on disk).

Plain Python, no Ansible import: library/sqlite_verify.py only wires verify_database() to Ansible.
"""
from __future__ import annotations

import json
import os
import re
import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from ansible.module_utils.sqlite_baseline import describe, foreign_key_state, introduced, is_clean, state_before
from ansible.module_utils.sqlite_catalog import Catalog, as_catalog
from ansible.module_utils.sqlite_common import (
    DEFAULT_BUSY_TIMEOUT_S, VerificationError, connect_readonly, integrity_result, quote_identifier, rolled_back_writer,
    sqlite_error_text, table_row_counts)
from ansible.module_utils.sqlite_history import HISTORY_TABLES, VersionInfo
from ansible.module_utils.sqlite_schema import (
    DIFFERENT, INCOMPLETE, MISSING, VERSION_TABLE, Inspection, checksum_problems, current_version, inspect,
    read_versions)
from ansible.module_utils.sqlite_proof import foreign_keys_declared, prove_current
from ansible.module_utils.sqlite_shapes import Names, fold, index_shape
from ansible.module_utils.sqlite_touched import check_touched

SAMPLE_TABLES = ("enforcement_log", "positions", "orders")
INTEGRITY_LEVELS = ("integrity", "quick", "none")
ROW_COUNT_MODES = ("at_least", "equal")
FOREIGN_KEY_ROWS = 20
BASELINE_VERSION = 1  # files/migrations/v1: what rollback_v2.yml restores
CHECK_NAMES = ("schema_version", "v1_tables", "schema_version_table", "optional_table", "indexes", "integrity",
               "sample_queries", "definitions", "foreign_keys", "row_counts", "query_plans", "checksums", "writes")


@dataclass
class Check:
    name: str
    ok: bool
    detail: str

    def as_dict(self) -> dict:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}

    def failure(self) -> str:
        return f"{self.name}: {self.detail}"


def guarded(name: str, check, *args) -> Check:
    """Run one check; a SQLite error inside it (a damaged page, a missing table) fails only that check."""
    try:
        return check(*args)
    except sqlite3.Error as err:
        return Check(name, False, f"{type(err).__name__}: {err}")


# --- inputs ---------------------------------------------------------------------------------------

def manifest_version(manifest: str | os.PathLike) -> int:
    """The schema version a backup manifest records (read_manifest_counts has checked the file)."""
    version = json.loads(Path(manifest).read_text(encoding="utf-8")).get("schema_version")
    return version if isinstance(version, int) else 0


def read_manifest_counts(manifest: str | os.PathLike) -> dict[str, int]:
    """The row counts a backup manifest recorded (the numbers no table may fall below)."""
    manifest = Path(manifest)
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise VerificationError(f"{manifest}: no such manifest; pass the manifest the backup task returned, "
                                "or omit manifest to skip the row count check") from err
    except (OSError, ValueError) as err:
        raise VerificationError(f"{manifest}: unreadable manifest ({err}); pass the .manifest.json written next "
                                "to the backup") from err
    counts = data.get("row_counts") if isinstance(data, dict) else None
    if not isinstance(counts, dict) or not all(
            isinstance(name, str) and isinstance(n, int) and not isinstance(n, bool) for name, n in counts.items()):
        raise VerificationError(f"{manifest}: the manifest has no row_counts mapping of table to count; pass the "
                                ".manifest.json written next to the backup")
    return counts


def resolve_target(catalog: Catalog, target_version: int | None, path: str) -> int:
    target = catalog.newest_version if target_version is None else target_version
    if target not in catalog.files:
        raise VerificationError(f"{path}: target_version {target} is not one of the versions in {catalog.directory} "
                                f"({', '.join(str(v) for v in sorted(catalog.files))}); fix target_version")
    return target


def required_indexes(catalog: Catalog, target: int, options: dict[str, bool]) -> list[tuple[str, str | None]]:
    """(index, used_by query) for every index the migrations up to the target create.

    The baseline's own indexes are not required here: a field database missing one was like that
    before the migration (definitions reports it as a warning); this check is about the change.
    """
    return [(s.obj.name, s.used_by)
            for version in range(catalog.baseline_version + 1, target + 1)
            for migration in catalog.files_for(version, options)
            for s in migration.statements if s.obj.kind == "index"]


# --- the checks: each reads the connection's snapshot and returns one Check -----------------------

def check_schema_version(conn: sqlite3.Connection, target: int, baseline: int) -> Check:
    versions = read_versions(conn)
    recorded = versions.version
    if versions.table == MISSING:
        if target == baseline:
            return Check("schema_version", True, f"no {VERSION_TABLE} table: the v{baseline} baseline")
        return Check("schema_version", False, f"no {VERSION_TABLE} table (a v{baseline} database), expected v{target}")
    if recorded is None:
        return Check("schema_version", False,
                     f"{VERSION_TABLE} records no successful version (MAX(version) WHERE success = 1 is NULL), "
                     f"expected v{target}")
    if recorded != target:
        return Check("schema_version", False, f"MAX(version) WHERE success = 1 is {recorded}, expected {target}")
    return Check("schema_version", True, f"MAX(version) WHERE success = 1 is {recorded}")


def check_v1_tables(conn: sqlite3.Connection, catalog: Catalog) -> Check:
    wanted = [s.obj.name for f in catalog.files[catalog.baseline_version] for s in f.statements
              if s.obj.kind == "table"]
    names = Names(conn)
    missing = [name for name in wanted if names.table(name) is None]
    if missing:
        return Check("v1_tables", False, f"missing v1 table(s): {', '.join(missing)}")
    return Check("v1_tables", True, f"all {len(wanted)} v1 tables exist")


def check_schema_version_table(conn: sqlite3.Connection, target: int, baseline: int) -> Check:
    if target == baseline:
        return Check("schema_version_table", True, f"not required for v{baseline}")
    if Names(conn).table(VERSION_TABLE) is None:
        return Check("schema_version_table", False, f"missing {VERSION_TABLE} table")
    return Check("schema_version_table", True, f"{VERSION_TABLE} table exists")


def check_optional_table(conn: sqlite3.Connection, catalog: Catalog, target: int, options: dict[str, bool]) -> Check:
    """The tables of the optional files (`-- riskmgr: option=NAME`) whose option is on."""
    if target == catalog.baseline_version:
        return Check("optional_table", True, f"not required for v{target}")
    names = Names(conn)
    optional = [(f.option, s.obj.name) for version in range(catalog.baseline_version + 1, target + 1)
                for f in catalog.files[version] if f.option for s in f.statements if s.obj.kind == "table"]
    wanted = [(option, table) for option, table in optional if options.get(option)]
    missing = [f"{table} ({option} is true)" for option, table in wanted if names.table(table) is None]
    if missing:
        return Check("optional_table", False, f"missing {', '.join(missing)}")
    if not wanted:
        off = sorted({option for option, _table in optional})
        return Check("optional_table", True, f"not required ({', '.join(off) or 'no option'} false)")
    return Check("optional_table", True, f"{', '.join(table for _option, table in wanted)} exist(s)")


def check_indexes(conn: sqlite3.Connection, wanted: list[str]) -> Check:
    if not wanted:
        return Check("indexes", True, "no index required beyond the baseline")
    names = Names(conn)
    missing = [name for name in wanted if names.index(name) is None]
    if missing:
        return Check("indexes", False, f"missing index(es): {', '.join(missing)}")
    return Check("indexes", True, f"all {len(wanted)} required indexes exist: {', '.join(wanted)}")


def check_integrity(conn: sqlite3.Connection, level: str, touched: dict | None = None) -> Check:
    if level == "none":
        return Check("integrity", True, "not run (integrity: none)")
    if touched is not None:  # only what a migration just wrote (sqlite_touched): the downtime's check
        return Check("integrity", *check_touched(conn, level, touched))
    try:
        outcome = integrity_result(conn, level)
    except sqlite3.DatabaseError as err:  # some damage stops the pragma itself before it can list errors
        return Check("integrity", False, f"{level}_check could not finish: {err}")
    if not outcome["ok"]:
        # One error can span lines ("*** in database main ***\nOn tree page 194 ..."): one line each.
        lines = [line.strip() for error in outcome["errors"] for line in error.splitlines() if line.strip()]
        return Check("integrity", False, f"{level}_check reported: " + "; ".join(lines))
    notes = f"; {'; '.join(outcome['notes'])}" if outcome["notes"] else ""
    return Check("integrity", True, f"{level}_check ok in {outcome['seconds']}s{notes}")


def check_sample_queries(conn: sqlite3.Connection) -> Check:
    errors, counts = [], []
    for table in SAMPLE_TABLES:
        try:
            counts.append(f"{table} {conn.execute(f'SELECT COUNT(*) FROM {quote_identifier(table)}').fetchone()[0]}")
        except sqlite3.Error as err:
            errors.append(f"SELECT COUNT(*) FROM {table} failed: {err}")
    if errors:
        return Check("sample_queries", False, "; ".join(errors))
    return Check("sample_queries", True, "row counts " + ", ".join(counts))


def check_definitions(inspection: Inspection, target: int, baseline: int, checksum_texts: list[str]) -> Check:
    """The state must be the target's: for a later version every object it requires there in a usable form
    and recorded as made or adopted by its migration; for the baseline, nothing of a migration left."""
    issues = []
    if inspection.state != f"v{target}":
        issues.append(f"state is {inspection.state}, expected v{target}")
    changed = [o for o in inspection.objects if o.required and o.version > baseline]
    missing = [str(o.obj) for o in changed if o.status in (MISSING, INCOMPLETE)]
    different = [f"{o.obj} ({o.detail})" for o in changed if o.status == DIFFERENT]
    unrecorded = [str(o.obj) for o in changed if o.status not in (MISSING, INCOMPLETE, DIFFERENT) and not o.provenance]
    if missing:
        issues.append(f"missing: {', '.join(missing)}")
    if different:
        issues.append(f"different definition: {'; '.join(different)}")
    if unrecorded:
        issues.append(f"not recorded in the provenance: {', '.join(unrecorded)}")
    problems = [p for p in inspection.problems if p not in checksum_texts]
    if problems:
        issues.append("; ".join(problems))
    elif inspection.problems and inspection.state == "unknown":
        issues.append("see checksums")
    if issues:
        return Check("definitions", False, "; ".join(issues))
    if target == baseline:
        return Check("definitions", True, f"state v{target}: the v{target} tables and the columns later versions "
                                          "use are there, and no migration has left anything")
    return Check("definitions", True, f"state v{target}, {len(changed)} required objects present in a usable "
                                      "form and recorded")


def check_foreign_keys(conn: sqlite3.Connection, before: dict | None, source: str | None) -> Check:
    """No row without its parent and no foreign key mismatch that the state before the change did not have
    (sqlite_baseline); without a state before, every one counts."""
    now = foreign_key_state(conn)
    new = introduced(before, now)
    if before is None:
        if is_clean(now):
            return Check("foreign_keys", True, "PRAGMA foreign_key_check returned no rows")
        shown = f"; first rows: {'; '.join(now['examples'])}" if now["examples"] else ""
        return Check("foreign_keys", False, f"{describe(now)}{shown} (no state before the change to compare with: "
                                            "pass the manifest or baseline_from to judge only what the change "
                                            "introduced)")
    kept = "" if is_clean(now) else f"; there before the change, not judged: {describe(before)}"
    if not is_clean(new):
        return Check("foreign_keys", False, f"introduced by the change: {describe(new)} (compared with {source}){kept}")
    return Check("foreign_keys", True, f"nothing the state before ({source}) did not have{kept}")


def target_tables(catalog: Catalog, target: int) -> set[str]:
    """Every table some file up to the target version creates (optional ones included)."""
    return {statement.obj.name for migration in catalog.all_files() if migration.version <= target
            for statement in migration.statements if statement.obj.kind == "table"}


def check_row_counts(counts: dict[str, int], count_errors: dict[str, str], expected: dict[str, int] | None,
                     mode: str, manifest: str | None, tables: set[str] | None = None) -> Check:
    """Compare with a backup manifest, over the tables the target schema has (by folded name).

    A manifest taken before a downgrade lists tables that the downgrade drops on purpose
    (their rows stay in that backup); only the target's own tables can be held to it. The history
    tables are held to "at least" whatever the mode: the migration writes its own rows there (a
    schema_version the database had before gets the version row).
    """
    if expected is None:
        return Check("row_counts", True, "not compared (no manifest given)")
    if tables is not None:
        wanted_tables = {fold(table) for table in tables}
        expected = {table: wanted for table, wanted in expected.items() if fold(table) in wanted_tables}
    relation = ">=" if mode == "at_least" else "=="
    short = []
    for table, wanted in sorted(expected.items()):
        at_least = mode == "at_least" or fold(table) in HISTORY_TABLES
        if table in count_errors:
            short.append(f"{table} cannot be counted ({count_errors[table]}), manifest {wanted}")
        elif table not in counts:
            short.append(f"{table} missing now, manifest {wanted}")
        elif (counts[table] < wanted) if at_least else (counts[table] != wanted):
            short.append(f"{table} {counts[table]} now, manifest {wanted}")
    if short:
        return Check("row_counts", False, f"not {relation} the manifest {manifest}: {'; '.join(short)}")
    return Check("row_counts", True, f"all {len(expected)} tables {relation} the manifest {manifest}")


def index_in_plan(index: str, plan: str) -> bool:
    # A word match: idx_daily_unrealized_pnl_date must not match ..._account_date's plan.
    return re.search(rf"\bINDEX {re.escape(index)}\b", plan) is not None


def query_plan(conn: sqlite3.Connection, query: str) -> str:
    return " | ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {query}"))


def forced_plan(conn: sqlite3.Connection, index: str, query: str) -> str | None:
    """The plan with the index forced (INDEXED BY after the query's table), or None when it cannot be."""
    shape = index_shape(conn, index)
    if shape is None:
        return None
    forced, count = re.subn(rf"(\bFROM\s+)(\"?){re.escape(shape.table)}\2(?=\s|$)",
                            lambda m: f"{m.group(0)} INDEXED BY {quote_identifier(shape.name)}", query, count=1,
                            flags=re.I)
    return query_plan(conn, forced) if count else None


def serves(plan: str, index: str, query: str) -> bool:
    """The index narrows the search, or delivers the ORDER BY without a sort of its own."""
    # "SEARCH orders USING ..." since SQLite 3.36, "SEARCH TABLE orders USING ..." before it.
    searched = re.search(rf"\bSEARCH (TABLE )?\S+ USING (COVERING )?INDEX {re.escape(index)}\b", plan, re.I)
    ordered = "ORDER BY" in query.upper() and index_in_plan(index, plan) and "TEMP B-TREE FOR ORDER BY" not in plan
    return bool(searched or ordered)


def check_query_plans(conn: sqlite3.Connection, wanted: list[tuple[str, str | None]]) -> Check:
    """Each index serves the query its `-- used-by:` line names. The planner's own choice proves it; when
    the planner prefers an index the database already had (say a unique one), the new index must still
    serve the query when forced with INDEXED BY (a field database's other indexes are not ours to judge)."""
    with_query = [(index, query) for index, query in wanted if query]
    failures, notes = [], []
    for index, query in with_query:
        try:
            plan = query_plan(conn, query)
            if index_in_plan(index, plan):
                continue
            forced = forced_plan(conn, index, query)
        except sqlite3.Error as err:
            failures.append(f"{index}: EXPLAIN QUERY PLAN {query} failed: {err}")
            continue
        if forced is not None and serves(forced, index, query):
            notes.append(f"{index} (the planner prefers: {plan})")
        else:
            failures.append(f"{index} does not serve {query} (plan: {plan}; forced: {forced})")
    if failures:
        return Check("query_plans", False, "; ".join(failures))
    if not with_query:
        return Check("query_plans", True, "no index with a used-by query to check")
    return Check("query_plans", True, f"{len(with_query)} queries are served by their index: "
                                      + ", ".join(index for index, _ in with_query)
                                      + (f"; usable but not chosen: {'; '.join(notes)}" if notes else ""))


def check_checksums(versions: VersionInfo, problems: list[str]) -> Check:
    if problems:
        return Check("checksums", False, "; ".join(problems))
    if not versions.ledger:
        return Check("checksums", True, "no applied migration file recorded")
    return Check("checksums", True, f"{len(versions.ledger)} recorded migration files match their sha256")


def later_columns(catalog: Catalog) -> dict[str, list[str]]:
    """{table: [column]} of every column a later version adds to a table."""
    found: dict[str, list[str]] = {}
    for migration in catalog.all_files():
        for statement in migration.statements:
            if migration.version > catalog.baseline_version and statement.obj.kind == "column":
                table, column = statement.obj.name.split(".", 1)
                found.setdefault(table, []).append(column)
    return found


def check_writes(path: str, catalog: Catalog, busy_timeout_s: float, target: int | None = None) -> Check:
    """The daemon's inserts on the database as it is: into each table a later version adds a column to
    (and each table whose triggers name one), as code without those columns writes it and, where a column
    is there, as the target's code does; in a BEGIN IMMEDIATE transaction that is always rolled back (the
    file never changes). After a downgrade this is what the daemon of the target about to start will do."""
    real = os.path.realpath(path)
    if not (os.access(real, os.W_OK) and os.access(os.path.dirname(real), os.W_OK)):
        return Check("writes", True, "not run: this user cannot write the file or its directory, so it cannot try "
                                     "the daemon's inserts (run as the database owner to include them)")
    try:
        with rolled_back_writer(path, busy_timeout_s) as conn:
            if foreign_keys_declared(conn):
                conn.execute("PRAGMA foreign_keys = 1")
            conn.execute("BEGIN IMMEDIATE")
            try:
                failures, notes, proven = prove_current(conn, later_columns(catalog), target)
            finally:
                conn.execute("ROLLBACK")
    except sqlite3.OperationalError as err:
        if "locked" in str(err) or "busy" in str(err):
            return Check("writes", True, f"not run: another writer held the write lock for {busy_timeout_s:g}s "
                                         "(a running daemon is writing; its own inserts are the proof)")
        return Check("writes", False, f"the inserts could not be tried: {sqlite_error_text(path, err, busy_timeout_s)}")
    except sqlite3.Error as err:
        return Check("writes", False, f"the inserts could not be tried: {sqlite_error_text(path, err, busy_timeout_s)}")
    if failures:
        return Check("writes", False, "; ".join(failures))
    detail = f"inserts pass into {', '.join(proven) or 'no table'} (rolled back)"
    return Check("writes", True, detail + (f"; {'; '.join(notes)}" if notes else ""))


# --- the run ---------------------------------------------------------------------------------------

def schema_checks(conn: sqlite3.Connection, catalog: Catalog, options: dict[str, bool],
                  target: int) -> tuple[list[Check], Inspection | None]:
    """definitions and checksums, from one inspect() of the snapshot."""
    try:
        inspection = inspect(conn, catalog, options, target)
    except sqlite3.Error as err:
        text = f"schema could not be read: {type(err).__name__}: {err}"
        return [Check("definitions", False, text), Check("checksums", False, text)], None
    checksum_texts = checksum_problems(catalog, inspection.versions)
    return [check_definitions(inspection, target, catalog.baseline_version, checksum_texts),
            check_checksums(inspection.versions, checksum_texts)], inspection


def run_checks(conn: sqlite3.Connection, catalog: Catalog, target: int, options: dict[str, bool],
               integrity: str, expected_counts: dict[str, int] | None, row_count_mode: str,
               manifest: str | None, before: tuple[dict | None, str | None] = (None, None),
               touched: dict | None = None) -> tuple[list[Check], Inspection | None, dict[str, int]]:
    baseline = catalog.baseline_version
    indexes = required_indexes(catalog, target, options)
    count_errors: dict[str, str] = {}
    counts = table_row_counts(conn, count_errors)
    (definitions, checksums), inspection = schema_checks(conn, catalog, options, target)
    checks = [
        guarded("schema_version", check_schema_version, conn, target, baseline),
        guarded("v1_tables", check_v1_tables, conn, catalog),
        guarded("schema_version_table", check_schema_version_table, conn, target, baseline),
        guarded("optional_table", check_optional_table, conn, catalog, target, options),
        guarded("indexes", check_indexes, conn, [name for name, _ in indexes]),
        guarded("integrity", check_integrity, conn, integrity, touched),
        guarded("sample_queries", check_sample_queries, conn),
        definitions,
        guarded("foreign_keys", check_foreign_keys, conn, *before),
        check_row_counts(counts, count_errors, expected_counts, row_count_mode, manifest,
                         target_tables(catalog, target)),
        guarded("query_plans", check_query_plans, conn, indexes),
        checksums,
    ]
    return checks, inspection, counts


def verify_database(path: str, migrations_dir: Catalog | str | Path, target_version: int | None = None,
                    options: dict[str, bool] | None = None, manifest: str | None = None,
                    integrity: str = "integrity", row_count_mode: str = "at_least",
                    busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S, baseline_from: str | None = None,
                    touched: dict | None = None) -> dict:
    """Run every check on one read snapshot and return the module result (never writes a byte); touched
    (what a migration wrote, sqlite_touched) limits the integrity check to it. A failed check is a result
    (ok false, failed_checks); VerificationError / RiskmgrError: it could not run (not SQLite, locked...)."""
    started = time.monotonic()
    options = options or {}
    catalog = as_catalog(migrations_dir)
    target = resolve_target(catalog, target_version, path)
    expected = read_manifest_counts(manifest) if manifest else None
    if expected is not None and manifest_version(manifest) > target:
        # A downgrade deletes the history rows of the versions it undoes: the engine's own record, not data.
        expected = {table: n for table, n in expected.items() if fold(table) not in HISTORY_TABLES}
    before = state_before(baseline_from, manifest, busy_timeout_s)
    try:
        with closing(connect_readonly(path, busy_timeout_s)) as conn:
            # One read transaction: counts, schema and plans all describe the same moment even
            # while the daemon commits (WAL readers see the snapshot taken at the first read).
            conn.execute("BEGIN")
            try:
                # The first read, outside any check: locked or not-a-database stops the run here.
                conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
                version = current_version(conn)
                checks, inspection, counts = run_checks(conn, catalog, target, options, integrity, expected,
                                                        row_count_mode, manifest, before, touched)
            finally:
                conn.execute("ROLLBACK")  # read-only: nothing to commit, just end the snapshot
    except sqlite3.Error as err:
        raise VerificationError(sqlite_error_text(path, err, busy_timeout_s)) from err
    checks.append(check_writes(path, catalog, busy_timeout_s, target))
    failed = [check.failure() for check in checks if not check.ok]
    return {
        "changed": False,
        "ok": not failed,
        "target_version": target,
        "version": version,
        "state": inspection.state if inspection else "unknown",
        "checks": [check.as_dict() for check in checks],
        # Not "failed": Ansible reads result["failed"] as the task's own status (fail_json sets it).
        "failed_checks": failed,
        "row_counts": counts,
        "schema_warnings": inspection.warnings if inspection else [],
        "seconds": round(time.monotonic() - started, 4),
    }


def failure_message(path: str, result: dict) -> str:
    """One line: which database, which version, every failed check, and what to do next."""
    target = result["target_version"]
    if target == BASELINE_VERSION:
        remedy = (f"keep the daemon stopped and restore another verified v{target} backup (rollback.yml -e "
                  f"riskmgr_target_version={target}, or rollback_v2.yml from v2), or fix the cause and verify again")
    else:
        playbooks = ("rollback_v2.yml", "migrate_v2.yml") if target == 2 else \
            ("rollback.yml", f"migrate.yml -e riskmgr_target_version={target}")
        remedy = (f"keep the daemon stopped; roll back with {playbooks[0]} (restores the verified pre-migration "
                  f"backup), or fix the cause and rerun {playbooks[1]}")
    failed = " | ".join(" ".join(line.split()) for line in result["failed_checks"])  # stays one line
    return f"{path}: verification against v{target} failed: {failed}; {remedy}"

