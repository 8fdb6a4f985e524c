"""Objects made on v2 over what the downgrade removes are refused before any stop, each named with its fix;
verify after a downgrade proves the v1 writes (issue 16, cases 5)."""
from __future__ import annotations

import pytest
from fixtures import MIGRATIONS, every_row, master_entries, run_sql, sha256
from sqlite_common import MigrationError
from sqlite_facts import FactsRequest, gather
from sqlite_migration import migrate_database
from sqlite_verification import verify_database

V2_OBJECTS = {
    "trigger": ("slow_log", """CREATE TABLE slow_actions (log_id INTEGER, ms INTEGER);
        CREATE TRIGGER slow_log AFTER INSERT ON enforcement_log WHEN NEW.execution_time_ms > 100
        BEGIN INSERT INTO slow_actions (log_id, ms) VALUES (NEW.id, NEW.execution_time_ms); END;"""),
    "index": ("idx_log_exec_time", "CREATE INDEX idx_log_exec_time ON enforcement_log(execution_time_ms);"),
    "view": ("slow_view", "CREATE VIEW slow_view AS SELECT id, execution_time_ms FROM enforcement_log "
                          "WHERE execution_time_ms > 100;"),
    "other table's trigger": ("order_timing", """CREATE TRIGGER order_timing AFTER INSERT ON orders
        BEGIN UPDATE enforcement_log SET execution_time_ms = 0 WHERE id = NEW.order_id; END;"""),
}


def downgrade_facts(path):
    return gather(str(path), MIGRATIONS, FactsRequest(plan=True, prove_writes=True, target_version=1))


@pytest.mark.parametrize("kind", list(V2_OBJECTS))
def test_a_v2_object_over_the_removed_column_is_refused_before_the_stop(v1_db, kind):
    name, sql = V2_OBJECTS[kind]
    v1_schema, v1_rows = master_entries(v1_db), every_row(v1_db)
    migrate_database(str(v1_db), MIGRATIONS)
    run_sql(v1_db, sql)
    before = sha256(v1_db)
    facts = downgrade_facts(v1_db)
    text = " | ".join(facts["refusals"])
    assert f" {name} uses enforcement_log.execution_time_ms" in text, text
    assert "DROP " in text and "riskmgr_rollback_method=restore" in text
    assert any(d["name"] == name for d in facts["plan"]["dependents"])
    with pytest.raises(MigrationError, match=name):
        migrate_database(str(v1_db), MIGRATIONS, target_version=1)
    assert sha256(v1_db) == before
    # The fix the message gives: drop it; then the downgrade gives back the exact v1 schema and rows.
    drop = {"index": "INDEX", "view": "VIEW"}.get(kind, "TRIGGER")
    run_sql(v1_db, f"DROP {drop} {name};" + ("DROP TABLE slow_actions;" if kind == "trigger" else ""))
    assert downgrade_facts(v1_db)["refusals"] == []
    migrate_database(str(v1_db), MIGRATIONS, target_version=1)
    assert master_entries(v1_db) == v1_schema
    assert every_row(v1_db) == v1_rows
    assert verify_database(str(v1_db), MIGRATIONS, target_version=1)["ok"]


def test_verify_after_a_downgrade_fails_when_v1_writes_would_fail(v1_db):
    # What a downgrade that made a v2 trigger again would have left: v1 tables, a trigger naming the column.
    run_sql(v1_db, """CREATE TABLE slow_actions (log_id INTEGER, ms INTEGER);
        CREATE TRIGGER slow_log AFTER INSERT ON enforcement_log
        BEGIN INSERT INTO slow_actions (log_id, ms) VALUES (NEW.id, NEW.execution_time_ms); END;""")
    before = sha256(v1_db)
    result = verify_database(str(v1_db), MIGRATIONS, target_version=1)
    assert not result["ok"]
    writes = [c for c in result["checks"] if c["name"] == "writes"][0]
    assert "trigger slow_log" in writes["detail"] and "no such column" in writes["detail"], writes
    assert sha256(v1_db) == before


def test_verify_proves_v1_and_v2_writes_on_a_migrated_file(v1_db):
    migrate_database(str(v1_db), MIGRATIONS)
    result = verify_database(str(v1_db), MIGRATIONS)
    writes = [c for c in result["checks"] if c["name"] == "writes"][0]
    assert writes["ok"] and "enforcement_log" in writes["detail"], writes


def test_upgrade_lists_the_dependents_of_the_altered_table(v1_db):
    run_sql(v1_db, "CREATE VIEW recent_log AS SELECT id, action FROM enforcement_log;")
    facts = gather(str(v1_db), MIGRATIONS, FactsRequest(plan=True))
    names = {(d["kind"], d["name"]) for d in facts["plan"]["dependents"]}
    assert ("view", "recent_log") in names and ("index", "idx_enforcement_rule") in names


def test_a_v2_trigger_inserting_positionally_into_the_log_refuses_the_downgrade_by_the_proof(v1_db):
    """Not found by name (it never names the column): the proof, on the v1 definition made without copying the
    rows, finds that every insert into orders would fail."""
    migrate_database(str(v1_db), MIGRATIONS)
    run_sql(v1_db, """CREATE TRIGGER order_audit AFTER INSERT ON orders BEGIN
        INSERT INTO enforcement_log VALUES (NULL, NEW.account_id, 'order', 'audit', NULL, 1, NEW.created_at, 0); END;""")
    before = sha256(v1_db)
    facts = downgrade_facts(v1_db)
    text = " | ".join(facts["refusals"])
    assert "insert into orders" in text and "trigger order_audit" in text and "7 columns but 8 values" in text, text
    assert facts["write_proof"]["lock_ms"] < 1000
    with pytest.raises(MigrationError, match="order_audit"):
        migrate_database(str(v1_db), MIGRATIONS, target_version=1)
    assert sha256(v1_db) == before
