"""sqlite_verify's checks against real SQLite files in every state the field has.

verify_database is called directly on databases built by tests/fixtures.py with the real
baseline and the real files/migrations SQL; each bad state is made by hand, and the test
asserts which checks fail (all of them, not just the first) and what their detail names.
"""
from __future__ import annotations

import json
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from fixtures import MIGRATIONS, V1_ROWS, copy_db, row_counts, run_sql, sha256
from sqlite_common import RiskmgrError, VerificationError
from sqlite_migration import migrate_database
from sqlite_verification import CHECK_NAMES, failure_message, verify_database

V2_INDEXES = ["idx_schema_version_applied", "idx_enforcement_log_success", "idx_positions_updated",
              "idx_orders_state_account"]


def checks_by_name(result: dict) -> dict[str, dict]:
    return {check["name"]: check for check in result["checks"]}


def failed_names(result: dict) -> set[str]:
    return {check["name"] for check in result["checks"] if not check["ok"]}


def write_manifest(db: Path, directory: Path, **changes: int) -> Path:
    """A manifest as sqlite_backup writes it, with the row counts read back from `db` (then changed)."""
    counts = {**row_counts(db), **changes}
    manifest = directory / "state_v1_20261124T120000000000Z.db.manifest.json"
    manifest.write_text(json.dumps({
        "format": 1, "backup": "state_v1_20261124T120000000000Z.db", "sha256": "0" * 64, "size": 1,
        "schema_version": 1, "row_counts": counts, "source_path": str(db), "host": "pytest",
        "created_at": "2026-11-24T12:00:00+00:00"}))
    return manifest


def test_v2_database_passes_every_check_and_is_not_written(v2_db, tmp_path):
    before = sha256(v2_db)
    result = verify_database(str(v2_db), MIGRATIONS, manifest=str(write_manifest(v2_db, tmp_path)),
                             row_count_mode="equal")
    assert [check["name"] for check in result["checks"]] == list(CHECK_NAMES)
    assert failed_names(result) == set() and result["failed_checks"] == []
    assert result["ok"] and not result["changed"]
    assert (result["version"], result["state"], result["target_version"]) == (2, "v2", 2)
    assert result["row_counts"] == row_counts(v2_db)
    checks = checks_by_name(result)
    assert all(name in checks["query_plans"]["detail"] for name in V2_INDEXES)
    assert "4 recorded migration files match" in checks["checksums"]["detail"]
    assert sha256(v2_db) == before


def test_v1_database_passes_for_target_1(v1_db):
    result = verify_database(str(v1_db), MIGRATIONS, target_version=1)
    assert result["ok"] and failed_names(result) == set()
    assert (result["version"], result["state"]) == (1, "v1")


def test_v1_database_for_target_2_reports_every_failed_check(v1_db):
    result = verify_database(str(v1_db), MIGRATIONS, target_version=2)
    assert not result["ok"]
    assert failed_names(result) == {"schema_version", "schema_version_table", "indexes", "definitions", "query_plans"}
    assert [line.split(":", 1)[0] for line in result["failed_checks"]] == \
        [name for name in CHECK_NAMES if name in failed_names(result)]
    checks = checks_by_name(result)
    assert "no schema_version table" in checks["schema_version"]["detail"]
    assert all(name in checks["indexes"]["detail"] for name in V2_INDEXES)
    assert "column enforcement_log.execution_time_ms" in checks["definitions"]["detail"]
    message = failure_message(str(v1_db), result)
    assert message.startswith(f"{v1_db}: verification against v2 failed: schema_version: ")
    assert "\n" not in message and "rollback_v2.yml" in message


@pytest.mark.parametrize("state, expected_state, missing", [
    # v2 objects made by hand (the column, idx_positions_updated), no history: still v1
    ("half_way_db", "v1", ["idx_schema_version_applied", "idx_enforcement_log_success", "idx_orders_state_account"]),
    # the seed's Phase 1 by hand: version rows say 2, but no v2 index except the history's own
    ("seed_phase1_db", "partial",
     ["idx_enforcement_log_success", "idx_positions_updated", "idx_orders_state_account"]),
])
def test_incomplete_databases_fail_definitions_and_indexes(request, state, expected_state, missing):
    db = request.getfixturevalue(state)
    result = verify_database(str(db), MIGRATIONS, target_version=2)
    checks = checks_by_name(result)
    assert {"definitions", "indexes"} <= failed_names(result)
    assert f"state is {expected_state}, expected v2" in checks["definitions"]["detail"]
    assert checks["indexes"]["detail"] == f"missing index(es): {', '.join(missing)}"
    if state == "seed_phase1_db":  # the version row alone would have passed the seed's check 1
        assert checks["schema_version"]["ok"]
        assert "table schema_migration_files" in checks["definitions"]["detail"]
    else:  # what is there by hand is not what a migration made: it is adopted by the next one
        assert "not recorded in the provenance: column enforcement_log.execution_time_ms, index " \
               "idx_positions_updated" in checks["definitions"]["detail"]


