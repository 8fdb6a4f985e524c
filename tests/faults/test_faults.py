"""Fault injection: whatever goes wrong, no row is lost and the daemon comes back up.

Each test is one fault from the list in docs/guarantees.md (numbered as there), injected into
a real local fleet (tools/local_fleet.py: v1 state.db files with stand-in daemons writing
rows) or, for #1, into the migration engine's own process. The operator's playbook runs for
real (`ansible-playbook -i <fleet>/inventory.yml migrate_v2.yml -e riskmgr_confirm=true`), and
every test ends with fault_fleet.assert_end_state(): (a) exactly v1 or a verified v2, (b) every
row committed before the fault, (c) the daemon running (or, when it cannot, never started),
(d) no file gone, (e) one clear error naming the host and the database, no traceback.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest
from fault_fleet import (
    CONFIRM, HOST, UNTOUCHED, MIGRATIONS, ROOT, V1_SHAPE, assert_end_state, assert_error, assert_rows_kept, assert_v1_or_v2, backup_with_module_utils,
    build_big_v1, capture, connect_ro, max_id, migrate_with_engine, query, row_counts, scalar, schema_state,
    shape)
from make_state_db import commit_rows_only_to_wal

pytestmark = pytest.mark.slow



def flip_bytes(path: Path, offset: int, count: int) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        data = bytes(b ^ 0xFF for b in handle.read(count))
        handle.seek(offset)
        handle.write(data)


def pages_of(db: Path, name: str) -> list[int]:
    """Page numbers of one table or index, from SQLite's dbstat table."""
    try:
        return [r[0] for r in query(db, "SELECT pageno FROM dbstat WHERE name = ? ORDER BY pageno", name)]
    except sqlite3.OperationalError as err:  # SQLite built without SQLITE_ENABLE_DBSTAT_VTAB
        pytest.skip(f"cannot locate the pages of {name}: {err}")


# --- #1 the engine killed with SIGKILL inside its write transaction ----------------------------

ENGINE = r"""
import sys
import ansible.module_utils
ansible.module_utils.__path__.append(sys.argv[1])
from ansible.module_utils.sqlite_migration import migrate_database
migrate_database(sys.argv[2], sys.argv[3])
"""
SPILLED_BYTES = 256 * 1024


def test_sigkill_inside_the_migration_transaction_leaves_v1_and_a_rerun_converges(tmp_path):
    # 128k rows in each of the two biggest tables: the new indexes take long enough to build
    # that the transaction spills pages into state.db-wal well before it commits.
    db = build_big_v1(tmp_path / "state.db", doublings=6)
    counts = row_counts(db)
    wal = Path(f"{db}-wal")
    engine = subprocess.Popen([sys.executable, "-c", ENGINE, str(ROOT / "module_utils"), str(db), str(MIGRATIONS)])
    try:
        # Nothing writes the WAL before BEGIN IMMEDIATE (the plan only reads): pages in it mean
        # the write transaction is under way. Kill it there, as a power cut or OOM killer would.
        deadline = time.monotonic() + 60
        while engine.poll() is None and time.monotonic() < deadline:
            if wal.exists() and wal.stat().st_size >= SPILLED_BYTES:
                engine.send_signal(signal.SIGKILL)
                break
            time.sleep(0.002)
        assert engine.wait(timeout=10) == -signal.SIGKILL, "the migration ended before it could be killed"
    finally:
        if engine.poll() is None:
            engine.kill()
    assert wal.stat().st_size >= SPILLED_BYTES  # its uncommitted pages are on disk...
    # ...and a fresh connection ignores them: exactly v1, every row, integrity ok.
    with closing(connect_ro(db)) as conn:
        assert shape(conn) == V1_SHAPE
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert schema_state(db) == "v1"
    assert row_counts(db) == counts
    # The next run starts from that v1 and reaches a verified v2 with the same rows.
    migrate_with_engine(db)
    assert_v1_or_v2(db, "v2")
    assert {t: c for t, c in row_counts(db).items() if t in counts} == counts


# --- #4 a corrupt database -----------------------------------------------------------------

