"""riskmgr_migrate (the offline downtime as one unit) and the pieces it added, on real files and processes.

The stand-in daemon writes a row every 20 ms into a real v1 database; every test checks the
end state the product promises: v1 (untouched or restored, the changed file kept) or a
verified v2, every row there, and the daemon running.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import sqlite3
import sys
import threading
import time
from contextlib import closing
from pathlib import Path

import pytest
import riskmgr_migrate
import host_files
import sqlite_backups
from ansible_run import module_defaults
from fixtures import MIGRATIONS, ROOT, row_counts, sha256, wait_for
from make_state_db import build_v1_db, commit_rows_only_to_wal
from fake_systemd import FakeSystemd
from host_processes import pid_is_running, read_pid
from pidfile_control import PidfileControl
from riskmgr_daemon import restart_daemon
from riskmgr_migrate import MigrateError, MigrateSettings, shielded_from_hangups, migrate_host
from systemd_control import SystemdControl
from backup_store import verify_backup
from host_files import copy_hashing
from sqlite_catalog import load_catalog, load_catalog_texts
from sqlite_common import MigrationError
from sqlite_migration import migrate_database
from sqlite_verification import verify_database

STANDIN = ROOT / "tools" / "riskmgr_standin.py"
FAST = {"settle": 0.3, "start_timeout": 10, "stop_timeout": 5}


def migrate_settings(**options) -> MigrateSettings:
    """The settings library/riskmgr_migrate.py builds from its options: the module's defaults, then these."""
    return MigrateSettings.from_params({**module_defaults("riskmgr_migrate"), **options})


def version_of(db: Path) -> int:
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as conn:
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'schema_version'").fetchone():
            return 1
        return conn.execute("SELECT MAX(version) FROM schema_version WHERE success = 1").fetchone()[0]


class Host:
    """A v1 state.db with a stand-in daemon writing into it; teardown SIGKILLs what is left."""

    process_match = "riskmgr_standin"  # what its daemon's command line holds

    def __init__(self, tmp_path: Path, *daemon_args: str, rows: int = 500) -> None:
        (tmp_path / "data").mkdir(parents=True)
        self.db = build_v1_db(tmp_path / "data" / "state.db", rows=rows)
        self.backups = tmp_path / "data" / "backups"
        self.pidfile, self.log = tmp_path / "riskmgr.pid", tmp_path / "riskmgr.log"
        self.daemon_args = daemon_args
        self.pids: set[int] = set()
        self.catalog = load_catalog(MIGRATIONS)

    def control(self) -> PidfileControl:
        return PidfileControl(str(self.pidfile), [sys.executable, str(STANDIN), "--db", str(self.db), "--pidfile",
                                                  str(self.pidfile), "--log", str(self.log), "--interval-ms", "20",
                                                  *self.daemon_args])

    def start(self) -> int:
        self.control().launch(10)
        wait_for(lambda: pid_is_running(read_pid(str(self.pidfile)), self.process_match))
        pid = read_pid(str(self.pidfile))
        self.pids.add(pid)
        wait_for(lambda: "Database schema version" in self.log.read_text())
        return pid

    def pid(self) -> int | None:
        pid = read_pid(str(self.pidfile))
        if pid:
            self.pids.add(pid)
        return pid if pid_is_running(pid, self.process_match) else None

    def upgrade(self, check_mode: bool = False, want_diff: bool = False, **options) -> dict:
        settings = migrate_settings(log_path=str(self.log), process_match=self.process_match, **{**FAST, **options})
        return migrate_host(str(self.db), str(self.backups), self.catalog, self.control(), settings,
                            check_mode=check_mode, want_diff=want_diff)

    def logged_versions(self) -> list[int]:
        return [int(line.rsplit(" ", 1)[1]) for line in self.log.read_text().splitlines()
                if "Database schema version:" in line]

    def cleanup(self) -> None:
        self.pid()
        for pid in self.pids:
            if pid_is_running(pid, self.process_match):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def make_host(tmp_path):
    hosts = []

    def make(*daemon_args: str, rows: int = 500) -> Host:
        host = Host(tmp_path / f"h{len(hosts)}", *daemon_args, rows=rows)
        hosts.append(host)
        return host
    yield make
    for host in hosts:
        host.cleanup()


