#!/usr/bin/python
# library/riskmgr_daemon.py
from __future__ import annotations

DOCUMENTATION = r"""
module: riskmgr_daemon
short_description: Stop or start the risk manager daemon through its pidfile and start command
description:
  - Controls a daemon managed the C(command) way, without systemd - a pidfile and a start
    command that returns once the daemon is launched.
  - With I(state=stopped) it sends SIGTERM to the pid in I(pidfile) and waits for the process
    to exit (a zombie counts as exited). A daemon that does not exit within I(stop_timeout) is
    left running and the task fails, unless I(stop_force) is set, which sends SIGKILL.
  - With I(state=started) it runs I(start_command) (no shell), waits for the pidfile, requires
    the process to stay alive for I(settle) seconds and, when I(expect_log_line) is set, waits
    for that line to appear in I(log_path). Only lines written after this start count.
  - Timestamps are returned as epoch seconds from the host's clock, so the playbook can work
    out the downtime on the host, C(healthy_at - stop_requested_at).
options:
  state:
    type: str
    required: true
    choices: [stopped, started]
    description: Whether the daemon should be stopped or started.
  pidfile:
    type: path
    required: true
    description: Pidfile the daemon writes when it starts.
  start_command:
    type: raw
    description:
      - Command that launches the daemon and returns. Give a list of arguments, or a string,
        which is split like a shell would split it. It is never run by a shell.
      - A non-zero exit status, or not returning within I(start_timeout), fails the task,
        and the message includes the end of the command's stderr.
      - Required when I(state=started).
  stop_timeout:
    type: int
    default: 60
    description: Seconds to wait for the daemon to exit after SIGTERM.
  stop_force:
    type: bool
    default: false
    description:
      - When the daemon is still running I(stop_timeout) seconds after SIGTERM, send SIGKILL
        and wait for it to exit.
      - When this is false, the task fails and leaves the daemon running.
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
      - Seconds allowed for I(start_command) to return, for the pidfile to appear and for
        I(expect_log_line) to be logged, counted from the launch.
  process_match:
    type: str
    description:
      - Text that must appear in C(/proc/PID/cmdline) for the pid to count as the daemon.
        This stops a stale pidfile that names a reused pid from being taken for the daemon,
        and from being signalled.
extends_documentation_fragment: [action_common_attributes]
attributes:
  check_mode: {support: full}
  diff_mode: {support: none}
  platform: {platforms: linux}
notes:
  - Reads C(/proc), so it works on Linux hosts only.
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
  description: Whether the daemon had to be stopped with SIGKILL.
  sample: false
stop_requested_at:
  type: float
  returned: always
  description: Host epoch time when SIGTERM was sent. null when nothing was stopped.
  sample: 1795522051.4289
stopped_at:
  type: float
  returned: always
  description: Host epoch time when the process was seen to have exited. null when nothing was stopped.
  sample: 1795522052.0112
stop_seconds:
  type: float
  returned: always
  description: Seconds from SIGTERM to exit. null when nothing was stopped.
  sample: 0.583
started_at:
  type: float
  returned: always
  description: Host epoch time when the start command was launched. null when nothing was started.
  sample: 1795522063.9021
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
log_line:
  type: str
  returned: always
  description: The log line that matched I(expect_log_line). null when none was expected or nothing was started.
  sample: "2026-11-24T12:00:00.123Z INFO Database schema version: 2"
"""

import traceback

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.riskmgr_daemon import ensure_started, ensure_stopped
from ansible.module_utils.sqlite_common import RiskmgrError

ARGUMENT_SPEC = {
    "state": {"type": "str", "required": True, "choices": ["stopped", "started"]},
    "pidfile": {"type": "path", "required": True},
    "start_command": {"type": "raw"},
    "stop_timeout": {"type": "int", "default": 60},
    "stop_force": {"type": "bool", "default": False},
    "settle": {"type": "float", "default": 2.0},
    "log_path": {"type": "path"},
    "expect_log_line": {"type": "str"},
    "start_timeout": {"type": "int", "default": 30},
    "process_match": {"type": "str"},
}


def run(module: AnsibleModule) -> dict:
    params = module.params
    if params["state"] == "stopped":
        return ensure_stopped(params["pidfile"], params["stop_timeout"], stop_force=params["stop_force"],
                              process_match=params["process_match"], log_path=params["log_path"],
                              check_mode=module.check_mode)
    return ensure_started(params["pidfile"], params["start_command"], settle=params["settle"],
                          start_timeout=params["start_timeout"], log_path=params["log_path"],
                          expect_log_line=params["expect_log_line"], process_match=params["process_match"],
                          check_mode=module.check_mode)


def main() -> None:
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        required_if=[("state", "started", ["start_command"])],
        required_by={"expect_log_line": "log_path"},
        supports_check_mode=True,
    )
    try:
        result = run(module)
    except RiskmgrError as err:
        module.fail_json(msg=str(err))
    except Exception as err:  # a bug: one line for the operator, the traceback at -vvv
        module.fail_json(msg=f"{module.params['pidfile']}: unexpected {type(err).__name__}: {err}; "
                             "this is a bug in riskmgr_daemon, rerun with -vvv for the traceback",
                         exception=traceback.format_exc())
    module.exit_json(**result)


if __name__ == "__main__":
    main()
