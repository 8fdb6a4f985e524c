"""riskmgr_daemon against real processes: the stand-in daemon on a real v1/v2 database."""
from __future__ import annotations

import datetime
import json
import os
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path
from types import SimpleNamespace

import pytest
from ansible.module_utils.testing import patch_module_args
from ansible_run import load_library_module, run_module
from daemon_account import CommandRunner, lookup_account
from fake_systemd import FakeSystemd
from host_processes import pid_is_running, process_cmdline, process_state, read_pid, wait_for_exit
from pidfile_control import PidfileControl, run_start_command, split_command
from riskmgr_daemon import check_daemon, start_daemon, stop_daemon
from service_manager import FileLog, read_log_since
from sqlite_common import DaemonError
from systemd_control import JournalLog, SystemdControl, unit_problems

ROOT = Path(__file__).resolve().parents[2]
STANDIN = ROOT / "tools" / "riskmgr_standin.py"
MIGRATIONS = ROOT / "files" / "migrations"
FAST = {"settle": 0.3, "start_timeout": 5}


def enforcement_count(db: Path) -> int:
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as conn:
        return conn.execute("SELECT COUNT(*) FROM enforcement_log").fetchone()[0]


class Host:
    """One host's daemon files under tmp_path; teardown SIGKILLs any stand-in or helper left."""

    def __init__(self, tmp_path: Path) -> None:
        self.db = tmp_path / "state.db"
        with closing(sqlite3.connect(self.db)) as conn:
            conn.executescript((MIGRATIONS / "v1" / "000_baseline.sql").read_text())
        self.pidfile = tmp_path / "riskmgr.pid"
        self.log = tmp_path / "riskmgr.log"
        self.pids: set[int] = set()
        self.helpers: list[subprocess.Popen] = []

    def start_command(self, *extra: str) -> list[str]:
        return [sys.executable, str(STANDIN), "--db", str(self.db), "--pidfile", str(self.pidfile),
                "--log", str(self.log), "--interval-ms", "20", *extra]

    def control(self, *extra: str) -> PidfileControl:
        return PidfileControl(str(self.pidfile), self.start_command(*extra))

    def make_v2(self) -> None:
        with closing(sqlite3.connect(self.db)) as conn:
            for name in ("010_schema_version.sql", "020_enforcement_log_execution_time.sql"):
                conn.executescript((MIGRATIONS / "v2" / name).read_text())
            conn.execute("INSERT INTO schema_version (version, applied_at, description) "
                         "VALUES (2, datetime('now'), 'test')")
            conn.commit()

    def start(self, *extra: str, **options) -> dict:
        result = start_daemon(self.control(*extra), log_path=str(self.log), **{**FAST, **options})
        self.track(result["pid"])
        return result

    def stop(self, **options) -> dict:
        return stop_daemon(self.control(), options.pop("stop_timeout", 5), log_path=str(self.log), **options)

    def helper(self, argv: list[str]) -> subprocess.Popen:
        process = subprocess.Popen(argv)
        self.helpers.append(process)
        # Popen returns once the exec has begun, but the kernel publishes the new /proc/PID/cmdline
        # a moment later (it reads empty until then): wait, or a process_match check races it.
        deadline = time.monotonic() + 5
        while (argv[0] not in process_cmdline(process.pid) and process_state(process.pid) not in (None, "Z")
               and time.monotonic() < deadline):
            time.sleep(0.01)
        return process

    def track(self, pid: int | None) -> None:
        if pid:
            self.pids.add(pid)

    def cleanup(self) -> None:
        try:
            self.track(read_pid(str(self.pidfile)))
        except DaemonError:
            pass
        for pid in self.pids:
            if pid_is_running(pid, "riskmgr_standin"):
                os.kill(pid, signal.SIGKILL)
        for process in self.helpers:
            process.kill()
            process.wait()


@pytest.fixture
def host(tmp_path):
    files = Host(tmp_path)
    yield files
    files.cleanup()


# --- pure functions ----------------------------------------------------------------------------

def test_read_pid(tmp_path):
    pidfile = tmp_path / "x.pid"
    assert read_pid(str(pidfile)) is None
    pidfile.write_text("")
    assert read_pid(str(pidfile)) is None  # being written: not an error yet
    pidfile.write_text("4242\n")
    assert read_pid(str(pidfile)) == 4242
    pidfile.write_text("daemon\n")
    with pytest.raises(DaemonError, match=rf"^{pidfile}: does not hold a pid \('daemon'\); if the daemon is "
                                          "stopped, remove the file and rerun$"):
        read_pid(str(pidfile))


def test_pid_is_running_needs_a_live_process_that_matches(host):
    sleeper = host.helper(["sleep", "30"])
    assert pid_is_running(sleeper.pid)
    assert pid_is_running(sleeper.pid, "sleep 30")
    assert not pid_is_running(sleeper.pid, "riskmgr_standin")  # a reused pid is not our daemon
    assert not pid_is_running(None)


