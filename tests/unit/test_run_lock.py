"""The run lock (module_utils/run_lock.py, module riskmgr_lock) on real lock files, with real competing processes."""
from __future__ import annotations

import json
import multiprocessing
import stat
import time
from types import SimpleNamespace

import pytest
from ansible_run import load_library_module, run_module
from run_lock import LockError, acquire, lock_record, read_lock, release

OWNER = {"run_id": "run-1", "controller": "ctl01", "controller_pid": 4242, "started": "2026-11-24T12:00:00Z"}


@pytest.fixture
def lock(tmp_path):
    return tmp_path / "migration.lock"


def write_record(path, record: dict) -> bytes:
    path.write_text(json.dumps(record))
    return path.read_bytes()


def conflict(path, holder: str) -> str:
    return (f"{path}: this host is locked by {holder}; another migrate or rollback run is working on it. "
            f"If that run is dead, rerun with -e riskmgr_break_lock=true or remove {path}")


def test_first_run_takes_the_lock_and_takes_it_again_without_change(lock):
    taken = acquire(str(lock), "run-1", OWNER)
    assert taken["changed"] and taken["acquired"] and taken["broke"] is None
    assert stat.S_IMODE(lock.stat().st_mode) == 0o600
    on_disk = json.loads(lock.read_text())
    assert on_disk["run_id"] == "run-1" and on_disk["owner"] == OWNER and taken["holder"] == on_disk
    before = lock.read_bytes()
    again = acquire(str(lock), "run-1", OWNER)  # a later task of the same run
    assert not again["changed"] and again["acquired"] and again["holder"] == on_disk
    assert lock.read_bytes() == before


def test_another_run_is_refused_with_the_holder_and_the_way_out(lock):
    before = write_record(lock, {**lock_record("run-1", OWNER), "created": "2026-11-24T11:59:58Z"})
    with pytest.raises(LockError) as caught:
        acquire(str(lock), "run-2", {"controller": "ctl02"})
    assert str(caught.value) == conflict(lock, "run run-1 (controller ctl01, pid 4242, since 2026-11-24T12:00:00Z)")
    assert caught.value.holder["owner"] == OWNER
    assert lock.read_bytes() == before


def test_string_owner_and_unreadable_lock_are_described(lock):
    write_record(lock, {"run_id": "run-1", "owner": "ci job 77", "created": "2026-11-24T12:00:00Z"})
    with pytest.raises(LockError, match=r"locked by run run-1 \(ci job 77, since 2026-11-24T12:00:00Z\);"):
        acquire(str(lock), "run-2", "me")
    lock.write_text("")  # a run that died between creating and writing its lock
    with pytest.raises(LockError, match=r"locked by an unknown run \(the lock file is empty or not JSON\);"):
        acquire(str(lock), "run-2", "me")
    broken = acquire(str(lock), "run-2", "me", break_stale=True)
    assert broken["broke"]["run_id"] is None and json.loads(lock.read_text())["run_id"] == "run-2"


def test_break_stale_takes_over_and_reports_the_old_holder(lock):
    old = lock_record("run-1", OWNER)
    write_record(lock, old)
    predicted = acquire(str(lock), "run-2", "me", break_stale=True, check_mode=True)
    assert predicted["changed"] and predicted["broke"] == old
    assert json.loads(lock.read_text()) == old  # check mode wrote nothing
    broke = acquire(str(lock), "run-2", "me", break_stale=True)
    assert broke["broke"] == old
    assert json.loads(lock.read_text())["run_id"] == "run-2"


def test_stale_after_lets_only_an_old_lock_go(lock):
    write_record(lock, lock_record("run-1", OWNER, now=time.time() - 120))
    with pytest.raises(LockError):
        acquire(str(lock), "run-2", "me", stale_after=0)  # 0: never stale by age
    with pytest.raises(LockError):
        acquire(str(lock), "run-2", "me", stale_after=600)
    assert acquire(str(lock), "run-2", "me", stale_after=60)["broke"]["run_id"] == "run-1"


