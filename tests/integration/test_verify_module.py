"""sqlite_verify through real Ansible (`ansible localhost -M library`).

What is checked is what an operator sees: the task status, the result a playbook registers,
the one-line msg of a failed task (never a traceback), and a database left byte for byte alone.
"""
from __future__ import annotations

import json
from pathlib import Path

from ansible_run import MARKER, parse_results, run_ansible, run_module
from fixtures import MIGRATIONS, row_counts, sha256
from sqlite_verification import CHECK_NAMES

V1_FOR_V2_FAILURES = ["schema_version", "schema_version_table", "indexes", "definitions", "query_plans"]


def verify_args(db: Path, **extra) -> dict:
    return {"path": str(db), "migrations_dir": str(MIGRATIONS), **extra}


def run_with_output(args: dict, **kwargs) -> tuple[str, dict, str]:
    """(callback status, result, everything ansible printed)."""
    completed = run_ansible("sqlite_verify", args, **kwargs)
    line = next(line for line in completed.stdout.splitlines() if line.startswith(MARKER))
    return json.loads(line[len(MARKER):])["status"], parse_results(completed.stdout)["localhost"], \
        completed.stdout + completed.stderr


def test_v2_database_passes_with_every_check_in_check_mode_too(v2_db, tmp_path):
    manifest = tmp_path / "backup.db.manifest.json"
    manifest.write_text(json.dumps({"format": 1, "row_counts": row_counts(v2_db)}))
    before = sha256(v2_db)
    for check in (False, True):  # read-only: check mode runs the very same checks
        result = run_module("sqlite_verify", verify_args(v2_db, target_version=2, manifest=str(manifest),
                                                         row_counts="equal"), check=check)
        assert not result["failed"] and not result["changed"] and result["ok"]
        assert [c["name"] for c in result["checks"]] == list(CHECK_NAMES)
        assert all(c["ok"] for c in result["checks"]) and result["failed_checks"] == []
        assert (result["version"], result["state"], result["target_version"]) == (2, "v2", 2)
        assert result["row_counts"] == row_counts(v2_db)
    assert sha256(v2_db) == before


def test_v1_database_against_v2_fails_naming_every_failed_check(v1_db):
    before = sha256(v1_db)
    status, result, output = run_with_output(verify_args(v1_db, integrity="quick"))
    assert status == "failed" and result["failed"] and not result["changed"]
    message = result["msg"]
    assert "\n" not in message.strip()
    assert message.startswith(f"{v1_db}: verification against v2 failed: ")
    assert [message.index(f" {name}: ") for name in V1_FOR_V2_FAILURES] == \
        sorted(message.index(f" {name}: ") for name in V1_FOR_V2_FAILURES)
    assert message.endswith("or fix the cause and rerun migrate_v2.yml")
    assert [line.split(":", 1)[0] for line in result["failed_checks"]] == V1_FOR_V2_FAILURES
    assert {c["name"] for c in result["checks"] if not c["ok"]} == set(V1_FOR_V2_FAILURES)
    assert result["ok"] is False and result["state"] == "v1"
    assert "Traceback" not in output
    assert sha256(v1_db) == before


def test_missing_database_is_one_line_and_not_created(missing_db):
    status, result, output = run_with_output(verify_args(missing_db))
    assert status == "failed" and result["msg"].startswith(f"{missing_db}: no such file; check riskmgr_db_path")
    assert "Traceback" not in output and "checks" not in result
    assert not missing_db.exists()
