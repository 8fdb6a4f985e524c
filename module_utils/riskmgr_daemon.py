"""Stop and start the risk manager daemon, whichever service manager runs it.

Two service managers, one seam (DaemonControl: how to find the pid, how to stop, how to start):
`command` is a pidfile plus a start command that returns once the daemon is launched, and
`systemd` is a unit whose MainPID is the daemon. Everything else - waiting for the exit, the
settle time, the log line written since the start, the timestamps - exists once, in
stop_daemon() and start_daemon(), so both managers get the same health check.

Plain Python, no Ansible import: pytest drives these functions against real processes, and
library/riskmgr_daemon.py only wires them to Ansible. Every timestamp returned is the host's
epoch clock (time.time()), so the playbook can compute the daemon's downtime as measured on
the host: healthy_at - stop_requested_at. Durations are measured with the monotonic clock.
"""
from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from typing import Callable

from ansible.module_utils.sqlite_common import RiskmgrError

POLL_S = 0.01  # also the resolution of the downtime measured at the start
LAUNCH_POLL_S = 0.005  # Popen.wait(timeout) backs off to 50 ms sleeps: too coarse inside a restart
KILL_WAIT_S = 10.0
TAIL_LINES = 5
STDERR_TAIL_CHARS = 400
MAX_LOG_READ = 1024 * 1024  # lines written since a start: never read a whole multi-GB log
SYSTEMCTL_TIMEOUT_S = 30.0  # show, stop --no-block and kill return at once; start has start_timeout
STOPPED_UNIT_STATES = ("inactive", "failed")


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


INHERITED_SIGNALS = (signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGPIPE)


def default_signals() -> None:
    """In the start command's process, before exec: the default disposition of the signals a caller
    may ignore (riskmgr_upgrade does, while the daemon is down). Ignored signals survive exec, and a
    daemon launched with SIGTERM ignored could never be stopped. Only the main thread runs then."""
    for signum in INHERITED_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)


def run_quietly(argv: list[str], timeout: float) -> tuple[int | None, str, str]:
    """Run argv without a shell: (exit status, stdout, stderr); the status is None when it did
    not return within timeout and was killed. OSError when it cannot be run at all.

    Its output goes to temp files rather than pipes: a daemon that keeps an inherited stdout
    open would otherwise make us wait for an EOF that never comes.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        # start_new_session: the daemon must not share the task's session or process group.
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                   start_new_session=True, close_fds=True, preexec_fn=default_signals)
        deadline = time.monotonic() + timeout
        while (status := process.poll()) is None and time.monotonic() < deadline:
            time.sleep(LAUNCH_POLL_S)
        if status is None:
            process.kill()
            process.wait()
        texts = []
        for handle in (out, err):
            handle.seek(0)
            texts.append(handle.read().decode("utf-8", "replace"))
    return status, texts[0], texts[1]


def run_start_command(argv: list[str], timeout: float) -> None:
    """Run the start command without a shell; it must return, with status 0, within timeout."""
    try:
        status, out, err = run_quietly(argv, timeout)
    except OSError as error:
        raise DaemonError(f"start_command `{shlex.join(argv)}` could not be run: {error.strerror}; "
                          "check the path and permissions of its executable") from error
    if status is None:
        raise DaemonError(f"start_command `{shlex.join(argv)}` did not return within {timeout:g}s and "
                          f"was killed ({output_tail(out, err)}); it must return once the daemon is "
                          "launched (daemonize, or use a wrapper that does)")
    if status != 0:
        raise DaemonError(f"start_command `{shlex.join(argv)}` exited with status {status} "
                          f"({output_tail(out, err)})")


def output_tail(out: str, err: str) -> str:
    texts = []
    for name, text in (("stderr", err), ("stdout", out)):
        text = text.strip()
        if text:
            texts.append(f"{name}: " + " | ".join(text[-STDERR_TAIL_CHARS:].splitlines()))
    return "; ".join(texts) or "no output"


# --- the seam: how to find the pid, how to stop, how to start --------------------------------

class DaemonControl:
    """One service manager's way to find, stop and start the daemon.

    label starts every error message (the pidfile, or "systemd unit NAME"); pid_source says
    where a pid came from; stop_how names what asked the daemon to stop, for messages.
    """

    label = ""
    pid_source = ""
    stop_how = ""

    def find_pid(self) -> int | None:
        """The pid the service manager names for the daemon now, or None (it may be dead or stale)."""
        raise NotImplementedError

    def request_stop(self, pid: int) -> None:
        """Ask the daemon to stop and return at once; the caller waits for pid to exit."""
        raise NotImplementedError

    def kill(self, pid: int) -> None:
        """SIGKILL the daemon and return at once."""
        raise NotImplementedError

    def launch(self, timeout: float) -> None:
        """Launch the daemon; returns once the service manager says it launched."""
        raise NotImplementedError

    def wait_for_pid(self, old_pid: int | None, process_match: str | None, deadline: float,
                     log_path: str | None, log_offset: int) -> int:
        """The new daemon's pid after launch(); DaemonError when none appears by deadline."""
        raise NotImplementedError


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

    def request_stop(self, pid: int) -> None:
        send_signal(pid, signal.SIGTERM, self.pidfile)

    def kill(self, pid: int) -> None:
        send_signal(pid, signal.SIGKILL, self.pidfile)

    def launch(self, timeout: float) -> None:
        run_start_command(self.start_argv, timeout)

    def wait_for_pid(self, old_pid: int | None, process_match: str | None, deadline: float,
                     log_path: str | None, log_offset: int) -> int:
        return wait_for_new_pid(self.pidfile, old_pid, process_match, deadline, log_path, log_offset)


