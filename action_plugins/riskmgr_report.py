# action_plugins/riskmgr_report.py
from __future__ import annotations

DOCUMENTATION = r"""
module: riskmgr_report
short_description: Write one host's run report as JSON on the controller
description:
  - Writes I(report) to C(<dir>/<run_id>/<host>.json) on the controller, through a temp file and a
    rename, creating the directories (0755) as needed. It runs in the controller process: no
    module is sent to any host, so reporting costs no round trip.
  - A report is a record of the run, not managed state, so the task never reports a change (a
    rerun must report C(changed=0)). In check mode nothing is written.
options:
  dir:
    description: The report directory on the controller (riskmgr_report_dir).
    type: path
    required: true
  run_id:
    description: The run; its reports share one directory.
    type: str
    required: true
  report:
    description: The host's report.
    type: dict
    required: true
author: [Risk Platform team]
"""

EXAMPLES = r"""
- name: Save this host's report on the controller
  riskmgr_report:
    dir: "{{ riskmgr_report_dir }}"
    run_id: "{{ __riskmgr_run_id }}"
    report: "{{ __report_host }}"
"""

RETURN = r"""
path: {description: The report file written (null in check mode)., type: str, returned: always}
"""

import json
import os
import re
import tempfile

from ansible.plugins.action import ActionBase

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        _, args = self.validate_argument_spec(argument_spec={
            "dir": {"type": "path", "required": True},
            "run_id": {"type": "str", "required": True},
            "report": {"type": "dict", "required": True},
        })
        host = task_vars["inventory_hostname"]
        result.update(changed=False, path=None)
        for what, name in (("run_id", args["run_id"]), ("inventory_hostname", host)):
            if not SAFE_NAME.match(name):
                return dict(result, failed=True, msg=f"{host}: {what} {name!r} cannot be a file name; no report written")
        if self._task.check_mode:
            return result
        try:
            result["path"] = write_report(args["dir"], args["run_id"], host, args["report"])
        except OSError as err:
            return dict(result, failed=True, msg=f"{host}: the report could not be written to {args['dir']} "
                                                 f"({err.strerror}); set riskmgr_report_dir to a writable directory")
        return result


def write_report(directory: str, run_id: str, host: str, report: dict) -> str:
    run_dir = os.path.join(directory, run_id)
    os.makedirs(run_dir, mode=0o755, exist_ok=True)
    target = os.path.join(run_dir, f"{host}.json")
    fd, temp = tempfile.mkstemp(dir=run_dir, prefix=f".{host}.json.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(report, indent=2, sort_keys=True, default=str) + "\n")
        os.chmod(temp, 0o644)
        os.replace(temp, target)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise
    return target
