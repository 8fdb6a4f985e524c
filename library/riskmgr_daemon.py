#!/usr/bin/python
# library/riskmgr_daemon.py
from __future__ import annotations

DOCUMENTATION = r"""
module: riskmgr_daemon
short_description: Stop, start or check the risk manager daemon, through systemd or its pidfile and start command
description:
  - Controls the daemon under either service manager, with the same stop wait, health check
    and timestamps for both.
  - With I(service_manager=command) (no systemd) the daemon is a pidfile and a start command
    that returns once the daemon is launched. I(state=stopped) sends SIGTERM to the pid in
    I(pidfile); I(state=started) runs I(start_command) (no shell) and waits for the pidfile.
  - With I(service_manager=systemd) the daemon is the C(MainPID) of the unit I(service_name)
    (C(systemctl show --property=MainPID --value); 0 means not running). I(state=stopped) runs
    C(systemctl stop --no-block); I(state=started) runs C(systemctl start) and waits for a
    C(MainPID). C(systemctl) and C(journalctl) are found on C(PATH) and run without a shell.
  - Stopping waits for the process to exit (a zombie counts as exited). A daemon that does not
    exit within I(stop_timeout) is left running and the task fails, unless I(stop_force) is set,
    which sends SIGKILL (under systemd C(systemctl kill --signal=SIGKILL), with the stop job
    still queued).
  - Under systemd a stop also waits until the unit is C(inactive) or C(failed), so that a unit
    with C(Restart=) cannot bring the daemon back while the database changes (systemd never
    restarts a unit whose stop job it runs). A unit with no main process that is not stopped
    either (a restart pending after a crash, C(auto-restart)) is stopped too. A C(failed) state
    that the task's own SIGKILL caused is reset (C(systemctl reset-failed)).
  - Starting requires the new process to stay alive for I(settle) seconds and, when
    I(expect_log_line) is set, waits for that line to appear in I(log_path) or, under systemd
    without I(log_path), in the unit's journal (C(journalctl --unit) after the journal's cursor
    taken just before the start). Only lines written after this start count.
  - Under systemd a start that fails and leaves the unit C(failed) is retried once, after
    C(systemctl reset-failed). That is how the start limit of the unit (C(StartLimitBurst))
    refuses a start, and the run's own stops and starts count toward it.
  - I(state=checked) changes nothing. It returns the daemon's pid and whether it runs and,
    under systemd, the unit's C(LoadState), C(ActiveState), C(SubState) and C(UnitFileState),
    with the I(problems) that would keep a run from stopping the daemon and starting it again,
    for example a unit that is not found, masked, failed, restarting after a crash, in transition, active
    without a main process, whose main process does not match I(process_match), or that
    refuses manual starts or stops; with C(command), a pidfile that cannot be read, or a start
    command whose program is not an executable file. The task does not fail on problems; the
    caller decides (the preflight refuses the host).
  - I(state=restarted) stops then starts the daemon in this one process, with no round trip
    between the two (the online upgrade's only downtime).
  - Timestamps are returned as epoch seconds from the host's clock, so the playbook can work
    out the downtime on the host, C(serving_at - stop_requested_at); I(settle) only confirms
    afterwards that the daemon stays up.
options:
  state:
    type: str
    required: true
    choices: [stopped, started, restarted, checked]
    description:
      - Whether the daemon should be stopped, started, or stopped and started again; C(checked)
        only reads its state and the problems a run would meet.
  service_manager:
    type: str
    choices: [command, systemd]
    description:
      - How the daemon is run. C(command) is a pidfile and a start command; C(systemd) is a
        systemd unit.
  service_name:
    type: str
    description:
      - The systemd unit of the daemon, for example C(riskmgr.service).
      - Required when I(service_manager=systemd); ignored otherwise.
  pidfile:
    type: path
    description:
      - Pidfile the daemon writes when it starts.
      - Required when I(service_manager=command); ignored with C(systemd).
  start_command:
    type: raw
    description:
      - Command that launches the daemon and returns. Give a list of arguments, or a string,
        which is split like a shell would split it. It is never run by a shell.
      - A non-zero exit status, or not returning within I(start_timeout), fails the task,
        and the message includes the end of the command's stderr.
      - Required when I(state=started) or I(state=restarted) and I(service_manager=command);
        ignored with C(systemd). With I(state=checked), its program is checked when given.
  stop_timeout:
    type: int
    description: Seconds to wait for the daemon to exit after SIGTERM (or C(systemctl stop)).
  stop_force:
    type: bool
    description:
      - When the daemon is still running I(stop_timeout) seconds after SIGTERM, send SIGKILL
        and wait for it to exit. Under systemd this is C(systemctl kill --signal=SIGKILL), which
        kills every process of the unit, after C(systemctl stop --no-block) again, so that the
        stop job forbids C(Restart=) to start it again.
      - When this is false, the task fails and leaves the daemon running. Under systemd the
        queued stop job stays, so systemd itself may still kill it after the unit's
        C(TimeoutStopSec).
  settle:
    type: float
    description: Seconds the new process must stay alive after it starts.
  log_path:
    type: path
    description:
      - The daemon's log file. Failure messages quote the last lines written since the start.
      - Under systemd, without it the unit's journal is read instead.
  expect_version:
    type: int
    description:
      - The schema version the started daemon must report - C(Database schema version) and the version - where
        its log can be watched (I(log_path), or under systemd without one the unit's journal); with C(command)
        and no I(log_path) the start is judged on the process alone. Mutually exclusive with I(expect_log_line).
  expect_log_line:
    type: str
    description:
      - "Text that a line written to I(log_path) (under systemd without I(log_path): the unit's
        journal) after the start must contain, for example C(Database schema version: 2)."
      - With I(service_manager=command), requires I(log_path).
  start_timeout:
    type: int
    description:
      - Seconds allowed for I(start_command) (or C(systemctl start)) to return, for the pidfile
        (or C(MainPID)) to appear and for I(expect_log_line) to be logged, counted from the launch.
  process_match:
    type: str
    description:
      - Text that must appear in C(/proc/PID/cmdline) for the pid to count as the daemon.
        This stops a stale pidfile that names a reused pid from being taken for the daemon,
        and from being signalled. Under systemd it is checked against C(MainPID) the same way.
  release_link:
    type: path
    description:
      - The symlink the service's start command or C(ExecStart) goes through, naming the release of the
        daemon's code that runs (for example C(/opt/risk_manager/current)). A start (and the start of a
        restart) switches it first to the release of I(expect_version) in I(release_paths), by a new
        symlink beside it renamed over it, so that the daemon starts on the code of its schema.
      - With I(state=checked), the problems also say why the releases could not be switched - the link not
        a symlink, a release missing, or not readable by the user the daemon runs as (its process, or the
        unit's C(User=)), judged by owner, group and other modes.
  release_paths:
    type: dict
    description: The release directory of each schema version, keyed by version (C(1) and C(2)), with I(release_link).
  smoke_command:
    type: list
    elements: str
    description:
      - A smoke test, an argv list run (no shell) once a daemon this task started is healthy, from I(daemon_chdir),
        else the release link's directory when there is one, as I(daemon_user). A non-zero exit fails the task (the
        daemon is left running; the caller puts the host back).
      - With I(state=checked), the problems also say why it could not run (its program, its directory, its user).
  smoke_timeout:
    type: int
    description: Seconds the smoke test may run.
  stop_command:
    type: raw
    description:
      - The daemon's own stop command (the seed's C(./scripts/stop_daemon.sh)), a list or a string split like a
        shell would, never run by one, with I(service_manager=command); unset, the daemon is sent SIGTERM.
      - The stop is judged by the pid, which must exit within I(stop_timeout) counted from the command's start; a
        command that returns while the daemon still runs is followed by a wait for the rest of that time, then
        SIGKILL with I(stop_force), else the task fails with the daemon left running. A command that exits non-zero
        (or outlives I(stop_timeout)) fails the task, saying whether the daemon still runs.
  daemon_chdir:
    type: path
    description:
      - Absolute directory the start, stop and smoke commands run from; a relative program or path in them
        resolves from it. Unset, they run from C(/) (the smoke test from I(release_link) when set), and a command
        naming a relative path is refused (I(state=checked) lists it as a problem).
  daemon_user:
    type: str
    description:
      - User the start, stop and smoke commands run as, so the daemon too. Run as root, the module switches to it
        itself in the child (groups, gid, uid), no sudo; as that user already, it runs them as they are.
      - I(state=checked) then also checks, without running anything, that this user can enter I(daemon_chdir),
        execute the programs, and write the directories of I(pidfile) and I(log_path).
      - Under systemd the unit's C(User=) runs the daemon; a different C(User=) is a problem of I(state=checked).
  daemon_group:
    type: str
    description: Group the commands run with (with I(daemon_user)); unset, the user's primary group.
extends_documentation_fragment: [action_common_attributes,
                                 riskmgr_role_defaults.daemon, riskmgr_role_defaults.smoke]
attributes:
  check_mode: {support: full}
  diff_mode: {support: none}
  platform: {platforms: linux}
notes:
  - Reads C(/proc), so it works on Linux hosts only.
  - Under systemd the task needs the rights to run C(systemctl stop), C(start) and C(kill) on
    the unit and to read the system journal, usually root (C(become)).
author: [Risk Platform team]
"""

