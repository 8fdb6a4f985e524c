"""Local hosts laid out as DB-SCHEMA-006 describes them (tools/local_fleet.py create --seed-layout).

The risk manager in its own directory, started by ./scripts/start_daemon.sh and stopped by
./scripts/stop_daemon.sh, both run from that directory and using relative paths only, the
database at data/state.db, no systemd unit, and a non-root user that owns data/, logs/ and run/
and runs the daemon:

    <host>/                  root's, 0755
      bin/riskmgr_daemon.py  the stand-in daemon (tools/riskmgr_standin.py), root's, 0755
      scripts/               start_daemon.sh, stop_daemon.sh, smoke_tests.py: root's, 0755
      data/state.db          the user's (0640), as are data/, logs/ and run/
      logs/daemon.log        the daemon's log; logs/stop_daemon.log: one line each time the stop script ran

The hosts get riskmgr_start_command ./scripts/start_daemon.sh, riskmgr_stop_command
./scripts/stop_daemon.sh, riskmgr_daemon_chdir <host>, riskmgr_daemon_user USER and a relative
smoke command. The daemon's interpreter is the system's (--daemon-python, /usr/bin/python3): the
user must be able to run it, and root's pyenv is out of its reach.

Python 3 standard library only.
"""
from __future__ import annotations

import os
import pwd
import shutil
import stat
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fleet_files import FleetError  # noqa: E402  (sibling tools, found through sys.path)

SEED_USER = "riskmgr"
DAEMON_PYTHON = "/usr/bin/python3"
PROCESS_MATCH = "bin/riskmgr_daemon.py"  # the program as the start script names it, relative
STOP_MARKS = Path("logs") / "stop_daemon.log"
OWNED = ("data", "logs", "run")  # the user's: the daemon writes there
SMOKE_TIMEOUT_S = 30

START_SCRIPT = """#!/bin/sh
# The seed's start script: run from the risk manager's directory, relative paths only. The daemon
# forks into the background; this returns once it has written run/riskmgr.pid.
set -eu
exec {python} bin/riskmgr_daemon.py --db data/state.db --pidfile run/riskmgr.pid --log logs/daemon.log \\
    --interval-ms {interval}
"""

STOP_SCRIPT = """#!/bin/sh
# The seed's stop script: leaves its mark (when, as whom, from where), asks the daemon to stop and
# returns without waiting for it (the caller waits for the pid).
set -eu
echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) stop_daemon.sh as $(id -un) from $(pwd -P)" >> logs/stop_daemon.log
kill -TERM "$(cat run/riskmgr.pid)"
"""


def seed_account(user: str) -> pwd.struct_passwd:
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise FleetError(f"--user {user}: no such user on this machine; create it first "
                         f"(useradd --system --no-create-home --shell /usr/sbin/nologin {user})") from None
    if entry.pw_uid == 0:
        raise FleetError(f"--user {user}: is root; the seed layout runs its daemon as a non-root user")
    return entry


def check_reachable(root: Path) -> None:
    """Every directory above root must be enterable by others: the daemon's user has to reach its host."""
    for directory in [root, *root.parents]:
        if not os.stat(directory).st_mode & stat.S_IXOTH:
            raise FleetError(f"{root}: {directory} is not enterable by other users (mode "
                             f"{stat.S_IMODE(os.stat(directory).st_mode):04o}), so the daemon's user cannot reach "
                             "its directory; choose a --root under /tmp or /srv")


def lay_out_seed_host(host_dir: Path, tools: Path, interval_ms: int, daemon_python: str) -> None:
    """The host's directory, its code and its scripts (the database comes later, then own_seed_files)."""
    for sub in ("bin", "scripts", *OWNED):
        (host_dir / sub).mkdir(parents=True, mode=0o755)
    host_dir.chmod(0o755)
    for source, copy in (("riskmgr_standin.py", "bin/riskmgr_daemon.py"), ("riskmgr_smoke.py", "scripts/smoke_tests.py")):
        shutil.copyfile(tools / source, host_dir / copy)
        (host_dir / copy).chmod(0o755)
    for name, text in (("start_daemon.sh", START_SCRIPT.format(python=daemon_python, interval=interval_ms)),
                       ("stop_daemon.sh", STOP_SCRIPT)):
        (host_dir / "scripts" / name).write_text(text, encoding="utf-8")
        (host_dir / "scripts" / name).chmod(0o755)


def own_seed_files(host_dir: Path, user: str) -> None:
    """data/, logs/, run/ and everything in them to the user; state.db 0640, as a daemon's own file."""
    entry = seed_account(user)
    for sub in OWNED:
        for directory, _dirs, files in os.walk(host_dir / sub):
            os.chown(directory, entry.pw_uid, entry.pw_gid)
            for name in files:
                os.chown(os.path.join(directory, name), entry.pw_uid, entry.pw_gid)
    (host_dir / "data" / "state.db").chmod(0o640)


def seed_host_vars(host_dir: Path, python: str, user: str, daemon_python: str, common: dict) -> dict:
    """The inventory variables of a seed-layout host: relative commands, its directory, its user."""
    return {
        "ansible_connection": "local",
        "ansible_python_interpreter": python,
        "riskmgr_db_path": str(host_dir / "data" / "state.db"),
        "riskmgr_backup_dir": str(host_dir / "data" / "backups"),
        "riskmgr_start_command": "./scripts/start_daemon.sh",
        "riskmgr_stop_command": "./scripts/stop_daemon.sh",
        "riskmgr_daemon_chdir": str(host_dir),
        "riskmgr_daemon_user": user,
        "riskmgr_pidfile": str(host_dir / "run" / "riskmgr.pid"),
        "riskmgr_log_path": str(host_dir / "logs" / "daemon.log"),
        **common,
        "riskmgr_process_match": PROCESS_MATCH,
        "riskmgr_smoke_command": [daemon_python, "scripts/smoke_tests.py", "--db", "data/state.db",
                                  "--pidfile", "run/riskmgr.pid"],
        "riskmgr_smoke_timeout": SMOKE_TIMEOUT_S,
    }
