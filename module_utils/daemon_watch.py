"""After the daemon starts on the new schema and code: its smoke test, its watch, and the record of an
upgrade that is not accepted yet.

- The smoke test (riskmgr_smoke_command, like the seed's `python scripts/smoke_tests.py`) is an
  argv run on the host, without a shell, once the daemon is healthy; a non-zero exit fails the
  upgrade of that host, which is then put back.
- The watch reads the daemon's own lines since its start (its log file, or its unit's journal) a
  poll at a time, and fails when the daemon exits (or another pid replaced it) or a line matches
  riskmgr_watch_fail_regex. The controller's riskmgr_watch action repeats the poll until the window
  is over, showing the seconds left and the lines seen.
- The pending record, a small JSON file beside the database, is written before the daemon stops
  for the upgrade and removed when the watch passes (or the host is put back). A run cut off in
  between (the controller killed during the canary's watch) leaves it, so that the next run knows
  this host's upgrade was never accepted: it starts the daemon on the new release if it is down,
  smoke-tests it and watches it again, and a failure then still puts the host back to the
  version the upgrade started from.

Plain Python, no Ansible import.
"""
from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from ansible.module_utils.daemon_account import CommandRunner
from ansible.module_utils.host_files import create_temp, fsync_path, owner_for_root, remove_quietly
from ansible.module_utils.host_processes import output_tail, pid_is_running, run_checked
from ansible.module_utils.service_manager import DaemonControl
from ansible.module_utils.sqlite_common import DaemonError

PENDING_SUFFIX = ".riskmgr-pending"
MATCHES_KEPT = 5


# --- the pending record ----------------------------------------------------------------------

def pending_path(db_path: str) -> Path:
    return Path(f"{db_path}{PENDING_SUFFIX}")


def read_pending(db_path: str) -> dict | None:
    """The record of an upgrade of this database that was started and not accepted, or None."""
    path = pending_path(db_path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise DaemonError(f"{path}: the record of an unfinished upgrade cannot be read ({err}); if no run is "
                          "active, check the host's database and daemon, remove the file, and rerun") from err
    if not isinstance(record, dict) or not isinstance(record.get("from_version"), int):
        raise DaemonError(f"{path}: the record of an unfinished upgrade is not one this tool wrote; if no run is "
                          "active, check the host's database and daemon, remove the file, and rerun")
    return record


def write_pending(db_path: str, from_version: int, to_version: int, release_before: str | None,
                  check_mode: bool = False) -> bool:
    """Record that the upgrade from_version -> to_version started (and the release the link named
    before); an existing record of the same upgrade is kept as it is. True when written."""
    existing = read_pending(db_path)
    if existing and (existing["from_version"], existing.get("to_version")) == (from_version, to_version):
        return False
    if check_mode:
        return True
    record = {"from_version": from_version, "to_version": to_version, "release_before": release_before,
              "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    final = pending_path(db_path)
    fd, temp = create_temp(final.parent, final.name, owner=owner_for_root(final.parent))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, final)
    except BaseException:
        remove_quietly(temp)
        raise
    fsync_path(final.parent)
    return True


def clear_pending(db_path: str, check_mode: bool = False) -> bool:
    """The upgrade is accepted, or undone: no record any more. True when there was one."""
    path = pending_path(db_path)
    if not path.exists():
        return False
    if not check_mode:
        remove_quietly(path)
        fsync_path(path.parent)
    return True


# --- the smoke test --------------------------------------------------------------------------

@dataclass(frozen=True)
class SmokeTest:
    argv: tuple
    timeout: float
    runner: CommandRunner = CommandRunner()

    @classmethod
    def from_params(cls, params: dict) -> SmokeTest | None:
        argv = params.get("smoke_command") or []
        return cls(argv=tuple(str(arg) for arg in argv), timeout=float(params["smoke_timeout"]),
                   runner=CommandRunner.from_params(params)) if argv else None


def run_smoke(smoke: SmokeTest, cwd: str | None) -> dict:
    """Run the smoke test as riskmgr_daemon_user, from riskmgr_daemon_chdir or else cwd (the release link, when
    there is one; else /); DaemonError unless it exits 0."""
    began = time.monotonic()
    argv = list(smoke.argv)
    smoke.runner.refuse_relative("the smoke test", argv, cwd)
    out, err = run_checked(argv, smoke.timeout, smoke.runner.describe("the smoke test", argv, cwd),
                           cannot_run="; check riskmgr_smoke_command", cwd=smoke.runner.cwd(cwd), kill_group=True,
                           **smoke.runner.launch_options())
    return {"argv": list(smoke.argv), "rc": 0, "seconds": round(time.monotonic() - began, 3),
            "output": output_tail(out, err)}


def smoke_problems(smoke: SmokeTest | None, cwd: str | None) -> list[str]:
    """Why the smoke test could not run after the start (relative without a directory, a directory or program its
    user cannot use), found without running it: the preflight refuses before any daemon stops."""
    return smoke.runner.command_problems("smoke_command", list(smoke.argv), cwd) if smoke else []


# --- the watch -------------------------------------------------------------------------------

def watch_poll(control: DaemonControl, log_path: str | None, process_match: str | None, pid: int | None,
               mark, fail_regex: str) -> dict:
    """One look at the watched daemon: is `pid` still the daemon, which of its lines since mark match.

    pid None: whatever pid the service manager names now (its first poll); mark None: the lines
    from now on. Read-only; never raises for what it finds (the caller decides), only for a log
    that cannot be read.
    """
    pattern = re.compile(fail_regex)
    log = control.daemon_log(log_path)
    if mark is None:
        mark = log.mark()
    current = control.find_pid()
    pid = current if pid is None else pid
    alive = pid_is_running(pid, process_match) and current == pid
    lines, next_mark = log.read_since(mark)
    matched = [line.strip() for line in lines if pattern.search(line)]
    return {"pid": pid, "current_pid": current, "alive": alive, "lines": len(lines),
            "matched": matched[:MATCHES_KEPT], "matched_count": len(matched), "mark": next_mark,
            "log": log.source if log.watchable else None}
