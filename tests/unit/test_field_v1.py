"""Real v1 databases: other columns everywhere, v2 objects already there, schema_version of another shape.

What we know of v1 is the nine table names and the columns v2's objects use. These databases are
written by hand here, unlike the reference file's schema in every other respect, and each one is
taken through the engine as the playbooks do: facts, migrate, verify, rerun, downgrade, migrate
again. The witness is plain SQL through a fresh connection (fixtures.master_entries, every_row).
"""
from __future__ import annotations

import re
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from fixtures import MIGRATIONS, every_row, master_entries, rows_kept, run_sql, sha256
from sqlite_common import MigrationError
from sqlite_facts import FactsRequest, gather
from sqlite_backups import backup_database
from sqlite_migration import migrate_database
from sqlite_verification import verify_database

V1_TABLES = ["lockouts", "daily_pnl", "contract_cache", "trade_history", "session_state", "positions", "orders",
             "enforcement_log", "reset_schedule"]

# Every table differs from files/migrations/v1/000_baseline.sql in every column v2 does not use:
# other names, types, defaults, keys, constraints, letter case, a WITHOUT ROWID table, a text primary
# key, AUTOINCREMENT, foreign keys, a view, a trigger and an index of its own.
FIELD_V1 = """
CREATE TABLE lockouts (acct TEXT PRIMARY KEY, why TEXT, until_ts INTEGER);
CREATE TABLE daily_pnl (account INTEGER, day TEXT, pnl NUMERIC DEFAULT 0.0, PRIMARY KEY (account, day));
CREATE TABLE contract_cache (id INTEGER PRIMARY KEY, sym VARCHAR(16) NOT NULL UNIQUE, meta BLOB);
CREATE TABLE trade_history (tid INTEGER PRIMARY KEY, acct TEXT REFERENCES lockouts(acct),
                            qty REAL CHECK (qty <> 0), ts TEXT);
CREATE TABLE session_state (k TEXT PRIMARY KEY, v) WITHOUT ROWID;
CREATE TABLE positions (pos_id INTEGER PRIMARY KEY AUTOINCREMENT, acct INT, sym TEXT, qty INT,
                        "Updated_At" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP);
CREATE TABLE Orders (uuid TEXT PRIMARY KEY, "STATE" VARCHAR(12) NOT NULL CHECK ("STATE" IN ('NEW', 'WORKING', 'FILLED')),
                     Account_ID BIGINT NOT NULL, price DECIMAL(12,4));
CREATE TABLE enforcement_log (log_id INTEGER PRIMARY KEY AUTOINCREMENT, success BOOLEAN NOT NULL DEFAULT 0,
                              "timestamp" TEXT NOT NULL, note TEXT, contract INTEGER REFERENCES contract_cache(id));
CREATE TABLE reset_schedule (acct INTEGER, at TEXT);
CREATE TABLE audit (log_id INTEGER, at TEXT);
CREATE TABLE enforcement_notes (log_id INTEGER REFERENCES enforcement_log(log_id), note TEXT);
CREATE VIEW failures AS SELECT log_id, "timestamp" FROM enforcement_log WHERE success = 0;
CREATE TRIGGER enforcement_audit AFTER INSERT ON enforcement_log
BEGIN INSERT INTO audit VALUES (new.log_id, new."timestamp"); END;
CREATE INDEX ix_orders_acct ON Orders(Account_ID);
CREATE INDEX ix_enforcement_note ON enforcement_log(note) WHERE note IS NOT NULL;
"""