class SystemdControl(DaemonControl):
    """service_manager=systemd: the unit's MainPID is the daemon and systemctl stops and starts it."""

    pid_source = "from MainPID"

    def __init__(self, unit: str) -> None:
        self.unit = unit
        self.label = f"systemd unit {unit}"
        # --no-block: systemd queues the stop job and we time the exit ourselves, as with SIGTERM.
        self.stop_how = f"`systemctl stop --no-block {unit}`"
        self.systemctl = shutil.which("systemctl")
        if not self.systemctl:
            raise DaemonError(f"{self.label}: systemctl is not on PATH ({os.environ.get('PATH', '')}); "
                              "service_manager=systemd needs systemd on the host, use "
                              "service_manager=command on hosts without it")

    def systemctl_output(self, *args: str, timeout: float = SYSTEMCTL_TIMEOUT_S) -> str:
        """Run systemctl ARGS (an argv list, never a shell) and return its stdout; DaemonError on failure."""
        shown = shlex.join(["systemctl", *args])
        try:
            status, out, err = run_quietly([self.systemctl, *args], timeout)
        except OSError as error:
            raise DaemonError(f"{self.label}: {self.systemctl} could not be run: {error.strerror}") from error
        if status is None:
            raise DaemonError(f"{self.label}: `{shown}` did not return within {timeout:g}s and was killed "
                              f"({output_tail(out, err)}); see `journalctl -u {self.unit}`")
        if status != 0:
            raise DaemonError(f"{self.label}: `{shown}` exited with status {status} ({output_tail(out, err)}); "
                              f"see `journalctl -u {self.unit}`")
        return out

    def show(self, prop: str) -> str:
        return self.systemctl_output("show", f"--property={prop}", "--value", self.unit).strip()

    def find_pid(self) -> int | None:
        text = self.show("MainPID")
        if not text.isdigit():
            if not text:
                return None
            raise DaemonError(f"{self.label}: `systemctl show --property=MainPID` gave {text[:40]!r}, "
                              "not a pid; check that service_name is a service unit")
        return int(text) or None  # 0: systemd knows no main process

    def request_stop(self, pid: int) -> None:
        self.systemctl_output("stop", "--no-block", self.unit)

    def kill(self, pid: int) -> None:
        self.systemctl_output("kill", "--signal=SIGKILL", self.unit)

    def launch(self, timeout: float) -> None:
        self.systemctl_output("start", self.unit, timeout=timeout)

    def wait_for_pid(self, old_pid: int | None, process_match: str | None, deadline: float,
                     log_path: str | None, log_offset: int) -> int:
        """MainPID once systemd reports one. A unit that is inactive or failed with no MainPID after
        a successful start has already lost its daemon: say so now rather than at the deadline.

        For Type=simple units systemctl start returns after systemd forks, possibly before the
        exec, when the pid's command line is not yet the daemon's: process_match gets until the
        deadline to match, and a pid that never does is returned for the health check to report.
        """
        while True:
            pid = self.find_pid()
            if pid is not None and (pid_is_running(pid, process_match) or time.monotonic() >= deadline):
                return pid
            if pid is not None:
                time.sleep(POLL_S)
                continue
            state = self.show("ActiveState")
            if state in STOPPED_UNIT_STATES or time.monotonic() >= deadline:
                what = (f"is {state} with no MainPID: the daemon exited at once" if state in STOPPED_UNIT_STATES
                        else f"still has no MainPID (ActiveState {state or 'unknown'}) after the start timeout")
                raise DaemonError(f"{self.label}: `systemctl start {self.unit}` returned but the unit {what} "
                                  f"({log_tail_text(log_path, log_offset)}); fix the cause shown in the log "
                                  f"and in `journalctl -u {self.unit}`, then rerun")
            time.sleep(POLL_S)


