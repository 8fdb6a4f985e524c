"""The processes of a host, seen through /proc: who holds a file open.

Processes of other users are only visible to root: run the task with become.
Plain Python, no Ansible import.
"""
from __future__ import annotations

import os
from pathlib import Path


def processes_holding(paths: list[str], proc: str = "/proc") -> dict[int, list[str]]:
    """{pid: [paths]} of the processes with one of `paths` open (their /proc/PID/fd links).

    Processes of other users are only visible to root: run the task with become.
    """
    wanted = set(paths)
    holders: dict[int, list[str]] = {}
    me = os.getpid()
    for entry in os.listdir(proc):
        if not entry.isdigit() or int(entry) == me:
            continue
        fd_dir = f"{proc}/{entry}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"{fd_dir}/{fd}")
            except OSError:
                continue
            if target in wanted:
                holders.setdefault(int(entry), [])
                if target not in holders[int(entry)]:
                    holders[int(entry)].append(target)
    return holders


def live_file_names(live: Path) -> list[str]:
    real = Path(os.path.realpath(live.parent)) / live.name
    return [f"{real}{suffix}" for suffix in ("", "-wal", "-shm")]
