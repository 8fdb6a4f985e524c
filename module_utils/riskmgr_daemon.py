"""Stop and start the risk manager daemon when its service manager is `command`: a pidfile
and a start command that returns once the daemon is launched.

Plain Python, no Ansible import: pytest drives these functions against real processes, and
library/riskmgr_daemon.py only wires them to Ansible. Every timestamp returned is the host's
epoch clock (time.time()), so the playbook can compute the daemon's downtime as measured on
the host: healthy_at - stop_requested_at. Durations are measured with the monotonic clock.
"""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import tempfile
import time
from typing import Callable

from ansible.module_utils.sqlite_common import RiskmgrError

POLL_S = 0.05
KILL_WAIT_S = 10.0
TAIL_LINES = 5
STDERR_TAIL_CHARS = 400
MAX_LOG_READ = 1024 * 1024  # lines written since a start: never read a whole multi-GB log


class DaemonError(RiskmgrError):
    """The daemon could not be stopped or started as asked; the text says what it was left as."""


# --- pidfile and /proc -----------------------------------------------------------------------

def read_pid(pidfile: str) -> int | None:
    """The pid a pidfile names; None when the file is missing or still empty (being written)."""
    try:
        with open(pidfile, encoding="ascii", errors="replace") as handle:
            text = handle.read().strip()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise DaemonError(f"{pidfile}: cannot read the pidfile ({err.strerror}); run the task as the "
                          "daemon's user (become)") from err
    if not text:
        return None
    first = text.split()[0]
    if not first.isdigit() or int(first) <= 0:
        raise DaemonError(f"{pidfile}: does not hold a pid ({text[:40]!r}); if the daemon is stopped, "
                          "remove the file and rerun")
    return int(first)


def process_state(pid: int) -> str | None:
    """The state letter from /proc/PID/stat (R, S, D, Z, ...); None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name in parentheses may itself contain spaces and ")": split at the last one.
    fields = stat.rsplit(b")", 1)[-1].split()
    return fields[0].decode("ascii", "replace") if fields else None


def process_cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
    except (FileNotFoundError, ProcessLookupError):
        return ""


def pid_is_running(pid: int | None, process_match: str | None = None) -> bool:
    """True when pid is a live process (a zombie has exited) and, if process_match is given,
    its command line contains it: a stale pidfile can name a pid the kernel has since reused."""
    if pid is None:
        return False
    state = process_state(pid)
    if state is None or state in ("Z", "X", "x"):
        return False
    return not process_match or process_match in process_cmdline(pid)


def wait_for_exit(pid: int, timeout: float, poll: float = POLL_S) -> bool:
    """Wait up to timeout seconds for pid to exit (or become a zombie); True when it did."""
    deadline = time.monotonic() + timeout
    while True:
        if not pid_is_running(pid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll)


def send_signal(pid: int, signum: int, pidfile: str) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass  # it exited between the check and the signal: that is what we wanted
    except PermissionError as err:
        raise DaemonError(f"{pidfile}: not permitted to signal pid {pid}; run the task as the daemon's "
                          "user or as root (become)") from err


# --- the log ---------------------------------------------------------------------------------

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
    if not log_path:
        return []
    try:
        with open(log_path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            start = offset if offset <= size else 0
            start = max(start, size - MAX_LOG_READ)
            handle.seek(start)
            data = handle.read(size - start)
    except FileNotFoundError:
        return []
    complete = data[: data.rfind(b"\n") + 1]
    return complete.decode("utf-8", "replace").splitlines()


def find_log_line(log_path: str | None, offset: int, expected: str) -> str | None:
    """The first line written since offset that contains expected, or None."""
    for line in read_log_since(log_path, offset):
        if expected in line:
            return line
    return None


def scan_log_since(log_path: str, offset: int, expected: str, timeout: float,
                   keep_waiting: Callable[[], bool] = lambda: True, poll: float = POLL_S) -> str | None:
    """Wait up to timeout seconds for a line containing expected to be written after offset.

    Returns the line, or None on timeout or as soon as keep_waiting() turns false (the daemon
    died: no point waiting for its log line).
    """
    deadline = time.monotonic() + timeout
    while True:
        line = find_log_line(log_path, offset, expected)
        if line is not None:
            return line
        if time.monotonic() >= deadline or not keep_waiting():
            return find_log_line(log_path, offset, expected)
        time.sleep(poll)


def log_tail_text(log_path: str | None, offset: int, lines: int = TAIL_LINES) -> str:
    """The last few lines written since offset, on one line, for a fail_json message."""
    if not log_path:
        return "no log_path given"
    tail = read_log_since(log_path, offset)[-lines:]
    if not tail:
        return f"nothing written to {log_path} since the start"
    return f"last lines of {log_path}: " + " | ".join(line.strip() for line in tail)


# --- the start command -----------------------------------------------------------------------

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
    """Run the start command without a shell; it must return, with status 0, within timeout.

    Its output goes to temp files rather than pipes: a daemon that keeps an inherited stdout
    open would otherwise make us wait for an EOF that never comes.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            # start_new_session: the daemon must not share the task's session or process group.
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                       start_new_session=True, close_fds=True)
        except OSError as error:
            raise DaemonError(f"start_command `{shlex.join(argv)}` could not be run: {error.strerror}; "
                              "check the path and permissions of its executable") from error
        try:
            status = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise DaemonError(f"start_command `{shlex.join(argv)}` did not return within {timeout:g}s and "
                              f"was killed ({output_tail(out, err)}); it must return once the daemon is "
                              "launched (daemonize, or use a wrapper that does)") from None
        if status != 0:
            raise DaemonError(f"start_command `{shlex.join(argv)}` exited with status {status} "
                              f"({output_tail(out, err)})")


