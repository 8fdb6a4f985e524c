"""riskmgr_recover on every state a fault can leave a host in: real files, a real stand-in daemon.

Each test makes the state by hand (what a killed unit, a failed verify, a daemon that served on
v2, a per-step migration cut short, a damaged file leave behind), runs the recovery, and checks
the promise: the database untouched at the run's first version or verified there, every row
kept (in the live file, or in the file kept beside it), the daemon running on it.
"""
from __future__ import annotations

import re
import shutil
import sqlite3
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest
from fixtures import MIGRATIONS, row_counts, wait_for
from host_processes import read_pid
from pidfile_control import PidfileControl
from riskmgr_recover import DaemonSettings, RecoverSettings, recover_host, recovery_text
from sqlite_backups import backup_database
from sqlite_common import MigrationError
from sqlite_migration import migrate_database
from test_riskmgr_migrate import FAST, Host, version_of


@pytest.fixture
def make_host(tmp_path):
    hosts = []

    def make(*daemon_args: str) -> Host:
        host = Host(tmp_path / f"h{len(hosts)}", *daemon_args, rows=300)
        hosts.append(host)
        return host
    yield make
    for host in hosts:
        host.cleanup()


def settings(host: Host, **changes) -> RecoverSettings:
    values = dict(path=str(host.db), backup_dir=str(host.backups), back_to=1, since=time.time() - 3600,
                  daemon=DaemonSettings(stop_timeout=FAST["stop_timeout"], settle=FAST["settle"],
                                        start_timeout=FAST["start_timeout"], log_path=str(host.log),
                                        process_match="riskmgr_standin"))
    values.update(changes)
    return RecoverSettings(**values)


def recover(host: Host, backup: str | None = None, control: PidfileControl | None = None, **changes) -> dict:
    return recover_host(settings(host, **changes), host.catalog, control or host.control(), backup)


def stopped_and_migrated(host: Host) -> dict:
    """What a unit killed after its commit leaves: the daemon down, v2 committed, this run's v1 backup."""
    host.control().request_stop(host.pid())
    wait_for(lambda: host.pid() is None)
    taken = backup_database(str(host.db), str(host.backups), daemon_stopped=True)
    migrate_database(str(host.db), MIGRATIONS)
    return taken


def test_an_untouched_v1_with_its_daemon_running_is_left_alone(make_host):
    host = make_host()
    pid = host.start()
    report = recover(host)
    assert not report["changed"] and report["errors"] == [] and report["method"] is None
    assert report["database"].startswith("is v1") and report["pid"] == pid == host.pid()


def test_an_untouched_v1_with_its_daemon_down_gets_its_daemon_started(make_host):
    host = make_host()
    host.start()
    host.control().request_stop(host.pid())
    wait_for(lambda: host.pid() is None)
    report = recover(host)
    assert report["errors"] == [] and report["method"] is None and host.pid() == report["pid"]
    assert host.logged_versions()[-1] == 1


def test_a_v2_nothing_was_written_on_is_restored_from_the_runs_backup_and_the_v2_file_kept(make_host):
    host = make_host()
    host.start()
    taken = stopped_and_migrated(host)
    v2_rows = row_counts(host.db)
    report = recover(host, backup=taken["backup"])
    assert report["errors"] == [] and report["method"] == "restore", report
    assert report["why"] == "nothing was written since the backup"
    assert version_of(host.db) == 1
    kept = Path(report["kept"][0])  # with its -wal and -shm, when it had them
    assert all(name.startswith(str(kept)) for name in report["kept"])
    assert version_of(kept) == 2 and row_counts(kept)["enforcement_log"] == v2_rows["enforcement_log"]
    assert host.pid() and host.logged_versions()[-1] == 1
    assert "was restored from" in recovery_text(str(host.db), report)


def test_a_v2_the_daemon_served_on_is_downgraded_in_place_keeping_its_rows(make_host):
    host = make_host()
    host.start()
    taken = stopped_and_migrated(host)
    host.start()  # the daemon served on v2 (the run failed later: a smoke test, the watch)
    wait_for(lambda: row_counts(host.db)["enforcement_log"] > taken["row_counts"]["enforcement_log"] + 5)
    report = recover(host, backup=taken["backup"])
    assert report["errors"] == [] and report["method"] == "downgrade", report
    assert report["why"].startswith("the daemon wrote rows since the backup (enforcement_log +")
    assert version_of(host.db) == 1 and report["kept"] == []
    assert row_counts(host.db)["enforcement_log"] > taken["row_counts"]["enforcement_log"] + 5  # kept in place
    v2_backup = Path(report["backup"])
    assert version_of(v2_backup) == 2  # the values of the dropped column stay there
    # The daemon was stopped before anything changed: its last row on v2 is the last row of that backup.
    last_on_v2 = int(re.findall(r"stopped after \d+ rows; last id (\d+)", host.log.read_text())[-1])
    with closing(sqlite3.connect(f"file:{v2_backup}?mode=ro", uri=True)) as conn:
        assert conn.execute("SELECT MAX(id) FROM enforcement_log").fetchone()[0] == last_on_v2
    assert host.pid() and host.logged_versions()[-3:] == [1, 2, 1]


