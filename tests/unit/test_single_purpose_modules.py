"""The modules split out so that each name says what it does, run through ansible on real files and a
real stand-in daemon: riskmgr_pending writes the pending record (and riskmgr_watch state=pending, its
earlier spelling, still does, through the watch action), riskmgr_start_if_down starts a daemon found
down on a database that needs nothing, and leaves a running one alone."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from ansible_run import run_module
from fixtures import MIGRATIONS, wait_for
from host_processes import pid_is_running
from make_state_db import build_v1_db
from test_riskmgr_migrate import Host, make_host, version_of  # noqa: F401  (make_host is a fixture)

pytestmark = pytest.mark.slow


def pending(db: Path) -> Path:
    return Path(f"{db}.riskmgr-pending")


@pytest.mark.parametrize("module, extra", [("riskmgr_pending", {}),
                                           ("riskmgr_watch", {"state": "pending", "service_name": "risk-manager"})])
def test_the_pending_record_is_written_once_and_not_in_check_mode(tmp_path, module, extra):
    db = build_v1_db(tmp_path / "state.db", rows=10)
    args = {"path": str(db), "from_version": 1, "to_version": 2, **extra}
    assert run_module(module, args, check=True)["changed"] and not pending(db).exists()
    written = run_module(module, args)
    assert written["changed"] and not written["failed"], written
    assert json.loads(pending(db).read_text())["from_version"] == 1
    assert not run_module(module, args)["changed"]  # the same upgrade's record is kept as it is


def test_start_if_down_starts_a_stopped_daemon_on_the_database_as_it_is_and_leaves_a_running_one(make_host):
    host: Host = make_host(rows=50)
    pid = host.start()
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not pid_is_running(pid, host.process_match))
    args = {"path": str(host.db), "backup_dir": str(host.backups), "migrations_dir": str(MIGRATIONS), "version": 1,
            "service_manager": "command", "pidfile": str(host.pidfile), "log_path": str(host.log),
            "process_match": host.process_match, "settle": 0.3, "start_timeout": 20,
            "start_command": host.control().start_argv}
    started = run_module("riskmgr_start_if_down", args)
    assert started["changed"] and not started["failed"] and started["method"] is None, started
    assert host.pid() and host.pid() != pid and version_of(host.db) == 1
    again = run_module("riskmgr_start_if_down", args)
    assert not again["changed"] and not again["failed"] and again["pid"] == host.pid(), again


def test_the_watch_that_accepts_releases_the_run_lock_and_a_lock_it_cannot_remove_fails_no_watch(make_host):
    host: Host = make_host(rows=50)
    pid = host.start()
    daemon = {"service_manager": "command", "pidfile": str(host.pidfile), "log_path": str(host.log),
              "process_match": host.process_match}
    lock = Path(f"{host.db}.migrate.lock")
    for held, unremovable in ((True, False), (False, True)):
        assert not run_module("riskmgr_pending", {"path": str(host.db), "from_version": 1, "to_version": 2})["failed"]
        if unremovable:
            lock.mkdir()  # not a lock file that can be read and removed
        else:
            lock.write_text(json.dumps({"run_id": "r1", "owner": "pytest"}), encoding="utf-8")
        watched = run_module("riskmgr_watch", {"path": str(host.db), "seconds": 0, "pid": pid, **daemon,
                                               "release": {"path": str(lock), "run_id": "r1"}})
        # Accepted either way: a lock the watch cannot remove is a warning for the report to act on, not a
        # failed watch (which would put a healthy upgrade back).
        assert not watched["failed"] and watched["accepted"] and not pending(host.db).exists(), watched
        assert watched["released"] is held and lock.exists() is unremovable, watched
        if unremovable:
            assert any(str(lock) in warning for warning in watched.get("warnings", [])), watched
    assert host.pid() == pid  # watched, never restarted