def test_release_removes_only_this_runs_lock(lock):
    assert not release(str(lock), "run-1")["changed"]  # nothing to release
    acquire(str(lock), "run-1", OWNER)
    other = release(str(lock), "run-2")
    assert not other["changed"] and not other["released"] and other["holder"]["run_id"] == "run-1"
    assert lock.exists()
    assert release(str(lock), "run-1", check_mode=True)["changed"] and lock.exists()
    released = release(str(lock), "run-1")
    assert released["changed"] and released["released"] and not lock.exists()


def test_check_mode_creates_nothing(lock):
    predicted = acquire(str(lock), "run-1", OWNER, check_mode=True)
    assert predicted["changed"] and predicted["holder"]["run_id"] == "run-1"
    assert not lock.exists()


def test_missing_directory_is_named(tmp_path):
    path = tmp_path / "run" / "migration.lock"
    with pytest.raises(LockError, match=rf"^{path}: the lock's directory {path.parent} does not exist; "):
        acquire(str(path), "run-1", OWNER)


def contend(path: str, run_id: str, go, results) -> None:
    go.wait()
    try:
        results.put((run_id, acquire(path, run_id, run_id)["acquired"]))
    except LockError:
        results.put((run_id, False))


def test_only_one_of_many_simultaneous_runs_gets_the_lock(lock):
    context = multiprocessing.get_context("fork")
    go, results = context.Event(), context.Queue()
    runs = [context.Process(target=contend, args=(str(lock), f"run-{n}", go, results)) for n in range(8)]
    for process in runs:
        process.start()
    go.set()
    outcomes = dict(results.get(timeout=10) for _ in runs)
    for process in runs:
        process.join(timeout=10)
    winners = [run_id for run_id, acquired in outcomes.items() if acquired]
    assert len(winners) == 1
    assert read_lock(str(lock))["run_id"] == winners[0]


def test_module_through_ansible(lock):
    args = {"path": str(lock), "run_id": "run-1", "owner": OWNER}
    assert run_module("riskmgr_lock", args, check=True)["changed"] and not lock.exists()
    taken = run_module("riskmgr_lock", args)
    assert taken["changed"] and taken["holder"]["run_id"] == "run-1" and lock.exists()

    refused = run_module("riskmgr_lock", {"path": str(lock), "run_id": "run-2", "owner": "ctl02"})
    assert refused["failed"]
    assert refused["msg"] == conflict(lock, "run run-1 (controller ctl01, pid 4242, since 2026-11-24T12:00:00Z)")
    assert refused["holder"]["owner"]["controller_pid"] == 4242 and refused["acquired"] is False

    kept = run_module("riskmgr_lock", {"path": str(lock), "run_id": "run-2", "state": "absent"})
    assert not kept["changed"] and kept["holder"]["run_id"] == "run-1" and lock.exists()
    assert "not by run run-2; left in place" in kept["warnings"][0]

    released = run_module("riskmgr_lock", {"path": str(lock), "run_id": "run-1", "state": "absent"})
    assert released["changed"] and not lock.exists()


def test_unexpected_error_is_one_line_with_the_traceback_kept(lock, monkeypatch):
    library_module = load_library_module("riskmgr_lock")
    write_record(lock, lock_record("run-1", OWNER))
    failures = []

    def fail_json(**kwargs):
        failures.append(kwargs)
        raise SystemExit(1)

    # Only the Ansible boundary is faked; it skips argument validation, so a None reaches the code.
    params = {"path": str(lock), "state": "present", "run_id": "run-2", "owner": "me", "break_stale": False,
              "stale_after": None}
    fake = SimpleNamespace(params=params, check_mode=False, fail_json=fail_json)
    monkeypatch.setattr(library_module, "AnsibleModule", lambda **_: fake)
    with pytest.raises(SystemExit):
        library_module.main()
    assert failures[0]["msg"].startswith(f"{lock}: unexpected TypeError: ")
    assert "Traceback (most recent call last)" in failures[0]["exception"]
    assert json.loads(lock.read_text())["run_id"] == "run-1"