def test_a_zombie_counts_as_exited(host):
    quick = host.helper(["true"])
    # Not reaped yet: the process is gone but its /proc entry stays, in state Z.
    assert wait_for_exit(quick.pid, timeout=5)
    assert process_state(quick.pid) == "Z"
    assert not pid_is_running(quick.pid)


def test_wait_for_exit_times_out_on_a_live_process(host):
    sleeper = host.helper(["sleep", "30"])
    began = time.monotonic()
    assert not wait_for_exit(sleeper.pid, timeout=0.2)
    assert 0.2 <= time.monotonic() - began < 2


def test_only_complete_lines_written_after_the_offset_count(tmp_path):
    log = tmp_path / "riskmgr.log"
    log.write_text("old INFO Database schema version: 2\n")
    daemon_log = FileLog(str(log))
    offset = daemon_log.mark()
    with open(log, "a") as handle:
        handle.write("new INFO Database schema version: 1\nnew INFO Database schema ver")
    assert read_log_since(str(log), offset) == ["new INFO Database schema version: 1"]
    assert daemon_log.find_line(offset, "Database schema version: 2") is None
    with open(log, "a") as handle:
        handle.write("sion: 2\n")
    assert daemon_log.find_line(offset, "Database schema version: 2") == ("new INFO Database schema version: 2", None)
    log.write_text("rotated version: 2\n")  # smaller than the offset: a new file, read it all
    assert daemon_log.find_line(offset, "version: 2") == ("rotated version: 2", None)
    assert read_log_since(str(tmp_path / "missing.log"), 0) == []


def test_split_command():
    assert split_command("/opt/rm/bin/riskmgr --config '/etc/risk manager.yml'") == \
        ["/opt/rm/bin/riskmgr", "--config", "/etc/risk manager.yml"]
    assert split_command(["a", 1]) == ["a", "1"]
    with pytest.raises(DaemonError, match="^start_command is empty"):
        split_command("  ")


def test_start_command_failure_reports_status_and_stderr():
    with pytest.raises(DaemonError, match=r"exited with status 3 \(stderr: cannot bind \| really\)$"):
        run_start_command(["sh", "-c", "echo cannot bind >&2; echo really >&2; exit 3"], timeout=5)
    with pytest.raises(DaemonError, match=r"did not return within 0.3s and was killed \(stdout: started\)"):
        run_start_command(["sh", "-c", "echo started; exec sleep 30"], timeout=0.3)
    with pytest.raises(DaemonError, match="could not be run: No such file or directory"):
        run_start_command(["/nonexistent/riskmgr"], timeout=5)


def test_start_command_that_leaves_its_output_open_still_returns(tmp_path):
    # A badly behaved launcher: its background child keeps stdout open. Pipes would hang here.
    began = time.monotonic()
    run_start_command(["sh", "-c", f"sleep 3 & echo $! > {tmp_path}/bg.pid"], timeout=5)
    assert time.monotonic() - began < 2
    os.kill(int((tmp_path / "bg.pid").read_text()), signal.SIGKILL)


# --- stop and start the stand-in -------------------------------------------------------------

def test_start_then_stop_are_idempotent_and_time_the_downtime(host):
    started = host.start(expect_log_line="Database schema version: 1")
    assert started["changed"] and not started["was_running"]
    assert started["log_line"].endswith("INFO Database schema version: 1")
    assert started["started_at"] <= started["healthy_at"]
    assert pid_is_running(started["pid"], "riskmgr_standin")
    rows = enforcement_count(host.db)
    time.sleep(0.2)
    assert enforcement_count(host.db) > rows  # it really writes

    again = host.start(expect_log_line="Database schema version: 1")
    assert not again["changed"] and again["was_running"] and again["pid"] == started["pid"]

    stopped = host.stop(process_match="riskmgr_standin")
    assert stopped["changed"] and stopped["was_running"] and not stopped["killed"]
    assert stopped["pid"] == started["pid"] and not pid_is_running(started["pid"])
    assert 0 <= stopped["stop_seconds"] < 5 and stopped["stop_requested_at"] <= stopped["stopped_at"]
    assert "stopped after" in host.log.read_text().splitlines()[-1]
    assert not host.stop()["changed"]  # nothing left to stop

    back = host.start(expect_log_line="Database schema version: 1")
    assert back["healthy_at"] - stopped["stop_requested_at"] > 0.3  # downtime includes the settle time


def test_check_mode_neither_starts_nor_signals(host):
    predicted = start_daemon(host.control(), log_path=str(host.log), check_mode=True, **FAST)
    assert predicted["changed"] and predicted["pid"] is None
    assert not host.pidfile.exists() and not host.log.exists()
    pid = host.start()["pid"]
    assert stop_daemon(host.control(), 5, check_mode=True)["changed"]
    time.sleep(0.1)
    assert pid_is_running(pid)


