"""After migrate_v2.yml (converge) and its rerun (idempotence), every stop, start and health
check having gone through systemd: v2, no row lost, private backups, and the unit running a new
daemon, release 2 through the switched link, on v2, smoke-tested, that systemd never had to
restart by itself."""
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


def test_the_unit_runs_a_new_stand_in_that_logged_v2_and_was_never_restarted_by_systemd(machine):
    unit = machine.unit()
    assert (unit["LoadState"], unit["ActiveState"], unit["SubState"]) == ("loaded", "active", "running"), unit
    # Started on v1 at boot, on v2 by converge; the rerun stopped nothing.
    assert machine.logged_versions() == [1, 2]
    first, second = machine.started_pids()
    assert int(unit["MainPID"]) == second != first
    process = machine.host.process.get(pid=second)
    assert f"{machine.release_link}/bin/riskmgr_daemon.py" in process.args and process.user == "riskmgr"
    # Restart=always never fired: the stop held, from the stop to the start.
    assert unit["NRestarts"] == "0"
    journal = machine.journal()
    assert "Scheduled restart job" not in journal
    assert journal.count("Stopping risk-manager.service") == 1


def test_the_link_names_release_2_which_the_new_daemon_started_from(machine):
    assert machine.linked_release() == 2
    # Release 1 at boot (the link as create.yml made it), release 2 since the switch: read from the
    # log file on systemd-1, from the journal on systemd-2.
    assert machine.logged_releases() == [1, 2]


def test_every_row_written_since_the_migration_carries_execution_time_ms(machine):
    """Release 2 fills execution_time_ms; release 1 (or the v1 rows) leaves it NULL. Every row after the
    backup's last one was written by the daemon started on v2, so each must carry it."""
    backup, = machine.backups()
    last_v1_row = int(machine.sql("SELECT MAX(rowid) FROM enforcement_log", backup))
    since, timed = machine.sql("SELECT COUNT(*), COUNT(CASE WHEN execution_time_ms > 0 THEN 1 END) "
                               f"FROM enforcement_log WHERE rowid > {last_v1_row}").split("|")
    assert int(since) > 0 and timed == since, (since, timed)
    assert machine.sql(f"SELECT COUNT(execution_time_ms) FROM enforcement_log WHERE rowid <= {last_v1_row}") == "0"


def test_run_lock_released_and_both_runs_reported(machine):
    assert not machine.host.file(f"{machine.db}.migrate.lock").exists
    reports = machine.reports()
    assert [(r["mode"], r["outcome"]) for r in reports] == [("migrate", "changed"), ("migrate", "unchanged")]
    assert (reports[0]["from_version"], reports[0]["to_version"]) == (1, 2)
    assert 0 < reports[0]["downtime_seconds"] < 10
    release = reports[0]["release"]
    assert (release["before_version"], release["version"], release["now"]) == (1, 2, machine.vars["riskmgr_release_v2_path"])
    assert reports[0]["smoke"]["rc"] == 0 and "smoke test passed: release 2, schema v2" in reports[0]["smoke"]["output"]
    assert reports[1]["release"]["version"] == 2  # the rerun found it on release 2 and left it there