FIELD_ROWS = """
INSERT INTO lockouts VALUES ('A1', 'loss', 1700000000), ('A2', NULL, NULL);
INSERT INTO daily_pnl VALUES (1, '2026-11-01', 12.5), (1, '2026-11-02', -3);
INSERT INTO contract_cache VALUES (1, 'MNQ', x'00ff'), (2, 'MES', NULL);
INSERT INTO trade_history VALUES (1, 'A1', 2.0, '2026-11-01T10:00:00Z'), (7, 'A2', -1.5, NULL);
INSERT INTO session_state VALUES ('mode', 'live'), ('epoch', 3);
INSERT INTO positions (acct, sym, qty, "Updated_At") VALUES (1, 'MNQ', 2, '2026-11-01 10:00:00'),
    (2, 'MES', -1, '2026-11-02 11:00:00'), (3, 'MNQ', 5, '2026-11-03 12:00:00');
DELETE FROM positions WHERE pos_id = 3;  -- AUTOINCREMENT remembers 3: the next id is 4, not 3
INSERT INTO Orders VALUES ('o-1', 'WORKING', 1, 21000.25), ('o-2', 'FILLED', 2, 4999.5), ('o-3', 'NEW', 1, NULL);
INSERT INTO enforcement_log (success, "timestamp", note, contract) VALUES (1, '2026-11-01T10:00:00Z', NULL, 1),
    (0, '2026-11-01T10:01:00Z', 'breach', 2), (0, '2026-11-01T10:02:00Z', 'breach', 1);
INSERT INTO enforcement_log (success, "timestamp") VALUES (1, '2026-11-01T10:03:00Z');
DELETE FROM enforcement_log WHERE log_id = 4;  -- the high-water mark (4) is above the last id (3)
INSERT INTO enforcement_notes VALUES (2, 'looked at it');
INSERT INTO reset_schedule VALUES (1, '17:00'), (1, '17:00');
"""


def build(path: Path, extra: str = "") -> Path:
    with closing(sqlite3.connect(path)) as conn:
        conn.executescript(FIELD_V1 + FIELD_ROWS + extra)
        conn.execute("PRAGMA journal_mode=WAL")
    return path


@pytest.fixture
def field_db(tmp_path) -> Path:
    return build(tmp_path / "state.db")


def migrate(path: Path, **kwargs) -> dict:
    return migrate_database(str(path), MIGRATIONS, **kwargs)


def scalar(path: Path, sql: str, *args):
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        return conn.execute(sql, args).fetchone()[0]


def provenance(path: Path) -> dict[str, str]:
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        return {f"{kind} {name}": action for kind, name, action in
                conn.execute("SELECT kind, name, action FROM schema_migration_objects")}


def round_trip(path: Path) -> tuple[dict, dict]:
    """facts -> migrate -> verify -> rerun -> downgrade -> verify v1 -> migrate again; the schema and the
    rows are compared with what they were before, at each step. Returns the two migrate results."""
    entries, rows = master_entries(path), every_row(path)
    facts = gather(str(path), str(MIGRATIONS))
    assert (facts["state"], facts["problems"]) == ("v1", []), facts["problems"]

    check = migrate(path, check_mode=True, want_diff=True)
    assert master_entries(path) == entries and every_row(path) == rows, "check mode changed the database"
    taken = backup_database(str(path), str(path.parent / "backups"))
    result = migrate(path)
    assert [(s["object"], s["action"]) for s in result["steps"]] == \
        [(s["object"], s["action"]) for s in check["steps"]], "check mode promised another plan"
    verified = verify_database(str(path), MIGRATIONS, integrity="integrity", manifest=taken["manifest"],
                               row_count_mode="equal")  # as the offline upgrade does
    assert verified["ok"], verified["failed_checks"]
    assert rows_kept(rows, every_row(path)) == [], "a v1 row changed or went missing"
    assert gather(str(path), str(MIGRATIONS))["state"] == "v2"

    digest = sha256(path)
    again = migrate(path)
    assert not again["changed"] and sha256(path) == digest, "a rerun on v2 changed the file"

    down = migrate(path, target_version=1)
    assert down["direction"] == "down"
    assert master_entries(path) == entries, master_entries(path) ^ entries
    assert every_row(path) == rows
    assert verify_database(str(path), MIGRATIONS, target_version=1)["ok"]

    assert migrate(path)["changed"] and verify_database(str(path), MIGRATIONS)["ok"]
    return result, down


# --- v1 is what v2 depends on, nothing more --------------------------------------------------------

