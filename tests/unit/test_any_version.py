"""Any version to any version, up and down, with a v3 and a v4 written here (tests/versions, never shipped).

Between them v3 and v4 hold: a column on an existing table (orders.trailing_offset), an index on a
column an earlier version added (v4's on v2's enforcement_log.execution_time_ms, v3's on its own
column), a new table with its index (risk_alerts), a view, a trigger, an optional file (alert_notes)
and an irreversible one (v4's backfill, optional too). Every outcome is read back with plain SQL
(tests/witness.py); the random v1 shapes walk the versions in tests/shape_roundtrip.py --chains.
"""
from __future__ import annotations

import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path

import pytest
from backup_restore import restore_database
from fixtures import every_row, master_entries, run_sql, sha256
from shape_roundtrip import version_chain
from sqlite_backups import backup_database
from sqlite_catalog import load_catalog
from sqlite_common import MigrationError
from sqlite_facts import FactsRequest, gather
from sqlite_migration import migrate_database
from sqlite_verification import verify_database
from targets import checked_targets
from versions_catalog import versions_catalog

ROOT = Path(__file__).resolve().parents[2]
BACKFILL = {"backfill_acknowledged": True}


@pytest.fixture
def catalog_dir(tmp_path) -> Path:
    return versions_catalog(tmp_path)


@pytest.fixture
def climbed(v1_db, catalog_dir):
    """The v1 database taken up one version at a time, with each version's schema text and rows as reached."""
    snapshots = {1: (master_entries(v1_db), every_row(v1_db))}
    with closing(sqlite3.connect(v1_db)) as conn:
        conn.execute("INSERT INTO orders (account_id, contract_id, order_type, side, quantity, state, created_at, "
                     "updated_at) VALUES (9, 'X', 1, 0, 1, 'WORKING', 'now', 'now')")
        conn.commit()
    snapshots[1] = (master_entries(v1_db), every_row(v1_db))
    for version in (2, 3, 4):
        result = migrate_database(str(v1_db), catalog_dir, target_version=version)
        assert (result["changed"], result["from_version"], result["to_version"]) == (True, version - 1, version)
        with closing(sqlite3.connect(v1_db)) as conn:  # rows in the columns and tables each version brought
            if version == 3:
                conn.execute("UPDATE orders SET trailing_offset = 1.5 WHERE account_id = 9")
                conn.execute("INSERT INTO risk_alerts (account_id, rule_id, raised_at) VALUES (9, 'R1', 'now')")
            conn.commit()
        snapshots[version] = (master_entries(v1_db), every_row(v1_db))
    return v1_db, snapshots


def test_a_catalog_knows_the_objects_of_every_version_and_the_irreversible_file(catalog_dir):
    catalog = load_catalog(catalog_dir)
    assert catalog.versions == [1, 2, 3, 4] and catalog.below(4) == 3 and catalog.below(1) == 1
    kinds = {str(s.obj) for f in catalog.files[4] for s in f.statements}
    assert {"view open_risk_alerts", "trigger trg_risk_alerts_acknowledged", "column risk_alerts.acknowledged_at",
            "data v4/030_backfill_acknowledged.sql#1"} <= kinds
    assert [f.name for f in catalog.files[4] if f.irreversible] == ["030_backfill_acknowledged.sql"]


def test_a_data_change_is_refused_unless_its_file_is_marked_irreversible(catalog_dir):
    text = (catalog_dir / "v4" / "030_backfill_acknowledged.sql").read_text()
    (catalog_dir / "v4" / "030_backfill_acknowledged.sql").write_text(text.replace(" irreversible", ""))
    with pytest.raises(MigrationError, match=r"030_backfill_acknowledged.sql: UPDATE changes what the engine cannot "
                                             r"undo .*mark the file `-- riskmgr: irreversible`"):
        load_catalog(catalog_dir)


def test_the_shipped_v2_files_are_unchanged():
    # Existing databases record these checksums in their ledger: a byte changed would refuse them all.
    assert {p.name: sha256(p)[:12] for p in sorted((ROOT / "files" / "migrations" / "v2").glob("*.sql"))} == {
        "005_schema_migration_objects.sql": "3faaa0b081e8", "010_schema_version.sql": "74cd671beb4c",
        "020_enforcement_log_execution_time.sql": "4562d1bd5daa", "030_analytics_indexes.sql": "864acd70f2b1",
        "040_daily_unrealized_pnl.sql": "d02b1fb30b99"}