def test_upgrade_stops_backs_up_migrates_verifies_and_starts_once(make_host):
    host = make_host()
    old_pid = host.start()
    before = row_counts(host.db)
    result = host.upgrade()
    assert result["changed"] and result["to_version"] == 2 and result["failed_phase"] is None
    assert result["backup"]["method"] == "file copy" and result["backup"]["confirmed"]
    assert result["verification"]["ok"] and result["migration"]["to_version"] == 2
    # The backup is the v1 file byte for byte as it stood after the stop, with a matching manifest.
    manifest, digest = verify_backup(result["backup"]["backup"])
    assert digest == result["backup"]["sha256"] == hashlib.sha256(Path(result["backup"]["backup"]).read_bytes()).hexdigest()
    assert manifest["schema_version"] == 1 and manifest["row_counts"]["enforcement_log"] >= before["enforcement_log"]
    assert open(result["backup"]["backup"], "rb").read(20)[18:20] == b"\x01\x01"  # self-contained, no WAL
    # The daemon runs again, on v2, as a new process; the downtime is the stop request to its log line.
    new_pid = host.pid()
    assert new_pid and new_pid != old_pid and host.logged_versions()[-1] == 2
    # The signals the unit ignores while the daemon is down are not passed on to the daemon it starts.
    ignored = int(next(line for line in Path(f"/proc/{new_pid}/status").read_text().splitlines()
                       if line.startswith("SigIgn:")).split()[1], 16)
    assert not ignored & (1 << (signal.SIGHUP - 1) | 1 << (signal.SIGTERM - 1) | 1 << (signal.SIGINT - 1))
    assert 0 < result["downtime_seconds"] <= result["start"]["healthy_at"] - result["stop"]["stop_requested_at"]
    assert verify_database(str(host.db), host.catalog, 2)["ok"]
    # While the daemon was down only what the change wrote was checked; the backup's check ran beside the DDL.
    integrity = next(c for c in result["verification"]["checks"] if c["name"] == "integrity")
    assert "index idx_orders_state_account" in integrity["detail"] and "trade_history" not in integrity["detail"]
    assert result["backup"]["wait_seconds"] >= 0 and result["backup"]["confirm_seconds"] > 0
    assert row_counts(host.db)["enforcement_log"] >= manifest["row_counts"]["enforcement_log"]


def test_second_upgrade_changes_nothing_and_leaves_the_daemon_alone(make_host):
    host = make_host()
    host.start()
    host.upgrade()
    pid = host.pid()
    again = host.upgrade()
    assert not again["changed"] and again["stop"] is None and again["backup"] is None
    assert host.pid() == pid


def test_check_mode_plans_and_touches_nothing(make_host):
    host = make_host()
    pid = host.start()
    result = host.upgrade(check_mode=True, want_diff=True)
    assert result["changed"] and result["stop"]["was_running"] and result["backup"]["sha256"] is None
    assert "CREATE INDEX idx_positions_updated" in result["diff"]["after"]
    assert host.pid() == pid and version_of(host.db) == 1 and not host.backups.exists()


def test_daemon_refusing_v2_gets_the_backup_back_and_restarts_on_v1(make_host):
    host = make_host("--refuse-version", "2")
    host.start()
    before = row_counts(host.db)
    with pytest.raises(MigrateError) as caught:
        host.upgrade()
    message, result = str(caught.value), caught.value.fail_result
    assert result["failed_phase"] == "start" and result["recovery"]["errors"] == []
    assert "refusing to run" in message and "was restored from" in message and "runs again on v1" in message
    kept, = result["recovery"]["kept"][:1]
    assert Path(kept).name.startswith("state.db.kept-failed-v2-") and version_of(Path(kept)) == 2
    assert version_of(host.db) == 1 and host.pid() and host.logged_versions()[-2:] == [2, 1]
    assert row_counts(host.db)["enforcement_log"] >= before["enforcement_log"]


