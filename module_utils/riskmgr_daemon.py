"""Stop and start the risk manager daemon, whichever service manager runs it.

Two service managers, one seam (DaemonControl: how to find the pid, how to stop, how to start,
where the daemon's own lines are read): `command` is a pidfile plus a start command that returns
once the daemon is launched, and `systemd` is a unit whose MainPID is the daemon and whose lines
are in its log file or, without one, in its journal. Everything else - waiting for the exit, the
settle time, the log line written since the start, the timestamps - exists once, in
stop_daemon() and start_daemon(), so both managers get the same health check. check_daemon()
is the read-only look the preflight takes before anything stops.

Plain Python, no Ansible import: pytest drives these functions against real processes, and
library/riskmgr_daemon.py only wires them to Ansible. Every timestamp returned is the host's
epoch clock (time.time()), so the playbook can compute the daemon's downtime as measured on
the host: healthy_at - stop_requested_at. Durations are measured with the monotonic clock.
"""
from __future__ import annotations

import json
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
SYSTEMD_TAIL_LINES = 3
STDERR_TAIL_CHARS = 400
MAX_LOG_READ = 1024 * 1024  # lines written since a start: never read a whole multi-GB log
SYSTEMCTL_TIMEOUT_S = 30.0  # show, stop --no-block and kill return at once; start has start_timeout
JOURNAL_POLL_S = 0.05  # one journalctl process per read; the line's own journal time is what counts
MAX_JOURNAL_LINES = 1000  # read without a cursor (a journal that had no entry at all): the newest only
STOPPED_UNIT_STATES = ("inactive", "failed")
# Read in one `systemctl show`; older systemd lacks some (NRestarts: 235), which then read as "".
UNIT_PROPERTIES = ("MainPID", "LoadState", "ActiveState", "SubState", "UnitFileState", "Result", "NRestarts",
                   "RefuseManualStart", "RefuseManualStop")


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

    def tail_text(self, mark, lines: int = TAIL_LINES) -> str:
        return log_tail_text(self.path, mark, lines)


class JournalLog(DaemonLog):
    """A systemd unit's journal (what its daemon writes to stdout and stderr, and systemd's own
    lines about the unit), read after the journal cursor of the mark with `journalctl -u`."""

    poll_s = JOURNAL_POLL_S

    def __init__(self, unit: str, label: str) -> None:
        self.unit = unit
        self.label = label
        self.source = f"the journal of {unit}"
        self.journalctl = shutil.which("journalctl")
        if not self.journalctl:
            raise DaemonError(f"{label}: journalctl is not on PATH, and without log_path the daemon's start is "
                              "judged by its journal; give log_path, the daemon's log file")

    def journal_json(self, *args: str) -> list[dict]:
        """The entries `journalctl -o json ARGS` prints, one JSON object a line (never a shell)."""
        argv = [self.journalctl, "--no-pager", "--quiet", "--output=json", *args]
        try:
            status, out, err = run_quietly(argv, SYSTEMCTL_TIMEOUT_S)
        except OSError as error:
            raise DaemonError(f"{self.label}: {self.journalctl} could not be run: {error.strerror}") from error
        if status != 0:
            raise DaemonError(f"{self.label}: `{shlex.join(['journalctl', *args])}` "
                              + (f"exited with status {status}" if status is not None else "did not return")
                              + f" ({output_tail('', err)}); give log_path, the daemon's log file, if the "
                              "journal cannot be read here")
        entries = []
        for line in out.splitlines():
            try:
                entries.append(json.loads(line))
            except ValueError:
                continue  # not an entry (a hint journalctl printed)
        return entries

    def mark(self) -> str | None:
        """The cursor of the journal's newest entry, whatever its unit; None when the journal is empty."""
        newest = self.journal_json("--lines=1")
        return newest[-1].get("__CURSOR") if newest else None

    def entries_since(self, mark) -> list[dict]:
        where = [f"--after-cursor={mark}"] if mark else [f"--lines={MAX_JOURNAL_LINES}"]
        return self.journal_json(f"--unit={self.unit}", *where)

    def lines_since(self, mark) -> list[tuple[str, float | None]]:
        return [(journal_message(entry), journal_time(entry)) for entry in self.entries_since(mark)]

    def tail_text(self, mark, lines: int = TAIL_LINES) -> str:
        """The daemon's own last lines, then systemd's last ones about the unit: systemd can log
        many lines about one stop or start, which would push the daemon's ERROR out of a plain tail."""
        entries = self.entries_since(mark)
        by_daemon = [journal_message(entry).strip() for entry in entries if entry.get("_PID") != "1"]
        by_systemd = [journal_message(entry).strip() for entry in entries if entry.get("_PID") == "1"]
        if not entries:
            return f"nothing written to {self.source} since the start"
        text = f"last lines of {self.source}: " + (" | ".join(by_daemon[-lines:]) or "none from the daemon")
        if by_systemd:
            text += "; systemd: " + " | ".join(distinct_tail(by_systemd, SYSTEMD_TAIL_LINES))
        return text