@pytest.mark.parametrize("start", [1, 2, 3])
def test_from_any_version_to_the_newest_gives_the_newest_schema_text(climbed, catalog_dir, tmp_path, start):
    db, snapshots = climbed
    other = tmp_path / "other.db"
    other.write_bytes(db.read_bytes())
    migrate_database(str(other), catalog_dir, target_version=start)
    assert master_entries(other) == snapshots[start][0]
    result = migrate_database(str(other), catalog_dir)
    assert (result["from_version"], result["to_version"], result["direction"]) == (start, 4, "up")
    assert master_entries(other) == snapshots[4][0]
    assert verify_database(str(other), catalog_dir)["ok"]
    before = other.read_bytes()
    assert not migrate_database(str(other), catalog_dir)["changed"] and other.read_bytes() == before


def test_every_downgrade_gives_that_versions_exact_schema_text_and_every_row(climbed, catalog_dir):
    db, snapshots = climbed
    for target in (3, 2, 1):
        result = migrate_database(str(db), catalog_dir, target_version=target)
        assert (result["direction"], result["to_version"]) == ("down", target)
        assert master_entries(db) == snapshots[target][0], target
        assert every_row(db) == snapshots[target][1], target
        assert verify_database(str(db), catalog_dir, target_version=target)["ok"]
        before = db.read_bytes()
        assert not migrate_database(str(db), catalog_dir, target_version=target)["changed"]
        assert db.read_bytes() == before


def test_four_to_one_in_one_step_gives_v1_exactly(climbed, catalog_dir):
    db, snapshots = climbed
    result = migrate_database(str(db), catalog_dir, target_version=1)
    assert (result["from_version"], result["to_version"]) == (4, 1)
    assert (master_entries(db), every_row(db)) == snapshots[1]
    assert result["data_dropped"]["risk_alerts"] == 1 and result["data_dropped"]["orders.trailing_offset"] >= 1


def test_a_downgrade_across_an_irreversible_file_is_refused_before_any_stop_pointing_to_restore(v1_db, catalog_dir):
    migrate_database(str(v1_db), catalog_dir, options=BACKFILL)
    digest = sha256(v1_db)
    facts = gather(str(v1_db), catalog_dir, FactsRequest(options=BACKFILL, target_version=3, plan=True,
                                                          prove_writes=True))
    assert facts["state"] == "v4" and len(facts["refusals"]) == 1
    assert "v4/030_backfill_acknowledged.sql, marked irreversible" in facts["refusals"][0]
    assert "restore the backup taken at v3 instead (riskmgr_rollback_method=restore)" in facts["refusals"][0]
    for target in (3, 2, 1):
        with pytest.raises(MigrationError, match=f"from v4 to v{target} would cross v4/030_backfill"):
            migrate_database(str(v1_db), catalog_dir, target_version=target, options=BACKFILL)
    assert sha256(v1_db) == digest


def test_restore_to_a_version_takes_the_backup_made_at_that_version(climbed, catalog_dir, tmp_path):
    db, snapshots = climbed
    migrate_database(str(db), catalog_dir, target_version=3)
    backup_database(str(db), str(tmp_path / "backups"))
    migrate_database(str(db), catalog_dir, target_version=4)
    restored = restore_database(str(db), backup_dir=str(tmp_path / "backups"), schema_version=3)
    assert restored["schema_version"] == 3
    assert master_entries(db) == snapshots[3][0] and every_row(db) == snapshots[3][1]


def test_the_state_of_each_version_is_judged_by_its_own_objects(climbed, catalog_dir, tmp_path):
    db, _snapshots = climbed
    only_three = versions_catalog(tmp_path / "three", up_to=3)
    newer = gather(str(db), only_three)
    assert newer["state"] == "newer" and "schema v4, newer than the newest migration (v3)" in newer["problems"][0]
    migrate_database(str(db), catalog_dir, target_version=3)
    assert gather(str(db), catalog_dir)["state"] == "v3"
    # v2's verification is not v3's or v4's business: it passes on a v2 database while v3 and v4 exist.
    migrate_database(str(db), catalog_dir, target_version=2)
    assert verify_database(str(db), catalog_dir, target_version=2)["ok"]
    migrate_database(str(db), catalog_dir, target_version=3)
    run_sql(db, "DROP INDEX idx_risk_alerts_account; DROP TABLE risk_alerts; "
                "CREATE TABLE risk_alerts (alert_id TEXT PRIMARY KEY, account_id TEXT);")
    unknown = gather(str(db), catalog_dir)
    assert unknown["state"] == "unknown"
    assert any(p.startswith("table risk_alerts exists with another definition than v3 intends")
               for p in unknown["problems"]), unknown["problems"]


