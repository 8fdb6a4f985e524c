# action_plugins/riskmgr_lock.py
"""The riskmgr_lock module, plus the one thing only the controller can tell: whether the run holding
a lock was started on this controller and its ansible-playbook is gone.

A run killed after it took a host's lock (controller crash, SIGKILL, CI timeout) leaves the lock
behind. The next run from the same controller finds the holder's ansible-playbook pid in the
lock; when /proc on this controller shows no ansible-playbook at that pid, the holder is dead and
its lock is taken over (the module's break_stale), in the same task. A holder on another
controller, or one still alive, refuses the run as the module does.
"""
from __future__ import annotations

import socket

from ansible.plugins.action import ActionBase


def holder_is_dead_here(holder: dict | None, controller: str, proc: str = "/proc") -> bool:
    """True when the holder's run was started on this controller and its ansible-playbook is gone."""
    owner = (holder or {}).get("owner") or {}
    if not isinstance(owner, dict) or owner.get("controller") != controller:
        return False
    try:
        pid = int(owner.get("controller_pid") or 0)
    except (TypeError, ValueError):
        return False
    if pid <= 0:
        return False
    try:
        with open(f"{proc}/{pid}/cmdline", "rb") as handle:
            cmdline = handle.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return True  # no such process
    return "ansible-playbook" not in cmdline  # the pid was reused by something else


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = dict(self._task.args)
        outcome = self._execute_module(module_name="riskmgr_lock", module_args=args, task_vars=task_vars)
        taking = args.get("state", "present") == "present" and not args.get("break_stale")
        if taking and not outcome.get("acquired") and holder_is_dead_here(outcome.get("holder"), socket.gethostname()):
            dead = outcome.get("holder")
            outcome = self._execute_module(module_name="riskmgr_lock", module_args=dict(args, break_stale=True),
                                           task_vars=task_vars)
            outcome["taken_over_from_dead_run"] = dead
        result.update(outcome)
        return result
