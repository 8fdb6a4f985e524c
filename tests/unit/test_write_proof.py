"""The write proof: the daemon's inserts tried on the changed schema before anything commits (issue 16).

Every database is built here, on top of a real v1 file, with the objects applications add: triggers
that copy enforcement_log with SELECT * or insert into it positionally, views over it, foreign keys.
"""
from __future__ import annotations

import sqlite3
from contextlib import closing

import pytest
from fixtures import MIGRATIONS, every_row, master_entries, run_sql, sha256
from sqlite_common import MigrationError
from sqlite_facts import FactsRequest, gather
from sqlite_migration import migrate_database

ARCHIVE_SELECT_STAR = """
CREATE TABLE log_archive (id INTEGER, account_id INTEGER, rule_id TEXT, action TEXT, reason TEXT,
                          success BOOLEAN, timestamp TEXT);
CREATE TRIGGER archive_log AFTER INSERT ON enforcement_log
BEGIN INSERT INTO log_archive SELECT * FROM enforcement_log WHERE id = NEW.id; END;
"""
POSITIONAL_INTO_LOG = """
CREATE TRIGGER order_audit AFTER INSERT ON orders
BEGIN INSERT INTO enforcement_log VALUES (NULL, NEW.account_id, 'order', 'audit', NULL, 1, NEW.created_at); END;
"""
UNION_VIEW = """
CREATE TABLE old_log (id INTEGER, account_id INTEGER, rule_id TEXT, action TEXT, reason TEXT, success BOOLEAN,
                      timestamp TEXT);
CREATE VIEW all_logs AS SELECT * FROM enforcement_log UNION ALL SELECT * FROM old_log;
"""
NAMED_COPY = """
CREATE TABLE log_archive (id INTEGER, account_id INTEGER, rule_id TEXT);
CREATE TRIGGER archive_log AFTER INSERT ON enforcement_log
BEGIN INSERT INTO log_archive (id, account_id, rule_id) VALUES (NEW.id, NEW.account_id, NEW.rule_id); END;
"""


def facts(path, target=None, **extra):
    request = FactsRequest(plan=True, prove_writes=True, target_version=target, **extra)
    return gather(str(path), MIGRATIONS, request)


@pytest.mark.parametrize("sql, culprit", [
    (ARCHIVE_SELECT_STAR, "trigger archive_log"),
    (POSITIONAL_INTO_LOG, "trigger order_audit"),
    (UNION_VIEW, "view all_logs"),
])
def test_preflight_refuses_what_breaks_the_daemons_writes_and_changes_nothing(v1_wal_db, sql, culprit):
    run_sql(v1_wal_db, sql)
    before = sha256(v1_wal_db)
    result = facts(v1_wal_db)
    assert result["state"] == "v1"
    assert result["write_proof"]["ok"] is False
    text = " | ".join(result["refusals"])
    assert culprit in text, text
    assert "execution_time_ms" in text or "UNION" in text or "columns" in text
    assert "drop it" in text
    assert sha256(v1_wal_db) == before
    assert result["write_proof"]["lock_ms"] < 1000


def test_migration_refuses_before_commit_even_without_the_preflight(v1_db):
    run_sql(v1_db, ARCHIVE_SELECT_STAR)
    before = sha256(v1_db)
    with pytest.raises(MigrationError, match="trigger archive_log.*rolled back"):
        migrate_database(str(v1_db), MIGRATIONS)
    assert sha256(v1_db) == before


def test_online_steps_never_commit_the_column_that_breaks_v1_writes(v1_wal_db):
    run_sql(v1_wal_db, ARCHIVE_SELECT_STAR)
    with pytest.raises(MigrationError, match="trigger archive_log"):
        migrate_database(str(v1_wal_db), MIGRATIONS, transactions="per_step")
    with closing(sqlite3.connect(v1_wal_db)) as conn:
        columns = [r[1] for r in conn.execute("PRAGMA table_info(enforcement_log)")]
        assert "execution_time_ms" not in columns
        # the v1 daemon's insert still works
        conn.execute("INSERT INTO enforcement_log (account_id, rule_id, action, success, timestamp) "
                     "VALUES (1, 'r', 'a', 1, 't')")


def test_named_copies_pass_and_the_round_trip_keeps_every_row(v1_db):
    run_sql(v1_db, NAMED_COPY)
    v1_schema, v1_rows = master_entries(v1_db), every_row(v1_db)
    result = facts(v1_db)
    assert result["refusals"] == [], result["refusals"]
    assert "enforcement_log" in result["write_proof"]["tables"]
    migrate_database(str(v1_db), MIGRATIONS)
    migrate_database(str(v1_db), MIGRATIONS, target_version=1)
    assert master_entries(v1_db) == v1_schema
    assert every_row(v1_db) == v1_rows


def test_a_table_that_refuses_every_row_before_the_change_is_a_note_not_a_refusal(v1_db):
    run_sql(v1_db, "CREATE TRIGGER no_more_logs BEFORE INSERT ON enforcement_log "
                   "BEGIN SELECT RAISE(ABORT, 'log is frozen'); END;")
    result = facts(v1_db)
    assert result["refusals"] == []
    assert any("log is frozen" in note for note in result["write_proof"]["notes"])


def test_an_empty_table_gets_a_row_made_from_its_declared_types(v1_db):
    run_sql(v1_db, "DELETE FROM enforcement_log;" + ARCHIVE_SELECT_STAR)
    result = facts(v1_db)
    assert any("trigger archive_log" in r for r in result["refusals"]), result["write_proof"]


