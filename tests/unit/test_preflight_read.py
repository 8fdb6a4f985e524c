"""The preflight's host side in one process (module_utils/preflight_read.py), called as plain Python on real
databases: each step runs only when the one before says the host needs it, and a step that stops the host
says why and leaves the run lock as the caller must know it (taken or not)."""
from __future__ import annotations

import json
import os
from pathlib import Path

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from fixtures import MIGRATIONS
from preflight_read import DAEMON_MODULE_SPEC, FACTS_SPEC, LOCK_SPEC, preflight


def options(spec: dict, given: dict) -> dict:
    validated = ArgumentSpecValidator(spec).validate(given)
    assert not validated.error_messages, validated.error_messages
    return validated.validated_parameters


def params(db: Path, tmp_path: Path, *, action: str = "migrate", lock_holder: str | None = None) -> dict:
    lock = tmp_path / "state.db.migrate.lock"
    if lock_holder:
        lock.write_text(json.dumps({"run_id": lock_holder, "owner": {"controller": "elsewhere"}}), encoding="utf-8")
    source = {"path": str(db), "migrations_dir": str(MIGRATIONS)}
    return {"action": action, "target_version": 2, "any_version": False, "target_given": False,
            "first": options(FACTS_SPEC, dict(source, count_rows=False, lock_path=str(lock))),
            "full": options(FACTS_SPEC, dict(source, plan=True, prove_writes=True, integrity="quick")),
            # No daemon runs from this pid file: the check finds it down, which a start command could fix.
            "daemon": options(DAEMON_MODULE_SPEC, {"state": "checked", "service_manager": "command",
                                                   "pidfile": str(tmp_path / "riskmgr.pid"),
                                                   "start_command": ["/bin/true"]}),
            "lock": options(LOCK_SPEC, {"path": str(lock), "run_id": "run-1", "owner": {"controller": "here"}})}


def test_a_database_that_needs_the_change_is_checked_locked_and_read_again_under_the_lock(v1_db, tmp_path):
    warnings: list = []
    out = preflight(params(v1_db, tmp_path), False, warnings)
    assert out["msg"] is None, out["msg"]
    assert out["first"]["state"] == "v1" and out["change"] is True and out["to"] == 2
    assert out["daemon"] is not None and out["daemon"]["problems"] == []
    assert out["lock"]["acquired"] is True and (tmp_path / "state.db.migrate.lock").exists()
    # The read under the lock is the plan's: the steps the run will take, not the cheap read.
    assert out["facts"] is not out["first"] and out["facts"]["plan"]["steps"]


def test_a_file_that_is_no_database_stops_after_the_first_read_without_daemon_check_or_lock(text_file, tmp_path):
    out = preflight(params(text_file, tmp_path), False, [])
    assert out["msg"] == f"{text_file}: not a SQLite 3 database (bad file header); check riskmgr_db_path or restore " \
                         "it from a backup"
    assert out["daemon"] is None and out["lock"] is None
    assert not (tmp_path / "state.db.migrate.lock").exists()


def test_a_lock_held_by_another_run_stops_the_host_with_the_lock_not_taken(v1_db, tmp_path):
    out = preflight(params(v1_db, tmp_path, lock_holder="run-0"), False, [])
    assert out["msg"] and "run-0" in out["msg"]
    assert out["lock"]["acquired"] is False and out["facts"] is out["first"]  # no read under someone else's lock
    assert json.loads((tmp_path / "state.db.migrate.lock").read_text())["run_id"] == "run-0"


def test_check_mode_takes_no_lock_and_writes_nothing(v1_db, tmp_path):
    before = sorted(os.listdir(tmp_path))
    out = preflight(params(v1_db, tmp_path), True, [])
    assert out["msg"] is None and out["change"] is True
    assert sorted(os.listdir(tmp_path)) == before


def test_a_database_this_tool_refuses_stops_after_the_first_read_with_its_refusal(newer_db, tmp_path):
    out = preflight(params(newer_db, tmp_path), False, [])
    assert out["first"]["refusals"] and out["msg"] == " | ".join(out["first"]["refusals"])
    assert out["daemon"] is None and out["lock"] is None
