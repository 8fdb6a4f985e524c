"""testinfra checks after prepare (migrate_v2.yml), converge (rollback_v2.yml, method restore)
and a second rollback (idempotence), read with the sqlite3 CLI while the daemon keeps writing."""
import json
import posixpath

V2_OBJECTS = ["schema_version", "schema_migration_files", "schema_migration_objects", "idx_schema_version_applied",
              "idx_enforcement_log_success", "idx_positions_updated", "idx_orders_state_account"]
VERSION_LINE = "Database schema version:"


def sql(host, db, query):
    return host.check_output("sqlite3 -bail %s %s", db, query)


def v1_manifest(host):
    """The manifest of the one backup migrate took (the v1 file the rollback put back)."""
    directory = host.ansible.get_variables()["riskmgr_backup_dir"]
    manifests = [n for n in host.file(directory).listdir() if n.endswith(".manifest.json")]
    assert len(manifests) == 1, manifests
    manifest = json.loads(host.file(posixpath.join(directory, manifests[0])).content_string)
    assert manifest["schema_version"] == 1
    return manifest


def kept_files(host):
    db = host.ansible.get_variables()["riskmgr_db_path"]
    directory, name = posixpath.split(db)
    return sorted(posixpath.join(directory, n) for n in host.file(directory).listdir()
                  if n.startswith(f"{name}.kept-rollback-") and not n.endswith(("-wal", "-shm")))


def rows_before_restart(host, db):
    """enforcement_log rows stamped before the daemon's last start: those of the restored file.
    Compared to the millisecond: the log has milliseconds, the daemon's rows microseconds."""
    log = host.file(host.ansible.get_variables()["riskmgr_log_path"]).content_string
    started = [line.split()[0] for line in log.splitlines() if VERSION_LINE in line][-1]
    return int(sql(host, db, f"SELECT COUNT(*) FROM enforcement_log "
                             f"WHERE substr(timestamp, 1, 23) < substr('{started}', 1, 23)"))


def test_database_is_v1_again(host):
    db = host.ansible.get_variables()["riskmgr_db_path"]
    names = ", ".join(f"'{n}'" for n in V2_OBJECTS)
    assert sql(host, db, f"SELECT COUNT(*) FROM sqlite_master WHERE name IN ({names})") == "0"
    assert sql(host, db, "SELECT COUNT(*) FROM pragma_table_info('enforcement_log') "
                         "WHERE name = 'execution_time_ms'") == "0"


def test_restored_file_is_the_v1_backup(host):
    db = host.ansible.get_variables()["riskmgr_db_path"]
    manifest = v1_manifest(host)
    for table, count in manifest["row_counts"].items():
        if table != "enforcement_log":  # the only table the stand-in writes
            assert sql(host, db, f'SELECT COUNT(*) FROM "{table}"') == str(count), table
    assert rows_before_restart(host, db) == manifest["row_counts"]["enforcement_log"]


def test_replaced_v2_file_is_kept_with_the_rows_written_on_v2(host):
    kept = kept_files(host)
    assert len(kept) == 1, kept  # the second rollback (idempotence) replaced nothing
    db = host.ansible.get_variables()["riskmgr_db_path"]
    assert sql(host, kept[0], "SELECT MAX(version) FROM schema_version WHERE success = 1") == "2"
    kept_rows = int(sql(host, kept[0], "SELECT COUNT(*) FROM enforcement_log"))
    restored_rows = rows_before_restart(host, db)
    # Rows the daemon wrote on v2 are not in the restored v1 file, but they are not lost.
    assert kept_rows > restored_rows == v1_manifest(host)["row_counts"]["enforcement_log"]
    assert int(sql(host, kept[0], "SELECT COUNT(*) FROM enforcement_log WHERE execution_time_ms IS NOT NULL")) > 0


def test_daemon_runs_release_1_on_v1_after_one_restart_per_change(host, releases):
    hostvars = host.ansible.get_variables()
    pid = int(host.file(hostvars["riskmgr_pidfile"]).content_string.strip())
    process = host.process.get(pid=pid)
    assert releases["daemon"] in process.args and process.stat[0] != "Z"
    # Release 1 on v1, release 2 once migrated, release 1 again with the v1 backup.
    assert releases["linked"] == "1" and releases["logged"] == ["1", "2", "1"], releases
    log = host.file(hostvars["riskmgr_log_path"]).content_string
    versions = [line.split(VERSION_LINE)[1].strip() for line in log.splitlines() if VERSION_LINE in line]
    # create (v1), migrate (v2), rollback (v1); the second rollback stopped nothing.
    assert versions == ["1", "2", "1"], versions


def test_reports_record_migrate_rollback_and_a_no_op(host):
    hostvars = host.ansible.get_variables()
    report_dir = hostvars["riskmgr_report_dir"]
    runs = sorted(host.file(report_dir).listdir())
    reports = [json.loads(host.file(f"{report_dir}/{run}/{hostvars['inventory_hostname']}.json").content_string)
               for run in runs]
    assert [(r["mode"], r["outcome"]) for r in reports] == [
        ("migrate", "changed"), ("rollback", "changed"), ("rollback", "unchanged")], reports