def test_daemon_that_refuses_the_schema_fails_the_start_with_its_log(host):
    host.make_v2()
    with pytest.raises(DaemonError) as caught:
        host.start("--refuse-version", "2", expect_log_line="Database schema version: 2")
    message = str(caught.value)
    assert message.startswith(f"{host.pidfile}: pid ")
    assert "after the start (before the settle time passed); it had logged 'Database schema version: 2'" in message
    assert f"last lines of {host.log}: " in message
    assert "ERROR schema version 2 is not supported by this build; refusing to run" in message
    assert message.endswith("fix the cause shown in the log, then rerun")
    assert "\n" not in message


def test_old_log_lines_do_not_count_and_a_silent_daemon_is_left_running(host):
    host.log.write_text("2026-11-01T00:00:00.000Z INFO Database schema version: 2\n")  # an earlier start
    with pytest.raises(DaemonError) as caught:
        host.start(expect_log_line="Database schema version: 2", start_timeout=1)
    message = str(caught.value)
    assert "is running but did not log 'Database schema version: 2'" in message
    assert "within 1s of the start and was left running" in message
    assert "INFO Database schema version: 1" in message and "2026-11-01" not in message
    assert pid_is_running(read_pid(str(host.pidfile)), "riskmgr_standin")


def test_daemon_that_ignores_sigterm_is_left_running_unless_forced(host):
    pid = host.start("--ignore-sigterm")["pid"]
    with pytest.raises(DaemonError, match=rf"^{host.pidfile}: pid {pid} is still running 0.5s after SIGTERM and "
                                          "was left running .*rerun with stop_force enabled to SIGKILL it$"):
        host.stop(stop_timeout=0.5)
    assert pid_is_running(pid)
    forced = host.stop(stop_timeout=0.5, stop_force=True)
    assert forced["changed"] and forced["killed"]
    assert not pid_is_running(pid)


def test_stale_pidfile_naming_another_process_is_neither_signalled_nor_trusted(host):
    stranger = host.helper(["sleep", "30"])
    host.pidfile.write_text(f"{stranger.pid}\n")
    stopped = host.stop(process_match="riskmgr_standin")
    assert not stopped["changed"] and not stopped["was_running"]
    assert stranger.poll() is None  # never signalled
    started = host.start(process_match="riskmgr_standin")
    assert started["changed"] and started["pid"] != stranger.pid


def test_start_command_that_fails_is_reported(host):
    with pytest.raises(DaemonError, match=r"start_command `sh -c .*` \(run from / as root\) exited with status 1 \(stderr: no config\)"):
        start_daemon(PidfileControl(str(host.pidfile), ["sh", "-c", "echo no config >&2; exit 1"]), **FAST)


def test_pidfile_that_never_appears_is_reported(host):
    with pytest.raises(DaemonError, match=rf"^{host.pidfile}: the start command returned but the pidfile is "
                                          "missing after the start timeout"):
        start_daemon(PidfileControl(str(host.pidfile), ["true"]), settle=0.1, start_timeout=1)


# --- through Ansible -----------------------------------------------------------------------------

def test_module_through_ansible(host):
    args = {"service_manager": "command", "pidfile": str(host.pidfile), "start_command": host.start_command(),
            "log_path": str(host.log),
            "expect_log_line": "Database schema version: 1", "settle": 0.3, "start_timeout": 10,
            "process_match": "riskmgr_standin"}
    predicted = run_module("riskmgr_daemon", {**args, "state": "started"}, check=True)
    assert predicted["changed"] and not predicted["failed"] and not host.pidfile.exists()

    started = run_module("riskmgr_daemon", {**args, "state": "started"})
    host.track(started["pid"])
    assert started["changed"] and not started["failed"], started
    assert started["log_line"].endswith("INFO Database schema version: 1")
    assert pid_is_running(read_pid(str(host.pidfile)), "riskmgr_standin")  # it outlived the task

    stopped = run_module("riskmgr_daemon", {**args, "state": "stopped"})
    assert stopped["changed"] and stopped["pid"] == started["pid"] and not pid_is_running(started["pid"])

    # A string start_command is split like a shell would, and run without one.
    refused = run_module("riskmgr_daemon", {**args, "state": "started",
                                            "start_command": shlex.join(host.start_command("--refuse-version", "1"))})
    host.track(read_pid(str(host.pidfile)))
    assert refused["failed"]
    assert refused["msg"].startswith(f"{host.pidfile}: pid ") and "\n" not in refused["msg"]
    assert "ERROR schema version 1 is not supported" in refused["msg"]



def test_unexpected_error_is_one_line_with_the_traceback_kept(host, monkeypatch):
    library_module = load_library_module("riskmgr_daemon")
    failures = []

    def fail_json(**kwargs):
        failures.append(kwargs)
        raise SystemExit(1)

    # Only the Ansible boundary is faked; it skips argument validation, so a None reaches the code.
    params = {"state": "started", "service_manager": "command", "pidfile": str(host.pidfile),
              "start_command": ["true"], "settle": 0.1,
              "start_timeout": None, "log_path": None, "expect_log_line": None, "expect_version": None,
              "process_match": None}
    fake = SimpleNamespace(params=params, check_mode=False, fail_json=fail_json)
    monkeypatch.setattr(library_module, "AnsibleModule", lambda **_: fake)
    with pytest.raises(SystemExit):
        library_module.main()
    assert failures[0]["msg"].startswith(f"{host.pidfile}: unexpected TypeError: ")
    assert failures[0]["msg"].endswith("this is a bug, rerun with -vvv for the traceback")
    assert "Traceback (most recent call last)" in failures[0]["exception"]


