"""After rollback_v2.yml (side effect rollback.yml), through systemd: systemd-1 restored its v1
backup (riskmgr_rollback_method: restore), systemd-2 was downgraded in place (downgrade); either
way the link names release 1 again and the daemon runs it."""
import pytest


def test_database_is_v1_again(machine):
    assert machine.version() == 1
    assert machine.v2_objects() == []


def test_the_unit_runs_a_third_daemon_on_v1_never_restarted_by_systemd(machine):
    unit = machine.unit()
    assert (unit["ActiveState"], unit["SubState"], unit["NRestarts"]) == ("active", "running", "0"), unit
    # boot (v1), migrate (v2), rollback (v1)
    assert machine.logged_versions() == [1, 2, 1]
    pids = machine.started_pids()
    assert len(set(pids)) == 3 and int(unit["MainPID"]) == pids[-1]
    assert "Scheduled restart job" not in machine.journal()


def test_the_link_names_release_1_again_which_the_new_daemon_started_from(machine):
    assert machine.linked_release() == 1
    # boot (release 1), migrate (release 2), rollback (release 1), one line per start
    assert machine.logged_releases() == [1, 2, 1]
    process = machine.host.process.get(pid=int(machine.unit()["MainPID"]))
    assert f"{machine.release_link}/bin/riskmgr_daemon.py" in process.args and process.user == "riskmgr"


def test_restore_put_the_v1_backup_back_and_kept_the_v2_file(machine):
    if machine.vars["riskmgr_rollback_method"] != "restore":
        pytest.skip("this machine was downgraded")
    v1_backup, = machine.backups()
    manifest = machine.manifest(v1_backup)
    assert manifest["schema_version"] == 1
    for table, rows in manifest["row_counts"].items():
        if table != "enforcement_log":  # the only table the daemon writes
            assert machine.count(table) == rows, table
    kept, = machine.kept_files("rollback")
    # Rows the daemon wrote on v2 are not in the restored file, but they are not lost.
    assert machine.version(kept) == 2
    assert machine.count("enforcement_log", kept) > manifest["row_counts"]["enforcement_log"]
    assert int(machine.sql("SELECT COUNT(*) FROM enforcement_log WHERE execution_time_ms IS NOT NULL", kept)) > 0


def test_downgrade_kept_every_row_in_place_after_a_backup_of_the_v2_file(machine):
    if machine.vars["riskmgr_rollback_method"] != "downgrade":
        pytest.skip("this machine was restored")
    v1_backup, v2_backup = machine.backups()
    assert (machine.manifest(v1_backup)["schema_version"], machine.manifest(v2_backup)["schema_version"]) == (1, 2)
    assert machine.count("enforcement_log") >= machine.manifest(v2_backup)["row_counts"]["enforcement_log"]
    assert machine.version(v2_backup) == 2 and machine.kept_files("rollback") == []
    stats = machine.stats(f"{machine.backup_dir}/*")
    assert set(stats.values()) == {("riskmgr", 0o600)}, stats


def test_reports(machine):
    reports = machine.reports()
    assert [(r["mode"], r["outcome"]) for r in reports] == [
        ("migrate", "changed"), ("migrate", "unchanged"), ("rollback", "changed")]
    release = reports[-1]["release"]
    assert (release["before_version"], release["version"], release["now"]) == (2, 1, machine.vars["riskmgr_release_v1_path"])