# --- stop and start ----------------------------------------------------------------------------

# The options every module that stops or starts the daemon takes (riskmgr_daemon, riskmgr_upgrade).
DAEMON_SPEC = {
    "service_manager": {"type": "str", "default": "command", "choices": ["command", "systemd"]},
    "service_name": {"type": "str"},
    "pidfile": {"type": "path"},
    "start_command": {"type": "raw"},
    "stop_timeout": {"type": "int", "default": 60},
    "stop_force": {"type": "bool", "default": False},
    "settle": {"type": "float", "default": 2.0},
    "log_path": {"type": "path"},
    "expect_log_line": {"type": "str"},
    "start_timeout": {"type": "int", "default": 30},
    "process_match": {"type": "str"},
}


def daemon_control(params: dict, can_start: bool = True) -> DaemonControl:
    """The control for a module's DAEMON_SPEC parameters (can_start: the start command is needed)."""
    if params["service_manager"] == "systemd":
        return SystemdControl(params["service_name"])
    return PidfileControl(params["pidfile"], split_command(params["start_command"]) if can_start else None)


def empty_result(pid: int | None = None, was_running: bool = False) -> dict:
    return {"changed": False, "pid": pid, "was_running": was_running,
            "stop_requested_at": None, "stopped_at": None, "stop_seconds": None, "killed": False,
            "started_at": None, "serving_at": None, "healthy_at": None, "start_seconds": None, "serve_seconds": None,
            "log_line": None}


def ensure_stopped(pidfile: str, stop_timeout: float, stop_force: bool = False,
                   process_match: str | None = None, log_path: str | None = None,
                   check_mode: bool = False) -> dict:
    """SIGTERM the daemon and wait for it to exit; with stop_force, SIGKILL it after stop_timeout."""
    return stop_daemon(PidfileControl(pidfile), stop_timeout, stop_force=stop_force,
                       process_match=process_match, log_path=log_path, check_mode=check_mode)


def ensure_started(pidfile: str, start_command: str | list | None, settle: float = 2.0,
                   start_timeout: float = 30.0, log_path: str | None = None,
                   expect_log_line: str | None = None, process_match: str | None = None,
                   check_mode: bool = False) -> dict:
    """Start the daemon unless it runs; require it alive after settle s and, if asked, its log line."""
    control = PidfileControl(pidfile, split_command(start_command))
    return start_daemon(control, settle=settle, start_timeout=start_timeout, log_path=log_path,
                        expect_log_line=expect_log_line, process_match=process_match, check_mode=check_mode)


def stop_daemon(control: DaemonControl, stop_timeout: float, stop_force: bool = False,
                process_match: str | None = None, log_path: str | None = None,
                check_mode: bool = False) -> dict:
    """Ask the daemon to stop and wait for it to exit; with stop_force, SIGKILL it after stop_timeout."""
    pid = control.find_pid()
    if not pid_is_running(pid, process_match):
        return empty_result()
    result = empty_result(pid=pid, was_running=True)
    result["changed"] = True
    if check_mode:
        return result
    log_offset = log_size(log_path)
    result["stop_requested_at"] = time.time()
    began = time.monotonic()
    control.request_stop(pid)
    if not wait_for_exit(pid, stop_timeout):
        if not stop_force:
            raise DaemonError(f"{control.label}: pid {pid} is still running {stop_timeout:g}s after "
                              f"{control.stop_how} and was left running ({log_tail_text(log_path, log_offset)}); "
                              "find out why it does not stop, or rerun with stop_force enabled to SIGKILL it")
        control.kill(pid)
        result["killed"] = True
        if not wait_for_exit(pid, KILL_WAIT_S):
            raise DaemonError(f"{control.label}: pid {pid} survived SIGKILL for {KILL_WAIT_S:g}s (state "
                              f"{process_state(pid)}: stuck in the kernel, usually on I/O); check the host")
    result["stopped_at"] = time.time()
    result["stop_seconds"] = round(time.monotonic() - began, 3)
    return result


