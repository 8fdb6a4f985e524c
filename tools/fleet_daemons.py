"""The stand-in daemons of a local fleet (tools/local_fleet.py): find, start and stop them.

Python 3 standard library only.
"""
from __future__ import annotations

import os
import pwd
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fleet_files import FleetError  # noqa: E402  (sibling tools, found through sys.path)
from riskmgr_standin import PROCESS_NAMES  # noqa: E402

STOP_TIMEOUT_S = 10.0
POLL_S = 0.05


def read_pid(pidfile: str) -> int | None:
    try:
        text = Path(pidfile).read_text(encoding="ascii", errors="replace").strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def is_alive(pid: int | None) -> bool:
    """A live (not zombie) process whose command line names the stand-in: a pid can be reused."""
    if pid is None:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X") and any(name.encode() in cmdline for name in PROCESS_NAMES)


def start_daemon(name: str, variables: dict) -> int:
    """Run the host's start command (it returns once the pidfile names the daemon); its pid."""
    pid = read_pid(variables["riskmgr_pidfile"])
    if is_alive(pid):
        return pid
    # Not a shell: the command is the same string riskmgr_daemon splits with shlex, run from the same
    # directory as the same user (a seed-layout host: its own directory and user; else from /).
    user = variables.get("riskmgr_daemon_user") or None
    as_user = {"user": user, "group": pwd.getpwnam(user).pw_gid, "extra_groups": []} if user else {}
    launched = subprocess.run(shlex.split(variables["riskmgr_start_command"]), stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=30, check=False,
                              cwd=variables.get("riskmgr_daemon_chdir") or "/", **as_user)
    pid = read_pid(variables["riskmgr_pidfile"])
    if launched.returncode != 0 or not is_alive(pid):
        raise FleetError(f"{name}: the stand-in daemon did not start (exit {launched.returncode}: "
                         f"{launched.stderr.strip() or 'no output'}); see {variables['riskmgr_log_path']}")
    return pid


def stop_daemon(name: str, variables: dict, timeout: float = STOP_TIMEOUT_S) -> str:
    """SIGTERM the daemon named by the pidfile and wait for it; SIGKILL one that ignores it."""
    pid = read_pid(variables["riskmgr_pidfile"])
    if not is_alive(pid):
        return f"{name}: not running"
    os.kill(pid, signal.SIGTERM)
    if wait_for_exit(pid, timeout):
        return f"{name}: stopped pid {pid}"
    os.kill(pid, signal.SIGKILL)  # a fault-injection daemon (--ignore-sigterm) must not outlive the fleet
    wait_for_exit(pid, timeout)
    return f"{name}: pid {pid} ignored SIGTERM for {timeout:g}s and was killed"


def wait_for_exit(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while is_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_S)
    return True