# --- service_manager=systemd, against a fake systemctl that runs the real stand-in ---------------

class SystemdHost(Host):
    """Host files plus a fake systemctl and journalctl in tmp_path/bin that manage them as riskmgr.service."""

    unit = "riskmgr.service"

    def __init__(self, tmp_path: Path) -> None:
        super().__init__(tmp_path)
        self.fake = FakeSystemd(tmp_path / "bin", self.unit, self.db, self.pidfile, self.log)
        self.bin, self.path, self.settings = self.fake.bin, self.fake.path, self.fake.settings

    def configure(self, *extra: str) -> None:
        self.fake.configure(*extra)

    def control(self) -> SystemdControl:
        return SystemdControl(self.unit)

    def start(self, *extra: str, log_path: str | None = "", **options) -> dict:
        """Started with the fake; log_path None reads the (fake) journal instead of the log file."""
        self.configure(*extra)
        try:
            result = start_daemon(self.control(), log_path=str(self.log) if log_path == "" else log_path,
                                  **{**FAST, **options})
        finally:
            self.track(read_pid(str(self.pidfile)))
        self.track(result["pid"])
        return result

    def stop(self, **options) -> dict:
        return stop_daemon(self.control(), options.pop("stop_timeout", 5), log_path=str(self.log), **options)

    def status(self) -> dict[str, str]:
        return self.control().unit_status()

    def cleanup(self) -> None:
        self.fake.cleanup()
        super().cleanup()


@pytest.fixture
def systemd(tmp_path, monkeypatch):
    files = SystemdHost(tmp_path)
    monkeypatch.setenv("PATH", files.path)
    yield files
    files.cleanup()


def test_systemd_round_trip_has_the_same_health_check_and_timestamps(systemd):
    started = systemd.start(expect_log_line="Database schema version: 1")
    assert started["changed"] and not started["was_running"]
    assert started["log_line"].endswith("INFO Database schema version: 1")
    assert started["started_at"] <= started["healthy_at"] and started["start_seconds"] >= FAST["settle"]
    assert started["pid"] == read_pid(str(systemd.pidfile))  # MainPID is the daemon that wrote the pidfile
    assert pid_is_running(started["pid"], "riskmgr_standin")
    rows = enforcement_count(systemd.db)
    time.sleep(0.2)
    assert enforcement_count(systemd.db) > rows

    again = systemd.start(expect_log_line="Database schema version: 1")
    assert not again["changed"] and again["was_running"] and again["pid"] == started["pid"]
    assert again["started_at"] is None

    stranger = systemd.stop(process_match="not_the_daemon")  # MainPID is checked like a pidfile's pid
    assert not stranger["changed"] and not stranger["was_running"]
    time.sleep(0.1)
    assert pid_is_running(started["pid"], "riskmgr_standin")

    stopped = systemd.stop(process_match="riskmgr_standin")
    assert stopped["changed"] and stopped["was_running"] and not stopped["killed"]
    assert stopped["pid"] == started["pid"] and not pid_is_running(started["pid"])
    assert 0 <= stopped["stop_seconds"] < 5 and stopped["stop_requested_at"] <= stopped["stopped_at"]
    assert "stopped after" in systemd.log.read_text().splitlines()[-1]  # SIGTERM, a clean stop
    assert not systemd.stop()["changed"]

    back = systemd.start(expect_log_line="Database schema version: 1")
    assert back["changed"] and back["pid"] != started["pid"]
    assert back["healthy_at"] - stopped["stop_requested_at"] > FAST["settle"]


def test_systemd_start_of_a_daemon_that_refuses_the_schema_fails_at_once_with_its_log(systemd):
    systemd.make_v2()
    began = time.monotonic()
    with pytest.raises(DaemonError) as caught:
        systemd.start("--refuse-version", "2", expect_log_line="Database schema version: 2", start_timeout=10)
    assert time.monotonic() - began < 5  # it saw the exit; it did not wait out start_timeout
    message = str(caught.value)
    # Whether MainPID was read before the daemon exited is a race; both messages say it exited.
    assert message.startswith(f"systemd unit {systemd.unit}: ")
    assert ("after the start (before the settle time passed)" in message
            or f"`systemctl start {systemd.unit}` returned but the unit is failed with no MainPID: the daemon "
               "exited at once" in message)
    assert f"last lines of {systemd.log}: " in message
    assert "ERROR schema version 2 is not supported by this build; refusing to run" in message
    assert "\n" not in message
    assert not pid_is_running(read_pid(str(systemd.pidfile)))