def test_a_version_cut_short_is_partial_finished_by_a_rerun_or_undone(v1_db, catalog_dir):
    migrate_database(str(v1_db), catalog_dir, target_version=2)
    v2_text = master_entries(v1_db)
    migrate_database(str(v1_db), catalog_dir, target_version=3, transactions="per_step")
    # as a run that died after its objects and before its history rows (online mode commits each object)
    run_sql(v1_db, "DELETE FROM schema_version WHERE version = 3; DELETE FROM schema_migration_files WHERE version = 3;")
    facts = gather(str(v1_db), catalog_dir)
    assert (facts["state"], facts["version"]) == ("partial", 2)
    migrate_database(str(v1_db), catalog_dir, target_version=2)
    assert master_entries(v1_db) == v2_text
    assert gather(str(v1_db), catalog_dir)["state"] == "v2"


@pytest.mark.parametrize("seed", range(20))
def test_random_v1_shapes_walk_up_and_down_the_versions(seed, tmp_path):
    version_chain(f"random:{seed}", tmp_path, rows=20)


@pytest.mark.slow
@pytest.mark.parametrize("target", ["py3.8-sqlite3.31.1", "py3.9-sqlite3.34.0", "py3.13-sqlite3.31.1"])
def test_random_version_walks_on_an_old_sqlite(target, tmp_path):
    interpreter = checked_targets()[target]["interpreter"]
    done = subprocess.run([str(interpreter), str(ROOT / "tests" / "shape_roundtrip.py"), "--chains", "--seeds", "0-9",
                           "--workdir", str(tmp_path)], capture_output=True, text=True, timeout=600, check=False)
    # A failed seed prints its line (FAILED random:N ..., replay: ...), shown here.
    assert done.returncode == 0 and "10 of 10 shapes passed" in done.stdout, done.stdout[-2000:] + done.stderr[-2000:]
    assert done.stdout.splitlines()[0].endswith(f"sqlite {target.rsplit('sqlite', 1)[1]}")


def test_a_run_plans_once_under_its_write_lock_and_check_mode_says_it_shows_a_preview(v1_db, catalog_dir,
                                                                                      monkeypatch):
    import sqlite_migration
    calls = []
    real_plan = sqlite_migration.plan

    def counted(conn, *args):
        calls.append(conn.in_transaction)
        return real_plan(conn, *args)

    monkeypatch.setattr(sqlite_migration, "plan", counted)
    preview = migrate_database(str(v1_db), catalog_dir, target_version=3, check_mode=True)
    assert preview["preview"] is True and preview["changed"] and len(calls) == 1
    calls.clear()
    done = migrate_database(str(v1_db), catalog_dir, target_version=3)
    assert done["preview"] is False and len(calls) == 1
    assert [(s["object"], s["action"]) for s in done["steps"]] == [(s["object"], s["action"]) for s in preview["steps"]]
    facts = gather(str(v1_db), catalog_dir, FactsRequest(target_version=4, plan=True))
    assert facts["plan"]["preview"] is True


def test_a_database_below_the_target_needs_the_change_and_one_at_it_does_not(v1_db, catalog_dir):
    migrate_database(str(v1_db), catalog_dir, target_version=2)
    assert gather(str(v1_db), catalog_dir, FactsRequest(target_version=3))["migration_needed"] is True
    assert gather(str(v1_db), catalog_dir, FactsRequest(target_version=2))["migration_needed"] is False


def test_recovery_after_a_failed_run_goes_back_in_place_to_the_runs_starting_version(climbed, catalog_dir, tmp_path):
    from riskmgr_recover import RecoverSettings, put_database_back, read_state
    from sqlite_catalog import load_catalog
    db, snapshots = climbed
    migrate_database(str(db), catalog_dir, target_version=2)
    migrate_database(str(db), catalog_dir, target_version=3)  # the run that failed after its commit: from v2
    catalog = load_catalog(catalog_dir)
    settings = RecoverSettings(path=str(db), backup_dir=str(tmp_path / "backups"), back_to=2, method="downgrade")
    report = {"errors": []}
    put_database_back(settings, catalog, read_state(str(db), catalog, {}, 5.0), None, report)
    assert report["errors"] == [] and report["method"] == "downgrade" and report["version"] == 2
    assert master_entries(db) == snapshots[2][0]