def test_a_v1_unlike_the_reference_in_every_unused_column_migrates_and_comes_back_exactly(field_db):
    facts = gather(str(field_db), str(MIGRATIONS))
    # Everything that differs is reported, nothing of it refused.
    baseline = facts["baseline"]
    assert set(baseline["tables"]) == set(V1_TABLES)
    assert "timestamp" not in baseline["tables"]["enforcement_log"]["missing_from_reference"]
    assert {"rule_id", "action"} <= set(baseline["tables"]["enforcement_log"]["missing_from_reference"])
    assert "log_id" in baseline["tables"]["enforcement_log"]["not_in_reference"]
    assert baseline["views"] == ["failures"] and baseline["triggers"] == ["enforcement_audit"]
    assert set(baseline["other_tables"]) == {"audit", "enforcement_notes"}
    assert set(baseline["other_indexes"]) == {"ix_orders_acct", "ix_enforcement_note"}
    assert facts["schema_warnings"] == []

    result, down = round_trip(field_db)
    assert result["adopted"] == []
    assert down["data_dropped"]["enforcement_log.execution_time_ms"] == 0


def test_the_trigger_and_view_of_the_rebuilt_table_work_after_the_downgrade(field_db):
    migrate(field_db)
    run_sql(field_db, "INSERT INTO enforcement_log (success, \"timestamp\", execution_time_ms) "
                      "VALUES (0, '2026-11-30T00:00:00Z', 17);")  # a v2 daemon's row
    migrate(field_db, target_version=1)
    run_sql(field_db, "INSERT INTO enforcement_log (success, \"timestamp\") VALUES (0, '2026-11-30T00:01:00Z');")
    # the v2 row is kept (without its v2 value), the trigger fires again, the view sees both, the
    # AUTOINCREMENT high-water mark went on from where it was
    assert scalar(field_db, "SELECT COUNT(*) FROM failures WHERE \"timestamp\" >= '2026-11-30'") == 2
    assert scalar(field_db, "SELECT COUNT(*) FROM audit") == 6
    assert scalar(field_db, "SELECT MAX(log_id) FROM enforcement_log") == 6
    assert scalar(field_db, "SELECT seq FROM sqlite_sequence WHERE name = 'enforcement_log'") == 6


@pytest.mark.parametrize("drop, message", [
    ("DROP TABLE reset_schedule;", "v1 table(s) missing: reset_schedule"),
    # a table v2 adds a column to, with no index of v2 on it
    ("DROP TRIGGER enforcement_audit; DROP VIEW failures; DROP TABLE enforcement_notes; "
     "DROP INDEX ix_enforcement_note; DROP TABLE enforcement_log;", "v1 table(s) missing: enforcement_log"),
])
def test_a_missing_v1_table_is_refused_naming_it(tmp_path, drop, message):
    db = build(tmp_path / "state.db", drop)
    digest = sha256(db)
    facts = gather(str(db), str(MIGRATIONS))
    assert facts["state"] == "unknown" and any(message in p for p in facts["problems"])
    with pytest.raises(MigrationError, match=re.escape(message)):
        migrate(db)
    assert sha256(db) == digest


def test_a_missing_column_that_v2_needs_is_refused_naming_table_column_and_user(tmp_path):
    db = tmp_path / "state.db"
    with closing(sqlite3.connect(db)) as conn:
        conn.executescript(FIELD_V1.replace("Account_ID BIGINT NOT NULL", "acct BIGINT NOT NULL")
                           .replace("CREATE INDEX ix_orders_acct ON Orders(Account_ID);", ""))
    digest = sha256(db)
    with pytest.raises(MigrationError) as caught:
        migrate(db)
    assert "v1 table orders has no column account_id, which index idx_orders_state_account of the migration " \
           "needs" in str(caught.value)
    assert str(caught.value).startswith(f"{db}: ") and "nothing was changed" in str(caught.value)
    assert sha256(db) == digest


# --- v2 objects that are already there --------------------------------------------------------------