@pytest.mark.parametrize("refuse", [False, True], ids=["healthy", "refuses_v2"])
def test_under_systemd_without_a_log_file_the_journal_judges_both_starts(make_host, tmp_path, monkeypatch, refuse):
    host = make_host()
    fake = FakeSystemd(tmp_path / "bin", "riskmgr.service", host.db, host.pidfile, host.log)
    monkeypatch.setenv("PATH", fake.path)
    try:
        fake.configure(*(["--refuse-version", "2"] if refuse else []))
        control = SystemdControl("riskmgr.service")
        control.launch(10)
        wait_for(lambda: host.pid())
        if not refuse:
            result = migrate_host(str(host.db), str(host.backups), host.catalog, control,
                                  migrate_settings(log_path=None, process_match="riskmgr_standin", **FAST))
            assert result["start"]["log_line"].endswith("INFO Database schema version: 2")
            assert result["downtime_seconds"] == round(result["start"]["serving_at"]
                                                       - result["stop"]["stop_requested_at"], 3)
            assert version_of(host.db) == 2 and host.logged_versions() == [1, 2]
        else:
            with pytest.raises(MigrateError) as caught:
                migrate_host(str(host.db), str(host.backups), host.catalog, control,
                             migrate_settings(log_path=None, process_match="riskmgr_standin", **FAST))
            message = str(caught.value)
            # The v2 start failed on what the journal showed, and v1 was judged healthy by it too.
            assert "last lines of the journal of riskmgr.service: " in message and "refusing to run" in message
            assert "runs again on v1" in message and caught.value.fail_result["recovery"]["errors"] == []
            assert version_of(host.db) == 1 and host.logged_versions() == [1, 2, 1]
    finally:
        fake.cleanup()


def test_a_backup_that_fails_its_check_stops_the_migration_from_committing(make_host, monkeypatch):
    host = make_host()
    host.start()

    def broken_check(result, *args, **kwargs):
        raise sqlite_backups.BackupError(f"{result['backup']}: quick_check of the copy failed: page 3 is bad")
    monkeypatch.setattr(riskmgr_migrate, "finish_backup", broken_check)
    with pytest.raises(MigrateError) as caught:
        host.upgrade()
    assert caught.value.fail_result["failed_phase"] == "migrate"
    assert "quick_check of the copy failed" in str(caught.value)
    assert "is v1, as the run left it" in str(caught.value)
    assert version_of(host.db) == 1 and host.pid() and host.logged_versions()[-1] == 1


def test_a_copy_that_fails_its_real_check_later_still_puts_the_host_back(make_host, monkeypatch):
    host = make_host(rows=2000)
    host.start()
    seen = {}

    def corrupt_then_check(result, *args, **kwargs):
        # The copy was made under the lock and published unchecked, unhashed and uncounted: damage it now.
        backup = Path(result["backup"])
        seen.update(copy_method=result["copy_method"], sha256=result["sha256"], counts=result["row_counts"])
        with open(backup, "r+b") as handle:
            for offset in range(2 * 4096, backup.stat().st_size - 4096, 3 * 4096):
                handle.seek(offset + 100)
                handle.write(os.urandom(4096 - 200))
        return sqlite_backups.finish_backup(result, *args, **kwargs)
    monkeypatch.setattr(riskmgr_migrate, "finish_backup", corrupt_then_check)
    with pytest.raises(MigrateError) as caught:
        host.upgrade()
    result = caught.value.fail_result
    assert seen == {"copy_method": "copy_file_range", "sha256": None, "counts": None}
    assert result["failed_phase"] == "migrate" and "quick_check of the copy failed" in str(caught.value)
    assert "is v1, as the run left it" in str(caught.value)
    assert not result["backup"]["confirmed"] and not Path(result["backup"]["manifest"]).exists()
    assert version_of(host.db) == 1 and host.pid() and host.logged_versions()[-1] == 1


