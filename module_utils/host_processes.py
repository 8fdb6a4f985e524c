"""The processes of a host: /proc (a pid's state and command line, who holds a file open), pid
files, signals, and commands run without a shell.

Processes of other users are only visible to root: run the task with become.
Plain Python, no Ansible import.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from ansible.module_utils.sqlite_common import DaemonError

POLL_S = 0.01  # also the resolution of the downtime measured at the start
LAUNCH_POLL_S = 0.005  # Popen.wait(timeout) backs off to 50 ms sleeps: too coarse inside a restart
STDERR_TAIL_CHARS = 400


def processes_holding(paths: list[str], proc: str = "/proc") -> dict[int, list[str]]:
    """{pid: [paths]} of the processes with one of `paths` open (their /proc/PID/fd links).

    Processes of other users are only visible to root: run the task with become.
    """
    wanted = set(paths)
    holders: dict[int, list[str]] = {}
    me = os.getpid()
    for entry in os.listdir(proc):
        if not entry.isdigit() or int(entry) == me:
            continue
        fd_dir = f"{proc}/{entry}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"{fd_dir}/{fd}")
            except OSError:
                continue
            if target in wanted:
                holders.setdefault(int(entry), [])
                if target not in holders[int(entry)]:
                    holders[int(entry)].append(target)
    return holders


def live_file_names(live: Path) -> list[str]:
    real = Path(os.path.realpath(live.parent)) / live.name
    return [f"{real}{suffix}" for suffix in ("", "-wal", "-shm")]


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


def send_signal(pid: int, signum: int, label: str) -> None:
    """Signal pid; label (the pidfile, or the systemd unit) starts the error message."""
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass  # it exited between the check and the signal: that is what we wanted
    except PermissionError as err:
        raise DaemonError(f"{label}: not permitted to signal pid {pid}; run the task as the daemon's "
                          "user or as root (become)") from err


INHERITED_SIGNALS = (signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGPIPE)


def default_signals() -> None:
    """In the start command's process, before exec: the default disposition of the signals a caller
    may ignore (riskmgr_migrate does, while the daemon is down). Ignored signals survive exec, and a
    daemon launched with SIGTERM ignored could never be stopped. Only the main thread runs then."""
    for signum in INHERITED_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)


def run_quietly(argv: list[str], timeout: float, cwd: str | None = None,
                kill_group: bool = False, preexec=None, env: dict | None = None) -> tuple[int | None, str, str]:
    """Run argv without a shell: (exit status, stdout, stderr); the status is None when it did
    not return within timeout and was killed (with kill_group, with every process it started that
    kept its process group). OSError when it cannot be run at all.

    Its output goes to temp files rather than pipes: a daemon that keeps an inherited stdout
    open would otherwise make us wait for an EOF that never comes. preexec runs in the child after the
    signals are reset, before exec (daemon_account's privilege drop); env replaces the environment.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        # start_new_session: the daemon must not share the task's session or process group.
        def in_child() -> None:
            default_signals()
            if preexec is not None:
                preexec()

        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=cwd, env=env,
                                   start_new_session=True, close_fds=True, preexec_fn=in_child)
        deadline = time.monotonic() + timeout
        while (status := process.poll()) is None and time.monotonic() < deadline:
            time.sleep(LAUNCH_POLL_S)
        if status is None:
            if kill_group:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
            process.kill()
            process.wait()
        texts = []
        for handle in (out, err):
            handle.seek(0)
            texts.append(handle.read().decode("utf-8", "replace"))
    return status, texts[0], texts[1]


def run_checked(argv: list[str], timeout: float, what: str, *, cannot_run: str = "", too_slow: str = "",
                failed: str = "", cwd: str | None = None, kill_group: bool = False, preexec=None,
                env: dict | None = None) -> tuple[str, str]:
    """run_quietly(), and its (stdout, stderr) when it exited 0 in time; otherwise DaemonError saying `what`
    could not be run, did not return, or exited non-zero (with its output), followed by the remedy given."""
    try:
        status, out, err = run_quietly(argv, timeout, cwd=cwd, kill_group=kill_group, preexec=preexec, env=env)
    except (OSError, subprocess.SubprocessError) as error:  # SubprocessError: the preexec (user switch) failed
        reason = getattr(error, "strerror", None) or str(error)
        raise DaemonError(f"{what} could not be run: {reason}{cannot_run}") from error
    if status is None:
        raise DaemonError(f"{what} did not return within {timeout:g}s and was killed ({output_tail(out, err)})"
                          f"{too_slow}")
    if status != 0:
        raise DaemonError(f"{what} exited with status {status} ({output_tail(out, err)}){failed}")
    return out, err


def output_tail(out: str, err: str) -> str:
    """The end of a command's stderr and stdout, on one line, for an error message."""
    texts = []
    for name, text in (("stderr", err), ("stdout", out)):
        text = text.strip()
        if text:
            texts.append(f"{name}: " + " | ".join(text[-STDERR_TAIL_CHARS:].splitlines()))
    return "; ".join(texts) or "no output"
