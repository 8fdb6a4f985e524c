"""The seam between the daemon's stop and start (riskmgr_daemon) and the service manager that runs it.

DaemonControl is what each service manager provides: how to find the daemon's pid, how to stop
it, how to start it, and where its own lines are read since a mark (DaemonLog: its log file, a
systemd unit's journal, or nothing). Its implementations are PidfileControl (pidfile_control.py)
and SystemdControl (systemd_control.py); the waits, the health check and the timestamps are not
theirs but riskmgr_daemon's, the same for both.

Plain Python, no Ansible import.
"""
from __future__ import annotations

import os

from ansible.module_utils.host_processes import POLL_S

TAIL_LINES = 5
MAX_LOG_READ = 1024 * 1024  # lines written since a start: never read a whole multi-GB log


def log_size(log_path: str | None) -> int:
    """Current size of the log, 0 when it does not exist yet: the offset a start reads from."""
    if not log_path:
        return 0
    try:
        return os.path.getsize(log_path)
    except FileNotFoundError:
        return 0


def read_log_since(log_path: str | None, offset: int) -> list[str]:
    """Complete lines written to the log after byte offset (the whole file if it was truncated
    or replaced by a smaller one since). A line still being written is left for the next read."""
    return read_log_chunk(log_path, offset)[0]


def read_log_chunk(log_path: str | None, offset: int) -> tuple[list[str], int]:
    """read_log_since(), and the offset the next read starts from (just after the last complete line)."""
    if not log_path:
        return [], offset
    try:
        with open(log_path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            start = offset if offset <= size else 0
            start = max(start, size - MAX_LOG_READ)
            handle.seek(start)
            data = handle.read(size - start)
    except FileNotFoundError:
        return [], 0
    complete = data[: data.rfind(b"\n") + 1]
    return complete.decode("utf-8", "replace").splitlines(), start + len(complete)


class DaemonLog:
    """Where the daemon's own lines are read since a mark taken before a start (or a stop).

    lines_since() gives each line with the host epoch time it was logged, when the source
    records one (the journal does), else None: the health check then uses the time it saw it.
    """

    source = ""
    watchable = True  # whether a start can wait for a line here
    poll_s = POLL_S

    def mark(self):
        """The position now; lines_since(mark) returns only what comes after it."""
        raise NotImplementedError

    def lines_since(self, mark) -> list[tuple[str, float | None]]:
        raise NotImplementedError

    def read_since(self, mark) -> tuple[list[str], object]:
        """The daemon's own lines since mark, and the mark the next read starts from (a watch reads on)."""
        raise NotImplementedError

    def find_line(self, mark, expected: str) -> tuple[str, float | None] | None:
        """The first line since mark that contains expected, with when it was logged, or None."""
        for line, logged_at in self.lines_since(mark):
            if expected in line:
                return line, logged_at
        return None

    def tail_text(self, mark, lines: int = TAIL_LINES) -> str:
        """The last few lines since mark, on one line, for a fail_json message."""
        tail = [line for line, _ in self.lines_since(mark)][-lines:]
        if not tail:
            return f"nothing written to {self.source} since the start"
        return f"last lines of {self.source}: " + " | ".join(line.strip() for line in tail)


class NoLog(DaemonLog):
    """command manager without log_path: the start is judged on the process alone."""

    source = "no log"
    watchable = False

    def mark(self) -> int:
        return 0

    def lines_since(self, mark) -> list[tuple[str, float | None]]:
        return []

    def read_since(self, mark) -> tuple[list[str], object]:
        return [], mark

    def tail_text(self, mark, lines: int = TAIL_LINES) -> str:
        return "no log_path given"


class FileLog(DaemonLog):
    """The daemon's log file: lines appended after a byte offset."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.source = path

    def mark(self) -> int:
        return log_size(self.path)

    def lines_since(self, mark) -> list[tuple[str, float | None]]:
        return [(line, None) for line in read_log_since(self.path, mark)]

    def read_since(self, mark) -> tuple[list[str], object]:
        return read_log_chunk(self.path, int(mark or 0))


class DaemonControl:
    """One service manager's way to find, stop and start the daemon, and to read its lines.

    label starts every error message (the pidfile, or "systemd unit NAME"); pid_source says
    where a pid came from; stop_how names what asked the daemon to stop, for messages.
    """

    label = ""
    pid_source = ""
    stop_how = ""

    def find_pid(self) -> int | None:
        """The pid the service manager names for the daemon now, or None (it may be dead or stale)."""
        raise NotImplementedError

    def request_stop(self, pid: int | None, timeout: float | None = None) -> None:
        """Ask the daemon to stop and return (at once, or once its stop command returned, within timeout);
        the caller waits for pid to exit."""
        raise NotImplementedError

    def kill(self, pid: int) -> None:
        """SIGKILL the daemon, for good, and return at once."""
        raise NotImplementedError

    def launch(self, timeout: float) -> None:
        """Launch the daemon; returns once the service manager says it launched."""
        raise NotImplementedError

    def wait_for_pid(self, old_pid: int | None, process_match: str | None, deadline: float,
                     log: DaemonLog, mark) -> int:
        """The new daemon's pid after launch(); DaemonError when none appears by deadline."""
        raise NotImplementedError

    def daemon_log(self, log_path: str | None) -> DaemonLog:
        """Where the daemon's own lines are read: its log file; nothing without one."""
        return FileLog(log_path) if log_path else NoLog()

    def service_user(self) -> str | None:
        """The user the service manager starts the daemon as, when it says (systemd's User=), else None."""
        return None

    def stopping_without_pid(self) -> bool:
        """True when no daemon process runs but the service manager may still start one by itself."""
        return False

    def wait_until_stopped(self, pid: int | None, timeout: float, killed: bool) -> None:
        """After the daemon's exit: wait until the service manager has it stopped for good."""

    def check(self, process_match: str | None) -> dict:
        """The read-only look of check_daemon(): pid, running, unit states and problems."""
        raise NotImplementedError
