"""service_manager=command: the daemon is a pidfile plus a start command that returns once it launched.

SIGTERM (SIGKILL with stop_force) stops the pid the pidfile names; the start command is run
without a shell and the new pid is the one the daemon writes to the pidfile.

Plain Python, no Ansible import.
"""
from __future__ import annotations

import os
import shlex
import shutil
import signal
import time

from ansible.module_utils.host_processes import (
    POLL_S, pid_is_running, read_pid, run_checked, send_signal)
from ansible.module_utils.service_manager import DaemonControl, DaemonLog
from ansible.module_utils.sqlite_common import DaemonError


def split_command(start_command: str | list | None) -> list[str]:
    """argv from a list, or from a string split like a shell would (but never run by one)."""
    if isinstance(start_command, str):
        argv = shlex.split(start_command)
    elif isinstance(start_command, (list, tuple)):
        argv = [str(arg) for arg in start_command]
    else:
        argv = []
    if not argv:
        raise DaemonError("start_command is empty; give the daemon's launch command as a list of arguments")
    return argv


def run_start_command(argv: list[str], timeout: float) -> None:
    """Run the start command without a shell; it must return, with status 0, within timeout."""
    run_checked(argv, timeout, f"start_command `{shlex.join(argv)}`",
                cannot_run="; check the path and permissions of its executable",
                too_slow="; it must return once the daemon is launched (daemonize, or use a wrapper that does)")


class PidfileControl(DaemonControl):
    """service_manager=command: the pid is in a pidfile, signals stop it, start_command launches it."""

    pid_source = "from the pidfile"
    stop_how = "SIGTERM"

    def __init__(self, pidfile: str, start_argv: list[str] | None = None) -> None:
        self.pidfile = pidfile
        self.label = pidfile
        self.start_argv = start_argv

    def find_pid(self) -> int | None:
        return read_pid(self.pidfile)

    def request_stop(self, pid: int | None) -> None:
        send_signal(pid, signal.SIGTERM, self.pidfile)

    def kill(self, pid: int) -> None:
        send_signal(pid, signal.SIGKILL, self.pidfile)

    def launch(self, timeout: float) -> None:
        run_start_command(self.start_argv, timeout)

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
        if self.start_argv and not executable_exists(self.start_argv[0]):
            problems.append(f"{self.pidfile}: the start command's program {self.start_argv[0]} is not an executable "
                            "file on this host (for this user); the daemon could not be started again after the "
                            "migration: correct start_command")
        return {"pid": pid, "running": pid_is_running(pid, process_match), "load_state": None, "active_state": None,
                "sub_state": None, "unit_file_state": None, "problems": problems}


def executable_exists(program: str) -> bool:
    """Whether program (a path, or a name looked up on PATH as exec does) is an executable file."""
    if os.sep not in program:
        return shutil.which(program) is not None
    return os.path.isfile(program) and os.access(program, os.X_OK)


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