def output_tail(out, err) -> str:
    texts = []
    for name, handle in (("stderr", err), ("stdout", out)):
        handle.seek(0)
        text = handle.read().decode("utf-8", "replace").strip()
        if text:
            texts.append(f"{name}: " + " | ".join(text[-STDERR_TAIL_CHARS:].splitlines()))
    return "; ".join(texts) or "no output"


# --- stop and start ----------------------------------------------------------------------------

def empty_result(pid: int | None = None, was_running: bool = False) -> dict:
    return {"changed": False, "pid": pid, "was_running": was_running,
            "stop_requested_at": None, "stopped_at": None, "stop_seconds": None, "killed": False,
            "started_at": None, "healthy_at": None, "start_seconds": None, "log_line": None}


def ensure_stopped(pidfile: str, stop_timeout: float, stop_force: bool = False,
                   process_match: str | None = None, log_path: str | None = None,
                   check_mode: bool = False) -> dict:
    """SIGTERM the daemon and wait for it to exit; with stop_force, SIGKILL it after stop_timeout."""
    pid = read_pid(pidfile)
    if not pid_is_running(pid, process_match):
        return empty_result()
    result = empty_result(pid=pid, was_running=True)
    result["changed"] = True
    if check_mode:
        return result
    log_offset = log_size(log_path)
    result["stop_requested_at"] = time.time()
    began = time.monotonic()
    send_signal(pid, signal.SIGTERM, pidfile)
    if not wait_for_exit(pid, stop_timeout):
        if not stop_force:
            raise DaemonError(f"{pidfile}: pid {pid} is still running {stop_timeout:g}s after SIGTERM and was "
                              f"left running ({log_tail_text(log_path, log_offset)}); find out why it does not "
                              "stop, or rerun with stop_force enabled to SIGKILL it")
        send_signal(pid, signal.SIGKILL, pidfile)
        result["killed"] = True
        if not wait_for_exit(pid, KILL_WAIT_S):
            raise DaemonError(f"{pidfile}: pid {pid} survived SIGKILL for {KILL_WAIT_S:g}s (state "
                              f"{process_state(pid)}: stuck in the kernel, usually on I/O); check the host")
    result["stopped_at"] = time.time()
    result["stop_seconds"] = round(time.monotonic() - began, 3)
    return result


