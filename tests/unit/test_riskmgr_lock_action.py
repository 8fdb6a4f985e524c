"""The controller's half of the run lock: is the run that holds a lock dead, on this controller?

Real processes: a child whose command line says ansible-playbook counts as the live holder, its pid
once it has exited (or any other process at that pid) as a dead one.
"""
from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
from pathlib import Path

from fixtures import wait_for

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("riskmgr_lock_action", ROOT / "action_plugins" / "riskmgr_lock.py")
action = importlib.util.module_from_spec(spec)
spec.loader.exec_module(action)

HERE = socket.gethostname()


def started(argv: list) -> subprocess.Popen:
    """A child process, once it runs its own program (right after fork it still shows its parent's command line)."""
    child = subprocess.Popen(argv)
    wait_for(lambda: argv[-1].encode() in Path(f"/proc/{child.pid}/cmdline").read_bytes())
    return child


def holder(pid: int, controller: str = HERE) -> dict:
    return {"run_id": "r1", "owner": {"controller": controller, "controller_pid": pid}}


def test_a_live_ansible_playbook_on_this_controller_keeps_its_lock():
    # argv names ansible-playbook, as /proc/PID/cmdline of a real run does
    child = started([sys.executable, "-c", "import time; time.sleep(30)", "ansible-playbook"])
    try:
        assert not action.holder_is_dead_here(holder(child.pid), HERE)
    finally:
        child.kill()
        child.wait()
    assert action.holder_is_dead_here(holder(child.pid), HERE)  # gone now


def test_a_pid_reused_by_another_program_is_a_dead_run():
    other = started(["sleep", "30"])
    try:
        assert action.holder_is_dead_here(holder(other.pid), HERE)
    finally:
        other.kill()
        other.wait()


def test_a_run_of_another_controller_or_without_a_pid_is_never_judged_here():
    child = started(["sleep", "30"])
    try:
        assert not action.holder_is_dead_here(holder(child.pid, controller="other-controller"), HERE)
    finally:
        child.kill()
        child.wait()
    assert not action.holder_is_dead_here({"owner": "a string owner"}, HERE)
    assert not action.holder_is_dead_here({"owner": {"controller": HERE}}, HERE)
    assert not action.holder_is_dead_here(None, HERE)
