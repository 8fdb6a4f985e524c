#!/usr/bin/python
# library/riskmgr_watch.py
from __future__ import annotations

DOCUMENTATION = r"""
module: riskmgr_watch
short_description: Watch the daemon after an upgrade - one look at its process and its new log lines - and accept the upgrade
description:
  - On the host, one poll of the daemon started on the new version and release - whether it still runs as
    the same process, and which of its own lines since I(mark) (its log file, or its systemd unit's journal)
    match I(fail_regex). The C(riskmgr_watch) action on the controller repeats it for the watch window
    (I(seconds)), showing the seconds left and the lines seen, and fails when the daemon exits or a line
    matches.
  - The window's last poll, when it finds nothing wrong, accepts the upgrade - the pending record the
    upgrade wrote beside the database before its stop (C(<db>.riskmgr-pending)) is removed. Until then a
    later run treats the host's upgrade as not finished (it smoke-tests and watches it again, and a failure
    puts the host back to the version the upgrade started from).
  - I(state=pending) writes that record instead; kept for playbooks that use it, M(riskmgr_pending) is the
    module that does.
  - Changes nothing but the record; read-only in check mode.
options:
  path:
    description: Absolute path of the live state database on the host (the record lies beside it).
    type: path
    required: true
  state:
    description: C(polled) - one look (and, with I(accept), the upgrade accepted); C(pending) - the record written.
    type: str
    choices: [polled, pending]
    default: polled
  seconds:
    description: The watch window, in seconds, that the C(riskmgr_watch) action polls for (the module itself polls once).
    type: int
    default: 0
  pid:
    description: The daemon's pid at the start of the watch; a different pid, or none, means it exited. Default the pid now.
    type: int
  mark:
    description: Where the daemon's lines are read from - the log file's byte offset or the journal cursor its start returned; default now.
    type: raw
  fail_regex:
    description: A line of the daemon's matching this (Python C(re.search)) fails the watch.
    type: str
  canary:
    description: For the C(riskmgr_watch) action's messages - this is the first batch's watch.
    type: bool
    default: false
  accept:
    description: When this poll finds nothing wrong, remove the upgrade's pending record.
    type: bool
    default: false
  release:
    description:
      - C(path) and C(run_id) of the run lock, released by the poll that accepts the upgrade (the run is done with
        the host), so that the report needs no module process of its own for it. Left held otherwise, for the
        rescue that puts the host back. A lock that cannot be removed fails no watch (a warning; the report tries
        again and names it).
    type: dict
  from_version:
    description: With I(state=pending), the version the upgrade starts from.
    type: int
  to_version:
    description: With I(state=pending), the version it goes to.
    type: int
extends_documentation_fragment: [action_common_attributes, riskmgr_daemon,
                                 riskmgr_role_defaults.daemon, riskmgr_role_defaults.watch_fail_regex]
attributes:
  check_mode: {support: full, details: Polls; writes and removes no record.}
  diff_mode: {support: none}
  platform: {platforms: linux}
author: [Risk Platform team]
"""

EXAMPLES = r"""
- name: Watch the canary for ten minutes, then accept its upgrade
  riskmgr_watch:
    path: /opt/risk_manager/data/state.db
    seconds: 600
    pid: "{{ migrated.start.pid }}"  # registered by the riskmgr_migrate task
    mark: "{{ migrated.start.log_mark }}"
    service_manager: systemd
    service_name: risk-manager
"""

RETURN = r"""
alive: {description: Whether the watched pid still runs as the daemon., type: bool, returned: when polled}
pid: {description: The watched pid., type: int, returned: when polled}
current_pid: {description: The pid the service manager names now., type: int, returned: when polled}
lines: {description: The daemon's lines read by this poll., type: int, returned: when polled}
matched: {description: The first few of them matching I(fail_regex)., type: list, elements: str, returned: when polled}
fail_regex: {description: The I(fail_regex) the poll matched the lines against., type: str, returned: when polled}
matched_count: {description: How many matched., type: int, returned: when polled}
mark: {description: Where the next poll reads from., type: raw, returned: when polled}
log: {description: Where the lines are read (null when the daemon has no log to watch)., type: str, returned: when polled}
accepted: {description: Whether this poll accepted the upgrade (removed its pending record)., type: bool, returned: always}
released: {description: Whether this poll released the run lock of I(release)., type: bool, returned: when polled}
upgrade:
  description: The versions of the upgrade being watched, from its pending record (null when there is none).
  type: dict
  returned: when polled
  sample: {from_version: 3, to_version: 4}
"""

import re

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.daemon_watch import clear_pending, read_pending, watch_poll, write_pending
from ansible.module_utils.module_glue import DAEMON_SPEC, role_default, run_module_guarded
from ansible.module_utils.run_lock import LockError, release
from ansible.module_utils.releases import Releases
from ansible.module_utils.riskmgr_daemon import daemon_control
from ansible.module_utils.sqlite_common import DaemonError


def run(module: AnsibleModule) -> dict:
    params = module.params
    if params["state"] == "pending":
        releases = Releases.from_params(params)
        written = write_pending(params["path"], params["from_version"], params["to_version"],
                                releases.linked() if releases else None, check_mode=module.check_mode)
        return {"changed": written, "accepted": False}
    result = watch_poll(daemon_control(params, can_start=False), params["log_path"], params["process_match"],
                        params["pid"], params["mark"], params["fail_regex"])
    result["fail_regex"] = params["fail_regex"]  # the action's messages name it (the role's default when left out)
    try:  # only to name the versions in the watch's lines: an unreadable record is the accept's business
        record = read_pending(params["path"])
    except DaemonError:
        record = None
    result["upgrade"] = {k: record.get(k) for k in ("from_version", "to_version")} if record else None
    healthy = result["alive"] and not result["matched_count"]
    result["accepted"] = bool(params["accept"] and healthy and clear_pending(params["path"], module.check_mode))
    result["changed"] = result["accepted"]
    result["released"] = False
    if result["accepted"] and params["release"] and not module.check_mode:
        try:
            result["released"] = release(params["release"]["path"], params["release"]["run_id"])["released"]
        except LockError as err:  # the upgrade is accepted all the same: the report releases the lock, or says why not
            module.warn(str(err))
    return result


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            **{name: spec for name, spec in DAEMON_SPEC.items() if name != "expect_log_line"},
            "path": {"type": "path", "required": True},
            "state": {"type": "str", "choices": ["polled", "pending"], "default": "polled"},
            "seconds": {"type": "int", "default": 0},
            "pid": {"type": "int"},
            "mark": {"type": "raw"},
            "fail_regex": role_default("riskmgr_watch_fail_regex", type="str"),
            "accept": {"type": "bool", "default": False},
            "release": {"type": "dict", "options": {"path": {"type": "path", "required": True},
                                                    "run_id": {"type": "str", "required": True}}},
            "canary": {"type": "bool", "default": False},
            "from_version": {"type": "int"},
            "to_version": {"type": "int"},
        },
        required_if=[("state", "pending", ["from_version", "to_version"]),
                     ("service_manager", "systemd", ["service_name"]),
                     ("service_manager", "command", ["pidfile"])],
        supports_check_mode=True,
    )
    try:
        re.compile(module.params["fail_regex"])
    except re.error as err:
        module.fail_json(msg=f"fail_regex {module.params['fail_regex']!r} is not a regular expression ({err}); "
                             "correct riskmgr_watch_fail_regex")
    result = run_module_guarded(module, run, module.params["path"], "the daemon was left as it is")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