@pytest.mark.parametrize(("damaged", "also_says"), [
    ("enforcement_log", r"NULL value in enforcement_log"),  # a leaf page of the table the daemon writes
    ("idx_orders_state", r"missing from index idx_orders_state"),  # a page of a v1 index
], ids=["table_page", "index_page"])
def test_corrupt_database_is_refused_before_anything_is_touched(make_fleet, damaged, also_says):
    fleet = make_fleet()
    db = fleet.db(HOST)
    fleet.stop_daemon(HOST)  # it checkpoints: state.db alone holds every row
    before = capture(fleet, HOST)
    pages = pages_of(db, damaged)
    page_size = scalar(db, "PRAGMA page_size")
    page = pages[len(pages) // 2]
    assert page > 2
    # The page's cell pointers (just past its 8-byte b-tree header): bytes flipped in the
    # page's unused middle would be no damage at all, and the run would rightly go ahead.
    flip_bytes(db, (page - 1) * page_size + 8, 4)
    damaged_bytes = db.read_bytes()
    run = fleet.playbook("migrate_v2.yml", *CONFIRM)
    assert db.read_bytes() == damaged_bytes  # not repaired, not migrated, not replaced
    before.is_database, before.content = False, damaged_bytes  # (a) and (b): byte for byte as it was
    assert_end_state(fleet, before, run, db="unchanged", daemon="down", says=[
        rf"fails PRAGMA integrity_check: .*On tree page {page} cell", also_says, UNTOUCHED])
    assert not fleet.backup_dir(HOST).exists()


# --- #5 two runs at once on one host ---------------------------------------------------------

def test_second_run_is_refused_by_the_first_runs_lock_and_the_first_completes(make_fleet):
    fleet = make_fleet()
    before = capture(fleet, HOST)
    # A long settle keeps the first run (and its lock) busy after the start: the second run
    # reaches its lock task while the first one still holds the host.
    first = fleet.start_playbook("migrate_v2.yml", *CONFIRM, "-e", "riskmgr_start_settle=8", tag="first")
    try:
        deadline = time.monotonic() + 60
        while not fleet.lock(HOST).exists():
            assert first.running() and time.monotonic() < deadline, "the first run never took its lock"
            time.sleep(0.05)
        holder = json.loads(fleet.lock(HOST).read_text())
        second = fleet.playbook("migrate_v2.yml", *CONFIRM)
        assert first.running(), "the first run ended before the second one was refused: no overlap tested"
        assert json.loads(fleet.lock(HOST).read_text()) == holder  # the refused run left the lock alone
        first_run = first.wait()
    finally:
        first.kill()
    assert_end_state(fleet, before, first_run, db="v2", daemon="running")
    # The refusal names the lock file and the run holding it: its id and its controller's pid.
    assert_error(second, HOST, fleet.db(HOST), [
        re.escape(f"{fleet.lock(HOST)}: this host is locked by run {holder['run_id']}"), rf"pid {first.pid}\b"])
    assert fleet.logged_versions(HOST) == [1, 2]  # stopped once and started once, by the first run only


# --- #6 a migration file edited after it was applied -----------------------------------------

def test_migration_file_edited_after_it_was_applied_is_refused_naming_both_checksums(make_fleet, tmp_path):
    fleet = make_fleet()
    fleet.stop_daemon(HOST)
    migrate_with_engine(fleet.db(HOST))  # applied: the ledger holds each file's sha256
    fleet.start_daemon(HOST)
    recorded = dict(query(fleet.db(HOST), "SELECT filename, sha256 FROM schema_migration_files"))
    edited_src = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, edited_src)
    edited = edited_src / "v2" / "030_analytics_indexes.sql"
    edited.write_text(edited.read_text() + "\n-- tuned by hand after the release\n")
    now = hashlib.sha256(edited.read_bytes()).hexdigest()
    before = capture(fleet, HOST)
    run = fleet.playbook("migrate_v2.yml", *CONFIRM, "-e", json.dumps({"riskmgr_migrations_src": str(edited_src)}))
    assert_end_state(fleet, before, run, db="unchanged", daemon="untouched", says=[
        # The file on the controller, where it has to be put back (not the host's staged copy).
        re.escape(f"migration file {edited} changed after it was applied"),
        f"recorded sha256 {recorded['v2/030_analytics_indexes.sql']}, file now {now}", UNTOUCHED])
    assert_v1_or_v2(fleet.db(HOST), "v2")


