"""service_manager=systemd: the daemon is a unit's MainPID, stopped and started with systemctl, its
lines read in its log file or, without one, in its journal.

systemctl and journalctl are found on PATH and run without a shell.

Plain Python, no Ansible import.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import time

from ansible.module_utils.daemon_account import CommandRunner
from ansible.module_utils.host_processes import (
    POLL_S, pid_is_running, process_cmdline, run_checked, send_signal)
from ansible.module_utils.service_manager import TAIL_LINES, DaemonControl, DaemonLog, FileLog
from ansible.module_utils.sqlite_common import DaemonError

SYSTEMD_TAIL_LINES = 3
SYSTEMCTL_TIMEOUT_S = 30.0  # show, stop --no-block and kill return at once; start has start_timeout
JOURNAL_POLL_S = 0.05  # one journalctl process per read; the line's own journal time is what counts
MAX_JOURNAL_LINES = 1000  # read without a cursor (a journal that had no entry at all): the newest only
STOPPED_UNIT_STATES = ("inactive", "failed")
# Read in one `systemctl show`; older systemd lacks some (NRestarts: 235), which then read as "".
UNIT_PROPERTIES = ("MainPID", "LoadState", "ActiveState", "SubState", "UnitFileState", "Result", "NRestarts",
                   "RefuseManualStart", "RefuseManualStop")


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
        hint = "; give log_path, the daemon's log file, if the journal cannot be read here"
        out, _ = run_checked([self.journalctl, "--no-pager", "--quiet", "--output=json", *args], SYSTEMCTL_TIMEOUT_S,
                             f"{self.label}: `{shlex.join(['journalctl', *args])}`", cannot_run=f" ({self.journalctl})",
                             too_slow=hint, failed=hint)
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

    def read_since(self, mark) -> tuple[list[str], object]:
        """The daemon's own entries (not systemd's lines about the unit) since the cursor, and the last cursor."""
        entries = self.entries_since(mark)
        next_mark = entries[-1].get("__CURSOR", mark) if entries else mark
        return [journal_message(entry) for entry in entries if entry.get("_PID") != "1"], next_mark

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


class SystemdControl(DaemonControl):
    """service_manager=systemd: the unit's MainPID is the daemon and systemctl stops and starts it.

    A unit with Restart= must not bring the daemon back while the database changes: systemd
    never restarts a unit whose stop job it is running (it forbids the restart when the stop
    begins), so every stop, the SIGKILL included, goes through a stop job, and the stop waits
    until the unit is inactive or failed, not only until the process exited.
    """

    pid_source = "from MainPID"

    def __init__(self, unit: str, runner: CommandRunner | None = None) -> None:
        self.unit = unit
        self.runner = runner or CommandRunner()  # the unit's User= runs the daemon; this, the smoke test
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
        see = f"; see `journalctl -u {self.unit}`"
        return run_checked([self.systemctl, *args], timeout, f"{self.label}: `{shlex.join(['systemctl', *args])}`",
                           cannot_run=f" ({self.systemctl})", too_slow=see, failed=see)[0]

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

    def request_stop(self, pid: int | None, timeout: float | None = None) -> None:
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

    def service_user(self) -> str | None:
        return self.show("User") or "root"

    def check(self, process_match: str | None) -> dict:
        status = self.unit_status()
        pid = self.parse_main_pid(status["MainPID"])
        running = pid_is_running(pid, process_match)
        cmdline = process_cmdline(pid) if pid and pid_is_running(pid) else ""
        problems = unit_problems(self.unit, status, process_match, cmdline)
        account = self.runner.account
        if account is not None and status["LoadState"] == "loaded" and self.service_user() != account.name:
            # The unit's User= runs the daemon; riskmgr_daemon_user only says who that is (and runs the smoke test).
            problems.append(f"{self.label} runs its daemon as {self.service_user()} (User=), but riskmgr_daemon_user "
                            f"is {account.name}: under systemd the unit's User= rules; make them agree, or unset "
                            "riskmgr_daemon_user")
        return {"pid": pid, "running": running, "load_state": status["LoadState"] or None,
                "active_state": status["ActiveState"] or None, "sub_state": status["SubState"] or None,
                "unit_file_state": status["UnitFileState"] or None, "problems": problems}

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
