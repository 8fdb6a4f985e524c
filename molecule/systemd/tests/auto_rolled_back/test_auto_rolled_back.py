"""After migrate_v2.yml against units whose daemon refuses v2 (side effect auto_rollback.yml):
each machine was put back on its v1 backup by the offline unit itself, its link back on release 1,
and systemd runs release 1 on v1 again; the refused start of release 2 was seen in the log file
(systemd-1) or the journal (systemd-2)."""
import re

REFUSAL = "ERROR schema version 2 is not supported by this build; refusing to run"


def test_database_is_the_v1_backup_again_and_the_refused_v2_file_is_kept(machine):
    assert machine.version() == 1 and machine.v2_objects() == []
    newest = machine.backups()[-1]  # the backup this run took, with the daemon stopped
    manifest = machine.manifest(newest)
    assert manifest["schema_version"] == 1
    for table, rows in manifest["row_counts"].items():
        now = machine.count(table)
        assert now >= rows if table == "enforcement_log" else now == rows, (table, rows, now)
    kept, = machine.kept_files("failed")
    # The migrated file, as the refusing daemon left it: v2, with exactly the backup's rows.
    assert machine.version(kept) == 2
    assert machine.count("enforcement_log", kept) == manifest["row_counts"]["enforcement_log"]
    stats = machine.stats(machine.backup_dir, f"{machine.backup_dir}/*")
    assert stats.pop(machine.backup_dir) == ("riskmgr", 0o700)
    assert set(stats.values()) == {("riskmgr", 0o600)}, stats


def test_the_unit_runs_the_daemon_on_v1_after_the_refusal(machine):
    unit = machine.unit()
    assert (unit["ActiveState"], unit["SubState"]) == ("active", "running"), unit
    versions = machine.logged_versions()
    # boot, migrate, rollback; then the refused v2 start (more than one if Restart=always started it
    # again before the unit was stopped) and the start on v1.
    assert versions[:3] == [1, 2, 1] and re.fullmatch(r"2+1", "".join(map(str, versions[3:]))), versions
    # Each further refusal was a restart by systemd (NRestarts was 0 before: tests/rolled_back); a
    # restart stopped before its daemon logged anything counts there too. No restart after that.
    assert int(unit["NRestarts"]) >= versions[3:].count(2) - 1
    assert any(REFUSAL in line for line in machine.daemon_lines())
    assert int(unit["MainPID"]) == machine.started_pids()[-1]
    assert "risk-manager.service: Main process exited, code=exited, status=3/NOTIMPLEMENTED" in machine.journal()


def test_release_2_refused_and_release_1_runs_again_through_the_link(machine):
    assert machine.linked_release() == 1
    releases = "".join(map(str, machine.logged_releases()))
    # boot, migrate, rollback; then release 2 once per refused start, and release 1 again
    assert re.fullmatch(r"1212+1", releases), releases
    # Each start logs its release first: every refusal of v2 came from a daemon started as release 2.
    refused_by, started_as = [], None
    for line in machine.daemon_lines():
        if " INFO riskmgr release " in line:
            started_as = line
        elif REFUSAL in line:
            refused_by.append(started_as)
    assert refused_by and all(" INFO riskmgr release 2 starting from " in line for line in refused_by), refused_by
    process = machine.host.process.get(pid=int(machine.unit()["MainPID"]))
    assert f"{machine.release_link}/bin/riskmgr_daemon.py" in process.args and process.user == "riskmgr"


def test_reported_as_failed(machine):
    report = machine.reports()[-1]
    assert (report["mode"], report["outcome"]) == ("migrate", "failed")
    assert (report["release"]["version"], report["release"]["now"]) == (1, machine.vars["riskmgr_release_v1_path"])
