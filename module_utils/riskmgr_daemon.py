"""Stop and start the risk manager daemon, whichever service manager runs it.

Two service managers, one seam (service_manager.DaemonControl: how to find the pid, how to stop,
how to start, where the daemon's own lines are read): `command` is a pidfile plus a start command
that returns once the daemon is launched (pidfile_control.py), and `systemd` is a unit whose
MainPID is the daemon and whose lines are in its log file or, without one, in its journal
(systemd_control.py). Everything else - waiting for the exit, the settle time, the log line
written since the start, the timestamps - exists once, here, in stop_daemon() and start_daemon(),
so both managers get the same health check. check_daemon() is the read-only look the preflight
takes before anything stops.

Plain Python, no Ansible import: pytest drives these functions against real processes, and
library/riskmgr_daemon.py only wires them to Ansible. Every timestamp returned is the host's
epoch clock (time.time()), so the playbook can compute the daemon's downtime as measured on
the host: healthy_at - stop_requested_at. Durations are measured with the monotonic clock.
"""
from __future__ import annotations

import time

from ansible.module_utils.daemon_account import CommandRunner
from ansible.module_utils.host_processes import POLL_S, pid_is_running, process_cmdline, process_state, wait_for_exit
from ansible.module_utils.pidfile_control import PidfileControl, split_command
from ansible.module_utils.releases import Releases, ServiceIdentity, release_problems, switch_release
from ansible.module_utils.service_manager import DaemonControl, DaemonLog
from ansible.module_utils.sqlite_common import DaemonError
from ansible.module_utils.systemd_control import SystemdControl

KILL_WAIT_S = 10.0


SCHEMA_LINE = "Database schema version: {version}"


def schema_line(control: DaemonControl, log_path: str | None, version: int) -> str | None:
    """The line a daemon serving `version` logs, where its log (a file, or a systemd unit's journal) can be
    watched; None: the start is judged on the process alone."""
    return SCHEMA_LINE.format(version=version) if control.daemon_log(log_path).watchable else None


def daemon_control(params: dict, can_start: bool = True) -> DaemonControl:
    """The control for a module's DAEMON_SPEC parameters (module_glue); can_start: the start command is needed."""
    runner = CommandRunner.from_params(params)
    if params["service_manager"] == "systemd":
        if params.get("stop_command"):
            raise DaemonError(f"systemd unit {params['service_name']}: stop_command (riskmgr_stop_command) is for "
                              "service_manager=command; under systemd the unit's ExecStop= stops the daemon: unset it")
        return SystemdControl(params["service_name"], runner)
    stop_argv = split_command(params["stop_command"], "stop_command") if params.get("stop_command") else None
    return PidfileControl(params["pidfile"], split_command(params["start_command"]) if can_start else None,
                          stop_argv, runner, params.get("log_path"))


def empty_result(pid: int | None = None, was_running: bool = False) -> dict:
    return {"changed": False, "pid": pid, "was_running": was_running,
            "stop_requested_at": None, "stopped_at": None, "stop_seconds": None, "killed": False,
            "started_at": None, "serving_at": None, "healthy_at": None, "start_seconds": None, "serve_seconds": None,
            "log_line": None, "log_mark": None, "release": None, "user": None}


def check_daemon(control: DaemonControl, process_match: str | None = None,
                 releases: Releases | None = None) -> dict:
    """Read-only: the daemon's pid, whether it runs, its unit's states (systemd) and the problems
    that would keep a run from stopping it and starting it again (an empty list: none); with
    releases, what the link names and why they could not be switched (judged for the user the
    daemon runs as, or its unit's User=)."""
    result = {"changed": False, **control.check(process_match)}
    if releases is not None:
        identity = ServiceIdentity.of_process(result["pid"]) if result["running"] else None
        if identity is None and control.service_user():
            identity = ServiceIdentity.of_user(control.service_user())
        result["release"] = releases.facts()
        result["release"]["service_user"] = identity.name if identity else None
        result["problems"] = list(result["problems"]) + release_problems(releases, identity)
    return result


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
    control.request_stop(pid, stop_timeout)
    # stop_timeout counts from the request: a stop command's own run time is part of it.
    if not wait_for_exit(pid, max(0.0, stop_timeout - (time.monotonic() - began))):
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


def start_daemon(control: DaemonControl, *, settle: float, start_timeout: float,
                 log_path: str | None = None, expect_log_line: str | None = None,
                 process_match: str | None = None, check_mode: bool = False,
                 releases: Releases | None = None, version: int | None = None) -> dict:
    """Start the daemon unless it runs; require it alive after settle s and, if asked, its log line
    (in log_path or, for a systemd unit without one, in its journal). With releases, the link is
    switched to the release of schema `version` first: every start runs the code of its schema."""
    old_pid = control.find_pid()
    if pid_is_running(old_pid, process_match):
        return empty_result(pid=old_pid, was_running=True)
    log = control.daemon_log(log_path)
    if expect_log_line and not log.watchable:
        raise DaemonError(f"{control.label}: expect_log_line needs log_path, the daemon's log file")
    result = empty_result()
    result["changed"] = True
    if releases is not None:
        if version is None:
            raise DaemonError(f"{releases.link}: a start through the release link needs the schema version it "
                              "starts on (expect_version)")
        result["release"] = switch_release(releases, version, check_mode)
    if check_mode:
        return result
    mark = log.mark()
    result["log_mark"] = mark
    result["started_at"] = time.time()
    began = time.monotonic()
    control.launch(start_timeout)
    pid = control.wait_for_pid(old_pid, process_match, began + start_timeout, log, mark)
    result["pid"] = pid
    result["log_line"], result["serving_at"] = wait_until_healthy(pid, control, process_match, began, settle,
                                                                  start_timeout, log, expect_log_line, mark)
    result["healthy_at"] = time.time()
    identity = ServiceIdentity.of_process(pid)  # who it runs as, for the run's result line
    result["user"] = identity.name if identity else None
    result["start_seconds"] = round(time.monotonic() - began, 3)
    result["serve_seconds"] = round(result["serving_at"] - result["started_at"], 3)
    return result


def restart_daemon(control: DaemonControl, stop_timeout: float, stop_force: bool = False, *, settle: float,
                   start_timeout: float, log_path: str | None = None, expect_log_line: str | None = None,
                   process_match: str | None = None, check_mode: bool = False,
                   releases: Releases | None = None, version: int | None = None) -> dict:
    """Stop then start in one process: no round trip between the two while the daemon is down."""
    stopped = stop_daemon(control, stop_timeout, stop_force=stop_force, process_match=process_match,
                          log_path=log_path, check_mode=check_mode)
    if check_mode:
        result = empty_result(pid=stopped["pid"], was_running=stopped["was_running"])
        result["changed"] = True
        if releases is not None and version is not None:
            result["release"] = switch_release(releases, version, check_mode=True)
        return result
    result = start_daemon(control, settle=settle, start_timeout=start_timeout, log_path=log_path,
                          expect_log_line=expect_log_line, process_match=process_match,
                          releases=releases, version=version)
    for key in ("was_running", "stop_requested_at", "stopped_at", "stop_seconds", "killed"):
        result[key] = stopped[key]
    result["downtime_seconds"] = (round(result["serving_at"] - stopped["stop_requested_at"], 3)
                                  if result["serving_at"] and stopped["stop_requested_at"] else None)
    return result


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
