"""The daemon's own commands: riskmgr_stop_command, riskmgr_daemon_chdir, riskmgr_daemon_user.

Pure functions (mode bits, relative paths, resolution) on values; the privilege drop, the chdir and
the stop command on real processes. The tests that switch user need root and the `nobody` account.
"""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from daemon_account import (
    Account, CommandRunner, is_relative_path, lookup_account, may_access, relative_problem, resolve_program,
    switch_problem)
from host_processes import pid_is_running, read_pid, run_checked
from pidfile_control import PidfileControl
from daemon_watch import SmokeTest, smoke_problems
from riskmgr_daemon import check_daemon, daemon_control, stop_daemon
from sqlite_common import DaemonError

USER = Account(name="riskmgr", uid=1500, gid=1500, groups=(1500, 20), home="/home/riskmgr")
ROOT_ACCOUNT = Account(name="root", uid=0, gid=0, groups=(0,), home="/root")
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching user needs root")


# --- pure functions ----------------------------------------------------------------------------

@pytest.mark.parametrize(("mode", "owner", "group", "want", "allowed"), [
    (0o700, 1500, 0, os.X_OK, True),  # the owner's bits
    (0o070, 1500, 1500, os.X_OK, False),  # the owner's bits rule even when the group's would allow
    (0o750, 0, 20, os.R_OK | os.X_OK, True),  # a supplementary group
    (0o750, 0, 30, os.X_OK, False),  # neither owner nor group: other's bits
    (0o755, 0, 0, os.W_OK, False),
    (0o757, 0, 0, os.W_OK | os.X_OK, True),
])
def test_mode_bits_are_read_for_the_user_and_its_groups(mode, owner, group, want, allowed):
    assert may_access(stat.S_IFREG | mode, owner, group, USER, want) is allowed


def test_root_may_do_anything_but_execute_a_file_no_one_may_execute():
    assert may_access(stat.S_IFREG | 0o600, 1500, 1500, ROOT_ACCOUNT, os.R_OK | os.W_OK)
    assert not may_access(stat.S_IFREG | 0o644, 1500, 1500, ROOT_ACCOUNT, os.X_OK)
    assert may_access(stat.S_IFREG | 0o700, 1500, 1500, ROOT_ACCOUNT, os.X_OK)
    assert may_access(stat.S_IFDIR | 0o700, 1500, 1500, ROOT_ACCOUNT, os.X_OK)


@pytest.mark.parametrize(("arg", "relative"), [
    ("./scripts/start_daemon.sh", True), ("scripts/start_daemon.sh", True), ("../bin/x", True),
    ("data/state.db", True), ("/opt/risk_manager/x", False), ("python3", False), ("--db", False),
    ("--log=/var/log/x", False), ("sleep 3 & echo $! > x/y", False), ("https://host/x", False),
])
def test_a_relative_path_is_a_word_with_a_slash_not_starting_with_one(arg, relative):
    assert is_relative_path(arg) is relative


def test_a_relative_command_without_a_chdir_is_refused_naming_the_variable():
    problem = relative_problem("start_command", ["./scripts/start_daemon.sh"], None)
    assert "riskmgr_daemon_chdir is not set" in problem and "./scripts/start_daemon.sh" in problem
    assert "data/state.db" in relative_problem("start_command", ["/usr/bin/python3", "--db", "data/state.db"], None)
    assert relative_problem("start_command", ["./scripts/start_daemon.sh"], "/opt/risk_manager") is None
    assert relative_problem("start_command", ["/opt/rm/start", "--daemon"], None) is None
    assert "is relative" in relative_problem("start_command", ["/x"], "opt/risk_manager")


def test_a_program_resolves_from_the_chdir_or_on_path(tmp_path):
    assert resolve_program("./scripts/start.sh", "/opt/rm", None) == "/opt/rm/scripts/start.sh"
    assert resolve_program("../rm/bin/x", "/opt/rm", None) == "/opt/rm/bin/x"
    assert resolve_program("/usr/bin/env", "/opt/rm", None) == "/usr/bin/env"
    assert resolve_program("./x", None, None) == "/x"  # never the module's own directory
    (tmp_path / "tool").write_text("#!/bin/sh\n")
    (tmp_path / "tool").chmod(0o755)
    assert resolve_program("tool", "/opt/rm", str(tmp_path)) == str(tmp_path / "tool")
    assert resolve_program("tool", "/opt/rm", "/nonexistent") is None