def test_a_daemon_that_will_not_stop_leaves_everything_as_it_was(make_host):
    host = make_host("--ignore-sigterm")
    pid = host.start()
    digest = sha256(host.db)
    with pytest.raises(MigrateError) as caught:
        host.upgrade(stop_timeout=1)
    assert caught.value.fail_result["failed_phase"] == "stop" and not caught.value.fail_result["changed"]
    assert "The daemon was not stopped" in str(caught.value) and host.pid() == pid
    assert not host.backups.exists() and version_of(host.db) == 1
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not pid_is_running(pid))
    assert version_of(host.db) == 1 and digest  # only the daemon's own rows changed the file


def test_rows_only_in_the_wal_of_a_killed_daemon_are_backed_up_through_sqlite(make_host):
    host = make_host()
    commit_rows_only_to_wal(host.db, rows=25)
    counts = row_counts(host.db)
    result = host.upgrade()  # no daemon was running: nothing to stop, then started on v2
    assert result["backup"]["method"] == "backup API" and result["stop"]["stop_requested_at"] is None
    assert result["backup"]["row_counts"]["enforcement_log"] == counts["enforcement_log"]
    assert result["downtime_seconds"] is None and host.pid() and version_of(host.db) == 2


def test_settings_take_each_option_of_the_module_into_its_own_field():
    given = {"target_version": 7, "track_unrealized_pnl": True, "retention_days": 11, "max_backups": 12,
             "free_space_margin": 1.3, "integrity": "integrity", "keep_suffix": "kept", "stop_timeout": 13,
             "stop_force": True, "settle": 0.4, "start_timeout": 14, "log_path": "/var/log/rm.log",
             "process_match": "risk_manager", "busy_timeout": 15.0, "recovery_method": "restore",
             "release_link": "/opt/rm/current", "release_paths": {"1": "/opt/rm/r1", "2": "/opt/rm/r2"},
             "smoke_command": ["python3", "scripts/smoke_tests.py"], "smoke_timeout": 16}
    settings = MigrateSettings.from_params({**module_defaults("riskmgr_migrate"), **given})
    assert dataclasses.asdict(settings) == {
        "target_version": 7, "options": {"track_unrealized_pnl": True}, "retention_days": 11, "max_backups": 12,
        "free_space_margin": 1.3, "integrity": "integrity", "keep_suffix": "kept", "stop_timeout": 13,
        "stop_force": True, "settle": 0.4, "start_timeout": 14, "log_path": "/var/log/rm.log",
        "process_match": "risk_manager", "busy_timeout_s": 15.0, "recovery_method": "restore",
        "releases": {"link": "/opt/rm/current", "paths": {1: "/opt/rm/r1", 2: "/opt/rm/r2"}},
        "smoke": {"argv": ("python3", "scripts/smoke_tests.py"), "timeout": 16.0,
                  "runner": {"chdir": None, "account": None}}}


def test_hangup_interrupt_and_broken_pipe_are_ignored_while_shielded():
    # Whatever the process had before (default_int_handler in a terminal, SIG_IGN under nohup or
    # `&` without job control), the shield must hand back exactly that: a handler of our own is
    # both independent of how the suite was started and distinguishable from any default.
    received: list[int] = []

    def record(signum, _frame):
        received.append(signum)

    original = {signum: signal.signal(signum, record) for signum in riskmgr_migrate.SHIELDED_SIGNALS}
    try:
        with shielded_from_hangups():
            for signum in riskmgr_migrate.SHIELDED_SIGNALS:
                os.kill(os.getpid(), signum)
            time.sleep(0.05)
        restored = {signum: signal.getsignal(signum) for signum in riskmgr_migrate.SHIELDED_SIGNALS}
    finally:
        for signum, handler in original.items():
            signal.signal(signum, handler)
    assert received == [], "a shielded signal reached the handler it had before"
    assert all(handler is record for handler in restored.values()), restored


# --- the file copy --------------------------------------------------------------------------------