EXAMPLES = r"""
- name: Stop the risk manager before the migration
  riskmgr_daemon:
    state: stopped
    service_manager: command
    pidfile: /opt/risk_manager/run/riskmgr.pid
    process_match: risk_manager
    stop_timeout: 60
  register: __daemon_stop_result

- name: Start the risk manager and wait until it reports schema v2
  riskmgr_daemon:
    state: started
    service_manager: command
    pidfile: /opt/risk_manager/run/riskmgr.pid
    start_command: [/opt/risk_manager/bin/riskmgr, --config, /opt/risk_manager/etc/riskmgr.yml, --daemon]
    log_path: /opt/risk_manager/logs/riskmgr.log
    expect_log_line: "Database schema version: 2"
    process_match: risk_manager
  register: __daemon_start_result

- name: Stop the risk manager's systemd unit, killing it if it ignores the stop
  riskmgr_daemon:
    state: stopped
    service_manager: systemd
    service_name: riskmgr.service
    process_match: risk_manager
    stop_timeout: 60
    stop_force: true
  register: __daemon_stop_result

- name: Start the risk manager's systemd unit and wait until its journal reports schema v2
  riskmgr_daemon:
    state: started
    service_manager: systemd
    service_name: riskmgr.service
    expect_log_line: "Database schema version: 2"
    process_match: risk_manager
  register: __daemon_start_result

- name: Check that the unit can be stopped and started (not masked, failed, ...)
  riskmgr_daemon:
    state: checked
    service_manager: systemd
    service_name: riskmgr.service
    process_match: risk_manager
  register: __daemon_check
"""