def test_foreign_keys_are_enforced_in_the_proof_when_the_application_declares_them(v1_db):
    run_sql(v1_db, """
        CREATE TABLE rules (rule_id TEXT PRIMARY KEY);
        INSERT INTO rules SELECT DISTINCT rule_id FROM enforcement_log;
        CREATE TABLE log_notes (log_id INTEGER REFERENCES enforcement_log(id), note TEXT);
    """)
    result = facts(v1_db)
    assert result["refusals"] == []
    assert result["write_proof"]["foreign_keys"] is True


# --- shapes this code was not written for (tools/v1_shapes.py) -----------------------------------------

SEEDS = range(0, 30)


def build_shape(spec, path, rows=30):
    import random

    from v1_shapes import shape_for
    shape = shape_for(spec)
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        shape.create(conn)
        shape.fill(conn, rows, random.Random(spec))
    return path


def log_table(path):
    with closing(sqlite3.connect(path)) as conn:
        return conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'enforcement_log' "
                            "COLLATE NOCASE").fetchone()[0]


@pytest.mark.parametrize("seed", SEEDS)
def test_generated_shapes_prove_without_a_false_refusal_and_a_select_star_copy_is_caught(seed, tmp_path):
    db = build_shape(f"random:{seed}", tmp_path / "state.db")
    clean = facts(db)
    assert clean["refusals"] == [], clean["refusals"]
    proven = clean["write_proof"]
    log = log_table(db)
    adds = any(s["action"] == "create" and s["object"].lower().startswith(f"column {log.lower()}.")
               for s in clean["plan"]["steps"])
    assert fold_in(log, proven["tables"]) or proven["notes"] or not adds, proven
    run_sql(db, f'CREATE TABLE shape_archive AS SELECT * FROM "{log}" WHERE 0;'
                f'CREATE TRIGGER shape_copy AFTER INSERT ON "{log}" '
                f'BEGIN INSERT INTO shape_archive SELECT * FROM "{log}" WHERE rowid = NEW.rowid; END;')
    before = sha256(db)
    broken = facts(db)
    if not adds:
        assert broken["refusals"] == []  # the shape has the column already: the copy keeps working
        return
    if proven["notes"] and not fold_in(log, proven["tables"]):
        return  # the shape refuses every row the proof can make before the change: nothing to blame
    assert any("trigger shape_copy" in line for line in broken["refusals"]), broken["write_proof"]
    assert sha256(db) == before


@pytest.mark.parametrize("seed", SEEDS[:10])
def test_generated_shapes_with_empty_tables(seed, tmp_path):
    db = build_shape(f"random:{seed}", tmp_path / "state.db", rows=0)
    result = facts(db)
    assert result["refusals"] == [], result["refusals"]


def fold_in(name, names):
    return name.lower() in {n.lower() for n in names}


def test_the_proof_leaves_rows_only_in_the_wal_where_they_are(v1_wal_db):
    """A killed daemon's rows only in the -wal: the proof's connection never checkpoints them into the file."""
    from make_state_db import commit_rows_only_to_wal
    commit_rows_only_to_wal(v1_wal_db, rows=25)
    wal = v1_wal_db.with_name(v1_wal_db.name + "-wal")
    before, wal_before = sha256(v1_wal_db), wal.read_bytes()
    result = facts(v1_wal_db)
    assert result["write_proof"]["ok"] and result["refusals"] == []
    from sqlite_verification import verify_database
    verify_database(str(v1_wal_db), MIGRATIONS, target_version=1)
    assert sha256(v1_wal_db) == before and wal.read_bytes() == wal_before


def test_a_trigger_that_breaks_by_its_text_is_refused_where_the_proof_cannot_try_the_table(v1_db):
    """The backstop: enforcement_log refuses every row the proof makes (a rule of the application), so the
    SELECT * copy is found by its text."""
    run_sql(v1_db, "CREATE TRIGGER approved_only BEFORE INSERT ON enforcement_log WHEN NEW.reason IS NOT 'approved' "
                   "BEGIN SELECT RAISE(ABORT, 'only approved actions are logged'); END;" + ARCHIVE_SELECT_STAR)
    before = sha256(v1_db)
    result = facts(v1_db)
    assert any("only approved" in note for note in result["write_proof"]["notes"])
    text = " | ".join(result["refusals"])
    assert "trigger archive_log copies it with SELECT *" in text and 'DROP TRIGGER "archive_log"' in text, text
    assert sha256(v1_db) == before
    # Without the proof (the preflight's first read), the text alone refuses it too.
    plain = gather(str(v1_db), MIGRATIONS, FactsRequest(plan=True))
    assert any("trigger archive_log" in r for r in plain["refusals"])


def test_two_triggers_that_each_break_the_insert_are_both_named(v1_db):
    run_sql(v1_db, ARCHIVE_SELECT_STAR + """
        CREATE TABLE log_mirror (id INTEGER, account_id INTEGER, rule_id TEXT, action TEXT, reason TEXT,
                                 success BOOLEAN, timestamp TEXT);
        CREATE TRIGGER mirror_log AFTER INSERT ON enforcement_log
        BEGIN INSERT INTO log_mirror SELECT * FROM enforcement_log WHERE id = NEW.id; END;""")
    text = " | ".join(facts(v1_db)["refusals"])
    assert "triggers archive_log, mirror_log" in text, text
