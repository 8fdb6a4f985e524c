"""testinfra checks of the end state, after migrate_v2.yml (converge), its rerun (idempotence) and side_effect.yml
(rollback by restore, migrate, rollback by downgrade, a failed smoke test that rolls the canary back), on hosts
laid out as the seed describes. Every stop was made by the host's own ./scripts/stop_daemon.sh (its marks), the
daemon runs again as riskmgr, every row is kept, and state.db and its -wal are still riskmgr's.

The witness is the sqlite3 CLI and the host's own tools, not the project's Python. Paths come from the
inventory (molecule.yml host_vars, literal).
"""
import posixpath

USER = "riskmgr"
# Stops since create: converge 1, idempotence 0, restore 1, migrate 1, downgrade 1; the failed migrate
# stopped the canary twice (the upgrade, then the recovery) and never reached seed-2.
STOPS = {"seed-1": 6, "seed-2": 4}


def variables(host):
    return host.ansible.get_variables()


def sql(host, query, db=None):
    return host.check_output("sqlite3 -bail %s %s", db or variables(host)["riskmgr_db_path"], query)


def test_schema_is_back_on_v1(host):
    assert sql(host, "SELECT COUNT(*) FROM pragma_table_info('enforcement_log') WHERE name = 'execution_time_ms'") == "0"
    assert sql(host, "SELECT COUNT(*) FROM sqlite_master WHERE name = 'schema_version'") == "0"


def test_every_stop_was_made_by_the_hosts_own_script_as_its_user(host):
    chdir = variables(host)["riskmgr_daemon_chdir"]
    marks = host.file(posixpath.join(chdir, "logs", "stop_daemon.log")).content_string.splitlines()
    assert len(marks) == STOPS[variables(host)["inventory_hostname"]], marks
    assert all(mark.endswith(f"stop_daemon.sh as {USER} from {chdir}") for mark in marks), marks


def test_the_daemon_runs_again_as_its_user(host):
    pid = int(host.file(variables(host)["riskmgr_pidfile"]).content_string.strip())
    process = host.process.get(pid=pid)
    assert process.user == USER and "bin/riskmgr_daemon.py" in process.args and process.stat[0] != "Z"


def test_state_db_and_its_wal_are_owned_as_before(host):
    db = variables(host)["riskmgr_db_path"]
    for path in (db, f"{db}-wal"):
        assert (host.file(path).user, host.file(path).group) == (USER, USER), path
    assert host.file(db).mode == 0o640


def test_every_row_of_the_newest_backup_is_still_there_and_backups_are_the_daemon_users(host):
    directory = variables(host)["riskmgr_backup_dir"]
    backups = sorted(name for name in host.file(directory).listdir() if name.endswith(".db"))
    assert backups and host.file(directory).user == USER and host.file(directory).mode == 0o700
    assert all(host.file(posixpath.join(directory, name)).user == USER for name in backups)
    # The newest backup was taken with the daemon stopped, just before the last change: a restore would have lost
    # rows written since, a downgrade in place (rollback or recovery) none.
    newest = posixpath.join(directory, backups[-1])
    count, max_id = sql(host, "SELECT COUNT(*) || ' ' || MAX(id) FROM enforcement_log", newest).split()
    assert sql(host, f"SELECT COUNT(*) FROM enforcement_log WHERE id <= {int(max_id)}") == count