RETURN = r"""
pid:
  type: int
  returned: always
  description: Pid of the daemon - the running one, the one stopped, or the one started. null when none.
  sample: 48213
user:
  type: str
  returned: when state is started or restarted
  description: The user the started daemon runs as, read from its process; null when none was started.
  sample: riskmgr
running:
  type: bool
  returned: when state is checked
  description: Whether I(pid) is a live process (matching I(process_match), when given).
  sample: true
load_state:
  type: str
  returned: when state is checked
  description: The unit's C(LoadState) (C(loaded), C(not-found), C(masked), ...); null with C(command).
  sample: loaded
active_state:
  type: str
  returned: when state is checked
  description: The unit's C(ActiveState) (C(active), C(inactive), C(failed), C(activating), ...); null with C(command).
  sample: active
sub_state:
  type: str
  returned: when state is checked
  description: The unit's C(SubState) (C(running), C(auto-restart), ...); null with C(command).
  sample: running
unit_file_state:
  type: str
  returned: when state is checked
  description: The unit's C(UnitFileState) (C(enabled), C(disabled), C(masked), ...); null with C(command).
  sample: enabled
problems:
  type: list
  elements: str
  returned: when state is checked
  description: Why a run must not stop and start the daemon now, one text each, naming the unit (or pidfile) and the remedy; empty when none.
  sample: ["systemd unit riskmgr.service is masked: systemd would refuse to start it again after the change; unmask it (`systemctl unmask riskmgr.service`) if it should run, or leave this host out"]
was_running:
  type: bool
  returned: unless state is checked
  description: Whether the daemon was running when the task began.
  sample: true
killed:
  type: bool
  returned: unless state is checked
  description: Whether the daemon had to be stopped with SIGKILL (C(systemctl kill) under systemd).
  sample: false
stop_requested_at:
  type: float
  returned: unless state is checked
  description:
    - Host epoch time when SIGTERM was sent (C(systemctl stop --no-block) was run under systemd).
      null when nothing was stopped.
  sample: 1795522051.4289
stopped_at:
  type: float
  returned: unless state is checked
  description: Host epoch time when the process was seen to have exited. null when nothing was stopped.
  sample: 1795522052.0112
stop_seconds:
  type: float
  returned: unless state is checked
  description: Seconds from the stop request to exit. null when nothing was stopped.
  sample: 0.583
started_at:
  type: float
  returned: unless state is checked
  description:
    - Host epoch time when the start command (C(systemctl start) under systemd) was launched.
      null when nothing was started.
  sample: 1795522063.9021
serving_at:
  type: float
  returned: unless state is checked
  description:
    - Host epoch time when the started daemon was first seen serving, that is when it logged
      I(expect_log_line) (the journal's own time of the line, when read from the journal), or
      when it was alive, without one. null when nothing was started.
  sample: 1795522064.1377
downtime_seconds:
  type: float
  returned: when state is restarted and the daemon was restarted
  description: C(serving_at - stop_requested_at), on the host's clock.
  sample: 0.201
healthy_at:
  type: float
  returned: unless state is checked
  description:
    - Host epoch time when the started daemon had stayed alive for I(settle) seconds and had
      logged I(expect_log_line). null when nothing was started.
  sample: 1795522066.1377
start_seconds:
  type: float
  returned: unless state is checked
  description: Seconds from the launch to C(healthy_at). null when nothing was started.
  sample: 2.236
serve_seconds:
  type: float
  returned: unless state is checked
  description: Seconds from the launch to C(serving_at), the start's share of the downtime. null when nothing was started.
  sample: 0.071
log_line:
  type: str
  returned: unless state is checked
  description: The log line that matched I(expect_log_line). null when none was expected or nothing was started.
  sample: "2026-11-24T12:00:00.123Z INFO Database schema version: 2"
"""