def distinct_tail(lines: list[str], count: int) -> list[str]:
    """The last count distinct lines, in order: a line systemd repeats counts once."""
    tail: list[str] = []
    for line in reversed(lines):
        if line not in tail:
            tail.insert(0, line)
            if len(tail) == count:
                break
    return tail


def journal_message(entry: dict) -> str:
    """MESSAGE of a journal entry: journalctl gives a message that is not UTF-8 as a list of bytes."""
    message = entry.get("MESSAGE")
    if isinstance(message, list):
        return bytes(value for value in message if isinstance(value, int)).decode("utf-8", "replace")
    return message if isinstance(message, str) else ""


def journal_time(entry: dict) -> float | None:
    """When journald received the entry (host epoch seconds)."""
    stamp = entry.get("__REALTIME_TIMESTAMP")
    return int(stamp) / 1e6 if isinstance(stamp, str) and stamp.isdigit() else None


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

    def request_stop(self, pid: int | None) -> None:
        """Ask the daemon to stop and return at once; the caller waits for pid to exit."""
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

    def stopping_without_pid(self) -> bool:
        """True when no daemon process runs but the service manager may still start one by itself."""
        return False

    def wait_until_stopped(self, pid: int | None, timeout: float, killed: bool) -> None:
        """After the daemon's exit: wait until the service manager has it stopped for good."""

    def check(self, process_match: str | None) -> dict:
        """The read-only look of check_daemon(): pid, running, unit states and problems."""
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