def test_only_root_switches_user():
    assert switch_problem(USER, 0, 0) is None
    assert switch_problem(USER, 1500, 1500) is None  # already that user: nothing to switch
    assert "only root can run the daemon's commands as another user" in switch_problem(USER, 1000, 1000)
    assert switch_problem(None, 1000, 1000) is None


def test_unknown_users_and_groups_are_named():
    with pytest.raises(DaemonError, match="riskmgr_daemon_user no-such-user-here: no such user on this host"):
        lookup_account("no-such-user-here")
    with pytest.raises(DaemonError, match="riskmgr_daemon_group no-such-group-here: no such group"):
        lookup_account("root", "no-such-group-here")
    with pytest.raises(DaemonError, match="set without riskmgr_daemon_user"):
        lookup_account(None, "root")
    assert lookup_account(None) is None


# --- real processes ----------------------------------------------------------------------------

@pytest.fixture()
def open_dir():
    """A directory every user can enter (pytest's tmp_path sits under root's 0700 directory)."""
    directory = Path(tempfile.mkdtemp(prefix="riskmgr-account-", dir="/tmp"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@as_root
def test_a_command_runs_as_the_user_from_the_chdir(open_dir):
    runner = CommandRunner(chdir=str(open_dir), account=lookup_account("nobody"))
    script = open_dir / "whoami.sh"
    script.write_text('#!/bin/sh\necho "$(id -u):$(id -g):$(id -G):$(pwd):$HOME:$USER"\n')
    script.chmod(0o755)
    out, _ = run_checked(["./whoami.sh"], 10, "test", cwd=runner.cwd(), **runner.launch_options())
    nobody = lookup_account("nobody")
    uid, gid, groups, cwd, home, user = out.strip().split(":")
    assert (int(uid), int(gid), cwd, home, user) == (nobody.uid, nobody.gid, str(open_dir), nobody.home, "nobody")
    assert "0" not in groups.split()  # root's groups are gone too


@as_root
def test_check_refuses_what_the_user_cannot_do_without_running_it(open_dir):
    nobody = lookup_account("nobody")
    (open_dir / "scripts").mkdir()
    start = open_dir / "scripts" / "start.sh"
    start.write_text("#!/bin/sh\ntouch ran\n")
    start.chmod(0o700)  # root's alone
    (open_dir / "run").mkdir(mode=0o755)  # root's: nobody cannot write the pid file there
    control = PidfileControl(str(open_dir / "run" / "d.pid"), ["./scripts/start.sh"],
                             runner=CommandRunner(chdir=str(open_dir), account=nobody))
    problems = check_daemon(control)["problems"]
    assert any("start_command: its program ./scripts/start.sh" in p and "nobody may not execute" in p
               for p in problems), problems
    assert f"nobody may not write in and enter {open_dir / 'run'} (mode 0755, owner 0:0)" in "".join(problems), problems
    assert not (open_dir / "ran").exists()
    private = open_dir / "private"
    private.mkdir(mode=0o700)
    control = PidfileControl(str(open_dir / "d.pid"), ["/bin/true"],
                             runner=CommandRunner(chdir=str(private), account=nobody))
    assert any(f"the directory the commands run from, {private} (riskmgr_daemon_chdir), is not usable" in p
               for p in check_daemon(control)["problems"])
    relative = PidfileControl(str(open_dir / "d.pid"), ["./scripts/start.sh"])
    assert any("riskmgr_daemon_chdir is not set" in p for p in check_daemon(relative)["problems"])


def start_sleeper(directory: Path, ignore_term: bool = False) -> int:
    code = ("import signal, time\n" + ("signal.signal(signal.SIGTERM, signal.SIG_IGN)\n" if ignore_term else "")
            + "time.sleep(120)\n")
    process = subprocess.Popen([sys.executable, "-c", code, "riskmgr-sleeper"], start_new_session=True)
    (directory / "d.pid").write_text(f"{process.pid}\n")
    time.sleep(0.2)
    return process.pid


def stop_script(directory: Path, body: str) -> list[str]:
    (directory / "scripts").mkdir(exist_ok=True)
    script = directory / "scripts" / "stop.sh"
    script.write_text(f"#!/bin/sh\necho \"stopped by script as $(id -un)\" >> stop.mark\n{body}\n")
    script.chmod(0o755)
    return ["./scripts/stop.sh"]


def test_the_stop_command_stops_the_daemon_from_the_chdir(tmp_path):
    pid = start_sleeper(tmp_path)
    control = PidfileControl(str(tmp_path / "d.pid"), None, stop_script(tmp_path, 'kill "$(cat d.pid)"'),
                             CommandRunner(chdir=str(tmp_path)))
    result = stop_daemon(control, 10)
    assert (result["pid"], result["killed"]) == (pid, False) and not pid_is_running(pid)
    assert (tmp_path / "stop.mark").read_text().startswith("stopped by script")


def test_a_stop_command_that_returns_early_is_waited_for_then_the_usual_policy(tmp_path):
    pid = start_sleeper(tmp_path, ignore_term=True)
    control = PidfileControl(str(tmp_path / "d.pid"), None, stop_script(tmp_path, 'kill "$(cat d.pid)"'),
                             CommandRunner(chdir=str(tmp_path)))
    began = time.monotonic()
    with pytest.raises(DaemonError, match=rf"pid {pid} is still running 1s after stop_command `./scripts/stop.sh`"):
        stop_daemon(control, 1)
    assert time.monotonic() - began >= 1 and pid_is_running(pid)  # left running without stop_force
    result = stop_daemon(control, 1, stop_force=True)
    assert result["killed"] and not pid_is_running(pid)
    assert len((tmp_path / "stop.mark").read_text().splitlines()) == 2


def test_a_stop_command_that_fails_is_an_error_naming_the_daemon_state(tmp_path):
    pid = start_sleeper(tmp_path)
    control = PidfileControl(str(tmp_path / "d.pid"), None, stop_script(tmp_path, "echo cannot deregister >&2; exit 3"),
                             CommandRunner(chdir=str(tmp_path)))
    with pytest.raises(DaemonError) as failed:
        stop_daemon(control, 10, stop_force=True)
    message = str(failed.value)
    assert f"stop_command `./scripts/stop.sh` (run from {tmp_path} as root) exited with status 3" in message
    assert "cannot deregister" in message and f"the daemon (pid {pid}) is still running" in message
    assert pid_is_running(pid) and read_pid(str(tmp_path / "d.pid")) == pid  # no SIGKILL: the run goes no further
    os.kill(pid, 9)
    down = PidfileControl(str(tmp_path / "d.pid"), None, stop_script(tmp_path, 'kill "$(cat d.pid)"; exit 4'),
                          CommandRunner(chdir=str(tmp_path)))
    pid = start_sleeper(tmp_path)
    with pytest.raises(DaemonError, match=rf"the daemon \(pid {pid}\) exited anyway and is down"):
        stop_daemon(down, 10)


def test_a_stop_command_under_systemd_is_refused():
    params = {"service_manager": "systemd", "service_name": "risk-manager", "stop_command": "./scripts/stop_daemon.sh"}
    with pytest.raises(DaemonError, match="under systemd the unit's ExecStop= stops the daemon: unset it"):
        daemon_control(params)


def test_a_relative_smoke_test_without_a_directory_is_a_problem_before_the_stop(open_dir):
    relative = SmokeTest(argv=("python3", "scripts/smoke_tests.py"), timeout=10)
    assert "riskmgr_daemon_chdir is not set" in smoke_problems(relative, None)[0]
    assert smoke_problems(relative, str(open_dir)) == []  # the release link's directory, when there is one
    assert smoke_problems(None, None) == []


@as_root
def test_a_failed_start_names_the_command_directory_user_status_and_stderr(open_dir):
    (open_dir / "scripts").mkdir()
    start = open_dir / "scripts" / "start.sh"
    start.write_text("#!/bin/sh\necho \"cannot open logs/daemon.log as $(id -un)\" >&2\nexit 1\n")
    start.chmod(0o755)
    control = PidfileControl(str(open_dir / "d.pid"), ["./scripts/start.sh", "--config", "etc/rm.yml"],
                             runner=CommandRunner(chdir=str(open_dir), account=lookup_account("nobody")))
    with pytest.raises(DaemonError) as failed:
        control.launch(10)
    assert str(failed.value) == (f"start_command `./scripts/start.sh --config etc/rm.yml` (run from {open_dir} as nobody) "
                                 "exited with status 1 (stderr: cannot open logs/daemon.log as nobody)")