from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.daemon_watch import SmokeTest, run_smoke
from ansible.module_utils.module_glue import run_module_guarded
from ansible.module_utils.preflight_read import DAEMON_MODULE_SPEC, DAEMON_REQUIRED_IF, check_running_daemon
from ansible.module_utils.releases import Releases
from ansible.module_utils.riskmgr_daemon import (
    daemon_control, restart_daemon, schema_line, start_daemon, stop_daemon)


def expected_line(params: dict, control) -> str | None:
    """expect_log_line, or with expect_version the line a daemon serving that version logs, when its log
    (a file, or a systemd unit's journal) can be watched; None: judged on the process alone."""
    if params["expect_version"] is None:
        return params["expect_log_line"]
    return schema_line(control, params["log_path"], params["expect_version"])


def run(module: AnsibleModule) -> dict:
    params = module.params
    releases = Releases.from_params(params)
    if params["state"] == "checked":
        return check_running_daemon(params)
    control = daemon_control(params, can_start=params["state"] != "stopped")
    if params["state"] == "stopped":
        return stop_daemon(control, params["stop_timeout"], stop_force=params["stop_force"],
                           process_match=params["process_match"], log_path=params["log_path"],
                           check_mode=module.check_mode)
    starting = {"settle": params["settle"], "start_timeout": params["start_timeout"], "log_path": params["log_path"],
                "expect_log_line": expected_line(params, control), "process_match": params["process_match"],
                "check_mode": module.check_mode, "releases": releases, "version": params["expect_version"]}
    if params["state"] == "restarted":
        result = restart_daemon(control, params["stop_timeout"], stop_force=params["stop_force"], **starting)
    else:
        result = start_daemon(control, **starting)
    smoke = SmokeTest.from_params(params)
    if smoke and result["changed"] and not module.check_mode:
        result["smoke"] = run_smoke(smoke, releases.link if releases else None)
    return result


def subject(params: dict) -> str:
    """What error messages are about: the pidfile, or the systemd unit."""
    if params.get("service_manager") == "systemd":
        return f"systemd unit {params.get('service_name')}"
    return str(params.get("pidfile"))


def main() -> None:
    module = AnsibleModule(
        argument_spec=DAEMON_MODULE_SPEC,
        required_if=DAEMON_REQUIRED_IF,
        mutually_exclusive=[("expect_version", "expect_log_line")],
        supports_check_mode=True,
    )
    params = module.params
    # required_if and required_by take one condition; these hold for a pair of them.
    if params["service_manager"] == "command" and params["state"] in ("started", "restarted") \
            and not params["start_command"]:
        module.fail_json(msg=f"service_manager is command and state is {params['state']} but all of the "
                             "following are missing: start_command")
    if params.get("daemon_group") and not params.get("daemon_user"):
        module.fail_json(msg="missing parameter(s) required by 'daemon_group': daemon_user")
    if params["service_manager"] == "command" and params["expect_log_line"] and not params["log_path"]:
        module.fail_json(msg="missing parameter(s) required by 'expect_log_line': log_path "
                             "(with service_manager=command; under systemd the journal is read)")
    result = run_module_guarded(module, run, subject(module.params), "see the daemon's log")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
