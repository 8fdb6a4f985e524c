"""The offline unit and the recovery with releases side by side: the link switched with the schema,
the smoke test, the pending record, and every way back to v1 on release 1. Real files, the real
stand-in started through the link (tools/local_fleet.py's layout: releases/1, releases/2, current)."""
from __future__ import annotations

import json
import os
import re
import sqlite3
import sys
from contextlib import closing
from pathlib import Path

import pytest
from daemon_watch import pending_path, read_pending, write_pending
from fixtures import MIGRATIONS, row_counts, switch_link, wait_for
from local_fleet import RELEASE_DAEMON, RELEASE_SMOKE, lay_out_releases
from pidfile_control import PidfileControl
from releases import Releases
from riskmgr_recover import DaemonSettings, RecoverSettings, recover_host
from riskmgr_migrate import MigrateError
from sqlite_migration import migrate_database
from test_riskmgr_migrate import FAST, Host, version_of

RELEASE_LINE = re.compile(r"INFO riskmgr release (\d+) starting")


class ReleasedHost(Host):
    """A Host whose daemon starts through <dir>/current, which names releases/1 or releases/2."""

    process_match = "bin/riskmgr_daemon.py"

    def __init__(self, tmp_path: Path, faults: tuple[str, ...] = ()) -> None:
        super().__init__(tmp_path, rows=300)
        lay_out_releases(tmp_path, list(faults))
        self.link = tmp_path / "current"
        self.releases = Releases(link=str(self.link), paths={1: str(tmp_path / "releases" / "1"),
                                                             2: str(tmp_path / "releases" / "2")})

    def control(self) -> PidfileControl:
        return PidfileControl(str(self.pidfile), [sys.executable, str(self.link / RELEASE_DAEMON), "--db", str(self.db),
                                                  "--pidfile", str(self.pidfile), "--log", str(self.log),
                                                  "--interval-ms", "20"])

    def upgrade(self, check_mode: bool = False, want_diff: bool = False, **options) -> dict:
        smoke = [sys.executable, str(self.link / RELEASE_SMOKE), "--db", str(self.db), "--pidfile", str(self.pidfile)]
        options = {"release_link": str(self.link), "release_paths": {"1": self.releases.paths[1],
                                                                     "2": self.releases.paths[2]},
                   "smoke_command": smoke, "smoke_timeout": 30, **options}
        return super().upgrade(check_mode=check_mode, want_diff=want_diff, **options)

    def linked(self) -> str:
        return Path(os.readlink(self.link)).name

    def logged_releases(self) -> list[int]:
        return [int(n) for n in RELEASE_LINE.findall(self.log.read_text())]


@pytest.fixture
def make_host(tmp_path):
    hosts = []

    def make(*faults: str) -> ReleasedHost:
        host = ReleasedHost(tmp_path / f"h{len(hosts)}", faults)
        hosts.append(host)
        return host
    yield make
    for host in hosts:
        host.cleanup()


def ids(db: Path) -> set[int]:
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as conn:
        return {row[0] for row in conn.execute("SELECT id FROM enforcement_log")}


def test_the_upgrade_starts_release_2_on_v2_smoke_tests_it_and_leaves_it_pending(make_host):
    host = make_host()
    host.start()
    result = host.upgrade()
    assert result["changed"] and result["failed_phase"] is None and version_of(host.db) == 2
    assert result["start"]["release"]["before"] == host.releases.paths[1]
    assert result["start"]["release"]["after"] == host.releases.paths[2] and host.linked() == "2"
    assert host.logged_releases() == [1, 2] and host.pid()
    assert result["smoke"]["rc"] == 0 and "smoke test passed: release 2, schema v2" in result["smoke"]["output"]
    # Pending until a watch accepts it: the record says where it came from.
    record = read_pending(str(host.db))
    assert (record["from_version"], record["to_version"], record["release_before"]) == (1, 2, host.releases.paths[1])
    wait_for(lambda: row_counts(host.db)["enforcement_log"] > result["backup"]["row_counts"]["enforcement_log"] + 3)
    with closing(sqlite3.connect(f"file:{host.db}?mode=ro", uri=True)) as conn:
        assert conn.execute("SELECT COUNT(*) FROM enforcement_log WHERE execution_time_ms > 0").fetchone()[0] > 0


def test_check_mode_plans_the_switch_and_touches_nothing(make_host):
    host = make_host()
    pid = host.start()
    result = host.upgrade(check_mode=True)
    assert result["changed"] and result["release"]["switch_needed"] and result["release"]["linked"] == host.releases.paths[1]
    assert host.linked() == "1" and host.pid() == pid and version_of(host.db) == 1
    assert not pending_path(str(host.db)).exists()


def test_a_failed_smoke_test_goes_back_in_place_keeping_the_rows_written_on_v2_and_runs_release_1(make_host):
    host = make_host("smoke-fails")
    host.start()
    with pytest.raises(MigrateError) as caught:
        host.upgrade()
    message, result = str(caught.value), caught.value.fail_result
    assert result["failed_phase"] == "smoke" and "smoke test failed: injected fault" in message
    recovery = result["recovery"]
    assert recovery["method"] == "downgrade" and recovery["why"].startswith("the daemon served on v2")
    assert "returned to v1 in place, every row kept" in message and recovery["errors"] == []
    # Every row release 2 wrote is in the live v1 file; the v2 file backed up first keeps their timings.
    v2_backup = Path(recovery["backup"])
    assert version_of(v2_backup) == 2 and version_of(host.db) == 1
    assert ids(v2_backup) <= ids(host.db)
    assert host.linked() == "1" and host.logged_releases() == [1, 2, 1] and host.pid()
    assert not pending_path(str(host.db)).exists()


