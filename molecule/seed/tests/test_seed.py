"""testinfra checks after migrate_v2.yml (converge) and its rerun (idempotence) on hosts laid out as the seed
describes: each daemon stopped once by its own ./scripts/stop_daemon.sh (its mark), back as riskmgr, every
row kept, state.db and its -wal still riskmgr's.

The witness is the sqlite3 CLI and the host's own tools, not the project's Python. Paths come from the
inventory (molecule.yml host_vars, literal).
"""
import json
import posixpath

USER = "riskmgr"


def variables(host):
    return host.ansible.get_variables()


def sql(host, query):
    return host.check_output("sqlite3 -bail %s %s", variables(host)["riskmgr_db_path"], query)


def test_schema_version_is_2(host):
    assert sql(host, "SELECT MAX(version) FROM schema_version WHERE success = 1") == "2"


def test_the_daemon_was_stopped_once_by_its_own_script_as_its_user(host):
    chdir = variables(host)["riskmgr_daemon_chdir"]
    marks = host.file(posixpath.join(chdir, "logs", "stop_daemon.log")).content_string.splitlines()
    # converge stopped it once; idempotence stopped nothing.
    assert len(marks) == 1 and marks[0].endswith(f"stop_daemon.sh as {USER} from {chdir}"), marks


def test_the_daemon_runs_again_as_its_user(host):
    pid = int(host.file(variables(host)["riskmgr_pidfile"]).content_string.strip())
    process = host.process.get(pid=pid)
    assert process.user == USER and "bin/riskmgr_daemon.py" in process.args and process.stat[0] != "Z"


def test_state_db_and_its_wal_are_owned_as_before(host):
    db = variables(host)["riskmgr_db_path"]
    for path in (db, f"{db}-wal"):
        assert (host.file(path).user, host.file(path).group) == (USER, USER), path
    assert host.file(db).mode == 0o640


def test_every_row_is_kept_and_the_backup_is_the_daemon_users(host):
    directory = variables(host)["riskmgr_backup_dir"]
    manifests = [n for n in host.file(directory).listdir() if n.endswith(".manifest.json")]
    assert len(manifests) == 1, manifests
    manifest = json.loads(host.file(posixpath.join(directory, manifests[0])).content_string)
    for table, count in manifest["row_counts"].items():
        assert int(sql(host, f'SELECT COUNT(*) FROM "{table}"')) >= count, table
    # Row for row: every enforcement_log id of the backup (taken with the daemon stopped) is still there.
    backup = posixpath.join(directory, manifests[0][: -len(".manifest.json")])
    count, max_id = host.check_output("sqlite3 -bail -separator ' ' %s %s", backup,
                                      "SELECT COUNT(*), MAX(id) FROM enforcement_log").split()
    assert sql(host, f"SELECT COUNT(*) FROM enforcement_log WHERE id <= {int(max_id)}") == count
    assert host.file(directory).user == USER and host.file(directory).mode == 0o700
