"""testinfra checks after a migrate_v2.yml run whose canary (local-1) refused v2 (sqlite3 CLI).

local-1 must be back on its v1 backup with its daemon up and the migrated file kept as
state.db.kept-failed-v2-*; local-2 and local-3 must never have been stopped (max_fail_percentage 0
ends the rollout after the canary's batch), so they are still v1 under their first daemon, and hold
no run lock.
"""
import posixpath

import pytest

VERSION_LINE = "Database schema version:"


def sql(host, db, query):
    return host.check_output("sqlite3 -bail %s %s", db, query)


def version(host, db):
    has_table = sql(host, db, "SELECT COUNT(*) FROM sqlite_master WHERE name = 'schema_version'")
    return sql(host, db, "SELECT MAX(version) FROM schema_version WHERE success = 1") if has_table == "1" else "1"


def logged_versions(host):
    log = host.file(host.ansible.get_variables()["riskmgr_log_path"]).content_string
    return [line.split(VERSION_LINE)[1].strip() for line in log.splitlines() if VERSION_LINE in line]


def daemon_is_up(host):
    pid = int(host.file(host.ansible.get_variables()["riskmgr_pidfile"]).content_string.strip())
    process = host.process.get(pid=pid)
    return "bin/riskmgr_daemon.py" in process.args and process.stat[0] != "Z"


def failed_v2_files(host):
    db = host.ansible.get_variables()["riskmgr_db_path"]
    directory, name = posixpath.split(db)
    return sorted(posixpath.join(directory, n) for n in host.file(directory).listdir()
                  if n.startswith(f"{name}.kept-failed-v2-") and not n.endswith(("-wal", "-shm")))


def test_every_host_is_v1_with_its_daemon_up(host):
    db = host.ansible.get_variables()["riskmgr_db_path"]
    assert version(host, db) == "1"
    assert sql(host, db, "SELECT COUNT(*) FROM pragma_table_info('enforcement_log') "
                         "WHERE name = 'execution_time_ms'") == "0"
    assert daemon_is_up(host)


def test_canary_was_restored_and_keeps_the_migrated_file(host, releases):
    if host.ansible.get_variables()["inventory_hostname"] != "local-1":
        pytest.skip("local-1 is the canary whose daemon refuses v2")
    # create (v1); the migrated file (v2, refused: the daemon logged it and exited); recovery (v1).
    assert logged_versions(host) == ["1", "2", "1"]
    # Release 2 was the one that refused; release 1 runs again, the link switched back.
    assert releases["logged"] == ["1", "2", "1"] and releases["linked"] == "1", releases
    kept = failed_v2_files(host)
    assert len(kept) == 1, kept
    assert version(host, kept[0]) == "2"


def test_other_hosts_were_never_stopped(host):
    if host.ansible.get_variables()["inventory_hostname"] == "local-1":
        pytest.skip("local-1 is the canary; this is about the hosts after it")
    assert logged_versions(host) == ["1"]  # one start, by create
    assert failed_v2_files(host) == []
    backup_dir = host.ansible.get_variables()["riskmgr_backup_dir"]
    assert not host.file(backup_dir).exists  # no backup either: the host was never reached
    # Nor is its run lock left (the canary's batch released it): the next run has none to break.
    assert not host.file(host.ansible.get_variables()["riskmgr_db_path"] + ".migrate.lock").exists