def test_systemctl_start_failure_is_one_line_with_stderr_and_the_journal_hint(systemd):
    with pytest.raises(DaemonError) as caught:
        start_daemon(SystemdControl("nosuch.service"), **FAST)
    assert str(caught.value) == (
        "systemd unit nosuch.service: `systemctl start nosuch.service` exited with status 5 (stderr: Failed to "
        "start nosuch.service: Unit nosuch.service not found.); see `journalctl -u nosuch.service`")


def test_systemd_daemon_that_ignores_sigterm_is_left_running_unless_forced(systemd):
    pid = systemd.start("--ignore-sigterm")["pid"]
    with pytest.raises(DaemonError) as caught:
        systemd.stop(stop_timeout=0.5)
    assert str(caught.value) == (
        f"systemd unit {systemd.unit}: pid {pid} is still running 0.5s after `systemctl stop --no-block "
        f"{systemd.unit}` and was left running (nothing written to {systemd.log} since the start); find out why "
        "it does not stop, or rerun with stop_force enabled to SIGKILL it")
    time.sleep(0.1)
    assert pid_is_running(pid, "riskmgr_standin")
    forced = systemd.stop(stop_timeout=0.5, stop_force=True)
    assert forced["changed"] and forced["killed"] and forced["stopped_at"] >= forced["stop_requested_at"]
    assert not pid_is_running(pid)
    # Our own SIGKILL left the unit failed; that is reset, so a later preflight does not refuse it.
    assert systemd.status()["ActiveState"] == "inactive"
    assert not systemd.stop()["changed"]


def test_systemd_check_mode_neither_starts_nor_stops(systemd):
    predicted = start_daemon(SystemdControl(systemd.unit), log_path=str(systemd.log), check_mode=True, **FAST)
    assert predicted["changed"] and predicted["pid"] is None and predicted["started_at"] is None
    assert not systemd.pidfile.exists() and not systemd.log.exists()
    pid = systemd.start()["pid"]
    predicted = stop_daemon(SystemdControl(systemd.unit), 5, check_mode=True)
    assert predicted["changed"] and predicted["pid"] == pid and predicted["stop_requested_at"] is None
    time.sleep(0.1)
    assert pid_is_running(pid, "riskmgr_standin")


def test_systemd_without_systemctl_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DaemonError, match=rf"^systemd unit riskmgr.service: systemctl is not on PATH "
                                          rf"\({tmp_path}\); service_manager=systemd needs systemd on the host"):
        SystemdControl("riskmgr.service")


def test_systemd_module_through_ansible(systemd):
    env = {"PATH": systemd.path}
    args = {"service_manager": "systemd", "service_name": systemd.unit, "log_path": str(systemd.log),
            "expect_log_line": "Database schema version: 1", "settle": 0.3, "start_timeout": 10,
            "process_match": "riskmgr_standin"}
    predicted = run_module("riskmgr_daemon", {**args, "state": "started"}, check=True, env=env)
    assert predicted["changed"] and not predicted["failed"], predicted
    assert not systemd.pidfile.exists()

    started = run_module("riskmgr_daemon", {**args, "state": "started"}, env=env)
    systemd.track(started.get("pid"))
    assert started["changed"] and not started["failed"], started
    assert started["log_line"].endswith("INFO Database schema version: 1")
    assert started["pid"] == read_pid(str(systemd.pidfile)) and pid_is_running(started["pid"], "riskmgr_standin")

    stopped = run_module("riskmgr_daemon", {**args, "state": "stopped"}, env=env)
    assert stopped["changed"] and stopped["pid"] == started["pid"] and not pid_is_running(started["pid"])


def crash(systemd: SystemdHost) -> None:
    """SIGKILL the unit's daemon as a crash would, with no stop job: systemd's Restart= answers it."""
    subprocess.run(["systemctl", "kill", "--signal=SIGKILL", systemd.unit], check=True)