# --- #7 a database the tool must not touch ---------------------------------------------------

def make_newer(fleet) -> None:
    fleet.stop_daemon(HOST)
    migrate_with_engine(fleet.db(HOST))
    with closing(sqlite3.connect(fleet.db(HOST))) as conn, conn:
        conn.execute("INSERT INTO schema_version (version, applied_at, description, success) "
                     "VALUES (3, datetime('now'), 'Schema v3 from a later release', 1)")
    fleet.start_daemon(HOST)  # the daemon of that later release runs on it


def make_missing(fleet) -> None:
    fleet.stop_daemon(HOST)
    db = fleet.db(HOST)
    db.rename(db.with_name("state.db.moved_away"))  # a wrong riskmgr_db_path, in effect


def make_text_file(fleet) -> None:
    fleet.stop_daemon(HOST)
    db = fleet.db(HOST)
    db.rename(db.with_name("state.db.moved_away"))
    db.write_text("database:\n  path: data/state.db\n")  # a config file where the database should be


@pytest.mark.parametrize(("make", "daemon", "says"), [
    (make_newer, "untouched", [r"state newer: database is at schema v3, newer than the newest migration \(v2\)",
                               UNTOUCHED]),
    (make_missing, "down", [r"no such file; check riskmgr_db_path", UNTOUCHED]),
    (make_text_file, "down", [r"not a SQLite 3 database \(bad file header\)", UNTOUCHED]),
], ids=["newer", "missing", "text_file"])
def test_database_in_the_wrong_state_is_refused_in_preflight(make_fleet, make, daemon, says):
    fleet = make_fleet()
    make(fleet)
    before = capture(fleet, HOST)
    run = fleet.playbook("migrate_v2.yml", *CONFIRM)
    assert_end_state(fleet, before, run, db="unchanged", daemon=daemon, says=says)
    assert not fleet.backup_dir(HOST).exists()


# --- #8 rollback without a usable backup ------------------------------------------------------

def v2_with_backups(fleet, v1_backup: bool, v2_backup: bool) -> None:
    fleet.stop_daemon(HOST)
    db, backups = fleet.db(HOST), fleet.backup_dir(HOST)
    if v1_backup:
        backup_with_module_utils(db, backups)
    migrate_with_engine(db)
    if v2_backup:
        backup_with_module_utils(db, backups)
    fleet.start_daemon(HOST)


def no_backup(fleet) -> list[str]:
    v2_with_backups(fleet, v1_backup=False, v2_backup=False)
    return [r"no valid v1 backup of state \(0 rejected\)"]


