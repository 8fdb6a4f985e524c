"""sqlite_migrate and sqlite_schema_facts through real Ansible (`ansible localhost -M library`).

What is checked is what an operator sees: the task status and result, the one-line msg of a
failed task, and the database itself read back through a fresh sqlite3 connection.
"""
from __future__ import annotations

import json
import os
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from ansible_run import MARKER, parse_results, run_ansible, run_module
from fixtures import MIGRATIONS, V1_ROWS, row_counts, schema_objects, sha256

NEW_INDEXES = ["idx_enforcement_log_success", "idx_positions_updated", "idx_orders_state_account",
               "idx_schema_version_applied"]
HISTORY_TABLES = ("schema_version", "schema_migration_files", "schema_migration_objects")
V2_OBJECTS = {("table", name) for name in HISTORY_TABLES} | {("index", n) for n in NEW_INDEXES}


def db_hashes(path: Path) -> dict[str, str]:
    """sha256 of state.db and of a non-empty -wal (readers may leave an empty one behind)."""
    return {suffix: sha256(f"{path}{suffix}") for suffix in ("", "-wal")
            if Path(f"{path}{suffix}").exists() and Path(f"{path}{suffix}").stat().st_size > 0}


def migrate_args(db: Path, **extra) -> dict:
    return {"path": str(db), "migrations_dir": str(MIGRATIONS), **extra}


def run_with_output(name: str, args: dict, **kwargs) -> tuple[str, dict, str]:
    """(callback status, result, everything ansible printed) for checks on the raw output."""
    completed = run_ansible(name, args, **kwargs)
    output = completed.stdout + completed.stderr
    line = next(line for line in completed.stdout.splitlines() if line.startswith(MARKER))
    status = json.loads(line[len(MARKER):])["status"]
    return status, parse_results(completed.stdout)["localhost"], output


def test_migrate_check_diff_then_run_then_rerun(v1_db):
    counts, hashes = row_counts(v1_db), db_hashes(v1_db)

    check = run_module("sqlite_migrate", migrate_args(v1_db), check=True, diff=True)
    assert not check["failed"] and check["changed"]
    assert db_hashes(v1_db) == hashes, "--check changed bytes of the database"
    diff = check["diff"]
    for name in NEW_INDEXES + ["execution_time_ms"]:
        assert name in diff["after"] and name not in diff["before"]
    assert "idx_orders_state" in diff["before"]  # v1 objects are in both sides
    assert str(v1_db) in diff["before_header"]

    status, result, _ = run_with_output("sqlite_migrate", migrate_args(v1_db))
    assert status == "ok" and result["changed"] and not result.get("failed")
    assert (result["state_before"], result["from_version"], result["to_version"]) == ("v1", 1, 2)
    assert [s["object"] for s in result["steps"]] == [s["object"] for s in check["steps"]]
    assert schema_objects(v1_db) >= V2_OBJECTS
    after = row_counts(v1_db)
    assert {t: after[t] for t in counts} == counts
    with closing(sqlite3.connect(f"file:{v1_db}?mode=ro", uri=True)) as conn:
        assert conn.execute("SELECT MAX(version) FROM schema_version WHERE success = 1").fetchone() == (2,)

    # the rerun: ok (not "skipping"), changed false, nothing written
    hashes_v2 = db_hashes(v1_db)
    status, again, _ = run_with_output("sqlite_migrate", migrate_args(v1_db))
    assert status == "ok", "a rerun on v2 must be reported ok/unchanged, not skipped"
    assert not again["changed"] and again["steps"] == [] and again["direction"] == "none"
    assert len(again["skipped_steps"]) == 8
    assert db_hashes(v1_db) == hashes_v2


