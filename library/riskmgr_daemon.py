#!/usr/bin/python
# library/riskmgr_daemon.py
from __future__ import annotations

DOCUMENTATION = r"""
module: riskmgr_daemon
short_description: Stop or start the risk manager daemon, through systemd or its pidfile and start command
description:
  - Controls the daemon under either service manager, with the same stop wait, health check
    and timestamps for both.
  - With I(service_manager=command) (no systemd) the daemon is a pidfile and a start command
    that returns once the daemon is launched. I(state=stopped) sends SIGTERM to the pid in
    I(pidfile); I(state=started) runs I(start_command) (no shell) and waits for the pidfile.
  - With I(service_manager=systemd) the daemon is the C(MainPID) of the unit I(service_name)
    (C(systemctl show --property=MainPID --value); 0 means not running). I(state=stopped) runs
    C(systemctl stop --no-block); I(state=started) runs C(systemctl start) and waits for a
    C(MainPID). C(systemctl) is found on C(PATH) and run without a shell.
  - Stopping waits for the process to exit (a zombie counts as exited). A daemon that does not
    exit within I(stop_timeout) is left running and the task fails, unless I(stop_force) is set,
    which sends SIGKILL (C(systemctl kill --signal=SIGKILL) under systemd).
  - Starting requires the new process to stay alive for I(settle) seconds and, when
    I(expect_log_line) is set, waits for that line to appear in I(log_path). Only lines
    written after this start count.
  - I(state=restarted) stops then starts the daemon in this one process, with no round trip
    between the two (the online upgrade's only downtime).
  - Timestamps are returned as epoch seconds from the host's clock, so the playbook can work
    out the downtime on the host, C(serving_at - stop_requested_at); I(settle) only confirms
    afterwards that the daemon stays up.
options:
  state:
    type: str
    required: true
    choices: [stopped, started, restarted]
    description: Whether the daemon should be stopped, started, or stopped and started again.
  service_manager:
    type: str
    choices: [command, systemd]
    default: command
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
      - Required when I(state=started) and I(service_manager=command); ignored with C(systemd).
  stop_timeout:
    type: int
    default: 60
    description: Seconds to wait for the daemon to exit after SIGTERM (or C(systemctl stop)).
  stop_force:
    type: bool
    default: false
    description:
      - When the daemon is still running I(stop_timeout) seconds after SIGTERM, send SIGKILL
        and wait for it to exit. Under systemd this is C(systemctl kill --signal=SIGKILL), which
        kills every process of the unit.
      - When this is false, the task fails and leaves the daemon running. Under systemd the
        queued stop job stays, so systemd itself may still kill it after the unit's
        C(TimeoutStopSec).
  settle:
    type: float
    default: 2
    description: Seconds the new process must stay alive after it starts.
  log_path:
    type: path
    description: The daemon's log file. Failure messages quote the last lines written since the start.
  expect_log_line:
    type: str
    description:
      - "Text that a line written to I(log_path) after the start must contain, for example
        C(Database schema version: 2)."
      - Requires I(log_path).
  start_timeout:
    type: int
    default: 30
    description:
      - Seconds allowed for I(start_command) (or C(systemctl start)) to return, for the pidfile
        (or C(MainPID)) to appear and for I(expect_log_line) to be logged, counted from the launch.
  process_match:
    type: str
    description:
      - Text that must appear in C(/proc/PID/cmdline) for the pid to count as the daemon.
        This stops a stale pidfile that names a reused pid from being taken for the daemon,
        and from being signalled. Under systemd it is checked against C(MainPID) the same way.
extends_documentation_fragment: [action_common_attributes]
attributes:
  check_mode: {support: full}
  diff_mode: {support: none}
  platform: {platforms: linux}
notes:
  - Reads C(/proc), so it works on Linux hosts only.
  - Under systemd the task needs the rights to run C(systemctl stop), C(start) and C(kill) on
    the unit, usually root (C(become)).
author: [Risk Platform team]
"""

EXAMPLES = r"""
- name: Stop the risk manager before the migration
  riskmgr_daemon:
    state: stopped
    pidfile: /opt/risk_manager/run/riskmgr.pid
    process_match: risk_manager
    stop_timeout: 60
  register: __daemon_stop_result

- name: Start the risk manager and wait until it reports schema v2
  riskmgr_daemon:
    state: started
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

- name: Start the risk manager's systemd unit and wait until it reports schema v2
  riskmgr_daemon:
    state: started
    service_manager: systemd
    service_name: riskmgr.service
    log_path: /opt/risk_manager/logs/riskmgr.log
    expect_log_line: "Database schema version: 2"
    process_match: risk_manager
  register: __daemon_start_result
"""