def test_the_fake_restarts_a_crashed_daemon_as_restart_always_does(systemd):
    # Without this, the two tests below could not fail: a fake that never restarts proves nothing.
    systemd.settings["restart"] = "always"
    pid = systemd.start()["pid"]
    crash(systemd)
    assert wait_for_exit(pid, 5)
    deadline = time.monotonic() + 5
    while systemd.control().find_pid() in (None, pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    again = systemd.control().find_pid()
    systemd.track(again)
    assert again not in (None, pid) and pid_is_running(again, "riskmgr_standin")
    assert systemd.status()["NRestarts"] == "1"


def test_systemd_sigkill_never_lets_restart_always_bring_the_daemon_back(systemd):
    systemd.settings["restart"] = "always"
    pid = systemd.start()["pid"]
    systemd.control().kill(pid)  # on its own, with no stop job queued before it
    assert wait_for_exit(pid, 5)
    time.sleep(0.6)  # three times the fake's RestartSec
    status = systemd.status()
    assert status["MainPID"] == "0" and status["ActiveState"] in ("inactive", "failed"), status
    assert status["NRestarts"] == "0"


def test_systemd_forced_stop_kills_the_main_process_when_systemctl_kill_fails(systemd):
    systemd.settings.update(restart="always", kill_fails=True)
    pid = systemd.start("--ignore-sigterm")["pid"]
    forced = systemd.stop(stop_timeout=0.5, stop_force=True)
    assert forced["killed"] and not pid_is_running(pid)
    time.sleep(0.6)
    assert systemd.status()["MainPID"] == "0"


def test_systemd_stop_cancels_a_restart_pending_after_a_crash(systemd):
    systemd.settings.update(restart="always", restart_sec=3.0)  # a window the stop surely falls in, even under load
    pid = systemd.start()["pid"]
    crash(systemd)
    assert wait_for_exit(pid, 5)
    assert systemd.status()["SubState"] == "auto-restart"
    stopped = systemd.stop()
    # No daemon was running, but systemd was about to start one: that is a stop too.
    assert stopped["changed"] and not stopped["was_running"] and stopped["pid"] is None
    assert stopped["stop_requested_at"] <= stopped["stopped_at"]
    time.sleep(1.5)
    status = systemd.status()
    assert status["MainPID"] == "0" and status["ActiveState"] in ("inactive", "failed"), status
    assert not systemd.stop()["changed"]


def test_systemd_stop_waits_for_the_unit_not_only_for_the_process(systemd):
    systemd.settings["stop_post_s"] = 0.5
    pid = systemd.start()["pid"]
    stopped = systemd.stop()
    assert stopped["changed"] and not pid_is_running(pid)
    assert systemd.status()["ActiveState"] == "inactive" and stopped["stop_seconds"] >= 0.4


def test_systemd_start_limit_hit_by_the_run_itself_is_reset_once(systemd):
    systemd.settings["start_limit_hit"] = True
    started = systemd.start(expect_log_line="Database schema version: 1")
    assert started["changed"] and pid_is_running(started["pid"], "riskmgr_standin")


def test_systemd_start_failure_other_than_the_start_limit_is_not_retried(systemd):
    (systemd.bin / "units.json").write_text("{}")
    with pytest.raises(DaemonError, match=r"`systemctl start riskmgr.service` exited with status 5"):
        systemd.control().launch(5)


def test_systemd_without_log_path_reads_the_journal_from_the_start_on(systemd):
    first = systemd.start(log_path=None, expect_log_line="Database schema version: 1")
    assert first["log_line"].endswith("INFO Database schema version: 1")
    # serving_at is the journal's own time of the line (here the stand-in's stamp, to the ms)
    stamp = datetime.datetime.strptime(first["log_line"].split()[0], "%Y-%m-%dT%H:%M:%S.%fZ")
    assert first["serving_at"] == stamp.replace(tzinfo=datetime.timezone.utc).timestamp()
    assert first["started_at"] - 0.002 <= first["serving_at"] <= first["healthy_at"]
    systemd.stop()
    systemd.make_v2()
    # The v1 line is still in the journal; only what was logged after this start counts.
    with pytest.raises(DaemonError, match=r"is running but did not log 'Database schema version: 1' to the journal "
                                          rf"of {systemd.unit} within 1s of the start and was left running"):
        systemd.start(log_path=None, expect_log_line="Database schema version: 1", start_timeout=1)
    systemd.stop()
    second = systemd.start(log_path=None, expect_log_line="Database schema version: 2")
    assert second["log_line"].endswith("INFO Database schema version: 2") and second["pid"] != first["pid"]
    systemd.stop()
    with pytest.raises(DaemonError) as caught:
        systemd.start("--refuse-version", "2", log_path=None, expect_log_line="Database schema version: 2")
    message = str(caught.value)
    assert f"last lines of the journal of {systemd.unit}: " in message
    assert "ERROR schema version 2 is not supported by this build; refusing to run" in message
    assert "Database schema version: 1" not in message and "\n" not in message


class RecordedJournal(JournalLog):
    """The unit's journal as journalctl -o json gives it, from a list (the boundary to journalctl)."""

    def __init__(self, entries: list[dict]) -> None:
        super().__init__("risk-manager.service", "systemd unit risk-manager.service")
        self.entries = entries

    def journal_json(self, *args: str) -> list[dict]:
        return self.entries


def test_journal_tail_keeps_the_daemons_lines_when_systemd_logs_many(systemd):
    noise = "risk-manager.service: Failed to kill control group /system.slice/risk-manager.service, ignoring"
    entries = ([{"_PID": "812", "MESSAGE": "2026-11-30T05:16:25.542Z INFO Database schema version: 2"},
                {"_PID": "812", "MESSAGE": "2026-11-30T05:16:25.542Z ERROR schema version 2 is not supported"},
                {"_PID": "1", "MESSAGE": "risk-manager.service: Main process exited, code=exited, status=3/NOTIMPLEMENTED"}]
               + [{"_PID": "1", "MESSAGE": noise}] * 6
               + [{"_PID": "1", "MESSAGE": "risk-manager.service: Failed with result 'exit-code'."}])
    assert RecordedJournal(entries).tail_text("cursor") == (
        "last lines of the journal of risk-manager.service: 2026-11-30T05:16:25.542Z INFO Database schema version: 2 | "
        "2026-11-30T05:16:25.542Z ERROR schema version 2 is not supported; systemd: risk-manager.service: Main process "
        f"exited, code=exited, status=3/NOTIMPLEMENTED | {noise} | risk-manager.service: Failed with result 'exit-code'.")
    assert RecordedJournal(entries[2:]).tail_text("cursor").startswith(
        "last lines of the journal of risk-manager.service: none from the daemon; systemd: ")
    assert RecordedJournal([]).tail_text("cursor") == (
        "nothing written to the journal of risk-manager.service since the start")
    # A message that is not UTF-8 comes as a list of bytes.
    assert RecordedJournal([{"MESSAGE": list(b"caf\xc3\xa9 \xff")}]).lines_since(None) == [("café \ufffd", None)]


def test_command_manager_without_log_path_cannot_expect_a_line(host):
    with pytest.raises(DaemonError, match=f"^{host.pidfile}: expect_log_line needs log_path"):
        start_daemon(host.control(), expect_log_line="Database schema version: 1", **FAST)


# --- the read-only check (state=checked) ------------------------------------------------------------

LOADED = {"LoadState": "loaded", "ActiveState": "active", "SubState": "running", "MainPID": "42",
          "Result": "success", "NRestarts": "0", "RefuseManualStart": "no", "RefuseManualStop": "no"}


@pytest.mark.parametrize("status, cmdline, expected", [
    ({}, "python3 riskmgr_standin.py", []),
    ({"ActiveState": "inactive", "SubState": "dead", "MainPID": "0"}, "", []),
    ({"LoadState": "not-found", "ActiveState": "inactive", "MainPID": "0"}, "",
     ["systemd unit risk-manager.service is not found on this host (LoadState not-found): install its unit file, or "
      "name the unit that runs the daemon"]),
    ({"LoadState": "masked"}, "python3 riskmgr_standin.py",
     ["systemd unit risk-manager.service is masked: systemd would refuse to start it again after the change; unmask "
      "it (`systemctl unmask risk-manager.service`) if it should run, or leave this host out"]),
    ({"LoadState": "bad-setting"}, "", ["systemd unit risk-manager.service cannot be loaded (LoadState bad-setting): "
                                        "see `systemctl status risk-manager.service`"]),
    ({"ActiveState": "failed", "SubState": "failed", "Result": "start-limit-hit", "MainPID": "0"}, "",
     ["systemd unit risk-manager.service is failed (Result start-limit-hit) from before this run: find out why in "
      "`journalctl -u risk-manager.service`, then start it or `systemctl reset-failed risk-manager.service`, and rerun"]),
    ({"ActiveState": "activating", "SubState": "auto-restart", "MainPID": "0", "NRestarts": "3"}, "",
     ["systemd unit risk-manager.service is restarting its daemon, which exited (NRestarts 3): find out why in "
      "`journalctl -u risk-manager.service`, and rerun once it runs"]),
    ({"ActiveState": "deactivating", "SubState": "stop-sigterm"}, "python3 riskmgr_standin.py",
     ["systemd unit risk-manager.service is deactivating (stop-sigterm): wait until it is active or inactive, then rerun"]),
    ({"MainPID": "0"}, "", ["systemd unit risk-manager.service is active without a main process (MainPID 0: "
                            "Type=oneshot, or Type=forking without PIDFile=): the end of its daemon's stop cannot be "
                            "awaited; give the unit a main process"]),
    ({}, "/usr/bin/other-daemon --serve",
     ["systemd unit risk-manager.service's main process 42 (/usr/bin/other-daemon --serve) does not match "
      "process_match 'riskmgr_standin': correct process_match"]),
    ({"RefuseManualStop": "yes"}, "python3 riskmgr_standin.py",
     ["systemd unit risk-manager.service refuses a manual stop (RefuseManualStop=yes): the run must stop it with "
      "systemctl; remove that setting for the change"]),
], ids=["active", "inactive", "not_found", "masked", "bad_setting", "failed", "auto_restart", "deactivating",
        "no_main_pid", "other_process", "refuse_stop"])
def test_unit_problems(status, cmdline, expected):
    assert unit_problems("risk-manager.service", {**LOADED, **status}, "riskmgr_standin", cmdline) == expected


def test_check_reads_the_unit_and_changes_nothing(systemd):
    checked = check_daemon(systemd.control(), "riskmgr_standin")
    assert checked == {"changed": False, "pid": None, "running": False, "load_state": "loaded",
                       "active_state": "inactive", "sub_state": "dead", "unit_file_state": "enabled", "problems": []}
    pid = systemd.start()["pid"]
    checked = check_daemon(systemd.control(), "riskmgr_standin")
    assert (checked["pid"], checked["running"], checked["active_state"], checked["problems"]) == (pid, True, "active", [])
    crash(systemd)  # no Restart= in this unit: it stays failed
    assert wait_for_exit(pid, 5)
    checked = check_daemon(systemd.control(), "riskmgr_standin")
    assert checked["active_state"] == "failed" and checked["problems"][0].startswith(
        f"systemd unit {systemd.unit} is failed (Result exit-code) from before this run")
    missing = check_daemon(SystemdControl("nosuch.service"))
    assert missing["load_state"] == "not-found" and "is not found on this host" in missing["problems"][0]


def test_check_of_a_unit_refuses_a_daemon_user_its_user_setting_does_not_name(systemd):
    control = SystemdControl(systemd.unit, CommandRunner(account=lookup_account("nobody")))
    assert check_daemon(control)["problems"] == [
        f"systemd unit {systemd.unit} runs its daemon as root (User=), but riskmgr_daemon_user is nobody: under "
        "systemd the unit's User= rules; make them agree, or unset riskmgr_daemon_user"]
    systemd.settings["user"] = "nobody"
    systemd.configure()
    assert check_daemon(control)["problems"] == []
    assert check_daemon(SystemdControl(systemd.unit))["problems"] == []  # no riskmgr_daemon_user: nothing to agree


def test_check_of_a_pidfile_daemon(host):
    control = PidfileControl(str(host.pidfile), host.start_command())
    assert check_daemon(control, "riskmgr_standin") == {
        "changed": False, "pid": None, "running": False, "load_state": None, "active_state": None,
        "sub_state": None, "unit_file_state": None, "problems": []}
    pid = host.start()["pid"]
    checked = check_daemon(control, "riskmgr_standin")
    assert (checked["pid"], checked["running"], checked["problems"]) == (pid, True, [])
    host.stop()
    host.pidfile.write_text("daemon\n")
    broken = check_daemon(PidfileControl(str(host.pidfile), ["/nonexistent/riskmgr", "--daemon"]))
    assert broken["problems"] == [
        f"{host.pidfile}: does not hold a pid ('daemon'); if the daemon is stopped, remove the file and rerun",
        f"{host.pidfile}: start_command: its program /nonexistent/riskmgr (from /, as root) cannot run: /nonexistent "
        "does not exist; correct riskmgr_start_command, or the file's mode or owner"]
    host.pidfile.unlink()
    # A bare name is looked up on PATH, as exec does.
    assert check_daemon(PidfileControl(str(host.pidfile), ["sh", "-c", "true"]))["problems"] == []
    assert "program no-such-program-anywhere is not found on PATH" in \
        check_daemon(PidfileControl(str(host.pidfile), ["no-such-program-anywhere"]))["problems"][0]


def test_checked_through_ansible(systemd):
    env = {"PATH": systemd.path}
    args = {"state": "checked", "service_manager": "systemd", "process_match": "riskmgr_standin"}
    missing = run_module("riskmgr_daemon", {**args, "service_name": "nosuch.service"}, env=env)
    assert not missing["failed"] and not missing["changed"], missing
    assert missing["load_state"] == "not-found" and missing["pid"] is None
    assert missing["problems"][0].startswith("systemd unit nosuch.service is not found on this host")
    pid = systemd.start()["pid"]
    running = run_module("riskmgr_daemon", {**args, "service_name": systemd.unit}, check=True, env=env)
    assert (running["pid"], running["running"], running["problems"], running["changed"]) == (pid, True, [], False)
    # Under systemd expect_log_line needs no log_path: the journal is read.
    systemd.stop()
    started = run_module("riskmgr_daemon", {"state": "started", "service_manager": "systemd",
                                            "service_name": systemd.unit, "expect_log_line": "Database schema version: 1",
                                            "settle": 0.3, "start_timeout": 10}, env=env)
    systemd.track(started.get("pid"))
    assert started["changed"] and started["log_line"].endswith("INFO Database schema version: 1"), started


@pytest.mark.parametrize("args, message", [
    # systemd is the default service manager, as riskmgr_service_manager's.
    ({"state": "stopped"}, "service_manager is systemd but all of the following are missing: service_name"),
    ({"state": "stopped", "service_manager": "command"},
     "service_manager is command but all of the following are missing: pidfile"),
    ({"state": "started", "service_manager": "command", "pidfile": "/run/riskmgr.pid"},
     "service_manager is command and state is started but all of the following are missing: start_command"),
    ({"state": "started", "service_manager": "command", "pidfile": "/run/riskmgr.pid", "start_command": "riskmgr",
      "expect_log_line": "x"},
     "missing parameter(s) required by 'expect_log_line': log_path (with service_manager=command; under systemd "
     "the journal is read)"),
])
def test_arguments_each_service_manager_needs(args, message, capsys):
    # The real AnsibleModule, in process: ansible-core's patch_module_args feeds it the arguments.
    library_module = load_library_module("riskmgr_daemon")
    with patch_module_args(args), pytest.raises(SystemExit):
        library_module.main()
    result = json.loads(capsys.readouterr().out)
    assert result["failed"] and result["msg"] == message