def test_a_partial_database_left_by_online_steps_is_undone_in_place(make_host, tmp_path):
    host = make_host()
    pid = host.start()
    backup_database(str(host.db), str(host.backups))
    migrations = Path(shutil.copytree(MIGRATIONS, tmp_path / "migrations"))
    (migrations / "v2" / "035_breaks.sql").write_text(
        "-- description: valid SQL that only the data breaks\n"
        "CREATE UNIQUE INDEX idx_one_log_per_success ON enforcement_log(success);\n")
    with pytest.raises(MigrationError):
        migrate_database(str(host.db), migrations, transactions="per_step")
    report = recover(host)
    assert report["state_found"] == "partial" and report["method"] == "downgrade" and report["errors"] == []
    assert version_of(host.db) == 1
    with closing(sqlite3.connect(f"file:{host.db}?mode=ro", uri=True)) as conn:
        left = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE name LIKE 'schema_%'")]
    assert left == []
    assert host.pid() and host.pid() != pid  # stopped for the downgrade, started again on v1


def test_a_damaged_v2_is_restored_not_changed_in_place(make_host):
    host = make_host()
    host.start()
    taken = stopped_and_migrated(host)
    with closing(sqlite3.connect(host.db)) as conn:
        conn.execute("PRAGMA journal_mode=DELETE")
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        size = conn.execute("PRAGMA page_size").fetchone()[0]
    with open(host.db, "r+b") as handle:  # a b-tree page header in the middle of the file
        handle.seek(size * (pages // 2))
        handle.write(b"\xff" * 16)
    report = recover(host, backup=taken["backup"])
    assert report["method"] == "restore" and report["errors"] == [], report
    assert report["why"].startswith("the file cannot be changed in place")
    assert version_of(host.db) == 1 and host.pid()


def test_without_a_backup_a_v2_is_downgraded_and_when_asked_restored(make_host):
    host = make_host()
    host.start()
    stopped_and_migrated(host)
    for backup in host.backups.iterdir():
        backup.unlink()  # this run's backup gone: the downgrade is the only way
    report = recover(host)
    assert report["method"] == "downgrade" and report["why"] == "no backup of this run to restore"
    assert version_of(host.db) == 1 and host.pid()

    second = make_host()
    second.start()
    taken = stopped_and_migrated(second)
    second.start()
    wait_for(lambda: row_counts(second.db)["enforcement_log"] > taken["row_counts"]["enforcement_log"])
    asked = recover(second, backup=taken["backup"], method="restore")
    assert asked["method"] == "restore" and asked["why"].startswith("asked for")
    kept = Path(asked["kept"][0])
    assert row_counts(kept)["enforcement_log"] > taken["row_counts"]["enforcement_log"]  # kept beside it


def test_a_rollback_that_failed_leaves_either_version_as_it_is_and_starts_the_daemon(make_host):
    host = make_host()
    host.start()
    stopped_and_migrated(host)  # a rollback that failed before it changed the database: v2, daemon down
    report = recover(host, back_to=2, accept=(1, 2))
    assert report["method"] is None and report["database"].startswith("is v2") and report["errors"] == []
    assert version_of(host.db) == 2 and host.pid() and host.logged_versions()[-1] == 2


def test_a_daemon_that_will_not_start_is_reported_not_hidden(make_host):
    host = make_host("--refuse-version", "1")
    broken = PidfileControl(str(host.pidfile), [sys.executable, "-c", "import sys; sys.exit(3)"])
    report = recover(host, control=broken)
    assert report["daemon"] == "is NOT running"
    assert report["errors"] and report["errors"][0].startswith("starting the daemon: ")
    assert "Check the host now" in recovery_text(str(host.db), report)
    assert read_pid(str(host.pidfile)) is None


def test_the_report_reads_the_files_state_when_only_the_verification_after_the_restore_failed(make_host):
    """Issue 16, case 8: the message says what the file is at that moment, never what the failed step implies."""
    host = make_host()
    host.start()
    host.control().request_stop(host.pid())
    wait_for(lambda: host.pid() is None)
    # A trigger no v1 insert passes (it names a column v1 lacks): the restored v1 fails verification.
    with closing(sqlite3.connect(host.db)) as conn:
        conn.execute("CREATE TRIGGER stale AFTER INSERT ON enforcement_log BEGIN SELECT NEW.execution_time_ms; END")
        conn.commit()
    taken = backup_database(str(host.db), str(host.backups), daemon_stopped=True)
    migrate_database(str(host.db), MIGRATIONS)
    report = recover(host, backup=taken["backup"], method="restore", back_to=1)
    assert report["state_now"] == "v1" and report["version"] == 1, report
    assert report["database"].startswith("is v1 now (read from the file), but its verification"), report
    assert any("trigger stale" in error for error in report["errors"]), report["errors"]
    assert "it is v2 now" not in recovery_text(str(host.db), report)