WITH_V2_OBJECTS = """
ALTER TABLE enforcement_log ADD COLUMN execution_time_ms BIGINT;
UPDATE enforcement_log SET execution_time_ms = log_id * 10;
CREATE INDEX idx_positions_updated ON positions("Updated_At");
CREATE TABLE schema_version (version INTEGER, applied_at TEXT);
INSERT INTO schema_version VALUES (0, 'a try, deleted');
INSERT INTO schema_version VALUES (1, '2025-06-01 09:00:00');
DELETE FROM schema_version WHERE version = 0;  -- version 1 has rowid 2: a rebuild must keep it
"""


def test_compatible_v2_objects_are_adopted_kept_by_the_downgrade_with_their_data(tmp_path):
    db = build(tmp_path / "state.db", WITH_V2_OBJECTS)
    facts = gather(str(db), str(MIGRATIONS))
    assert set(facts["adoptable"]) == {"column enforcement_log.execution_time_ms", "index idx_positions_updated",
                                       "table schema_version"}
    assert scalar(db, "SELECT MAX(version) FROM schema_version") == 1

    result, down = round_trip(db)
    assert set(result["adopted"]) == set(facts["adoptable"])
    # what was there is still there after the downgrade, with its data
    assert scalar(db, "SELECT SUM(execution_time_ms) FROM enforcement_log") == 60
    assert scalar(db, "SELECT sql FROM sqlite_master WHERE name = 'idx_positions_updated'") == \
        'CREATE INDEX idx_positions_updated ON positions("Updated_At")'
    assert "enforcement_log.execution_time_ms" not in down["data_dropped"]


def test_a_two_column_schema_version_is_brought_to_v2_with_its_rows_and_read_as_the_daemon_reads_it(tmp_path):
    db = build(tmp_path / "state.db", WITH_V2_OBJECTS)
    migrate(db)
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        columns = [row[1] for row in conn.execute("PRAGMA table_info(schema_version)")]
        rows = conn.execute("SELECT version, applied_at, success FROM schema_version ORDER BY version").fetchall()
        daemon_reads = conn.execute("SELECT MAX(version) FROM schema_version WHERE success = 1").fetchone()[0]
    assert columns[:2] == ["version", "applied_at"] and {"description", "success", "error_message"} <= set(columns)
    assert rows[0] == (1, "2025-06-01 09:00:00", 1) and rows[1][0] == 2 and daemon_reads == 2
    facts = gather(str(db), str(MIGRATIONS))
    assert (facts["state"], facts["version"]) == ("v2", 2)
    made = provenance(db)
    assert made["table schema_version"] == "adopted" and made["column schema_version.success"] == "created"
    assert made["row schema_version:2"] == "inserted"
    assert scalar(db, "SELECT original_sql FROM schema_migration_objects WHERE kind = 'table' AND "
                      "name = 'schema_version'") == "CREATE TABLE schema_version (version INTEGER, applied_at TEXT)"


def test_a_failed_v2_row_recorded_by_hand_is_replaced_and_put_back_by_the_downgrade(tmp_path):
    db = build(tmp_path / "state.db", WITH_V2_OBJECTS + "INSERT INTO schema_version VALUES (2, 'tried by hand');"
                                                        "ALTER TABLE schema_version ADD COLUMN success BOOLEAN "
                                                        "NOT NULL DEFAULT 1;"
                                                        "UPDATE schema_version SET success = 0 WHERE version = 2;")
    entries, rows = master_entries(db), every_row(db)
    assert gather(str(db), str(MIGRATIONS))["state"] == "v1"  # the daemon reads v1: 2 failed
    migrate(db)
    assert verify_database(str(db), MIGRATIONS)["ok"]
    assert scalar(db, "SELECT COUNT(*) FROM schema_version WHERE version = 2 AND success = 1") == 1
    assert scalar(db, "SELECT COUNT(*) FROM schema_version WHERE applied_at = 'tried by hand'") == 0
    assert provenance(db)["row schema_version:2"] == "replaced"
    assert rows_kept(rows, every_row(db), [t for t in rows if t != "schema_version"]) == []
    migrate(db, target_version=1)
    assert master_entries(db) == entries and every_row(db) == rows  # the failed row is back, rowid and all


