"""A per-host run lock, so that two migrate or rollback runs never work on one host at once.

Each Ansible task is a separate process, so no flock can be held from the first task of a run
to its last. The lock is a file instead: created with O_CREAT|O_EXCL (exactly one creator
wins), mode 0600, holding JSON that says which run holds it. The run that created it removes
it at the end. A run that died leaves it behind; an operator then breaks it on purpose.

Plain Python, no Ansible import: pytest calls these directly, library/riskmgr_lock.py wires
them to Ansible.
"""
from __future__ import annotations

import datetime
import json
import os
import time

from ansible.module_utils.sqlite_common import RiskmgrError

LOCK_MODE = 0o600


class LockError(RiskmgrError):
    """The lock could not be taken or released; the text names the file, the holder and what to do.

    holder is the record of the run holding the lock, when there is one: a playbook that
    tolerates the failure can still look at who holds it (and whether that run is alive).
    """

    def __init__(self, message: str, holder: dict | None = None) -> None:
        super().__init__(message)
        self.holder = holder
        self.fail_result = {"holder": holder, "acquired": False}


def read_lock(path: str) -> dict | None:
    """The lock's record, or None when there is no lock. An unreadable record still is a lock."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise LockError(f"{path}: cannot read the run lock ({err.strerror}); run the task as the user "
                        "that owns the lock directory (become)") from err
    try:
        record = json.loads(text)
    except ValueError:
        record = None
    if not isinstance(record, dict):
        # Empty: another run is between creating and writing it (or died there). Still a lock.
        record = {"run_id": None, "unreadable": text[:200]}
    if not record.get("created_at"):
        try:
            record["created_at"] = os.path.getmtime(path)
        except FileNotFoundError:
            pass
    return record


def lock_record(run_id: str, owner: dict | str | None, now: float | None = None) -> dict:
    now = time.time() if now is None else now
    return {
        "run_id": run_id,
        "owner": owner,
        "created_at": now,
        "created": datetime.datetime.fromtimestamp(now, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "host_pid": os.getpid(),
    }


def describe_holder(record: dict) -> str:
    """'run R (controller C, pid P, since S)' from whatever the holder recorded."""
    if record.get("run_id") is None:
        return "an unknown run (the lock file is empty or not JSON)"
    owner = record.get("owner")
    details = []
    if isinstance(owner, dict):
        controller = owner.get("controller") or owner.get("controller_host") or owner.get("host")
        pid = owner.get("controller_pid") or owner.get("pid")
        if controller:
            details.append(f"controller {controller}")
        if pid:
            details.append(f"pid {pid}")
        since = owner.get("started") or record.get("created")
    else:
        if owner:
            details.append(str(owner))
        since = record.get("created")
    if since:
        details.append(f"since {since}")
    return f"run {record['run_id']}" + (f" ({', '.join(details)})" if details else "")


def lock_age(record: dict, now: float | None = None) -> float | None:
    created = record.get("created_at")
    if not isinstance(created, (int, float)):
        return None
    return (time.time() if now is None else now) - created


def is_stale(record: dict, stale_after: int, now: float | None = None) -> bool:
    """stale_after 0 means a lock never goes stale by age alone."""
    age = lock_age(record, now)
    return stale_after > 0 and age is not None and age >= stale_after


def create_lock(path: str, record: dict) -> bool:
    """Create the lock file holding record; False when it already exists (someone else won)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, LOCK_MODE)
    except FileExistsError:
        return False
    except FileNotFoundError as err:
        raise LockError(f"{path}: the lock's directory {os.path.dirname(path) or '.'} does not exist; "
                        "create it or set the lock path to an existing directory") from err
    except OSError as err:
        directory = os.path.dirname(path) or "."
        raise LockError(f"{path}: cannot create the run lock in {directory} ({err.strerror}); {directory} must be "
                        "writable by the task's user (become the database's owner)") from err
    try:
        os.write(fd, (json.dumps(record, sort_keys=True) + "\n").encode("utf-8"))
        os.fsync(fd)
    except OSError as err:
        os.close(fd)
        os.unlink(path)  # a half-written lock would block every later run
        raise LockError(f"{path}: cannot write the run lock ({err.strerror}); free space on that "
                        "filesystem and rerun") from err
    os.close(fd)
    return True


def remove_lock_if(path: str, record: dict) -> None:
    """Remove the lock only while it still holds record.

    Reading and unlinking are two steps, so two runs breaking the same lock in the same instant
    can both succeed at the unlink; create_lock's O_EXCL still lets only one of them take it.
    """
    if read_lock(path) != record:
        return
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as err:
        raise LockError(f"{path}: cannot remove the run lock ({err.strerror}); the directory must be "
                        "writable by the task's user (become)") from err


def conflict_message(path: str, holder: dict) -> str:
    return (f"{path}: this host is locked by {describe_holder(holder)}; another migrate or rollback run "
            f"is working on it. If that run is dead, rerun with -e riskmgr_break_lock=true or remove {path}")


def acquire(path: str, run_id: str, owner: dict | str | None, break_stale: bool = False,
            stale_after: int = 0, check_mode: bool = False) -> dict:
    """Take the lock for run_id (re-entrant); break another run's lock only when told to."""
    result = {"changed": False, "holder": None, "acquired": False, "released": False,
              "broke": None}
    holder = read_lock(path)
    if holder is not None and holder.get("run_id") == run_id:
        return {**result, "holder": holder, "acquired": True}
    if holder is not None and not (break_stale or is_stale(holder, stale_after)):
        raise LockError(conflict_message(path, holder), holder=holder)
    record = lock_record(run_id, owner)
    result.update(changed=True, acquired=True, broke=holder, holder=record)
    if check_mode:
        return result
    if holder is not None:
        remove_lock_if(path, holder)
    if not create_lock(path, record):
        # Another run created it between our read and our create: it won, we did not.
        current = read_lock(path) or {"run_id": None}
        raise LockError(conflict_message(path, current), holder=current)
    return result


def release(path: str, run_id: str, check_mode: bool = False) -> dict:
    """Remove the lock if run_id holds it; another run's lock is never removed."""
    result = {"changed": False, "holder": None, "acquired": False, "released": False,
              "broke": None}
    holder = read_lock(path)
    if holder is None:
        return result
    result["holder"] = holder
    if holder.get("run_id") != run_id:
        return result
    result.update(changed=True, released=True)
    if not check_mode:
        remove_lock_if(path, holder)
    return result
