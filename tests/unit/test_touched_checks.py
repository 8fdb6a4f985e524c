"""The downtime's integrity check reads what the migration wrote and nothing else (sqlite_touched).

Real v2 files made by the real migration, damaged page by page: a damaged new index fails the
check, a damaged table the change never wrote does not (it is not read: the whole-file check,
run beside it as a witness, does see it). On SQLite 3.31 (no table argument to quick_check) the
same holds through the scans.
"""
from __future__ import annotations

import json
import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path

import pytest
from fixtures import MIGRATIONS, ROOT
from make_state_db import build_v1_db
from sqlite_migration import migrate_database
from sqlite_touched import check_touched, touched_objects
from sqlite_verification import verify_database
from targets import checked_targets

ROWS = 3000  # enough rows for the new indexes to span several pages


@pytest.fixture
def migrated(tmp_path) -> tuple[Path, dict]:
    db = build_v1_db(tmp_path / "state.db", rows=ROWS, journal="delete")
    result = migrate_database(str(db), MIGRATIONS, 2)
    return db, touched_objects(result["steps"])


def leaf_pages(db: Path, name: str) -> list[int]:
    """The b-tree pages of one table or index, leaves first (dbstat), else its root page."""
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        try:
            pages = [r[0] for r in conn.execute("SELECT pageno FROM dbstat WHERE name = ? ORDER BY pagetype = 'leaf' "
                                                "DESC, pageno", (name,))]
        except sqlite3.OperationalError:  # a SQLite built without dbstat
            pages = []
        root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (name,)).fetchone()[0]
        size = conn.execute("PRAGMA page_size").fetchone()[0]
    return [*(pages or [root])], size


def damage_page(db: Path, name: str) -> None:
    """Turn one b-tree page of `name` into garbage: its type byte and cell pointers."""
    pages, size = leaf_pages(db, name)
    page = pages[len(pages) // 2]
    with open(db, "r+b") as handle:
        handle.seek((page - 1) * size)
        handle.write(b"\x55" * 64)


def whole_file_ok(db: Path) -> bool:
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        try:
            return conn.execute("PRAGMA quick_check").fetchall() == [("ok",)]
        except sqlite3.DatabaseError:
            return False


def touched_check(db: Path, touched: dict, level: str = "quick") -> tuple[bool, str]:
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return check_touched(conn, level, touched)


def test_the_touched_objects_are_the_new_tables_and_indexes(migrated):
    _db, touched = migrated
    assert set(touched["indexes"]) == {"idx_schema_version_applied", "idx_enforcement_log_success",
                                       "idx_positions_updated", "idx_orders_state_account"}
    assert set(touched["tables"]) >= {"schema_version", "schema_migration_files"}
    assert "enforcement_log" not in touched["tables"]  # ADD COLUMN rewrites no row


@pytest.mark.parametrize("level", ["quick", "integrity"])
def test_a_sound_migration_passes_and_names_what_was_read(migrated, level):
    db, touched = migrated
    ok, detail = touched_check(db, touched, level)
    assert ok, detail
    assert "index idx_orders_state_account" in detail and "trade_history" not in detail


@pytest.mark.parametrize("index", ["idx_orders_state_account", "idx_enforcement_log_success"])
def test_a_damaged_page_of_a_new_index_fails_the_check(migrated, index):
    db, touched = migrated
    damage_page(db, index)
    ok, detail = touched_check(db, touched)
    assert not ok and index in detail, detail
    # And through verify_database, as the downtime runs it: one failed check, named.
    result = verify_database(str(db), MIGRATIONS, 2, integrity="quick", touched=touched)
    assert not result["ok"] and any(f.startswith("integrity: ") and index in f for f in result["failed_checks"])


def test_a_damaged_page_of_an_untouched_table_is_not_read(migrated):
    db, touched = migrated
    damage_page(db, "trade_history")
    assert not whole_file_ok(db)  # the witness: the damage is there, a whole-file check sees it
    ok, detail = touched_check(db, touched)
    assert ok, detail


def test_a_damaged_new_table_fails_its_quick_check(migrated):
    db, touched = migrated
    damage_page(db, "schema_version")
    ok, detail = touched_check(db, touched)
    assert not ok and "schema_version" in detail, detail


def test_an_index_missing_entries_is_caught_by_its_count(migrated):
    db, touched = migrated
    with closing(sqlite3.connect(db, isolation_level=None)) as conn:
        small = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'idx_schema_version_applied'").fetchone()
        conn.execute("PRAGMA writable_schema = ON")
        # The new index of positions made to read a b-tree of the same shape that holds one entry.
        conn.execute("UPDATE sqlite_master SET rootpage = ? WHERE name = 'idx_positions_updated'", small)
    ok, detail = touched_check(db, touched)
    assert not ok and f"index idx_positions_updated holds 2 entries, table positions {ROWS} rows" in detail, detail


def test_a_partial_index_gets_its_tables_quick_check(migrated):
    db, touched = migrated
    with closing(sqlite3.connect(db, isolation_level=None)) as conn:
        conn.execute("DROP INDEX idx_positions_updated")
        conn.execute("CREATE INDEX idx_positions_updated ON positions(updated_at DESC) WHERE quantity > 0")
    ok, detail = touched_check(db, touched)
    assert ok and "quick_check(positions)" in detail, detail


SUBPROCESS = """
import json, sqlite3, sys, types
ansible = types.ModuleType("ansible"); ansible.__path__ = []
utils = types.ModuleType("ansible.module_utils"); utils.__path__ = [sys.argv[1]]
sys.modules["ansible"], sys.modules["ansible.module_utils"] = ansible, utils
from ansible.module_utils.sqlite_touched import check_touched
conn = sqlite3.connect("file:" + sys.argv[2] + "?mode=ro", uri=True)
print(json.dumps([sqlite3.sqlite_version, *check_touched(conn, "quick", json.loads(sys.argv[3]),
                                                         frozenset(json.loads(sys.argv[4])))]))
"""


def check_on(interpreter: str, db: Path, touched: dict, rebuilt: list[str] = ()) -> tuple[str, bool, str]:
    out = subprocess.run([interpreter, "-c", SUBPROCESS, str(ROOT / "module_utils"), str(db), json.dumps(touched),
                          json.dumps(list(rebuilt))], capture_output=True, text=True, timeout=120, check=True)
    version, ok, detail = json.loads(out.stdout)
    return version, ok, detail


def test_on_sqlite_3_31_new_tables_are_scanned_and_indexes_still_checked(migrated):
    db, touched = migrated
    interpreter = checked_targets()["py3.8-sqlite3.31.1"]["interpreter"]
    version, ok, detail = check_on(interpreter, db, touched)
    assert version == "3.31.1" and ok, detail
    assert "whole file" not in detail and "table schema_version" in detail  # no table argument: scanned
    # A rebuilt table (its rows copied) has no cheaper check there: the whole file, said so.
    version, ok, detail = check_on(interpreter, db, {"tables": ["positions"], "indexes": []}, ["positions"])
    assert ok and "quick_check of the whole file (SQLite 3.31.1 < 3.33" in detail, detail
    damage_page(db, "idx_orders_state_account")
    version, ok, detail = check_on(interpreter, db, touched)
    assert not ok and "idx_orders_state_account" in detail, detail