@pytest.mark.parametrize("setup, both", [
    ("ALTER TABLE enforcement_log ADD COLUMN execution_time_ms TEXT;",
     ["execution_time_ms TEXT", "(TEXT affinity)", "execution_time_ms INTEGER", "(INTEGER affinity)"]),
    ("CREATE INDEX idx_orders_state_account ON Orders(Account_ID, \"STATE\");",
     ["INDEX idx_orders_state_account ON Orders(account_id, state)",
      "INDEX idx_orders_state_account ON orders(state, account_id)"]),
    ("CREATE INDEX idx_enforcement_log_success ON enforcement_log(success, \"timestamp\") WHERE success = 0;",
     ["a partial index"]),
    ("CREATE TABLE schema_version (id INTEGER PRIMARY KEY, applied_at TEXT);",
     ["lacks primary-key column(s) version", "CREATE TABLE schema_version (id INTEGER PRIMARY KEY",
      "CREATE TABLE schema_version ( version INTEGER PRIMARY KEY"]),
    ("CREATE TABLE schema_version (version TEXT PRIMARY KEY, applied_at TEXT);",
     ["version is TEXT (TEXT), wanted INTEGER (INTEGER)"]),
])
def test_an_incompatible_v2_object_is_refused_naming_both_definitions(tmp_path, setup, both):
    db = build(tmp_path / "state.db", setup)
    digest = sha256(db)
    with pytest.raises(MigrationError) as caught:
        migrate(db)
    message = str(caught.value)
    assert "rename or drop it by hand" in message and "\n" not in message
    for fragment in both:
        assert fragment in message, message
    assert sha256(db) == digest


def test_a_schema_version_with_a_mandatory_column_of_its_own_is_refused(tmp_path):
    db = build(tmp_path / "state.db", "CREATE TABLE schema_version (version INTEGER, checksum TEXT NOT NULL);")
    with pytest.raises(MigrationError, match=r"schema_version has column\(s\) checksum TEXT NOT NULL of its own"):
        migrate(db)


# --- provenance ---------------------------------------------------------------------------------------

def test_provenance_says_what_was_created_and_adopted_and_keeps_the_altered_tables_text(tmp_path):
    db = build(tmp_path / "state.db", "CREATE INDEX idx_enforcement_log_success ON "
                                      "enforcement_log(success, \"timestamp\");")
    original = scalar(db, "SELECT sql FROM sqlite_master WHERE name = 'enforcement_log'")
    migrate(db)
    made = provenance(db)
    assert made["index idx_enforcement_log_success"] == "adopted"
    assert made["column enforcement_log.execution_time_ms"] == "created"
    assert made["table enforcement_log"] == "altered"
    assert {made[f"table {t}"] for t in ("schema_version", "schema_migration_files", "schema_migration_objects")} \
        == {"created"}
    assert scalar(db, "SELECT original_sql FROM schema_migration_objects WHERE kind = 'table' "
                      "AND name = 'enforcement_log'") == original
    migrate(db, target_version=1)
    assert scalar(db, "SELECT COUNT(*) FROM sqlite_master WHERE name = 'idx_enforcement_log_success'") == 1


def test_online_steps_cut_short_are_undone_object_by_object(field_db, tmp_path):
    """Per-step (online) transactions commit each object with its provenance: a failure half way leaves
    a partial database whose downgrade removes exactly what those steps made."""
    import shutil
    entries, rows = master_entries(field_db), every_row(field_db)
    migrations = Path(shutil.copytree(MIGRATIONS, tmp_path / "migrations"))
    (migrations / "v2" / "035_breaks.sql").write_text(
        "-- description: valid SQL that only the data breaks\n"
        "CREATE UNIQUE INDEX idx_one_log_per_success ON enforcement_log(success);\n")
    with pytest.raises(MigrationError, match="committed before it: table schema_migration_objects"):
        migrate_database(str(field_db), migrations, transactions="per_step")
    assert gather(str(field_db), str(migrations))["state"] == "partial"
    migrate_database(str(field_db), migrations, target_version=1)
    assert master_entries(field_db) == entries and every_row(field_db) == rows