def test_release_2_refusing_to_start_gets_the_backup_and_release_1_back(make_host):
    host = make_host("refuse-start")
    host.start()
    with pytest.raises(MigrateError) as caught:
        host.upgrade()
    recovery = caught.value.fail_result["recovery"]
    assert caught.value.fail_result["failed_phase"] == "start" and recovery["method"] == "restore"
    assert version_of(host.db) == 1 and host.linked() == "1" and host.logged_releases() == [1, 2, 1]
    assert recovery["kept"] and version_of(Path(recovery["kept"][0])) == 2
    assert not pending_path(str(host.db)).exists()


def test_a_pending_upgrade_on_its_release_is_smoke_tested_again_without_a_restart(make_host):
    host = make_host()
    host.start()
    host.upgrade()
    pid = host.pid()
    again = host.upgrade()
    # Done database, still pending: finished, not redone - no stop, no backup, the smoke test again.
    assert again["finish"] and not again["changed"] and again["stop"] is None and again["backup"] is None
    assert again["smoke"]["rc"] == 0 and host.pid() == pid and read_pending(str(host.db))


def test_a_v2_database_whose_link_names_release_1_is_restarted_on_release_2(make_host):
    host = make_host()
    host.start()
    host.control().request_stop(host.pid())
    wait_for(lambda: host.pid() is None)
    migrate_database(str(host.db), MIGRATIONS)  # done by hand, say: no pending record
    host.start()
    result = host.upgrade()
    assert result["finish"] and result["changed"] and result["stop"]["changed"]
    assert host.linked() == "2" and host.logged_releases() == [1, 1, 2] and not read_pending(str(host.db))


def recover_settings(host: ReleasedHost, **changes) -> RecoverSettings:
    values = dict(path=str(host.db), backup_dir=str(host.backups), back_to=1, releases=host.releases,
                  daemon=DaemonSettings(stop_timeout=FAST["stop_timeout"], settle=FAST["settle"],
                                        start_timeout=FAST["start_timeout"], log_path=str(host.log),
                                        process_match=ReleasedHost.process_match))
    values.update(changes)
    return RecoverSettings(**values)


def test_a_daemon_that_served_on_v2_by_updating_rows_keeps_its_updates_when_put_back(make_host):
    host = make_host()
    host.start()
    result = host.upgrade()
    host.control().request_stop(host.pid())
    wait_for(lambda: host.pid() is None)
    # What it did on v2 changed rows, not their number (counts as in the backup): only `served` tells.
    backed_up = result["backup"]["row_counts"]["enforcement_log"]
    with closing(sqlite3.connect(host.db)) as conn, conn:
        newest = conn.execute("SELECT id FROM enforcement_log ORDER BY id LIMIT 1 OFFSET ?", (backed_up - 1,)).fetchone()[0]
        conn.execute("DELETE FROM enforcement_log WHERE id > ?", (newest,))
        conn.execute("UPDATE positions SET quantity = quantity + 1000 WHERE rowid = 1")
    report = recover_host(recover_settings(host, served=True), host.catalog, host.control(),
                          result["backup"]["backup"])
    assert report["errors"] == [] and report["method"] == "downgrade", report
    assert report["why"].startswith("the daemon served on v2")
    with closing(sqlite3.connect(f"file:{host.db}?mode=ro", uri=True)) as conn:
        updated = conn.execute("SELECT quantity FROM positions WHERE rowid = 1").fetchone()[0]
    with closing(sqlite3.connect(f"file:{result['backup']['backup']}?mode=ro", uri=True)) as conn:
        original = conn.execute("SELECT quantity FROM positions WHERE rowid = 1").fetchone()[0]
    assert updated == original + 1000  # a restore would have put `original` back
    assert version_of(host.db) == 1 and host.linked() == "1" and report["release"]["version"] == 1
    assert not pending_path(str(host.db)).exists()


def test_a_release_that_does_not_start_is_replaced_once_by_the_one_the_host_ran(make_host):
    host = make_host("refuse-start")
    host.start()
    host.control().request_stop(host.pid())
    wait_for(lambda: host.pid() is None)
    migrate_database(str(host.db), MIGRATIONS)
    switch_link(host.link, host.releases.paths[2])
    write_pending(str(host.db), 1, 2, host.releases.paths[1])
    # v2 is acceptable as it is; release 2 refuses to start; release 1 (which ran before) runs on v2.
    report = recover_host(recover_settings(host, back_to=2, accept=(2,), release_before=host.releases.paths[1]),
                          host.catalog, host.control())
    assert version_of(host.db) == 2 and host.linked() == "1" and host.pid()
    assert report["errors"] and "refusing to start" in report["errors"][0]
    assert "runs again on v2 with release v1" in report["daemon"], report
    assert json.loads(pending_path(str(host.db)).read_text())["from_version"] == 1  # v2 stays unaccepted
