"""The daemon's writes proven before the stop, through migrate_v2.yml on a local fleet (issue 16, case 1).

A trigger that copies enforcement_log with SELECT * into an archive breaks every insert once v2 adds
execution_time_ms. The preflight's write proof finds it while the daemon runs: in both modes the run
is refused before anything stops, the v1 daemon keeps running and writing (the same process), and the
schema is as it was. Rewritten to name its columns, the same trigger lets the next run migrate.
"""
from __future__ import annotations

import sqlite3
from contextlib import closing

import pytest
from fault_fleet import CONFIRM, HOST, UNTOUCHED, assert_end_state, capture, query

ARCHIVE = """
CREATE TABLE log_archive AS SELECT * FROM enforcement_log WHERE 0;
CREATE TRIGGER archive_log AFTER INSERT ON enforcement_log
BEGIN INSERT INTO log_archive SELECT * FROM enforcement_log WHERE id = NEW.id; END;
"""
NAMED = """
DROP TRIGGER archive_log;
CREATE TRIGGER archive_log AFTER INSERT ON enforcement_log
BEGIN INSERT INTO log_archive (id, account_id, rule_id, action, reason, success, timestamp)
      SELECT id, account_id, rule_id, action, reason, success, timestamp FROM enforcement_log WHERE id = NEW.id; END;
"""


def live_sql(db, script: str) -> None:
    """DDL on the live file while the daemon writes (it waits for the daemon's short transactions)."""
    with closing(sqlite3.connect(db, timeout=30, isolation_level=None)) as conn:
        conn.execute("BEGIN IMMEDIATE")
        for statement in [s for s in script.split(";\n") if s.strip()]:
            conn.execute(statement)
        conn.execute("COMMIT")


@pytest.mark.parametrize("mode", ["offline", "online"])
def test_a_select_star_archive_trigger_is_refused_before_the_stop_and_the_v1_daemon_keeps_writing(make_fleet, mode):
    fleet = make_fleet()
    db = fleet.db(HOST)
    fleet.wait_for_rows(HOST, 0)
    live_sql(db, ARCHIVE)
    archived = fleet.wait_for_rows(HOST, query(db, "SELECT MAX(id) FROM enforcement_log")[0][0])
    before = capture(fleet, HOST)
    run = fleet.playbook("migrate_v2.yml", *CONFIRM, "-e", f"riskmgr_migration_mode={mode}")
    assert_end_state(fleet, before, run, db="unchanged", daemon="untouched", says=[
        r"trigger archive_log", r"table log_archive has 7 columns but 8 values were supplied",
        r"rewrite trigger archive_log .* to name its columns, or drop it", UNTOUCHED])
    assert fleet.logged_versions(HOST) == [1]  # never stopped, never restarted
    assert not fleet.backup_dir(HOST).exists() or not any(fleet.backup_dir(HOST).iterdir())
    # The v1 daemon never died: it goes on writing, and its rows go on being archived.
    newest = fleet.wait_for_rows(HOST, before.max_id)
    assert query(db, "SELECT COUNT(*) FROM log_archive WHERE id > ?", archived)[0][0] >= newest - archived - 1
    # The fix the refusal names: a trigger that names its columns. The next run migrates.
    live_sql(db, NAMED)
    fixed = fleet.playbook("migrate_v2.yml", *CONFIRM, "-e", f"riskmgr_migration_mode={mode}")
    # (the fleet's witness knows only the project's own tables: log_archive is checked here)
    assert fixed.returncode == 0 and fixed.recap[HOST]["failed"] == 0, fixed.output[-4000:]
    assert query(db, "SELECT MAX(version) FROM schema_version WHERE success = 1") == [(2,)]
    assert fleet.alive(HOST) and fleet.logged_versions(HOST)[-1] == 2
    newest = fleet.wait_for_rows(HOST, query(db, "SELECT MAX(id) FROM enforcement_log")[0][0])
    assert query(db, "SELECT COUNT(*) FROM log_archive WHERE id = ?", newest) == [(1,)]


def test_a_trigger_made_on_v2_over_the_new_column_refuses_the_downgrade_before_the_stop(make_fleet):
    """Issue 16, case 5 through rollback_v2.yml: the in-place downgrade would make the trigger again word for
    word and every v1 insert would fail; refused before the stop, naming it, DROP TRIGGER and the restore."""
    from test_faults import v2_with_backups
    fleet = make_fleet()
    v2_with_backups(fleet, v1_backup=True, v2_backup=False)
    db = fleet.db(HOST)
    fleet.wait_for_rows(HOST, 0)
    live_sql(db, """CREATE TABLE slow_actions (log_id INTEGER, ms INTEGER);
CREATE TRIGGER slow_log AFTER INSERT ON enforcement_log WHEN NEW.execution_time_ms > 100
BEGIN INSERT INTO slow_actions (log_id, ms) VALUES (NEW.id, NEW.execution_time_ms); END;
""")
    before = capture(fleet, HOST)
    run = fleet.playbook("rollback_v2.yml", *CONFIRM, "-e", "riskmgr_rollback_method=downgrade")
    assert_end_state(fleet, before, run, db="unchanged", daemon="untouched", says=[
        r"trigger slow_log uses enforcement_log\.execution_time_ms, which the downgrade removes",
        r'DROP TRIGGER "slow_log"', r"riskmgr_rollback_method=restore", UNTOUCHED])


def schema_text(db) -> list:
    return query(db, "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name")


def test_orphans_and_a_foreign_key_mismatch_migrate_rerun_and_downgrade_to_the_exact_v1_text(make_fleet):
    """Issue 16, cases 3 and 4 through the playbooks: problems the database had before never fail the change."""
    fleet = make_fleet()
    db = fleet.db(HOST)
    live_sql(db, """CREATE TABLE log_notes (log_id INTEGER REFERENCES enforcement_log(id), note TEXT);
INSERT INTO log_notes VALUES (999999, 'orphaned long ago');
CREATE TABLE rule_notes (rule_id TEXT REFERENCES enforcement_log(rule_id), note TEXT);
INSERT INTO rule_notes VALUES ('r1', 'into a column that is not unique');
""")
    v1_text = schema_text(db)
    migrated = fleet.playbook("migrate_v2.yml", *CONFIRM)
    assert migrated.returncode == 0 and migrated.recap[HOST]["failed"] == 0, migrated.output[-4000:]
    assert "rows without their parent already" in migrated.output  # said, not refused
    assert query(db, "SELECT MAX(version) FROM schema_version WHERE success = 1") == [(2,)]
    rerun = fleet.playbook("migrate_v2.yml", *CONFIRM)
    assert rerun.returncode == 0 and rerun.recap[HOST]["changed"] == 0, rerun.output[-4000:]
    before = capture(fleet, HOST)
    down = fleet.playbook("rollback_v2.yml", *CONFIRM, "-e", "riskmgr_rollback_method=downgrade")
    assert down.returncode == 0 and down.recap[HOST]["failed"] == 0, down.output[-4000:]
    assert schema_text(db) == v1_text
    assert query(db, "SELECT COUNT(*) FROM log_notes") == [(1,)] and query(db, "SELECT COUNT(*) FROM rule_notes") == [(1,)]
    assert query(db, "SELECT COUNT(*) FROM enforcement_log WHERE id <= ?", before.max_id) == \
        [(before.counts["enforcement_log"],)]
    assert fleet.alive(HOST) and fleet.logged_versions(HOST)[-1] == 1
