# Copyright: the Risk Platform team
"""Shows the warnings of tasks whose ok results the screen leaves out."""
from __future__ import annotations

DOCUMENTATION = r"""
name: riskmgr_warnings
type: notification
short_description: Show the warnings of ok tasks that the stdout callback does not print
description:
  - The project's C(ansible.cfg) sets C(display_ok_hosts = false) so that a run reads in a screen.
    The default stdout callback (and AWX's, built on it) then drops an ok result whole, its warnings
    with it; a warning such as a database's own foreign-key orphans found by the preflight would
    never reach the operator.
  - This callback prints the warnings (and deprecations) of those ok results, with the host and the
    task, and nothing else. Where the stdout callback prints ok results itself, it does nothing, so
    no warning is shown twice.
  - Enabled by C(callbacks_enabled = riskmgr_warnings) in C(ansible.cfg).
requirements: [enable in ansible.cfg (callbacks_enabled)]
author: [Risk Platform team]
"""

from ansible import constants as C
from ansible.playbook.task_include import TaskInclude
from ansible.plugins.callback import CallbackBase


def stdout_shows_ok_results() -> bool:
    """Whether the stdout callback in use prints ok results (and so their warnings) itself."""
    try:
        return bool(C.config.get_config_value("display_ok_hosts", plugin_type="callback",
                                              plugin_name=C.DEFAULT_STDOUT_CALLBACK))
    except Exception:  # a stdout callback without that option prints what it prints: never twice
        return True


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "riskmgr_warnings"
    CALLBACK_NEEDS_ENABLED = True

    def v2_runner_on_ok(self, result) -> None:
        if isinstance(result.task, TaskInclude) or result.result.get("changed", False):
            return  # the stdout callback prints these whatever display_ok_hosts says
        if not (result.result.get("warnings") or result.result.get("deprecations")):
            return
        if stdout_shows_ok_results():
            return
        self._display.display(f"ok: [{result.host.get_name()}] {result.task.get_name()} warns:")
        self._handle_warnings(result.result)
