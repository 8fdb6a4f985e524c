"""After migrate_v2.yml (converge) and its rerun (idempotence), every stop, start and health
check having gone through systemd: v2, no row lost, private backups, and the unit running a new
daemon on v2 that systemd never had to restart by itself."""
NEW_INDEXES = {"idx_schema_version_applied", "idx_enforcement_log_success", "idx_positions_updated",
               "idx_orders_state_account"}


def test_schema_is_v2_with_the_new_indexes(machine):
    assert machine.version() == 2
    indexes = set(machine.sql("SELECT group_concat(name, ' ') FROM sqlite_master WHERE type = 'index'").split())
    assert NEW_INDEXES <= indexes, f"missing: {NEW_INDEXES - indexes}"


def test_one_private_backup_owned_by_the_service_user_and_no_row_lost(machine):
    backups = machine.backups()
    assert len(backups) == 1, backups  # the rerun took none
    stats = machine.stats(machine.backup_dir, f"{machine.backup_dir}/*")
    assert stats.pop(machine.backup_dir) == ("riskmgr", 0o700)
    assert stats == {backups[0]: ("riskmgr", 0o600), f"{backups[0]}.manifest.json": ("riskmgr", 0o600)}
    manifest = machine.manifest(backups[0])
    assert manifest["schema_version"] == 1
    # Taken with the daemon stopped: every row committed before the stop is in it, and still here.
    for table, rows in manifest["row_counts"].items():
        now = machine.count(table)
        assert now >= rows if table == "enforcement_log" else now == rows, (table, rows, now)
    assert int(machine.sql("SELECT COUNT(*) FROM enforcement_log WHERE execution_time_ms IS NOT NULL")) > 0


def test_the_unit_runs_a_new_stand_in_that_logged_v2_and_was_never_restarted_by_systemd(machine):
    unit = machine.unit()
    assert (unit["LoadState"], unit["ActiveState"], unit["SubState"]) == ("loaded", "active", "running"), unit
    # Started on v1 at boot, on v2 by converge; the rerun stopped nothing.
    assert machine.logged_versions() == [1, 2]
    first, second = machine.started_pids()
    assert int(unit["MainPID"]) == second != first
    process = machine.host.process.get(pid=second)
    assert "riskmgr_standin.py" in process.args and process.user == "riskmgr"
    # Restart=always never fired: the stop held, from the stop to the start.
    assert unit["NRestarts"] == "0"
    journal = machine.journal()
    assert "Scheduled restart job" not in journal
    assert journal.count("Stopping risk-manager.service") == 1


def test_run_lock_released_and_both_runs_reported(machine):
    assert not machine.host.file(f"{machine.db}.migrate.lock").exists
    reports = machine.reports()
    assert [(r["mode"], r["outcome"]) for r in reports] == [("migrate", "changed"), ("migrate", "unchanged")]
    assert (reports[0]["from_version"], reports[0]["to_version"]) == (1, 2)
    assert 0 < reports[0]["downtime_seconds"] < 10
