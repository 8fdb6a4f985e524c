"""Every module of the engine called with missing or contradictory options answers in one line that says
what to pass, through real Ansible, and reads or writes nothing (issue 16, case 9)."""
from __future__ import annotations

import json

import pytest
from ansible_run import MARKER, parse_results, run_ansible
from fixtures import MIGRATIONS, sha256

CASES = [
    ("sqlite_verify", {}, "one of the following is required: migrations_dir, migrations"),
    ("sqlite_verify", {"migrations_dir": "M", "migrations": {"v2/x.sql": "SELECT 1;"}}, "mutually exclusive"),
    ("sqlite_verify", {"migrations_dir": "M", "target_version": 7}, "target_version 7 is not one of the versions"),
    ("sqlite_verify", {"migrations_dir": "M", "baseline_from": "/nonexistent/state.db"},
     "baseline_from must name the database as it was before the change"),
    ("sqlite_schema_facts", {"plan": True}, "pass migrations_dir (or migrations)"),
    ("sqlite_schema_facts", {"migrations_dir": "M", "prove_writes": True}, "pass plan: true with it"),
    ("sqlite_schema_facts", {"migrations_dir": "M", "plan": True, "target_version": 9},
     "target_version 9 is not one of the versions"),
    ("sqlite_migrate", {}, "one of the following is required: migrations_dir, migrations"),
    ("sqlite_migrate", {"migrations_dir": "M", "target_version": 5}, "target_version 5 is not one of the versions"),
    ("sqlite_backup", {}, "missing required arguments: backup_dir"),
    ("sqlite_restore", {}, "one of the following is required: backup, backup_dir"),
    ("sqlite_restore", {"backup_dir": "/tmp"}, "parameters are required together: backup_dir, schema_version"),
]


@pytest.mark.parametrize("module, args, expected", CASES, ids=[f"{m}-{'-'.join(a) or 'bare'}" for m, a, _ in CASES])
def test_bad_options_answer_in_one_line(v1_db, module, args, expected):
    args = {key: str(MIGRATIONS) if value == "M" else value for key, value in args.items()}
    before = sha256(v1_db)
    completed = run_ansible(module, dict(args, path=str(v1_db)))
    line = next(line for line in completed.stdout.splitlines() if line.startswith(MARKER))
    assert json.loads(line[len(MARKER):])["status"] == "failed"
    message = parse_results(completed.stdout)["localhost"]["msg"]
    assert expected in message and "\n" not in message, message
    output = completed.stdout + completed.stderr
    assert "this is a bug" not in output and "Traceback" not in output
    assert sha256(v1_db) == before
