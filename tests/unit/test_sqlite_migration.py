"""The migration engine against real SQLite files in every state the field has.

migrate_database / inspect / gather are called directly, on databases built by tests/fixtures.py
with the real baseline and the real files/migrations SQL. Every outcome is read back through a
fresh connection (fixtures.row_counts / schema_objects or sqlite3.connect here), never from the
engine's own return value alone.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import sysconfig
import tempfile
import time
from contextlib import closing
from pathlib import Path

import pytest
from fixtures import MIGRATIONS, V1_ROWS, copy_db, row_counts, run_sql, schema_objects, sha256
from sqlite_catalog import load_catalog
from sqlite_common import MigrationError, RiskmgrError
from sqlite_facts import FactsRequest, gather
from sqlite_migration import migrate_database
from sqlite_schema import inspect

ROOT = Path(__file__).resolve().parents[2]
CATALOG = load_catalog(MIGRATIONS)
BASELINE = CATALOG.files[1][0]
V1_OBJECTS = {(s.obj.kind, s.obj.name) for s in BASELINE.statements}
V1_ENFORCEMENT_COLUMNS = ["id", "account_id", "rule_id", "action", "reason", "success", "timestamp"]
V2_CORE = {("table", "schema_migration_objects"), ("table", "schema_version"), ("index", "idx_schema_version_applied"), ("table", "schema_migration_files"),
           ("index", "idx_enforcement_log_success"), ("index", "idx_positions_updated"),
           ("index", "idx_orders_state_account")}
PNL = {("table", "daily_unrealized_pnl"), ("index", "idx_daily_unrealized_pnl_date"),
       ("index", "idx_daily_unrealized_pnl_account_date")}
CORE_FILES = ["v2/005_schema_migration_objects.sql", "v2/010_schema_version.sql", "v2/020_enforcement_log_execution_time.sql", "v2/030_analytics_indexes.sql"]
PNL_FILE = "v2/040_daily_unrealized_pnl.sql"
WITH_PNL = {"track_unrealized_pnl": True}


# --- helpers: everything read through a fresh connection -------------------------------------------

def file_hashes(path: Path) -> dict[str, str]:
    """sha256 of the database and of its -wal: the files that hold committed data.

    A read-only connection to a WAL database (fixtures.row_counts as much as the engine's check
    mode) leaves an empty -wal and a -shm behind; an empty -wal holds nothing, so it counts as absent.
    """
    return {suffix: sha256(f"{path}{suffix}") for suffix in ("", "-wal")
            if Path(f"{path}{suffix}").exists() and Path(f"{path}{suffix}").stat().st_size > 0}


def new_files(path: Path, listing_before: list[str]) -> set[str]:
    """Files that appeared next to the database, beyond the -wal/-shm any reader may create."""
    return set(os.listdir(path.parent)) - set(listing_before) - {f"{path.name}-wal", f"{path.name}-shm"}


def fresh(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def columns(path: Path, table: str) -> list[str]:
    with closing(fresh(path)) as conn:
        return [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]


def integrity(path: Path) -> list[str]:
    with closing(fresh(path)) as conn:
        return [row[0] for row in conn.execute("PRAGMA integrity_check")]


def version_rows(path: Path) -> list[tuple]:
    with closing(fresh(path)) as conn:
        return conn.execute("SELECT version, success FROM schema_version ORDER BY version").fetchall()


def ledger(path: Path) -> dict[str, tuple[int, str]]:
    with closing(fresh(path)) as conn:
        return {name: (version, digest) for version, name, digest in
                conn.execute("SELECT version, filename, sha256 FROM schema_migration_files")}


def fresh_state(path: Path, options: dict | None = None) -> str:
    with closing(fresh(path)) as conn:
        return inspect(conn, CATALOG, options or {}).state


def plan(result: dict) -> list[tuple]:
    """A step list without durations: what check mode promises and a real run applies."""
    return [(s["file"], s["object"], s["action"], s["sql"]) for s in result["steps"]]


def file_sha(ledger_name: str) -> str:
    return hashlib.sha256((MIGRATIONS / ledger_name).read_bytes()).hexdigest()


def migrate(path: Path, **kwargs) -> dict:
    kwargs.setdefault("migrations_dir", MIGRATIONS)
    return migrate_database(str(path), **kwargs)


# --- field states that migrate --------------------------------------------------------------------

# fixture -> (state_before, from_version, v2 objects created, objects adopted as already present)
MIGRATING = {
    "v1_db": ("v1", 1, V2_CORE, set()),
    "v1_wal_db": ("v1", 1, V2_CORE, set()),
    # v2 objects made by hand, no history: still v1 (the daemon reads v1, the engine left no trace)
    "half_way_db": ("v1", 1, V2_CORE - {("index", "idx_positions_updated")},
                    {"column enforcement_log.execution_time_ms", "index idx_positions_updated"}),
    "seed_phase1_db": ("partial", 2, V2_CORE - {("table", "schema_version"), ("index", "idx_schema_version_applied")},
                       {"table schema_version", "index idx_schema_version_applied"}),
}


@pytest.mark.parametrize("state", list(MIGRATING))
def test_field_state_migrates_to_v2_keeping_every_row(request, state):
    db = request.getfixturevalue(state)
    state_before, from_version, created, skipped = MIGRATING[state]
    objects_before, counts_before, hashes_before = schema_objects(db), row_counts(db), file_hashes(db)
    assert counts_before["orders"] == V1_ROWS

    check = migrate(db, check_mode=True, want_diff=True)
    assert file_hashes(db) == hashes_before, "check mode wrote to the database"
    assert check["changed"] and check["state_before"] == state_before and check["from_version"] == from_version
    assert {s["object"] for s in check["steps"] if s["action"] == "adopt"} == skipped
    assert check["skipped_steps"] == []

    result = migrate(db)
    assert result["changed"] and result["direction"] == "up" and result["to_version"] == 2
    assert plan(result) == plan(check), "check mode promised another plan than the run applied"

    # what reached the disk, through a fresh connection
    objects_after = schema_objects(db)
    assert objects_before <= objects_after
    assert objects_after - objects_before == created
    assert columns(db, "enforcement_log") == V1_ENFORCEMENT_COLUMNS + ["execution_time_ms"]
    assert ("table", "daily_unrealized_pnl") not in objects_after  # the option is off by default
    counts_after = row_counts(db)
    assert {t: counts_after[t] for t in counts_before} == counts_before
    assert version_rows(db) == [(1, 1), (2, 1)]
    assert set(ledger(db)) == set(CORE_FILES)
    assert integrity(db) == ["ok"]
    assert fresh_state(db) == "v2"

    hashes_v2 = file_hashes(db)
    again = migrate(db)
    assert not again["changed"] and again["steps"] == [] and again["direction"] == "none"
    assert again["state_before"] == "v2"
    assert file_hashes(db) == hashes_v2, "a rerun on v2 changed bytes"


def test_rows_committed_only_to_the_wal_survive_the_migration(v1_wal_db, tmp_path):
    main_file_only = tmp_path / "copy" / "state.db"  # prove the fixture: the 25 rows are not in state.db
    main_file_only.parent.mkdir()
    shutil.copy2(v1_wal_db, main_file_only)
    assert row_counts(main_file_only)["enforcement_log"] == V1_ROWS
    assert row_counts(v1_wal_db)["enforcement_log"] == V1_ROWS + 25

    migrate(v1_wal_db)
    assert row_counts(v1_wal_db)["enforcement_log"] == V1_ROWS + 25
    with closing(fresh(v1_wal_db)) as conn:
        assert conn.execute("SELECT COUNT(*) FROM enforcement_log WHERE rule_id = 'RULE-WAL'").fetchone()[0] == 25
        assert conn.execute("SELECT COUNT(*) FROM enforcement_log WHERE execution_time_ms IS NULL").fetchone()[0] \
            == V1_ROWS + 25
    assert fresh_state(v1_wal_db) == "v2"


def test_check_mode_diff_shows_the_new_schema_without_writing(v1_db):
    before = file_hashes(v1_db)
    result = migrate(v1_db, check_mode=True, want_diff=True)
    assert file_hashes(v1_db) == before
    diff = result["diff"]
    for name in ("idx_enforcement_log_success", "idx_positions_updated", "idx_orders_state_account",
                 "CREATE TABLE schema_version", "execution_time_ms"):
        assert name in diff["after"] and name not in diff["before"]
    assert str(v1_db) in diff["before_header"] and "v1" in diff["before_header"] and "v2" in diff["after_header"]
    assert schema_objects(v1_db) == V1_OBJECTS


def test_v2_database_is_left_alone_in_check_and_real_mode(v2_db):
    before, objects = file_hashes(v2_db), schema_objects(v2_db)
    check = migrate(v2_db, check_mode=True, want_diff=True)
    real = migrate(v2_db)
    for result in (check, real):
        assert not result["changed"] and result["steps"] == [] and "diff" not in result
        assert result["state_before"] == "v2" and result["from_version"] == result["to_version"] == 2
    assert file_hashes(v2_db) == before and schema_objects(v2_db) == objects


def test_history_records_both_versions_and_the_checksum_of_each_applied_file(v1_db):
    migrate(v1_db)
    with closing(fresh(v1_db)) as conn:
        rows = conn.execute("SELECT version, success, applied_at, description, migration_script, error_message "
                            "FROM schema_version ORDER BY version").fetchall()
    assert [(r[0], r[1]) for r in rows] == [(1, 1), (2, 1)]
    assert all(time.strptime(r[2], "%Y-%m-%d %H:%M:%S") for r in rows)
    assert rows[0][3].startswith("Schema v1: Baseline") and rows[1][5] is None
    assert rows[1][4] == ",".join(CORE_FILES)
    assert ledger(v1_db) == {name: (2, file_sha(name)) for name in CORE_FILES}


def test_seed_phase1_rows_are_kept_and_completed(seed_phase1_db):
    with closing(fresh(seed_phase1_db)) as conn:
        seed_rows = conn.execute("SELECT * FROM schema_version ORDER BY version").fetchall()
    migrate(seed_phase1_db)
    with closing(fresh(seed_phase1_db)) as conn:
        assert conn.execute("SELECT * FROM schema_version ORDER BY version").fetchall() == seed_rows
    assert set(ledger(seed_phase1_db)) == set(CORE_FILES)


# --- field states that are refused ----------------------------------------------------------------

# fixture -> text the refusal must carry besides the path (the cause and what to do)
REFUSED = {
    "other_shape_db": ["idx_positions_updated", "another definition", "rename or drop it by hand"],
    "newer_db": ["schema v3", "newer than the newest migration", "use the matching release"],
    "empty_file": ["empty", "check riskmgr_db_path"],
    "text_file": ["not a SQLite 3 database", "check riskmgr_db_path"],
    "missing_db": ["no such file", "check riskmgr_db_path"],
}


@pytest.mark.parametrize("state", list(REFUSED))
@pytest.mark.parametrize("check_mode", [True, False], ids=["check", "run"])
def test_field_state_is_refused_with_path_and_remedy_and_left_untouched(request, state, check_mode):
    db = request.getfixturevalue(state)
    directory_before = os.listdir(db.parent)
    hashes_before = file_hashes(db)
    with pytest.raises(RiskmgrError) as caught:
        migrate(db, check_mode=check_mode, want_diff=True)
    message = str(caught.value)
    assert message.startswith(f"{db}: ")
    assert "\n" not in message
    for fragment in REFUSED[state]:
        assert fragment in message
    assert file_hashes(db) == hashes_before
    assert new_files(db, directory_before) == set()  # no journal, no new state.db
    if state == "missing_db":
        assert not db.exists()


def test_other_shape_index_is_kept_as_it_was(other_shape_db):
    with pytest.raises(MigrationError):
        migrate(other_shape_db)
    with closing(fresh(other_shape_db)) as conn:
        sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'idx_positions_updated'").fetchone()[0]
    assert "account_id, updated_at" in sql
    assert schema_objects(other_shape_db) == V1_OBJECTS | {("index", "idx_positions_updated")}


def test_write_locked_database_is_refused_after_busy_timeout(locked_db):
    counts, hashes = row_counts(locked_db), file_hashes(locked_db)
    started = time.monotonic()
    with pytest.raises(MigrationError) as caught:
        migrate(locked_db, busy_timeout_s=0.5)
    waited = time.monotonic() - started
    message = str(caught.value)
    assert message.startswith(f"{locked_db}: ") and "locked by another process after 0.5s" in message
    assert "stop the daemon" in message and "database left unchanged" in message
    assert 0.4 < waited < 2.5  # busy_timeout is honoured, not a built-in default
    assert file_hashes(locked_db) == hashes and schema_objects(locked_db) == V1_OBJECTS
    # check mode only reads: it plans while the daemon holds the lock, and writes nothing
    check = migrate(locked_db, check_mode=True, busy_timeout_s=0.5)
    assert check["changed"] and check["state_before"] == "v1"
    assert file_hashes(locked_db) == hashes and row_counts(locked_db) == counts


def test_refused_catalog_leaves_the_database_untouched(v1_db, tmp_path):
    migrations = Path(shutil.copytree(MIGRATIONS, tmp_path / "migrations"))
    (migrations / "v2" / "050_data.sql").write_text("DELETE FROM orders;\n")
    before = file_hashes(v1_db)
    with pytest.raises(MigrationError, match="050_data.sql"):
        migrate(v1_db, migrations_dir=migrations)
    with pytest.raises(MigrationError, match="migrations directory not found"):
        migrate(v1_db, migrations_dir=tmp_path / "nowhere")
    assert file_hashes(v1_db) == before and row_counts(v1_db)["orders"] == V1_ROWS


# --- read-only directory: run as an unprivileged user ---------------------------------------------

NOBODY = 65534
RUNNER = r"""
import json, sys
import ansible.module_utils
ansible.module_utils.__path__.append(sys.argv[1])
from ansible.module_utils.sqlite_common import RiskmgrError
from ansible.module_utils.sqlite_migration import migrate_database
try:
    result = migrate_database(sys.argv[2], sys.argv[3], check_mode=sys.argv[4] == "check", busy_timeout_s=0.5)
    print(json.dumps({"ok": True, "changed": result["changed"],
                      "steps": [[s["file"], s["object"], s["action"], s["sql"]] for s in result["steps"]]}))