def test_a_v2_from_before_provenance_is_downgraded_by_its_ledger(tmp_path):
    """A database an earlier release migrated (its ledger, no provenance table) comes back to v1."""
    db = build(tmp_path / "state.db")
    entries, rows = master_entries(db), every_row(db)
    migrate(db)
    run_sql(db, "DROP TABLE schema_migration_objects;"
                "DELETE FROM schema_migration_files WHERE filename = 'v2/005_schema_migration_objects.sql';")
    assert gather(str(db), str(MIGRATIONS))["state"] == "partial"
    down = migrate(db, target_version=1)
    assert {s["object"] for s in down["steps"] if s["action"] == "rebuild"} == {"table enforcement_log"}
    assert master_entries(db) == entries and every_row(db) == rows


# --- no DROP COLUMN, whatever SQLite runs it -----------------------------------------------------------

def test_the_downgrade_runs_no_drop_column(field_db, monkeypatch):
    import sqlite_common
    import sqlite_migration
    statements: list[str] = []
    real_connect = sqlite_common.connect_writable

    def traced(path, busy_timeout_s=10.0):
        conn = real_connect(path, busy_timeout_s)
        conn.set_trace_callback(statements.append)
        return conn

    monkeypatch.setattr(sqlite_migration, "connect_writable", traced)
    migrate(field_db)
    migrate(field_db, target_version=1)
    assert any("ALTER TABLE" in s and "RENAME TO" in s for s in statements)
    assert not [s for s in statements if "DROP COLUMN" in s.upper()]


# --- a known false integrity report of the SQLite Debian 12 ships -------------------------------------

def test_a_without_rowid_table_with_its_key_last_is_not_refused_as_damaged(tmp_path):
    """SQLite 3.40.0-3.41.0 report "NULL value in t.c" for a NOT NULL column declared before the key of a
    WITHOUT ROWID table. Checked against the table, that report is a note, and the database migrates."""
    db = build(tmp_path / "state.db", "CREATE TABLE app_settings (value TEXT NOT NULL, name TEXT PRIMARY KEY) "
                                      "WITHOUT ROWID; INSERT INTO app_settings VALUES ('on', 'audit');")
    with closing(sqlite3.connect(db)) as conn:
        raw = [row[0] for row in conn.execute("PRAGMA integrity_check")]
    facts = gather(str(db), str(MIGRATIONS), FactsRequest(integrity="integrity"))
    assert facts["integrity"]["ok"] and facts["integrity"]["errors"] == []
    if (3, 40, 0) <= sqlite3.sqlite_version_info <= (3, 41, 0):
        assert raw == ["NULL value in app_settings.value"]
        assert facts["integrity"]["notes"] and "known false report" in facts["integrity"]["notes"][0]
    else:
        assert raw == ["ok"] and facts["integrity"]["notes"] == []
    round_trip(db)
    # a real NULL where the column says NOT NULL is not explained away (written with the check off)
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("PRAGMA ignore_check_constraints = 1")
        conn.execute("PRAGMA writable_schema = 1")
        conn.execute("UPDATE sqlite_master SET sql = replace(sql, 'value TEXT NOT NULL', 'value TEXT') "
                     "WHERE name = 'app_settings'")
        conn.commit()
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("INSERT INTO app_settings VALUES (NULL, 'broken')")
        conn.commit()
        conn.execute("PRAGMA writable_schema = 1")
        conn.execute("UPDATE sqlite_master SET sql = replace(sql, 'value TEXT,', 'value TEXT NOT NULL,') "
                     "WHERE name = 'app_settings'")
        conn.commit()
    damaged = gather(str(db), str(MIGRATIONS), FactsRequest(integrity="integrity"))["integrity"]
    assert not damaged["ok"] and any("app_settings.value" in line for line in damaged["errors"])