def test_manifest_with_more_rows_fails_row_counts_naming_table_and_both_numbers(v2_db, tmp_path):
    manifest = write_manifest(v2_db, tmp_path, orders=V1_ROWS + 5)
    result = verify_database(str(v2_db), MIGRATIONS, manifest=str(manifest))
    assert failed_names(result) == {"row_counts"}
    detail = checks_by_name(result)["row_counts"]["detail"]
    assert f"orders {V1_ROWS} now, manifest {V1_ROWS + 5}" in detail
    assert "positions" not in detail


def test_row_counts_at_least_allows_new_rows_and_equal_does_not(v2_db, tmp_path):
    manifest = write_manifest(v2_db, tmp_path)
    run_sql(v2_db, "INSERT INTO session_state VALUES ('after.backup', '1', 'now');")
    assert verify_database(str(v2_db), MIGRATIONS, manifest=str(manifest))["ok"]
    equal = verify_database(str(v2_db), MIGRATIONS, manifest=str(manifest), row_count_mode="equal")
    assert failed_names(equal) == {"row_counts"}
    assert "session_state" in checks_by_name(equal)["row_counts"]["detail"]


def damaged_copy(v2_db: Path, tmp_path: Path, offset_in_page: int, name: str) -> Path:
    """A copy of v2_db with 32 bytes overwritten inside the middle leaf page of the orders table.

    The page is found with the dbstat virtual table, so the damage hits row data of a known table
    whatever else the schema holds.
    """
    damaged = copy_db(v2_db, tmp_path / name)
    with closing(sqlite3.connect(damaged)) as conn:  # every page in the main file, no -wal
        conn.execute("PRAGMA journal_mode=DELETE")
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        leaves = [row[0] for row in conn.execute(
            "SELECT pageno FROM dbstat WHERE name = 'orders' AND pagetype = 'leaf' ORDER BY pageno")]
    with open(damaged, "r+b") as handle:
        handle.seek(page_size * (leaves[len(leaves) // 2] - 1) + offset_in_page)
        handle.write(b"\xff" * 32)
    return damaged


def test_flipped_bytes_in_a_page_fail_integrity(v2_db, tmp_path):
    damaged = damaged_copy(v2_db, tmp_path, 2000, "cells.db")  # inside the row data, headers intact
    assert verify_database(str(v2_db), MIGRATIONS)["ok"]
    result = verify_database(str(damaged), MIGRATIONS)
    assert failed_names(result) == {"integrity"}
    detail = checks_by_name(result)["integrity"]["detail"]
    assert detail.startswith("integrity_check reported: row ")  # the rows' cells changed under their indexes
    assert "missing from index idx_orders_" in detail and "\n" not in detail
    assert checks_by_name(verify_database(str(damaged), MIGRATIONS, integrity="none"))["integrity"] == \
        {"name": "integrity", "ok": True, "detail": "not run (integrity: none)"}


def test_damaged_page_header_fails_integrity_even_when_the_pragma_stops(v2_db, tmp_path):
    damaged = damaged_copy(v2_db, tmp_path, 0, "header.db")  # the b-tree page header itself
    result = verify_database(str(damaged), MIGRATIONS, integrity="quick")
    assert "integrity" in failed_names(result)
    assert checks_by_name(result)["integrity"]["detail"] == \
        "quick_check could not finish: database disk image is malformed"


def test_missing_index_fails_query_plans_with_the_plan(v2_db):
    run_sql(v2_db, "DROP INDEX idx_positions_updated;")
    result = verify_database(str(v2_db), MIGRATIONS)
    assert failed_names(result) == {"indexes", "definitions", "query_plans"}
    detail = checks_by_name(result)["query_plans"]["detail"]
    assert detail.startswith("idx_positions_updated does not serve SELECT updated_at FROM positions")
    assert "(plan: SCAN positions" in detail
    assert "idx_orders_state_account" not in detail


def test_orphan_row_fails_foreign_keys_only(v2_db):
    run_sql(v2_db, "CREATE TABLE order_notes (order_id INTEGER REFERENCES orders(order_id), note TEXT);"
                   "INSERT INTO order_notes VALUES (999999, 'no such order');")
    result = verify_database(str(v2_db), MIGRATIONS)
    assert failed_names(result) == {"foreign_keys"}
    assert "order_notes rowid 1 -> orders" in checks_by_name(result)["foreign_keys"]["detail"]


def test_edited_migration_file_fails_checksums(v2_db, tmp_path):
    migrations = Path(shutil.copytree(MIGRATIONS, tmp_path / "migrations"))
    edited = migrations / "v2" / "030_analytics_indexes.sql"
    edited.write_text(edited.read_text() + "\n-- edited after it was applied\n")
    result = verify_database(str(v2_db), migrations)
    assert {"checksums", "definitions"} == failed_names(result)
    assert f"migration file {edited} changed after it was applied" in checks_by_name(result)["checksums"]["detail"]
    assert checks_by_name(result)["definitions"]["detail"] == "state is unknown, expected v2; see checksums"


def test_after_downgrade_target_1_passes_and_target_2_fails(v2_db):
    counts = row_counts(v2_db)
    result = verify_database(str(v2_db), MIGRATIONS, target_version=1)
    assert failed_names(result) == {"schema_version", "definitions"}  # v2 objects still there
    assert checks_by_name(result)["definitions"]["detail"] == "state is v2, expected v1"
    migrate_database(str(v2_db), MIGRATIONS, target_version=1)
    assert verify_database(str(v2_db), MIGRATIONS, target_version=1)["ok"]
    assert not verify_database(str(v2_db), MIGRATIONS, target_version=2)["ok"]
    history = ("schema_version", "schema_migration_files", "schema_migration_objects")
    assert row_counts(v2_db) == {t: n for t, n in counts.items() if t not in history}  # no v1 row lost


def test_optional_table_is_checked_only_when_tracked(v2_db):
    result = verify_database(str(v2_db), MIGRATIONS, options={"track_unrealized_pnl": True})
    assert failed_names(result) == {"optional_table", "indexes", "definitions", "query_plans"}
    migrate_database(str(v2_db), MIGRATIONS, options={"track_unrealized_pnl": True})
    assert verify_database(str(v2_db), MIGRATIONS, options={"track_unrealized_pnl": True})["ok"]


def test_verifies_while_a_writer_holds_the_lock(locked_db):
    # WAL: readers never wait for the daemon's write transaction, so this runs at full speed.
    result = verify_database(str(locked_db), MIGRATIONS, target_version=1, busy_timeout_s=0.5)
    assert result["ok"]
    assert result["row_counts"]["session_state"] == row_counts(locked_db)["session_state"]


@pytest.mark.parametrize("state, fragment", [
    ("missing_db", "no such file"),
    ("empty_file", "the file is empty"),
    ("text_file", "not a SQLite 3 database"),
])
def test_unusable_file_stops_verification_and_creates_nothing(request, state, fragment):
    db = request.getfixturevalue(state)
    with pytest.raises(RiskmgrError, match=f"^{db}: {fragment}"):
        verify_database(str(db), MIGRATIONS)
    assert db.exists() == (state != "missing_db")


def test_unreadable_manifest_or_bad_target_stops_verification(v2_db, tmp_path):
    broken = tmp_path / "broken.manifest.json"
    broken.write_text("{not json")
    with pytest.raises(VerificationError, match=f"^{broken}: unreadable manifest"):
        verify_database(str(v2_db), MIGRATIONS, manifest=str(broken))
    broken.write_text(json.dumps({"format": 1, "row_counts": {"orders": "many"}}))
    with pytest.raises(VerificationError, match="has no row_counts mapping"):
        verify_database(str(v2_db), MIGRATIONS, manifest=str(broken))
    with pytest.raises(VerificationError, match=f"^{tmp_path / 'none.json'}: no such manifest"):
        verify_database(str(v2_db), MIGRATIONS, manifest=str(tmp_path / "none.json"))
    with pytest.raises(VerificationError, match=f"^{v2_db}: target_version 3 is not one of the versions"):
        verify_database(str(v2_db), MIGRATIONS, target_version=3)


def test_downgrade_is_held_to_the_v2_backup_only_for_the_tables_v1_has(v2_db, tmp_path):
    manifest = write_manifest(v2_db, tmp_path)  # taken on v2: lists schema_version and the ledger too
    migrate_database(str(v2_db), MIGRATIONS, target_version=1)
    assert verify_database(str(v2_db), MIGRATIONS, target_version=1, manifest=str(manifest))["ok"]
    run_sql(v2_db, "DELETE FROM orders WHERE order_id = 1;")  # a v1 row lost is still caught
    result = verify_database(str(v2_db), MIGRATIONS, target_version=1, manifest=str(manifest))
    assert failed_names(result) == {"row_counts"}
    assert f"orders {V1_ROWS - 1} now, manifest {V1_ROWS}" in checks_by_name(result)["row_counts"]["detail"]
