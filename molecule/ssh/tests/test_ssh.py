"""testinfra checks after migrate_v2.yml (converge) and its rerun (idempotence), over ssh, as riskmgr.

testinfra connects over the same ssh as Ansible (root with a key) and, because the inventory sets
ansible_become/ansible_become_user, runs every command through `sudo -u riskmgr`: each check also
proves that the service user can read what the playbook left. The witness is the sqlite3 CLI, not
the project's Python. Paths come from molecule.yml's host_vars, which are literal.

Every command costs an ssh round trip plus sudo, so each host's state is read once, by a few
commands, in the `seen` fixture; the tests only look at it.
"""
import json
import os
import pathlib
import posixpath

import pytest

SERVICE_USER = "riskmgr"
NEW_INDEXES = {"idx_schema_version_applied", "idx_enforcement_log_success", "idx_positions_updated",
               "idx_orders_state_account"}
VERSION_LINE = "Database schema version:"
QUERIES = (
    "SELECT MAX(version) FROM schema_version WHERE success = 1;"
    "SELECT group_concat(name, ' ') FROM sqlite_master WHERE type = 'index';"
    "SELECT COUNT(*) FROM enforcement_log WHERE execution_time_ms IS NOT NULL;"
)


@pytest.fixture(scope="module")
def seen(host):
    """What the host looks like, read with as few ssh commands as possible."""
    variables = host.ansible.get_variables()
    db, backup_dir = variables["riskmgr_db_path"], variables["riskmgr_backup_dir"]
    # sudo resets the environment, so SSH_CONNECTION is read by root's login shell itself:
    # the ssh backend's run_ssh sends the command without testinfra's sudo wrapper.
    login = host.backend.ansible_runner.get_host(host.backend.host)
    over_ssh = login.backend.run_ssh("echo $SSH_CONNECTION; id -un")
    assert over_ssh.rc == 0, over_ssh.stderr
    version, indexes, v2_rows = host.check_output("sqlite3 -bail %s %s", db, QUERIES).splitlines()
    # owner, mode and path of the database, the backup directory and everything in it
    stats = host.check_output("stat -c '%%U %%a %%n' -- %s %s %s/*", db, backup_dir, backup_dir)
    files = {path: (user, int(mode, 8)) for user, mode, path in (line.split(" ", 2) for line in stats.splitlines())}
    pid = int(host.file(variables["riskmgr_pidfile"]).content_string.strip())
    return {
        "vars": variables,
        "ssh": over_ssh.stdout.splitlines(),
        "sudo": host.check_output("id -un; echo $SUDO_USER").splitlines(),
        "version": version,
        "indexes": set(indexes.split()),
        "v2_rows": int(v2_rows),
        "files": files,
        "backups": sorted(p for p in files if posixpath.dirname(p) == backup_dir and p.endswith(".db")),
        "manifests": sorted(p for p in files if posixpath.dirname(p) == backup_dir and p.endswith(".manifest.json")),
        "lock_exists": host.file(f"{db}.migrate.lock").exists,  # riskmgr_lock_path's default
        "pid": pid,
        "process": host.process.get(pid=pid),
        "log": host.file(variables["riskmgr_log_path"]).content_string,
    }


def test_commands_run_over_ssh_then_sudo_to_the_service_user(seen):
    ssh_connection, login_user = seen["ssh"]
    server_address, server_port = ssh_connection.split()[2:4]
    assert (server_address, server_port) == (seen["vars"]["ansible_host"], str(seen["vars"]["ansible_port"]))
    assert login_user == "root"
    assert seen["sudo"] == [SERVICE_USER, "root"]  # every other check ran as riskmgr, sudo'd from root


def test_schema_version_is_2_with_the_new_indexes(seen):
    assert seen["version"] == "2"
    assert NEW_INDEXES <= seen["indexes"], f"missing: {NEW_INDEXES - seen['indexes']}"


def test_database_still_belongs_to_the_service_user(seen):
    user, mode = seen["files"][seen["vars"]["riskmgr_db_path"]]
    assert user == SERVICE_USER and mode in (0o600, 0o640), (user, oct(mode))


def test_one_private_backup_with_its_manifest_owned_by_the_service_user(host, seen):
    backups, manifests = seen["backups"], seen["manifests"]
    # One migration, one backup: the idempotence run must not have taken another.
    assert len(backups) == 1 and manifests == [f"{backups[0]}.manifest.json"], (backups, manifests)
    assert seen["files"][seen["vars"]["riskmgr_backup_dir"]] == (SERVICE_USER, 0o700)
    for path in backups + manifests:
        assert seen["files"][path] == (SERVICE_USER, 0o600), path
    assert json.loads(host.file(manifests[0]).content_string)["schema_version"] == 1


def test_daemon_runs_as_the_service_user_and_writes_on_v2(seen):
    process = seen["process"]
    assert "riskmgr_standin" in process.args and process.stat[0] != "Z"
    assert process.user == SERVICE_USER
    versions = [line.split(VERSION_LINE)[1].strip() for line in seen["log"].splitlines() if VERSION_LINE in line]
    # Started on v1 by create, on v2 by converge; the idempotence run stopped nothing.
    assert versions == ["1", "2"], versions
    assert seen["v2_rows"] > 0  # rows with execution_time_ms: written after the migration


def test_run_lock_released(seen):
    assert not seen["lock_exists"]


def test_reports_written_on_the_controller(seen):
    # The riskmgr_report action writes on the controller (no round trip, no become), where
    # this test runs: read the files directly, not over ssh.
    report_dir = pathlib.Path(seen["vars"]["riskmgr_report_dir"])
    name = seen["vars"]["inventory_hostname"]
    runs = sorted(path.name for path in report_dir.iterdir())  # run ids start with a UTC timestamp
    reports = [json.loads((report_dir / run / f"{name}.json").read_text()) for run in runs]
    assert [r["outcome"] for r in reports] == ["changed", "unchanged"], reports
    assert (reports[0]["from_version"], reports[0]["to_version"]) == (1, 2)
    # written by the controller's own user, not by riskmgr through a leaked become
    assert all((report_dir / run / f"{name}.json").stat().st_uid == os.getuid() for run in runs)