def test_v2_objects_made_by_hand_are_adopted_and_reported(half_way_db):
    status, result, _ = run_with_output("sqlite_migrate", migrate_args(half_way_db))
    assert status == "ok" and result["changed"] and result["state_before"] == "v1"
    adopted = {"column enforcement_log.execution_time_ms", "index idx_positions_updated"}
    assert set(result["adopted"]) == adopted and result["skipped_steps"] == []
    assert {s["object"] for s in result["steps"] if s["action"] == "adopt"} == adopted
    with closing(sqlite3.connect(half_way_db)) as conn:
        recorded = conn.execute("SELECT kind || ' ' || name, action FROM schema_migration_objects").fetchall()
    assert {name for name, action in recorded if action == "adopted"} == adopted


def test_downgrade_through_the_module(v2_db):
    counts = row_counts(v2_db)
    result = run_module("sqlite_migrate", migrate_args(v2_db, target_version=1))
    assert result["changed"] and result["direction"] == "down"
    assert V2_OBJECTS.isdisjoint(schema_objects(v2_db))
    after = row_counts(v2_db)
    assert after == {t: n for t, n in counts.items() if t not in HISTORY_TABLES}


@pytest.mark.parametrize("state, fragment", [
    ("missing_db", "no such file"),
    ("empty_file", "the file is empty"),
    ("text_file", "not a SQLite 3 database"),
    ("newer_db", "newer than the newest migration"),
    ("other_shape_db", "idx_positions_updated exists with another definition"),
    ("locked_db", "locked by another process"),
])
def test_refusal_is_a_failed_task_with_one_line_and_no_traceback(request, state, fragment):
    db = request.getfixturevalue(state)
    hashes = db_hashes(db)
    status, result, output = run_with_output("sqlite_migrate", migrate_args(db, busy_timeout=0.5))
    assert status == "failed" and result["failed"] and not result["changed"]
    message = result["msg"]
    assert "\n" not in message.strip()
    assert message.startswith(f"{db}: ") and fragment in message
    assert "Traceback" not in output
    assert db_hashes(db) == hashes
    if state == "missing_db":
        assert not db.exists()


# fixture -> (state, version, migration_needed)
FACT_STATES = {
    "v1_db": ("v1", 1, True),
    "v2_db": ("v2", 2, False),
    "half_way_db": ("v1", 1, True),
    "seed_phase1_db": ("partial", 2, True),
    "newer_db": ("newer", 3, False),
    "other_shape_db": ("unknown", None, False),
}


@pytest.mark.parametrize("state", list(FACT_STATES))
def test_schema_facts_report_the_state(request, state):
    db = request.getfixturevalue(state)
    expected_state, version, needed = FACT_STATES[state]
    counts, hashes = row_counts(db), db_hashes(db)
    facts = run_module("sqlite_schema_facts", {"path": str(db), "migrations_dir": str(MIGRATIONS),
                                               "integrity": "integrity"})
    assert not facts["failed"] and not facts["changed"]
    assert facts["state"] == expected_state
    assert facts["version"] == version and facts["migration_needed"] is needed
    assert facts["db_path"] == str(db)
    assert facts["journal_mode"] == "wal"
    assert facts["row_counts"] == counts and facts["row_counts"]["orders"] == V1_ROWS
    assert facts["integrity"] == {"level": "integrity", "ok": True, "errors": [], "notes": [],
                                  "seconds": facts["integrity"]["seconds"]}
    assert bool(facts["problems"]) == (expected_state in ("newer", "unknown"))
    assert db_hashes(db) == hashes


def test_schema_facts_without_migrations_dir_is_unknown_and_skips_integrity(v1_db):
    facts = run_module("sqlite_schema_facts", {"path": str(v1_db), "count_rows": False})
    assert facts["state"] == "unknown" and facts["migration_needed"] is None
    assert facts["integrity"] is None and facts["row_counts"] is None
    assert facts["schema_warnings"]


def test_schema_facts_refuses_a_missing_file_without_creating_it(missing_db):
    status, result, output = run_with_output("sqlite_schema_facts", {"path": str(missing_db),
                                                                      "migrations_dir": str(MIGRATIONS)})
    assert status == "failed" and result["msg"].startswith(f"{missing_db}: no such file")
    assert "Traceback" not in output
    assert not missing_db.exists() and os.listdir(missing_db.parent) == []
