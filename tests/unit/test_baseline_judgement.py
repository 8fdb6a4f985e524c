"""Problems a database had before the change never fail it; verify fails only on what the change introduced
(issue 16, cases 3 and 4). Each database migrates, verifies, reruns and downgrades to the exact v1 text."""
from __future__ import annotations

import sqlite3
from contextlib import closing

import pytest
from fixtures import MIGRATIONS, every_row, master_entries, run_sql, sha256
from sqlite_backups import backup_database
from sqlite_facts import FactsRequest, gather
from sqlite_migration import migrate_database
from sqlite_verification import verify_database

ORPHANS = """
CREATE TABLE log_notes (id INTEGER PRIMARY KEY, log_id INTEGER REFERENCES enforcement_log(id), note TEXT);
INSERT INTO log_notes (log_id, note) VALUES (999999, 'parent deleted long ago'), (1, 'fine');
"""
MISMATCH = """
CREATE TABLE rule_notes (rule_id TEXT REFERENCES enforcement_log(rule_id), note TEXT);
INSERT INTO rule_notes VALUES ('r1', 'into a column that is not unique');
"""


def preflight(path, target=None):
    return gather(str(path), MIGRATIONS, FactsRequest(plan=True, prove_writes=True, integrity="integrity",
                                                      target_version=target))


def backup(path, tmp_path):
    return backup_database(str(path), str(tmp_path / "backups"))


@pytest.mark.parametrize("sql, found", [(ORPHANS, "rows without their parent already"),
                                        (MISMATCH, "foreign key mismatch")])
def test_a_baseline_problem_is_reported_never_refused_and_the_round_trip_keeps_everything(v1_db, tmp_path, sql, found):
    run_sql(v1_db, sql)
    v1_schema, v1_rows = master_entries(v1_db), every_row(v1_db)
    facts = preflight(v1_db)
    assert facts["refusals"] == [], facts["refusals"]
    assert any(found in note for note in facts["baseline_notes"]), facts["baseline_notes"]
    # Verify of the untouched original, judged against its own backup, passes.
    taken = backup(v1_db, tmp_path)
    assert verify_database(str(v1_db), MIGRATIONS, target_version=1, manifest=taken["manifest"])["ok"]
    migrate_database(str(v1_db), MIGRATIONS)
    checked = verify_database(str(v1_db), MIGRATIONS, manifest=taken["manifest"])
    assert checked["ok"], checked["failed_checks"]
    fk = [c for c in checked["checks"] if c["name"] == "foreign_keys"][0]
    assert "there before the change" in fk["detail"]
    assert migrate_database(str(v1_db), MIGRATIONS)["changed"] is False
    before_down = backup(v1_db, tmp_path)
    down_facts = preflight(v1_db, target=1)
    assert down_facts["refusals"] == [], down_facts["refusals"]
    migrate_database(str(v1_db), MIGRATIONS, target_version=1)
    assert master_entries(v1_db) == v1_schema
    assert every_row(v1_db) == v1_rows
    assert verify_database(str(v1_db), MIGRATIONS, target_version=1, manifest=before_down["manifest"])["ok"]


def test_an_orphan_written_on_v2_does_not_fail_a_correct_downgrade(v1_db, tmp_path):
    run_sql(v1_db, ORPHANS)
    migrate_database(str(v1_db), MIGRATIONS)
    run_sql(v1_db, "INSERT INTO log_notes (log_id, note) VALUES (888888, 'orphan written on v2');")
    before_down = backup(v1_db, tmp_path)
    assert preflight(v1_db, target=1)["refusals"] == []
    migrate_database(str(v1_db), MIGRATIONS, target_version=1)
    assert verify_database(str(v1_db), MIGRATIONS, target_version=1, manifest=before_down["manifest"])["ok"]


def test_verify_fails_on_an_orphan_the_change_introduced(v1_db, tmp_path):
    run_sql(v1_db, ORPHANS)
    taken = backup(v1_db, tmp_path)
    migrate_database(str(v1_db), MIGRATIONS)
    run_sql(v1_db, "DELETE FROM enforcement_log WHERE id = 1;")  # what a faulty change would do
    checked = verify_database(str(v1_db), MIGRATIONS, manifest=taken["manifest"])
    assert not checked["ok"]
    fk = [c for c in checked["checks"] if c["name"] == "foreign_keys"][0]
    assert "introduced by the change: 1 row(s) log_notes -> enforcement_log" in fk["detail"], fk


def test_without_a_state_before_every_violation_counts_and_says_how_to_judge(v1_db):
    run_sql(v1_db, ORPHANS)
    checked = verify_database(str(v1_db), MIGRATIONS, target_version=1)
    fk = [c for c in checked["checks"] if c["name"] == "foreign_keys"][0]
    assert not fk["ok"] and "baseline_from" in fk["detail"]
    assert verify_database(str(v1_db), MIGRATIONS, target_version=1, baseline_from=str(v1_db))["ok"]


def test_the_preflight_reads_the_baseline_without_writing(v1_db):
    run_sql(v1_db, ORPHANS + MISMATCH)
    before = sha256(v1_db)
    facts = preflight(v1_db)
    assert facts["baseline_problems"]["mismatches"] and facts["baseline_problems"]["violations"]
    assert sha256(v1_db) == before
    with closing(sqlite3.connect(v1_db)) as conn:
        assert conn.execute("SELECT COUNT(*) FROM log_notes").fetchone()[0] == 2
