"""testinfra checks after migrate_v2.yml (converge) and its rerun (idempotence) on the local fleet.

The witness is the sqlite3 CLI, not the project's Python: it must not share code with the suspect.
Paths come from the inventory (molecule.yml host_vars); the daemon keeps writing meanwhile.
"""
import json
import posixpath

NEW_INDEXES = {"idx_schema_version_applied", "idx_enforcement_log_success", "idx_positions_updated",
               "idx_orders_state_account"}
VERSION_LINE = "Database schema version:"


def sql(host, query):
    db = host.ansible.get_variables()["riskmgr_db_path"]
    return host.check_output("sqlite3 -bail %s %s", db, query)


def backups(host):
    """(backup files, manifest files) in the host's backup directory."""
    directory = host.ansible.get_variables()["riskmgr_backup_dir"]
    names = host.file(directory).listdir()
    files = sorted(posixpath.join(directory, n) for n in names if n.endswith(".db"))
    manifests = sorted(posixpath.join(directory, n) for n in names if n.endswith(".manifest.json"))
    return files, manifests


def test_schema_version_is_2(host):
    assert sql(host, "SELECT MAX(version) FROM schema_version WHERE success = 1") == "2"


def test_new_indexes_and_column_exist(host):
    indexes = set(sql(host, "SELECT name FROM sqlite_master WHERE type = 'index'").splitlines())
    assert NEW_INDEXES <= indexes, f"missing: {NEW_INDEXES - indexes}"
    assert sql(host, "SELECT COUNT(*) FROM pragma_table_info('enforcement_log') "
                     "WHERE name = 'execution_time_ms'") == "1"


def test_one_private_backup_with_its_manifest(host):
    directory = host.ansible.get_variables()["riskmgr_backup_dir"]
    files, manifests = backups(host)
    # One migration, one backup: the idempotence run must not have taken another.
    assert len(files) == 1 and manifests == [f"{files[0]}.manifest.json"], (files, manifests)
    assert host.file(directory).mode == 0o700
    assert host.file(files[0]).mode == 0o600
    assert host.file(manifests[0]).mode == 0o600
    assert json.loads(host.file(manifests[0]).content_string)["schema_version"] == 1


def test_no_row_lost_and_the_daemon_writes_on_v2(host):
    _, manifests = backups(host)
    manifest = json.loads(host.file(manifests[0]).content_string)
    for table, count in manifest["row_counts"].items():
        now = int(sql(host, f'SELECT COUNT(*) FROM "{table}"'))
        assert now >= count, f"{table}: {now} rows now, {count} in the backup"
    # The daemon kept writing after the migration: rows the v1 backup cannot have.
    assert int(sql(host, "SELECT COUNT(*) FROM enforcement_log")) > manifest["row_counts"]["enforcement_log"]
    assert int(sql(host, "SELECT COUNT(*) FROM enforcement_log WHERE execution_time_ms IS NOT NULL")) > 0


def test_daemon_runs_release_2_on_v2_and_was_started_once_since_create(host, releases):
    hostvars = host.ansible.get_variables()
    pid = int(host.file(hostvars["riskmgr_pidfile"]).content_string.strip())
    process = host.process.get(pid=pid)
    assert releases["daemon"] in process.args and process.stat[0] != "Z"
    # The link was switched to release 2 with the schema; release 1 ran before, release 2 since.
    assert releases["linked"] == "2" and releases["logged"] == ["1", "2"], releases
    log = host.file(hostvars["riskmgr_log_path"]).content_string
    versions = [line.split(VERSION_LINE)[1].strip() for line in log.splitlines() if VERSION_LINE in line]
    # Started on v1 by create, on v2 by converge; the idempotence run stopped nothing.
    assert versions == ["1", "2"], versions


def test_reports_say_changed_then_unchanged(host):
    hostvars = host.ansible.get_variables()
    name = hostvars["inventory_hostname"]
    report_dir = hostvars["riskmgr_report_dir"]
    runs = sorted(host.file(report_dir).listdir())  # run ids start with a UTC timestamp
    reports = [json.loads(host.file(f"{report_dir}/{run}/{name}.json").content_string) for run in runs]
    assert [r["outcome"] for r in reports] == ["changed", "unchanged"], reports
    first = reports[0]
    assert (first["from_version"], first["to_version"]) == (1, 2)
    assert isinstance(first["downtime_seconds"], (int, float)) and first["downtime_seconds"] > 0