class SystemdControl(DaemonControl):
    """service_manager=systemd: the unit's MainPID is the daemon and systemctl stops and starts it.

    A unit with Restart= must not bring the daemon back while the database changes: systemd
    never restarts a unit whose stop job it is running (it forbids the restart when the stop
    begins), so every stop, the SIGKILL included, goes through a stop job, and the stop waits
    until the unit is inactive or failed, not only until the process exited.
    """

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

    def unit_status(self) -> dict[str, str]:
        """UNIT_PROPERTIES of the unit, read at once; a property systemd did not print reads as ""."""
        out = self.systemctl_output("show", *(f"--property={prop}" for prop in UNIT_PROPERTIES), self.unit)
        status = dict.fromkeys(UNIT_PROPERTIES, "")
        for line in out.splitlines():
            name, _, value = line.partition("=")
            if name in status:
                status[name] = value.strip()
        return status

    def find_pid(self) -> int | None:
        return self.parse_main_pid(self.show("MainPID"))

    def parse_main_pid(self, text: str) -> int | None:
        if not text.isdigit():
            if not text:
                return None
            raise DaemonError(f"{self.label}: `systemctl show --property=MainPID` gave {text[:40]!r}, "
                              "not a pid; check that service_name is a service unit")
        return int(text) or None  # 0: systemd knows no main process

    def request_stop(self, pid: int | None) -> None:
        self.systemctl_output("stop", "--no-block", self.unit)

    def kill(self, pid: int) -> None:
        # A SIGKILL alone is a crash to systemd, which Restart= answers by starting the daemon
        # again. Queued first (a no-op when the earlier stop's job still runs), the stop job
        # forbids that restart and turns the kill into the end of a stop.
        self.systemctl_output("stop", "--no-block", self.unit)
        try:
            self.systemctl_output("kill", "--signal=SIGKILL", self.unit)
        except DaemonError:
            # systemd can fail to signal the unit's other processes (seen: EIO from a cgroup v1
            # hierarchy in a container), before or after the main one: the main process is what
            # the stop waits for, and the stop job ends the rest.
            send_signal(pid, signal.SIGKILL, self.label)

    def launch(self, timeout: float) -> None:
        try:
            self.systemctl_output("start", self.unit, timeout=timeout)
        except DaemonError:
            # systemd refuses a start once StartLimitBurst starts fell within StartLimitIntervalSec,
            # and this run's own stops and starts count (Restart= after a refused version too): that
            # must not keep the daemon down. systemd 252 then still reports the earlier Result, so
            # the only sign is a failed unit: reset it and try once more. A start that fails for
            # another reason fails again, and that is what is reported.
            if self.show("ActiveState") != "failed":
                raise
            self.systemctl_output("reset-failed", self.unit)
            self.systemctl_output("start", self.unit, timeout=timeout)

    def daemon_log(self, log_path: str | None) -> DaemonLog:
        """The log file when there is one, else the unit's journal (its stdout and stderr)."""
        return FileLog(log_path) if log_path else JournalLog(self.unit, self.label)

    def stopping_without_pid(self) -> bool:
        # No main process, but not stopped: a restart pending after a crash (auto-restart), a start
        # in progress, or an active unit whose daemon systemd does not know as MainPID.
        return self.show("ActiveState") not in STOPPED_UNIT_STATES

    def wait_until_stopped(self, pid: int | None, timeout: float, killed: bool) -> None:
        """Until the unit is inactive or failed, so that its stop job is over and no restart pending.
        A failed state our own SIGKILL caused is reset: the daemon did not fail, the run killed it."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.unit_status()
            main_pid = self.parse_main_pid(status["MainPID"])
            if status["ActiveState"] == "active" and main_pid and main_pid != pid and pid_is_running(main_pid):
                raise DaemonError(f"{self.label}: started again as pid {main_pid} while it was being stopped "
                                  f"(NRestarts {status['NRestarts'] or 'unknown'}): by its Restart= or by something "
                                  "else that starts it; find out which, then rerun")
            if status["ActiveState"] in STOPPED_UNIT_STATES:
                if killed and status["ActiveState"] == "failed":
                    self.systemctl_output("reset-failed", self.unit)
                return
            if time.monotonic() >= deadline:
                raise DaemonError(f"{self.label}: is still {status['ActiveState']} ({status['SubState']}) {timeout:g}s "
                                  f"after {'its main process exited' if pid else 'the stop request'}; see "
                                  f"`systemctl status {self.unit}` and `journalctl -u {self.unit}`")
            time.sleep(POLL_S)

    def check(self, process_match: str | None) -> dict:
        status = self.unit_status()
        pid = self.parse_main_pid(status["MainPID"])
        running = pid_is_running(pid, process_match)
        cmdline = process_cmdline(pid) if pid and pid_is_running(pid) else ""
        return {"pid": pid, "running": running, "load_state": status["LoadState"] or None,
                "active_state": status["ActiveState"] or None, "sub_state": status["SubState"] or None,
                "unit_file_state": status["UnitFileState"] or None,
                "problems": unit_problems(self.unit, status, process_match, cmdline)}

    def wait_for_pid(self, old_pid: int | None, process_match: str | None, deadline: float,
                     log: DaemonLog, mark) -> int:
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
                                  f"({log.tail_text(mark)}); fix the cause shown there and in "
                                  f"`journalctl -u {self.unit}`, then rerun")
            time.sleep(POLL_S)


def unit_problems(unit: str, status: dict[str, str], process_match: str | None, main_cmdline: str) -> list[str]:
    """Why a run must not stop and start this unit's daemon, from its `systemctl show` properties.

    main_cmdline is the command line of its running MainPID ("" when none runs). Each text names
    the unit and what to do; an empty list means the unit can be stopped and started.
    """
    name = f"systemd unit {unit}"
    load, active, sub = status.get("LoadState", ""), status.get("ActiveState", ""), status.get("SubState", "")
    if load == "not-found":
        return [f"{name} is not found on this host (LoadState not-found): install its unit file, or name the "
                "unit that runs the daemon"]
    if load == "masked":
        return [f"{name} is masked: systemd would refuse to start it again after the change; unmask it "
                f"(`systemctl unmask {unit}`) if it should run, or leave this host out"]
    if load != "loaded":
        return [f"{name} cannot be loaded (LoadState {load or 'unknown'}): see `systemctl status {unit}`"]
    problems = []
    if active == "failed":
        problems.append(f"{name} is failed (Result {status.get('Result') or 'unknown'}) from before this run: find "
                        f"out why in `journalctl -u {unit}`, then start it or `systemctl reset-failed {unit}`, "
                        "and rerun")
    elif sub == "auto-restart":
        problems.append(f"{name} is restarting its daemon, which exited (NRestarts {status.get('NRestarts') or 'unknown'}): "
                        f"find out why in `journalctl -u {unit}`, and rerun once it runs")
    elif active not in ("active", "inactive"):
        problems.append(f"{name} is {active or 'in an unknown state'} ({sub or 'unknown'}): wait until it is active "
                        "or inactive, then rerun")
    elif active == "active" and status.get("MainPID", "0") in ("", "0"):
        problems.append(f"{name} is active without a main process (MainPID 0: Type=oneshot, or Type=forking "
                        "without PIDFile=): the end of its daemon's stop cannot be awaited; give the unit a "
                        "main process")
    elif active == "active" and main_cmdline and process_match and process_match not in main_cmdline:
        problems.append(f"{name}'s main process {status.get('MainPID')} ({main_cmdline[:80]}) does not match "
                        f"process_match {process_match!r}: correct process_match")
    for action in ("Start", "Stop"):
        if status.get(f"RefuseManual{action}") == "yes":
            problems.append(f"{name} refuses a manual {action.lower()} (RefuseManual{action}=yes): the run must "
                            f"{action.lower()} it with systemctl; remove that setting for the change")
    return problems


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


def check_daemon(control: DaemonControl, process_match: str | None = None) -> dict:
    """Read-only: the daemon's pid, whether it runs, its unit's states (systemd) and the problems
    that would keep a run from stopping it and starting it again (an empty list: none)."""
    return {"changed": False, **control.check(process_match)}


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
        if pid is None and control.stopping_without_pid():
            return stop_without_daemon(control, stop_timeout, check_mode)
        return empty_result()
    result = empty_result(pid=pid, was_running=True)
    result["changed"] = True
    if check_mode:
        return result
    log = control.daemon_log(log_path)
    mark = log.mark()
    result["stop_requested_at"] = time.time()
    began = time.monotonic()
    control.request_stop(pid)
    if not wait_for_exit(pid, stop_timeout):
        if not stop_force:
            raise DaemonError(f"{control.label}: pid {pid} is still running {stop_timeout:g}s after "
                              f"{control.stop_how} and was left running ({log.tail_text(mark)}); "
                              "find out why it does not stop, or rerun with stop_force enabled to SIGKILL it")
        control.kill(pid)
        result["killed"] = True
        if not wait_for_exit(pid, KILL_WAIT_S):
            raise DaemonError(f"{control.label}: pid {pid} survived SIGKILL for {KILL_WAIT_S:g}s (state "
                              f"{process_state(pid)}: stuck in the kernel, usually on I/O); check the host")
    control.wait_until_stopped(pid, KILL_WAIT_S, killed=result["killed"])
    result["stopped_at"] = time.time()
    result["stop_seconds"] = round(time.monotonic() - began, 3)
    return result


def stop_without_daemon(control: DaemonControl, stop_timeout: float, check_mode: bool) -> dict:
    """No daemon process runs, but the service manager is not done with it (a restart pending after
    a crash, say): stop that too, or it would start the daemon while the database changes."""
    result = empty_result()
    result["changed"] = True
    if check_mode:
        return result
    result["stop_requested_at"] = time.time()
    began = time.monotonic()
    control.request_stop(None)
    control.wait_until_stopped(None, stop_timeout, killed=False)
    result["stopped_at"] = time.time()
    result["stop_seconds"] = round(time.monotonic() - began, 3)
    return result


def start_daemon(control: DaemonControl, settle: float = 2.0, start_timeout: float = 30.0,
                 log_path: str | None = None, expect_log_line: str | None = None,
                 process_match: str | None = None, check_mode: bool = False) -> dict:
    """Start the daemon unless it runs; require it alive after settle s and, if asked, its log line
    (in log_path or, for a systemd unit without one, in its journal)."""
    old_pid = control.find_pid()
    if pid_is_running(old_pid, process_match):
        return empty_result(pid=old_pid, was_running=True)
    log = control.daemon_log(log_path)
    if expect_log_line and not log.watchable:
        raise DaemonError(f"{control.label}: expect_log_line needs log_path, the daemon's log file")
    result = empty_result()
    result["changed"] = True
    if check_mode:
        return result
    mark = log.mark()
    result["started_at"] = time.time()
    began = time.monotonic()
    control.launch(start_timeout)
    pid = control.wait_for_pid(old_pid, process_match, began + start_timeout, log, mark)
    result["pid"] = pid
    result["log_line"], result["serving_at"] = wait_until_healthy(pid, control, process_match, began, settle,
                                                                  start_timeout, log, expect_log_line, mark)
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


def wait_until_healthy(pid: int, control: DaemonControl, process_match: str | None, began: float, settle: float,
                       start_timeout: float, log: DaemonLog, expected: str | None,
                       mark) -> tuple[str | None, float]:
    """Poll until pid has stayed alive for settle s and (if expected) logged the line since the start.

    Returns the matched log line and when the daemon was first seen serving (the line logged, or
    alive without one to wait for): the downtime ends there, the settle time only confirms it
    stays up. A line read from the journal carries its own time, so reading the journal less
    often than a file costs no precision. Raises DaemonError naming what happened: it exited,
    or it runs but did not log the line within start_timeout (it is then left running).
    """
    settled_at = time.monotonic() + settle
    deadline = began + max(start_timeout, settle)
    line, serving_at, next_read = None, None, 0.0
    while True:
        alive = pid_is_running(pid, process_match)
        if expected and line is None and (time.monotonic() >= next_read or not alive):
            found = log.find_line(mark, expected)
            next_read = time.monotonic() + log.poll_s
            if found is not None:
                line, serving_at = found[0], found[1] or time.time()
        if not alive:
            raise DaemonError(exited_message(pid, control, process_match, began, expected, line, log, mark))
        if serving_at is None and not expected:
            serving_at = time.time()
        now = time.monotonic()
        if now >= settled_at and serving_at is not None:
            return line, serving_at
        if now >= deadline:
            raise DaemonError(f"{control.label}: pid {pid} is running but did not log {expected!r} to {log.source} "
                              f"within {start_timeout:g}s of the start and was left running "
                              f"({log.tail_text(mark)}); check the log and the database")
        time.sleep(POLL_S)


def exited_message(pid: int, control: DaemonControl, process_match: str | None, began: float,
                   expected: str | None, line: str | None, log: DaemonLog, mark) -> str:
    after = time.monotonic() - began
    # A zombie, or a process in the middle of its exit (state still R or S, its memory already
    # gone), has an empty cmdline: that is no mismatch, it exited.
    cmdline = process_cmdline(pid)
    if process_state(pid) not in (None, "Z", "X", "x") and process_match and cmdline and process_match not in cmdline:
        what = f"pid {pid} {control.pid_source} is not a process matching {process_match!r}"
    else:
        what = f"pid {pid} exited {after:.1f}s after the start (before the settle time passed)"
    seen = ""
    if expected:
        seen = f"; it had logged {expected!r}" if line else f"; it never logged {expected!r}"
    return (f"{control.label}: {what}{seen} ({log.tail_text(mark)}); fix the cause shown in the "
            "log, then rerun")
