"""service_manager=command: the daemon is a pidfile plus a start command that returns once it launched.

SIGTERM, or the daemon's own stop command when one is given (SIGKILL with stop_force, either way),
stops the pid the pidfile names; the start command is run without a shell and the new pid is the
one the daemon writes to the pidfile. Both commands run from riskmgr_daemon_chdir as
riskmgr_daemon_user (daemon_account.CommandRunner).

A stop command is the daemon's own way to stop (the seed's ./scripts/stop_daemon.sh: flush,
deregister, notify, then signal). Whatever it does, the stop is judged by the pid: stop_timeout
counts from the command's start, and a command that returns 0 while the daemon still runs (it
signalled and did not wait) is followed by a wait for the pid for the rest of stop_timeout, then
the usual policy - SIGKILL with stop_force, else a failure that leaves the daemon running. A stop
command that fails (exit status not 0, or still running at stop_timeout) stops the run on that
host: the message says whether the daemon still runs or exited anyway.

Plain Python, no Ansible import.
"""
from __future__ import annotations

import os
import shlex
import signal
import time

from ansible.module_utils.daemon_account import CommandRunner
from ansible.module_utils.host_processes import (
    POLL_S, pid_is_running, read_pid, run_checked, send_signal, wait_for_exit)
from ansible.module_utils.service_manager import DaemonControl, DaemonLog
from ansible.module_utils.sqlite_common import DaemonError

STOP_FAILED_WAIT_S = 3.0


def split_command(start_command: str | list | None, name: str = "start_command") -> list[str]:
    """argv from a list, or from a string split like a shell would (but never run by one)."""
    if isinstance(start_command, str):
        argv = shlex.split(start_command)
    elif isinstance(start_command, (list, tuple)):
        argv = [str(arg) for arg in start_command]
    else:
        argv = []
    if not argv:
        raise DaemonError(f"{name} is empty; give the daemon's command as a list of arguments")
    return argv


def run_start_command(argv: list[str], timeout: float, runner: CommandRunner | None = None) -> None:
    """Run the start command without a shell, from the chdir as the user; it must return, with status 0,
    within timeout. A failure names the command, the directory, the user, the exit status and the stderr tail."""
    runner = runner or CommandRunner()
    runner.refuse_relative("start_command", argv)
    run_checked(argv, timeout, runner.describe("start_command", argv),
                cannot_run="; check the path and permissions of its executable",
                too_slow="; it must return once the daemon is launched (daemonize, or use a wrapper that does)",
                cwd=runner.cwd(), **runner.launch_options())


def run_stop_command(argv: list[str], timeout: float, runner: CommandRunner, pidfile: str, pid: int) -> None:
    """Run the daemon's own stop command, from the chdir as the user; DaemonError when it fails, saying
    whether the daemon still runs."""
    runner.refuse_relative("stop_command", argv)
    try:
        run_checked(argv, timeout, runner.describe("stop_command", argv), cwd=runner.cwd(), kill_group=True,
                    cannot_run="; check the path and permissions of its executable", **runner.launch_options())
    except DaemonError as err:
        # A script that signalled the daemon and then failed (a later step of its own) may have stopped it:
        # a moment's wait tells the state truthfully.
        down = wait_for_exit(pid, min(STOP_FAILED_WAIT_S, timeout))
        state = f"the daemon (pid {pid}) exited anyway and is down" if down else f"the daemon (pid {pid}) is still running"
        failure = DaemonError(f"{pidfile}: {err}; {state}; nothing else was done on this host: fix the stop command "
                              "(riskmgr_stop_command) and rerun")
        failure.daemon_down = down  # the caller starts it again: the stop failed, but the daemon is down
        raise failure from err


class PidfileControl(DaemonControl):
    """service_manager=command: the pid is in a pidfile, signals stop it, start_command launches it."""

    pid_source = "from the pidfile"
    stop_how = "SIGTERM"

    def __init__(self, pidfile: str, start_argv: list[str] | None = None, stop_argv: list[str] | None = None,
                 runner: CommandRunner | None = None, log_path: str | None = None) -> None:
        self.pidfile = pidfile
        self.label = pidfile
        self.start_argv = start_argv
        self.stop_argv = stop_argv
        self.runner = runner or CommandRunner()
        self.log_path = log_path
        if stop_argv:
            self.stop_how = f"stop_command `{shlex.join(stop_argv)}`"

    def find_pid(self) -> int | None:
        return read_pid(self.pidfile)

    def request_stop(self, pid: int | None, timeout: float | None = None) -> None:
        if self.stop_argv and pid is not None:
            run_stop_command(self.stop_argv, timeout or 60.0, self.runner, self.pidfile, pid)
            return
        send_signal(pid, signal.SIGTERM, self.pidfile)

    def kill(self, pid: int) -> None:
        send_signal(pid, signal.SIGKILL, self.pidfile)

    def service_user(self) -> str | None:
        return self.runner.account.name if self.runner.account else None

    def launch(self, timeout: float) -> None:
        run_start_command(self.start_argv, timeout, self.runner)

    def wait_for_pid(self, old_pid: int | None, process_match: str | None, deadline: float,
                     log: DaemonLog, mark) -> int:
        return wait_for_new_pid(self.pidfile, old_pid, process_match, deadline, log, mark)

    def check(self, process_match: str | None) -> dict:
        problems = []
        try:
            pid = read_pid(self.pidfile)
        except DaemonError as err:
            pid = None
            problems.append(str(err))
        problems += self.command_problems()
        return {"pid": pid, "running": pid_is_running(pid, process_match), "load_state": None, "active_state": None,
                "sub_state": None, "unit_file_state": None, "problems": problems}


    def command_problems(self) -> list[str]:
        """Why the start or stop command could not run, or the daemon could not write its pid file or log, as
        its user: found without running anything, so that the preflight refuses before any daemon stops."""
        problems = []
        for what, argv in (("start_command", self.start_argv), ("stop_command", self.stop_argv)):
            if argv:
                problems += [f"{self.pidfile}: {problem}" for problem in self.runner.command_problems(what, argv)]
        for what, path in (("pidfile", self.pidfile), ("log_path", self.log_path)):
            if path:
                problem = self.runner.writable_problem(f"{what} {path}", os.path.dirname(path) or "/")
                if problem:
                    problems.append(f"{self.pidfile}: {problem}")
        return list(dict.fromkeys(problems))  # one unusable directory is one problem, not one per command


def wait_for_new_pid(pidfile: str, old_pid: int | None, process_match: str | None, deadline: float,
                     log: DaemonLog, mark) -> int:
    """The pid the pidfile names once the daemon has written it (a leftover stale pid does not count)."""
    while True:
        pid = read_pid(pidfile)
        if pid is not None and (pid != old_pid or pid_is_running(pid, process_match)):
            return pid
        if time.monotonic() >= deadline:
            found = "is missing" if pid is None else f"still names the old, dead pid {pid}"
            raise DaemonError(f"{pidfile}: the start command returned but the pidfile {found} after the "
                              f"start timeout ({log.tail_text(mark)}); check that "
                              "start_command and pidfile agree")
        time.sleep(POLL_S)