@pytest.mark.parametrize("chunk", [4096, 64 * 1024 * 1024])
def test_copy_hashing_hashes_what_landed_and_turns_a_wal_header_into_a_rollback_one(v1_db, tmp_path, chunk,
                                                                                  monkeypatch):
    monkeypatch.setattr(host_files, "COPY_CHUNK", chunk)
    with closing(sqlite3.connect(v1_db)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    source = Path(v1_db).read_bytes()
    assert source[18:20] == b"\x02\x02"
    target = tmp_path / "copy.db"
    with open(v1_db, "rb") as src, open(target, "w+b") as dst:
        digest = copy_hashing(src.fileno(), dst.fileno(), len(source))
    copied = target.read_bytes()
    assert copied[18:20] == b"\x01\x01" and copied[:18] == source[:18] and copied[20:] == source[20:]
    assert digest == hashlib.sha256(copied).hexdigest()
    with closing(sqlite3.connect(f"file:{target}?mode=ro", uri=True)) as conn:
        assert conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"


# --- online mode: one short transaction per object --------------------------------------------------

def test_per_step_migration_reaches_a_verified_v2_while_a_writer_keeps_committing(tmp_path):
    db = build_v1_db(tmp_path / "state.db", rows=3000)
    stop, written, failures = threading.Event(), [], []

    def writer():
        with closing(sqlite3.connect(db, timeout=5, isolation_level=None)) as conn:
            while not stop.is_set():
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    conn.execute("INSERT INTO enforcement_log (account_id, rule_id, action, reason, success, timestamp) "
                                 "VALUES (1, 'R', 'CHECK', 'writer', 1, '2026-11-24T00:00:00Z')")
                    conn.execute("COMMIT")
                    written.append(time.monotonic())
                except sqlite3.Error as err:
                    failures.append(str(err))
                time.sleep(0.01)
    thread = threading.Thread(target=writer)
    thread.start()
    try:
        time.sleep(0.1)
        result = migrate_database(str(db), MIGRATIONS, transactions="per_step")
        time.sleep(0.1)
    finally:
        stop.set()
        thread.join()
    assert not failures and len(written) > 10
    objects = [s["object"] for s in result["steps"]]
    assert objects.index("index idx_orders_state_account") < objects.index("row schema_version:2")  # version last
    assert objects[0] == "table schema_migration_objects"  # first: every later step records itself there
    creates = [s for s in result["steps"] if s["action"] == "create"]
    assert result["transactions"] == len(creates) + 1  # one per object, then the history rows together
    assert verify_database(str(db), MIGRATIONS, 2, integrity="quick")["ok"]
    assert migrate_database(str(db), MIGRATIONS, transactions="per_step")["changed"] is False


def test_per_step_migration_finishes_a_half_done_database(half_way_db):
    result = migrate_database(str(half_way_db), MIGRATIONS, transactions="per_step")
    actions = {s["object"]: s["action"] for s in result["steps"]}
    assert actions["index idx_positions_updated"] == "adopt"  # recorded, not made again
    assert actions["column enforcement_log.execution_time_ms"] == "adopt"
    assert verify_database(str(half_way_db), MIGRATIONS, 2, integrity="quick")["ok"]


def test_per_step_refuses_a_downgrade(v2_db):
    with pytest.raises(MigrationError, match="downgrade runs in one transaction"):
        migrate_database(str(v2_db), MIGRATIONS, target_version=1, transactions="per_step")


# --- the migrations sent as text, and the restart in one call ----------------------------------------

def test_catalog_from_texts_has_the_checksums_of_the_files():
    texts = {f"{p.parent.name}/{p.name}": p.read_bytes().decode() for p in sorted(MIGRATIONS.glob("v*/*.sql"))}
    from_texts, from_dir = load_catalog_texts(texts, "ctl:files/migrations"), load_catalog(MIGRATIONS)
    assert [(f.ledger_name, f.sha256) for f in from_texts.all_files()] == \
        [(f.ledger_name, f.sha256) for f in from_dir.all_files()]
    assert str(from_texts.all_files()[0].path).startswith("ctl:files/migrations/v1/")
    with pytest.raises(MigrationError, match="not a vN/NAME.sql"):
        load_catalog_texts({**texts, "../evil.sql": "CREATE TABLE x (a)"}, "files/migrations")


def test_lookup_reads_every_byte_and_the_report_action_writes_atomically(tmp_path):
    sys.path.insert(0, str(ROOT / "lookup_plugins"))
    sys.path.insert(0, str(ROOT / "action_plugins"))
    from riskmgr_migrations import read_migrations
    from riskmgr_report import write_report
    texts = read_migrations(MIGRATIONS)
    assert set(texts) == {f"{p.parent.name}/{p.name}" for p in MIGRATIONS.glob("v*/*.sql")}
    assert all(texts[k].encode() == (MIGRATIONS / k).read_bytes() for k in texts)
    path = write_report(str(tmp_path / "reports"), "run-1", "host-a", {"outcome": "changed"})
    assert json.loads(Path(path).read_text()) == {"outcome": "changed"}
    assert [p.name for p in Path(path).parent.iterdir()] == ["host-a.json"]


def test_restart_stops_and_starts_in_one_call_and_times_the_gap(make_host):
    host = make_host()
    old = host.start()
    result = restart_daemon(host.control(), 5, settle=0.3, start_timeout=10, log_path=str(host.log),
                            expect_log_line="Database schema version: 1", process_match="riskmgr_standin")
    assert result["was_running"] and result["pid"] != old and host.pid() == result["pid"]
    assert 0 < result["downtime_seconds"] < result["healthy_at"] - result["stop_requested_at"]


def test_a_trigger_made_after_the_preflight_is_refused_by_the_unit_before_its_stop(make_host):
    """Issue 16: what changed since the preflight (a SELECT * archive trigger made meanwhile) refuses the unit
    while the daemon still runs; the v1 daemon keeps its pid and its writes, nothing is backed up."""
    host = make_host()
    pid = host.start()
    with closing(sqlite3.connect(host.db, timeout=30)) as conn:
        conn.executescript("CREATE TABLE log_archive AS SELECT * FROM enforcement_log WHERE 0;"
                           "CREATE TRIGGER archive_log AFTER INSERT ON enforcement_log BEGIN "
                           "INSERT INTO log_archive SELECT * FROM enforcement_log WHERE id = NEW.id; END;")
    with pytest.raises(MigrateError) as refused:
        host.upgrade()
    message = str(refused.value)
    assert "trigger archive_log" in message and "The daemon was not stopped and nothing was changed" in message
    assert refused.value.fail_result["failed_phase"] == "plan"
    assert host.pid() == pid and version_of(host.db) == 1 and not host.backups.exists()
    assert host.logged_versions() == [1]


@pytest.mark.parametrize("sql", [
    "CREATE TABLE log_notes (log_id INTEGER REFERENCES enforcement_log(id), note TEXT);"
    "INSERT INTO log_notes VALUES (999999, 'orphaned long ago');",
    "CREATE TABLE rule_notes (rule_id TEXT REFERENCES enforcement_log(rule_id), note TEXT);"
    "INSERT INTO rule_notes VALUES ('r1', 'into a column that is not unique');",
], ids=["orphans", "foreign_key_mismatch"])
def test_problems_the_database_had_before_do_not_fail_the_unit(make_host, sql):
    """Issue 16, cases 3 and 4: judged against its own backup, the unit's verification passes; no pending
    record is left, and a rerun changes nothing."""
    from daemon_watch import read_pending
    host = make_host()
    host.start()
    with closing(sqlite3.connect(host.db, timeout=30)) as conn:
        conn.executescript(sql)
    result = host.upgrade()
    assert result["failed_phase"] is None and result["verification"]["ok"], result["verification"]["failed_checks"]
    fk = [c for c in result["verification"]["checks"] if c["name"] == "foreign_keys"][0]
    assert "there before the change, not judged" in fk["detail"]
    assert version_of(host.db) == 2 and host.logged_versions()[-1] == 2
    assert read_pending(str(host.db)) is None or read_pending(str(host.db))["to_version"] == 2
    again = host.upgrade()
    assert not again["changed"] or again["finish"]
