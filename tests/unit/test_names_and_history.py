"""Names held by another kind of object, and a schema_version of another numbering (issue 16, cases 2 and 7)."""
from __future__ import annotations

import pytest
from fixtures import MIGRATIONS, every_row, master_entries, run_sql, sha256
from sqlite_common import MigrationError
from sqlite_facts import FactsRequest, gather
from sqlite_migration import migrate_database
from sqlite_verification import verify_database


def preflight(path, target=None):
    return gather(str(path), MIGRATIONS, FactsRequest(plan=True, prove_writes=True, target_version=target))


@pytest.mark.parametrize("sql, name, kind", [
    ("CREATE VIEW idx_orders_state_account AS SELECT state, account_id FROM orders;", "idx_orders_state_account", "view"),
    ("CREATE VIEW schema_version AS SELECT 1 AS version;", "schema_version", "view"),
    ("CREATE TABLE idx_positions_updated (x);", "idx_positions_updated", "table"),
    ("CREATE INDEX schema_migration_files ON orders(state);", "schema_migration_files", "index"),
    ("CREATE VIEW Schema_Migration_Objects AS SELECT 1;", "Schema_Migration_Objects", "view"),
])
def test_a_name_held_by_another_kind_of_object_is_refused_in_the_plan(v1_db, sql, name, kind):
    run_sql(v1_db, sql)
    before = sha256(v1_db)
    facts = preflight(v1_db)
    text = " | ".join(facts["refusals"])
    assert f"the database has a {kind} named {name}" in text, text
    assert "rename or drop" in text
    with pytest.raises(MigrationError, match=name):
        migrate_database(str(v1_db), MIGRATIONS, check_mode=True)
    with pytest.raises(MigrationError, match=name):
        migrate_database(str(v1_db), MIGRATIONS)
    assert sha256(v1_db) == before


def test_a_trigger_may_share_a_v2_objects_name(v1_db):
    run_sql(v1_db, "CREATE TRIGGER idx_orders_state_account AFTER INSERT ON orders BEGIN SELECT 1; END;")
    facts = preflight(v1_db)
    assert facts["refusals"] == [], facts["refusals"]
    migrate_database(str(v1_db), MIGRATIONS)
    assert verify_database(str(v1_db), MIGRATIONS)["ok"]


APP_HISTORY = """
CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL, description TEXT);
INSERT INTO schema_version VALUES (1, '2025-01-01 00:00:00', 'app: initial'), (2, '2025-03-01 00:00:00', 'app: fees');
"""


def test_an_applications_own_history_is_judged_by_the_objects_and_kept(v1_db):
    run_sql(v1_db, APP_HISTORY)
    v1_schema, v1_rows = master_entries(v1_db), every_row(v1_db)
    facts = preflight(v1_db)
    assert facts["state"] == "v1", facts["problems"]
    assert facts["refusals"] == []
    assert any("did not write (versions 1, 2" in w for w in facts["schema_warnings"])
    migrate_database(str(v1_db), MIGRATIONS)
    assert verify_database(str(v1_db), MIGRATIONS)["ok"]
    assert migrate_database(str(v1_db), MIGRATIONS)["changed"] is False
    migrate_database(str(v1_db), MIGRATIONS, target_version=1)
    assert master_entries(v1_db) == v1_schema
    assert every_row(v1_db) == v1_rows
    assert preflight(v1_db)["state"] == "v1"


def test_an_application_version_above_ours_is_refused_with_what_was_found(v1_db):
    run_sql(v1_db, APP_HISTORY + "INSERT INTO schema_version VALUES (3, '2025-06-01 00:00:00', 'app: limits');")
    before = sha256(v1_db)
    facts = preflight(v1_db)
    text = " | ".join(facts["refusals"])
    assert "did not write (versions 1, 2, 3" in text and "ALTER TABLE schema_version RENAME" in text, text
    assert "use the matching release" not in text
    assert sha256(v1_db) == before