def ensure_started(pidfile: str, start_command: str | list | None, settle: float = 2.0,
                   start_timeout: float = 30.0, log_path: str | None = None,
                   expect_log_line: str | None = None, process_match: str | None = None,
                   check_mode: bool = False) -> dict:
    """Start the daemon unless it runs; require it alive after settle s and, if asked, its log line."""
    argv = split_command(start_command)
    if expect_log_line and not log_path:
        raise DaemonError(f"{pidfile}: expect_log_line needs log_path, the daemon's log file")
    old_pid = read_pid(pidfile)
    if pid_is_running(old_pid, process_match):
        return empty_result(pid=old_pid, was_running=True)
    result = empty_result()
    result["changed"] = True
    if check_mode:
        return result
    log_offset = log_size(log_path)
    result["started_at"] = time.time()
    began = time.monotonic()
    run_start_command(argv, start_timeout)
    pid = wait_for_new_pid(pidfile, old_pid, process_match, began + start_timeout, log_path, log_offset)
    result["pid"] = pid
    result["log_line"] = wait_until_healthy(pid, pidfile, process_match, began, settle, start_timeout,
                                            log_path, expect_log_line, log_offset)
    result["healthy_at"] = time.time()
    result["start_seconds"] = round(time.monotonic() - began, 3)
    return result


def wait_for_new_pid(pidfile: str, old_pid: int | None, process_match: str | None, deadline: float,
                     log_path: str | None, log_offset: int) -> int:
    """The pid the pidfile names once the daemon has written it (a leftover stale pid does not count)."""
    while True:
        pid = read_pid(pidfile)
        if pid is not None and (pid != old_pid or pid_is_running(pid, process_match)):
            return pid
        if time.monotonic() >= deadline:
            found = "is missing" if pid is None else f"still names the old, dead pid {pid}"
            raise DaemonError(f"{pidfile}: the start command returned but the pidfile {found} after the "
                              f"start timeout ({log_tail_text(log_path, log_offset)}); check that "
                              "start_command and pidfile agree")
        time.sleep(POLL_S)


def wait_until_healthy(pid: int, pidfile: str, process_match: str | None, began: float, settle: float,
                       start_timeout: float, log_path: str | None, expected: str | None,
                       log_offset: int) -> str | None:
    """Poll until pid has stayed alive for settle s and (if expected) logged the line since the start.

    Returns the matched log line. Raises DaemonError naming what happened: it exited, or it runs
    but did not log the line within start_timeout (it is then left running).
    """
    settled_at = time.monotonic() + settle
    deadline = began + max(start_timeout, settle)
    line = None
    while True:
        alive = pid_is_running(pid, process_match)
        if expected and line is None:
            line = find_log_line(log_path, log_offset, expected)
        if not alive:
            raise DaemonError(exited_message(pid, pidfile, process_match, began, expected, line,
                                             log_path, log_offset))
        now = time.monotonic()
        if now >= settled_at and (line is not None or not expected):
            return line
        if now >= deadline:
            raise DaemonError(f"{pidfile}: pid {pid} is running but did not log {expected!r} to {log_path} "
                              f"within {start_timeout:g}s of the start and was left running "
                              f"({log_tail_text(log_path, log_offset)}); check the log and the database")
        time.sleep(POLL_S)


def exited_message(pid: int, pidfile: str, process_match: str | None, began: float, expected: str | None,
                   line: str | None, log_path: str | None, log_offset: int) -> str:
    after = time.monotonic() - began
    if process_state(pid) is not None and process_match and process_match not in process_cmdline(pid):
        what = f"pid {pid} from the pidfile is not a process matching {process_match!r}"
    else:
        what = f"pid {pid} exited {after:.1f}s after the start (before the settle time passed)"
    seen = ""
    if expected:
        seen = f"; it had logged {expected!r}" if line else f"; it never logged {expected!r}"
    return (f"{pidfile}: {what}{seen} ({log_tail_text(log_path, log_offset)}); fix the cause shown in the "
            "log, then rerun")