def start_daemon(control: DaemonControl, settle: float = 2.0, start_timeout: float = 30.0,
                 log_path: str | None = None, expect_log_line: str | None = None,
                 process_match: str | None = None, check_mode: bool = False) -> dict:
    """Start the daemon unless it runs; require it alive after settle s and, if asked, its log line."""
    if expect_log_line and not log_path:
        raise DaemonError(f"{control.label}: expect_log_line needs log_path, the daemon's log file")
    old_pid = control.find_pid()
    if pid_is_running(old_pid, process_match):
        return empty_result(pid=old_pid, was_running=True)
    result = empty_result()
    result["changed"] = True
    if check_mode:
        return result
    log_offset = log_size(log_path)
    result["started_at"] = time.time()
    began = time.monotonic()
    control.launch(start_timeout)
    pid = control.wait_for_pid(old_pid, process_match, began + start_timeout, log_path, log_offset)
    result["pid"] = pid
    result["log_line"], result["serving_at"] = wait_until_healthy(pid, control, process_match, began, settle,
                                                                  start_timeout, log_path, expect_log_line, log_offset)
    result["healthy_at"] = time.time()
    result["start_seconds"] = round(time.monotonic() - began, 3)
    result["serve_seconds"] = round(result["serving_at"] - result["started_at"], 3)
    return result


def restart_daemon(control: DaemonControl, stop_timeout: float, stop_force: bool = False, settle: float = 2.0,
                   start_timeout: float = 30.0, log_path: str | None = None, expect_log_line: str | None = None,
                   process_match: str | None = None, check_mode: bool = False) -> dict:
    """Stop then start in one process: no round trip between the two while the daemon is down."""
    stopped = stop_daemon(control, stop_timeout, stop_force=stop_force, process_match=process_match,
                          log_path=log_path, check_mode=check_mode)
    if check_mode:
        result = empty_result(pid=stopped["pid"], was_running=stopped["was_running"])
        result["changed"] = True
        return result
    result = start_daemon(control, settle=settle, start_timeout=start_timeout, log_path=log_path,
                          expect_log_line=expect_log_line, process_match=process_match)
    for key in ("was_running", "stop_requested_at", "stopped_at", "stop_seconds", "killed"):
        result[key] = stopped[key]
    result["downtime_seconds"] = (round(result["serving_at"] - stopped["stop_requested_at"], 3)
                                  if result["serving_at"] and stopped["stop_requested_at"] else None)
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


def wait_until_healthy(pid: int, control: DaemonControl, process_match: str | None, began: float, settle: float,
                       start_timeout: float, log_path: str | None, expected: str | None,
                       log_offset: int) -> tuple[str | None, float]:
    """Poll until pid has stayed alive for settle s and (if expected) logged the line since the start.

    Returns the matched log line and when the daemon was first seen serving (the line logged, or
    alive without one to wait for): the downtime ends there, the settle time only confirms it
    stays up. Raises DaemonError naming what happened: it exited, or it runs but did not log
    the line within start_timeout (it is then left running).
    """
    settled_at = time.monotonic() + settle
    deadline = began + max(start_timeout, settle)
    line, serving_at = None, None
    while True:
        alive = pid_is_running(pid, process_match)
        if expected and line is None:
            line = find_log_line(log_path, log_offset, expected)
        if not alive:
            raise DaemonError(exited_message(pid, control, process_match, began, expected, line,
                                             log_path, log_offset))
        if serving_at is None and (line is not None or not expected):
            serving_at = time.time()
        now = time.monotonic()
        if now >= settled_at and serving_at is not None:
            return line, serving_at
        if now >= deadline:
            raise DaemonError(f"{control.label}: pid {pid} is running but did not log {expected!r} to {log_path} "
                              f"within {start_timeout:g}s of the start and was left running "
                              f"({log_tail_text(log_path, log_offset)}); check the log and the database")
        time.sleep(POLL_S)


def exited_message(pid: int, control: DaemonControl, process_match: str | None, began: float,
                   expected: str | None, line: str | None, log_path: str | None, log_offset: int) -> str:
    after = time.monotonic() - began
    # A zombie has exited too: its cmdline reads empty until it is reaped, which is no mismatch.
    if process_state(pid) not in (None, "Z", "X", "x") and process_match and process_match not in process_cmdline(pid):
        what = f"pid {pid} {control.pid_source} is not a process matching {process_match!r}"
    else:
        what = f"pid {pid} exited {after:.1f}s after the start (before the settle time passed)"
    seen = ""
    if expected:
        seen = f"; it had logged {expected!r}" if line else f"; it never logged {expected!r}"
    return (f"{control.label}: {what}{seen} ({log_tail_text(log_path, log_offset)}); fix the cause shown in the "
            "log, then rerun")
