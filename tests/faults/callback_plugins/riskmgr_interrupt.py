# Test-only callback plugin for tests/faults/test_interrupts.py (fault #2: ansible-playbook
# killed at a task boundary). Enabled for one run by the test through the environment:
#   ANSIBLE_CALLBACK_PLUGINS=tests/faults/callback_plugins ANSIBLE_CALLBACKS_ENABLED=riskmgr_interrupt
# and then, from the environment too:
#   RISKMGR_RECORD_TASKS=FILE      append every task that starts, one line each: "<epoch seconds>\t<name>"
#   RISKMGR_KILL_AT_TASK=NAME      SIGKILL this ansible-playbook process when task NAME starts...
#   RISKMGR_KILL_AT_OCCURRENCE=N   ...for the Nth time (default 1): a name can recur (a role used twice)
#   RISKMGR_KILL_AT_TASK="(end of the run)"   SIGKILL it after the last task, before the recap
# v2_playbook_on_task_start runs in ansible-playbook's main process before any worker is forked
# for that task, and after every result of the previous task was handled: the kill falls exactly
# between two tasks, with no module running.
from __future__ import annotations

import os
import signal
import time

from ansible.plugins.callback import CallbackBase

RUN_END = "(end of the run)"  # fault_fleet.RUN_END

DOCUMENTATION = r"""
name: riskmgr_interrupt
type: aggregate
short_description: Record task names, or SIGKILL ansible-playbook when a named task starts (tests only)
description:
  - Used by tests/faults/test_interrupts.py only; configured through environment variables.
requirements:
  - enabled in callbacks_enabled (ANSIBLE_CALLBACKS_ENABLED=riskmgr_interrupt)
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "riskmgr_interrupt"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.record = os.environ.get("RISKMGR_RECORD_TASKS")
        self.kill_at = os.environ.get("RISKMGR_KILL_AT_TASK")
        self.occurrence = int(os.environ.get("RISKMGR_KILL_AT_OCCURRENCE", "1"))
        self.seen: dict[str, int] = {}

    def task_started(self, task) -> None:
        name = task.get_name().strip()
        self.seen[name] = self.seen.get(name, 0) + 1
        if self.record:
            with open(self.record, "a", encoding="utf-8") as handle:
                handle.write(f"{time.time():.3f}\t{name}\n")
        if name == self.kill_at and self.seen[name] == self.occurrence:
            os.kill(os.getpid(), signal.SIGKILL)

    def v2_playbook_on_task_start(self, task, is_conditional) -> None:
        self.task_started(task)

    def v2_playbook_on_handler_task_start(self, task) -> None:
        self.task_started(task)

    def v2_playbook_on_stats(self, stats) -> None:
        if self.kill_at == RUN_END:
            os.kill(os.getpid(), signal.SIGKILL)