RETURN = r"""
pid:
  type: int
  returned: always
  description: Pid of the daemon - the running one, the one stopped, or the one started. null when none.
  sample: 48213
was_running:
  type: bool
  returned: always
  description: Whether the daemon was running when the task began.
  sample: true
killed:
  type: bool
  returned: always
  description: Whether the daemon had to be stopped with SIGKILL (C(systemctl kill) under systemd).
  sample: false
stop_requested_at:
  type: float
  returned: always
  description:
    - Host epoch time when SIGTERM was sent (C(systemctl stop --no-block) was run under systemd).
      null when nothing was stopped.
  sample: 1795522051.4289
stopped_at:
  type: float
  returned: always
  description: Host epoch time when the process was seen to have exited. null when nothing was stopped.
  sample: 1795522052.0112
stop_seconds:
  type: float
  returned: always
  description: Seconds from the stop request to exit. null when nothing was stopped.
  sample: 0.583
started_at:
  type: float
  returned: always
  description:
    - Host epoch time when the start command (C(systemctl start) under systemd) was launched.
      null when nothing was started.
  sample: 1795522063.9021
serving_at:
  type: float
  returned: always
  description:
    - Host epoch time when the started daemon was first seen serving, that is when it logged
      I(expect_log_line) (or was alive, without one). null when nothing was started.
  sample: 1795522064.1377
downtime_seconds:
  type: float
  returned: when state is restarted and the daemon was restarted
  description: C(serving_at - stop_requested_at), on the host's clock.
  sample: 0.201
healthy_at:
  type: float
  returned: always
  description:
    - Host epoch time when the started daemon had stayed alive for I(settle) seconds and had
      logged I(expect_log_line). null when nothing was started.
  sample: 1795522066.1377
start_seconds:
  type: float
  returned: always
  description: Seconds from the launch to C(healthy_at). null when nothing was started.
  sample: 2.236
serve_seconds:
  type: float
  returned: always
  description: Seconds from the launch to C(serving_at), the start's share of the downtime. null when nothing was started.
  sample: 0.071
log_line:
  type: str
  returned: always
  description: The log line that matched I(expect_log_line). null when none was expected or nothing was started.
  sample: "2026-11-24T12:00:00.123Z INFO Database schema version: 2"
"""


from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.riskmgr_daemon import DAEMON_SPEC, daemon_control, restart_daemon, start_daemon, stop_daemon
from ansible.module_utils.module_glue import run_module_guarded

ARGUMENT_SPEC = {
    "state": {"type": "str", "required": True, "choices": ["stopped", "started", "restarted"]},
    **DAEMON_SPEC,
}


def run(module: AnsibleModule) -> dict:
    params = module.params
    control = daemon_control(params, can_start=params["state"] != "stopped")
    if params["state"] == "restarted":
        return restart_daemon(control, params["stop_timeout"], stop_force=params["stop_force"],
                              settle=params["settle"], start_timeout=params["start_timeout"],
                              log_path=params["log_path"], expect_log_line=params["expect_log_line"],
                              process_match=params["process_match"], check_mode=module.check_mode)
    if params["state"] == "stopped":
        return stop_daemon(control, params["stop_timeout"], stop_force=params["stop_force"],
                           process_match=params["process_match"], log_path=params["log_path"],
                           check_mode=module.check_mode)
    return start_daemon(control, settle=params["settle"], start_timeout=params["start_timeout"],
                        log_path=params["log_path"], expect_log_line=params["expect_log_line"],
                        process_match=params["process_match"], check_mode=module.check_mode)


def subject(params: dict) -> str:
    """What error messages are about: the pidfile, or the systemd unit."""
    if params.get("service_manager") == "systemd":
        return f"systemd unit {params.get('service_name')}"
    return str(params.get("pidfile"))


def main() -> None:
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        required_if=[("service_manager", "command", ["pidfile"]),
                     ("service_manager", "systemd", ["service_name"])],
        required_by={"expect_log_line": "log_path"},
        supports_check_mode=True,
    )
    params = module.params
    if params["service_manager"] == "command" and params["state"] != "stopped" and not params["start_command"]:
        # required_if takes one condition; start_command is needed only for this pair of them.
        module.fail_json(msg=f"service_manager is command and state is {params['state']} but all of the "
                             "following are missing: start_command")
    result = run_module_guarded(module, run, subject(module.params), "see the daemon's log")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