def tampered_backup(fleet) -> list[str]:
    v2_with_backups(fleet, v1_backup=True, v2_backup=False)
    backup, = fleet.backup_dir(HOST).glob("state_v1_*.db")
    flip_bytes(backup, backup.stat().st_size // 2, 1)
    return [r"no valid v1 backup of state \(1 rejected", re.escape(str(backup)),
            r"sha256 is [0-9a-f]{64} but its manifest records [0-9a-f]{64}"]


def only_v2_backups(fleet) -> list[str]:
    v2_with_backups(fleet, v1_backup=False, v2_backup=True)
    assert list(fleet.backup_dir(HOST).glob("state_v2_*.db"))
    return [r"no valid v1 backup of state \(0 rejected\)"]


@pytest.mark.parametrize("make", [no_backup, tampered_backup, only_v2_backups],
                         ids=["no_backup", "tampered_backup", "only_v2_backups"])
def test_rollback_without_a_verified_v1_backup_is_refused(make_fleet, make):
    fleet = make_fleet()
    says = make(fleet)
    backups_before = {p.name: p.read_bytes() for p in fleet.backup_dir(HOST).glob("*")} \
        if fleet.backup_dir(HOST).exists() else {}
    before = capture(fleet, HOST)
    run = fleet.playbook("rollback_v2.yml", *CONFIRM)
    assert_end_state(fleet, before, run, db="v2", daemon="untouched", says=[
        r"cannot be rolled back by restore", *says, r"Rerun with -e riskmgr_rollback_method=downgrade", UNTOUCHED])
    after = {p.name: p.read_bytes() for p in fleet.backup_dir(HOST).glob("*")} \
        if fleet.backup_dir(HOST).exists() else {}
    assert after == backups_before  # a tampered backup is left as evidence, not "repaired" or removed


# --- #9 the daemon refuses to run on v2 ----------------------------------------------------

def test_daemon_refusing_v2_gets_v1_back_with_every_row_and_the_v2_file_kept(make_fleet):
    fleet = make_fleet(refuse_version=2, refuse_host=HOST)
    before = capture(fleet, HOST)
    run = fleet.playbook("migrate_v2.yml", *CONFIRM)
    assert_end_state(fleet, before, run, db="v1", daemon="running", says=[
        r"the upgrade failed while start", r"pid \d+ exited [\d.]+s after the start",
        r"schema version 2 is not supported by this build; refusing to run", r"was\s+restored from .*state_v1_",
        r"the file it replaced is kept as .*state\.db\.kept-failed-v2-", r"runs again on v1"])
    assert fleet.logged_versions(HOST) == [1, 2, 1]  # v1, refused v2, v1 again
    db = fleet.db(HOST)
    kept, = [p for p in db.parent.glob("state.db.kept-failed-v2-*") if not p.name.endswith(("-wal", "-shm"))]
    assert_v1_or_v2(kept, "v2")  # the migrated file, as the refusing daemon left it
    assert_rows_kept(kept, before)
    manifest, = [json.loads(p.read_text()) for p in fleet.backup_dir(HOST).glob("*.manifest.json")]
    stopped_at = max_id(kept)  # the daemon wrote nothing on v2: the kept file ends where the backup does
    assert scalar(kept, "SELECT COUNT(*) FROM enforcement_log") == manifest["row_counts"]["enforcement_log"]
    assert scalar(db, "SELECT COUNT(*) FROM enforcement_log WHERE id <= ?", stopped_at) == \
        manifest["row_counts"]["enforcement_log"]


# --- #10 a daemon that ignores SIGTERM ------------------------------------------------------

def test_daemon_ignoring_sigterm_fails_the_stop_and_nothing_else_happens(make_fleet):
    fleet = make_fleet()
    fleet.restart_daemon_with(HOST, "--ignore-sigterm")
    before = capture(fleet, HOST)
    run = fleet.playbook("migrate_v2.yml", *CONFIRM, "-e", "riskmgr_stop_timeout=2")
    assert_end_state(fleet, before, run, db="v1", daemon="untouched", says=[
        r"the upgrade failed while stop", r"still running 2s after SIGTERM and was left running",
        # What the daemon logged while it ignored the stop (a progress line, or nothing yet).
        "(nothing written to|last lines of) " + re.escape(fleet.hosts[HOST]['riskmgr_log_path']),
        r"The daemon was not stopped; .* was not touched"])
    assert not fleet.backup_dir(HOST).exists()
    assert fleet.wait_for_rows(HOST, max_id(fleet.db(HOST)))  # and it still writes


# --- #11 rows committed only to the WAL before the daemon was killed -------------------------

def test_rows_only_in_the_wal_of_a_killed_daemon_reach_the_backup_and_v2(make_fleet):
    fleet = make_fleet()
    db = fleet.db(HOST)
    fleet.kill_daemon(HOST)  # no checkpoint: its last rows sit in state.db-wal
    commit_rows_only_to_wal(db, rows=25)
    assert Path(f"{db}-wal").stat().st_size > 0
    before = capture(fleet, HOST)
    assert scalar(db, "SELECT COUNT(*) FROM enforcement_log WHERE rule_id = 'RULE-WAL'") == 25
    run = fleet.playbook("migrate_v2.yml", *CONFIRM)
    assert_end_state(fleet, before, run, db="v2", daemon="running")
    assert scalar(db, "SELECT COUNT(*) FROM enforcement_log WHERE rule_id = 'RULE-WAL'") == 25
    backup, = fleet.backup_dir(HOST).glob("state_v1_*.db")
    assert_v1_or_v2(backup, "v1")
    assert scalar(backup, "SELECT COUNT(*) FROM enforcement_log WHERE rule_id = 'RULE-WAL'") == 25
    assert_rows_kept(backup, before)
    assert fleet.logged_versions(HOST) == [1, 2]  # started once, by the play, on v2


# --- #13 rollback after the daemon wrote rows on v2 --------------------------------------------

def v2_fleet_with_rows_written_on_v2(make_fleet):
    """A host at v2 with its v1 backup, whose daemon has since written rows on v2."""
    fleet = make_fleet()
    v2_with_backups(fleet, v1_backup=True, v2_backup=False)
    backup, = fleet.backup_dir(HOST).glob("state_v1_*.db")
    manifest = json.loads(Path(f"{backup}.manifest.json").read_text())
    backed_up = max_id(backup)  # the daemon, restarted on v2, writes from the next id on
    fleet.wait_for_rows(HOST, backed_up + 10)
    return fleet, manifest, backed_up


def test_rollback_restore_plans_then_keeps_every_row_written_on_v2(make_fleet):
    fleet, manifest, backed_up = v2_fleet_with_rows_written_on_v2(make_fleet)
    db = fleet.db(HOST)

    # Without confirmation: the plan, then nothing changes.
    before = capture(fleet, HOST)
    run = fleet.playbook("rollback_v2.yml")
    assert_end_state(fleet, before, run, db="v2", daemon="untouched", says=[r"Not confirmed: nothing was changed"])
    plan = re.search(r"rows written since that backup, not in it: (\{.*?\}), kept in (\S+?),", run.stdout)
    assert plan, run.stdout[-3000:]
    planned = json.loads(plan[1].replace('\\"', '"'))
    assert re.fullmatch(re.escape(str(db)) + r"\.kept-rollback-v2-\d{8}T\d{12}Z", plan[2])
    assert planned["schema_version"] == 2 and planned["schema_migration_files"] == 4
    on_v2_at_capture = before.counts["enforcement_log"] - manifest["row_counts"]["enforcement_log"]
    assert on_v2_at_capture <= planned["enforcement_log"] <= \
        scalar(db, "SELECT COUNT(*) FROM enforcement_log") - manifest["row_counts"]["enforcement_log"]

    # Confirmed: v1 is back, and the file it replaced holds every row written on v2.
    before = capture(fleet, HOST)
    run = fleet.playbook("rollback_v2.yml", *CONFIRM)
    kept, = [p for p in db.parent.glob("state.db.kept-rollback-v2-*") if not p.name.endswith(("-wal", "-shm"))]
    assert_end_state(fleet, before, run, db="v1", daemon="running", rows_in=kept)
    assert_v1_or_v2(kept, "v2")
    assert scalar(kept, "SELECT COUNT(*) FROM enforcement_log WHERE id > ?", backed_up) >= planned["enforcement_log"]
    # The live database is the backup, row for row, plus what the daemon wrote since the restart.
    assert scalar(db, "SELECT COUNT(*) FROM enforcement_log WHERE id <= ?", backed_up) == \
        manifest["row_counts"]["enforcement_log"]
    assert fleet.logged_versions(HOST)[-1] == 1


def test_rollback_downgrade_keeps_every_row_written_on_v2_in_the_live_database(make_fleet):
    fleet, manifest, backed_up = v2_fleet_with_rows_written_on_v2(make_fleet)
    before = capture(fleet, HOST)
    assert before.max_id > backed_up
    run = fleet.playbook("rollback_v2.yml", *CONFIRM, "-e", "riskmgr_rollback_method=downgrade")
    assert_end_state(fleet, before, run, db="v1", daemon="running")
    assert not list(fleet.db(HOST).parent.glob("state.db.kept-rollback-*"))  # in place: nothing replaced
    v2_backup, = fleet.backup_dir(HOST).glob("state_v2_*.db")  # taken first, with the v2-only column
    assert_rows_kept(v2_backup, before)
    assert fleet.logged_versions(HOST)[-1] == 1