except RiskmgrError as err:
    print(json.dumps({"ok": False, "error": type(err).__name__, "msg": str(err)}))
"""


def as_nobody() -> None:
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


def nobody_python() -> list[str] | None:
    """A Python that user nobody can execute and import ansible with (the venv's may live under /root)."""
    env = dict(os.environ, PYTHONPATH=sysconfig.get_paths()["purelib"])
    for exe in (sys.executable, "/usr/bin/python3"):
        try:
            probe = subprocess.run([exe, "-B", "-c", "import ansible.module_utils"], preexec_fn=as_nobody, env=env,
                                   cwd="/", capture_output=True, timeout=30, check=False)
        except OSError:
            continue
        if probe.returncode == 0:
            return [exe, "-B"]
    return None


@pytest.fixture
def nobody_readonly_db(readonly_dir_db):
    """A copy of readonly_dir_db in a 0555 directory user nobody can reach (pytest's tmp_path is 0700)."""
    if os.geteuid() != 0:
        pytest.skip("not root: test_readonly_directory_as_this_user covers the read-only directory")
    python = nobody_python()
    if python is None:
        pytest.skip("no Python that user nobody (65534) can run with ansible importable")
    base = Path(tempfile.mkdtemp(prefix="riskmgr-ro-"))
    base.chmod(0o755)
    directory = base / "data"
    directory.mkdir()
    db = copy_db(readonly_dir_db, directory / "state.db")
    (base / "runner.py").write_text(RUNNER)
    directory.chmod(0o555)
    try:
        yield db, python + [str(base / "runner.py"), str(ROOT / "module_utils"), str(db), str(MIGRATIONS)]
    finally:
        directory.chmod(0o755)
        shutil.rmtree(base)


@pytest.mark.parametrize("owner", [0, NOBODY], ids=["root-owned-file", "nobody-owned-file"])
def test_readonly_directory_is_refused_for_an_unprivileged_user(nobody_readonly_db, owner):
    db, command = nobody_readonly_db
    os.chown(db, owner, owner)  # nobody-owned: the file is writable, only the directory is not
    env = dict(os.environ, PYTHONPATH=sysconfig.get_paths()["purelib"])
    before, listing = file_hashes(db), os.listdir(db.parent)

    def run(mode: str) -> dict:
        done = subprocess.run(command + [mode], preexec_fn=as_nobody, env=env, cwd="/", capture_output=True,
                              text=True, timeout=60, check=False)
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
        return json.loads(done.stdout)

    check = run("check")
    assert check["ok"] and check["changed"] and check["steps"]
    refused = run("run")
    assert not refused["ok"] and refused["error"] == "MigrationError"
    message = refused["msg"]
    assert message.startswith(f"{db}: ") and f"directory {db.parent} is not writable" in message
    assert "become" in message and "nothing was changed" in message
    assert file_hashes(db) == before and new_files(db, listing) == set()
    assert schema_objects(db) == V1_OBJECTS
    # root can: the refusal was about that user, and the plan check mode showed is what it applies
    directory_mode = db.parent.stat().st_mode
    result = migrate(db)
    assert [list(step) for step in plan(result)] == check["steps"]
    assert db.parent.stat().st_mode == directory_mode


def test_readonly_directory_as_this_user(readonly_dir_db):
    if os.geteuid() == 0:
        pytest.skip("root writes into a 0555 directory; test_readonly_directory_is_refused_for_an_unprivileged_user "
                    "runs this case as user nobody")
    before = file_hashes(readonly_dir_db)
    with pytest.raises(MigrationError, match="is not writable by this user"):
        migrate(readonly_dir_db)
    assert file_hashes(readonly_dir_db) == before


# --- one transaction ------------------------------------------------------------------------------

def test_a_statement_failing_mid_migration_rolls_back_every_earlier_one(v1_db, tmp_path):
    """035 sorts after 005..030, so 8 statements have run in the transaction when it fails; it is valid
    SQL that only real data breaks (duplicate account_id), so the plan and the reference accept it."""
    migrations = Path(shutil.copytree(MIGRATIONS, tmp_path / "migrations"))
    (migrations / "v2" / "035_unique_position.sql").write_text(
        "-- description: one position per account\n"
        "CREATE UNIQUE INDEX idx_positions_one_per_account ON positions(account_id);\n")
    counts = row_counts(v1_db)
    check = migrate(v1_db, migrations_dir=migrations, check_mode=True)
    assert [s["object"] for s in check["steps"]].index("index idx_positions_one_per_account") == 8

    with pytest.raises(MigrationError) as caught:
        migrate(v1_db, migrations_dir=migrations)
    message = str(caught.value)
    assert message.startswith(f"{v1_db}: ") and "v2/035_unique_position.sql" in message
    assert "UNIQUE constraint failed" in message and "rolled back" in message

    # not "current_version == 1": an empty schema_version would read as 1 too. The exact object list:
    assert schema_objects(v1_db) == V1_OBJECTS
    assert columns(v1_db, "enforcement_log") == V1_ENFORCEMENT_COLUMNS
    assert row_counts(v1_db) == counts
    assert integrity(v1_db) == ["ok"]
    # nothing half-applied is left behind: the real migrations still run from the start
    result = migrate(v1_db)
    assert result["state_before"] == "v1" and fresh_state(v1_db) == "v2"


def test_migration_file_edited_after_being_applied_is_refused(v1_db, tmp_path):
    migrations = Path(shutil.copytree(MIGRATIONS, tmp_path / "migrations"))
    migrate(v1_db, migrations_dir=migrations)
    edited = migrations / "v2" / "030_analytics_indexes.sql"
    recorded = hashlib.sha256(edited.read_bytes()).hexdigest()
    edited.write_text(edited.read_text() + "\nCREATE INDEX idx_orders_updated ON orders(updated_at);\n")
    now = hashlib.sha256(edited.read_bytes()).hexdigest()
    before = file_hashes(v1_db)
    for check_mode in (True, False):
        with pytest.raises(MigrationError) as caught:
            migrate(v1_db, migrations_dir=migrations, check_mode=check_mode)
        message = str(caught.value)
        assert message.startswith(f"{v1_db}: ")
        assert f"{edited} changed after it was applied" in message
        assert recorded in message and now in message and "restore the original file" in message
    assert file_hashes(v1_db) == before
    assert ("index", "idx_orders_updated") not in schema_objects(v1_db)


# --- the optional daily_unrealized_pnl table ------------------------------------------------------

def test_optional_table_turned_on_later_adds_just_its_objects(v2_db):
    assert PNL.isdisjoint(schema_objects(v2_db))
    objects, counts, versions = schema_objects(v2_db), row_counts(v2_db), version_rows(v2_db)
    hashes = file_hashes(v2_db)
    check = migrate(v2_db, options=WITH_PNL, check_mode=True, want_diff=True)
    assert file_hashes(v2_db) == hashes
    result = migrate(v2_db, options=WITH_PNL)
    assert plan(result) == plan(check)
    assert [(s["action"], s["object"]) for s in result["steps"]] == [
        ("create", "table daily_unrealized_pnl"), ("create", "index idx_daily_unrealized_pnl_date"),
        ("create", "index idx_daily_unrealized_pnl_account_date"),
        ("record", f"row schema_migration_files:{PNL_FILE}")]
    assert schema_objects(v2_db) - objects == PNL
    assert version_rows(v2_db) == versions
    assert ledger(v2_db) == {name: (2, file_sha(name)) for name in CORE_FILES + [PNL_FILE]}
    after = row_counts(v2_db)
    assert after.pop("daily_unrealized_pnl") == 0 and after.pop("schema_migration_files") == 5
    assert after.pop("schema_migration_objects") == counts.pop("schema_migration_objects") + 3  # one per object
    counts.pop("schema_migration_files")
    assert after == counts
    # on stays on, and turning it off again does not drop anything
    assert not migrate(v2_db, options=WITH_PNL)["changed"]
    assert not migrate(v2_db)["changed"]
    assert PNL <= schema_objects(v2_db)


def test_optional_table_from_v1_in_one_run(v1_db):
    result = migrate(v1_db, options=WITH_PNL)
    assert schema_objects(v1_db) - V1_OBJECTS == V2_CORE | PNL
    assert set(ledger(v1_db)) == set(CORE_FILES + [PNL_FILE])
    assert result["steps"][-1]["object"] == f"row schema_migration_files:{PNL_FILE}"


# --- downgrade to v1 in place ---------------------------------------------------------------------

def daemon_writes_v2_rows(path: Path) -> None:
    """What a v2 daemon leaves behind: rows using the v2 column and the optional table."""
    run_sql(path, """
        INSERT INTO enforcement_log (account_id, rule_id, action, reason, success, timestamp, execution_time_ms)
        VALUES (3, 'RULE-V2', 'ALERT', 'written by the v2 daemon', 0, '2026-11-24T12:00:00.000Z', 42);
        INSERT INTO orders VALUES (900001, 3, 'CON.F.US.MNQ.Z26', 5, 1, 1, NULL, 21000.5, 'WORKING',
                                   '2026-11-24T12:00:00.000Z', '2026-11-24T12:00:00.000Z');
        INSERT INTO daily_unrealized_pnl (account_id, timestamp, unrealized_pnl, positions_count)
        VALUES (3, '2026-11-24', -120.5, 2);
    """)


def test_downgrade_keeps_every_v1_row_and_removes_every_v2_object(v2_db):
    migrate(v2_db, options=WITH_PNL)
    daemon_writes_v2_rows(v2_db)
    counts, hashes = row_counts(v2_db), file_hashes(v2_db)
    v1_tables = {name for kind, name in V1_OBJECTS if kind == "table"}

    check = migrate(v2_db, target_version=1, check_mode=True, want_diff=True)
    assert file_hashes(v2_db) == hashes
    assert check["direction"] == "down" and check["state_before"] == "v2"
    result = migrate(v2_db, target_version=1)
    assert plan(result) == plan(check)
    assert result["direction"] == "down" and result["from_version"] == 2 and result["to_version"] == 1
    provenance_rows = counts["schema_migration_objects"]
    assert result["data_dropped"] == {"daily_unrealized_pnl": 1, "enforcement_log.execution_time_ms": 1,
                                      "schema_migration_files": 5, "schema_version": 2,
                                      "schema_migration_objects": provenance_rows}

    assert schema_objects(v2_db) == V1_OBJECTS  # every v2 object gone, every v1 object kept
    assert columns(v2_db, "enforcement_log") == V1_ENFORCEMENT_COLUMNS
    assert row_counts(v2_db) == {table: counts[table] for table in v1_tables}
    with closing(fresh(v2_db)) as conn:
        assert conn.execute("SELECT action, success FROM enforcement_log WHERE rule_id = 'RULE-V2'").fetchall() \
            == [("ALERT", 0)]
        assert conn.execute("SELECT state FROM orders WHERE order_id = 900001").fetchone() == ("WORKING",)
    assert integrity(v2_db) == ["ok"] and fresh_state(v2_db) == "v1"

    hashes_v1 = file_hashes(v2_db)
    again = migrate(v2_db, target_version=1)
    assert not again["changed"] and again["steps"] == [] and again["state_before"] == "v1"
    assert file_hashes(v2_db) == hashes_v1
    # and it upgrades again from there
    assert migrate(v2_db)["state_before"] == "v1" and fresh_state(v2_db) == "v2"


def test_downgrade_of_a_newer_database_is_refused(newer_db):
    before = file_hashes(newer_db)
    with pytest.raises(MigrationError, match="newer than the newest migration"):
        migrate(newer_db, target_version=1)
    assert file_hashes(newer_db) == before


def test_unknown_target_version_is_refused(v1_db):
    with pytest.raises(MigrationError, match=f"^{v1_db}: target_version 7 is not one of the versions"):
        migrate(v1_db, target_version=7)
    assert schema_objects(v1_db) == V1_OBJECTS


# --- inspect and gather: read-only facts ----------------------------------------------------------

# fixture -> (state, version, migration_needed)
FACTS = {
    "v1_db": ("v1", 1, True),
    "v1_wal_db": ("v1", 1, True),
    "v2_db": ("v2", 2, False),
    "half_way_db": ("v1", 1, True),
    "seed_phase1_db": ("partial", 2, True),
    "other_shape_db": ("unknown", None, False),
    "newer_db": ("newer", 3, False),
}


@pytest.mark.parametrize("state", list(FACTS))
def test_gather_reports_the_state_of_each_field_database_without_writing(request, state):
    db = request.getfixturevalue(state)
    expected_state, expected_version, needed = FACTS[state]
    hashes, counts = file_hashes(db), row_counts(db)
    facts = gather(str(db), str(MIGRATIONS), FactsRequest(integrity="integrity"))
    assert (facts["state"], facts["version"], facts["migration_needed"]) == (expected_state, expected_version, needed)
    assert facts["row_counts"] == counts
    assert facts["journal_mode"] == "wal"
    assert facts["integrity"]["ok"]
    assert bool(facts["problems"]) == (expected_state in ("unknown", "newer"))
    assert file_hashes(db) == hashes


def test_inspect_lists_what_v1_misses(v1_db):
    with closing(fresh(v1_db)) as conn:
        inspection = inspect(conn, CATALOG, {})
    assert inspection.state == "v1" and inspection.migration_needed
    assert {str(o.obj) for o in inspection.missing()} == {f"{kind} {name}" for kind, name in V2_CORE} | {
        "column enforcement_log.execution_time_ms"}
    with closing(fresh(v1_db)) as conn:
        with_pnl = inspect(conn, CATALOG, WITH_PNL)
    assert {f"{kind} {name}" for kind, name in PNL} <= {str(o.obj) for o in with_pnl.missing()}


def test_other_shape_problem_names_the_object(other_shape_db):
    facts = gather(str(other_shape_db), str(MIGRATIONS))
    assert any("idx_positions_updated" in problem for problem in facts["problems"])


@pytest.mark.parametrize("state", ["empty_file", "text_file", "missing_db"])
def test_gather_refuses_what_is_not_a_database(request, state):
    db = request.getfixturevalue(state)
    before = file_hashes(db)
    with pytest.raises(RiskmgrError, match=f"^{db}: "):
        gather(str(db), str(MIGRATIONS))
    assert file_hashes(db) == before
    if state == "missing_db":
        assert not db.exists()
