"""tools/local_fleet.py's releases: the layout per host, the variables it writes, starts through the
link, a switch of the link by hand, and --release-fault. Real fleets under tmp_path (one small
host each), real daemons, read back through the files, /proc and fresh read-only connections."""
from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import local_fleet
import pytest
import yaml
from fixtures import MIGRATIONS, switch_link, wait_for
from sqlite_migration import migrate_database

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / "tools"
HOST = "local-1"
RELEASE_VARIABLES = {"riskmgr_release_link", "riskmgr_release_v1_path", "riskmgr_release_v2_path",
                     "riskmgr_smoke_command", "riskmgr_smoke_timeout"}


@pytest.fixture
def fleet_root(tmp_path):
    root = tmp_path / "fleet with spaces"
    yield root
    if (root / local_fleet.FLEET_FILE).exists():
        local_fleet.destroy(root)  # no daemon outlives the test


def create(root: Path, **options) -> dict:
    return local_fleet.create(root, 1, 60, None, "local", "demo", None, None, False, 20, **options)


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def host_report(root: Path) -> dict:
    report, = local_fleet.status(root)
    return report


def wait_for_release_line(variables: dict, count: int) -> list[str]:
    """The "riskmgr release N starting" lines of the host's log, once there are `count` of them."""
    def lines():
        text = Path(variables["riskmgr_log_path"]).read_text()
        found = re.findall(r" INFO riskmgr release (\d) starting from ", text)
        return found if len(found) >= count else None
    return wait_for(lines)


def execution_times_after(db: str, after_id: int) -> list:
    with closing(sqlite3.connect(f"{Path(db).as_uri()}?mode=ro", uri=True, timeout=5)) as conn:
        return [row[0] for row in conn.execute("SELECT execution_time_ms FROM enforcement_log WHERE id > ?",
                                               (after_id,))]


def max_id(db: str) -> int:
    with closing(sqlite3.connect(f"{Path(db).as_uri()}?mode=ro", uri=True, timeout=5)) as conn:
        return conn.execute("SELECT MAX(id) FROM enforcement_log").fetchone()[0]


def test_create_lays_out_both_releases_and_the_link_and_writes_their_variables(fleet_root):
    variables = create(fleet_root)["hosts"][HOST]
    host_dir = fleet_root / HOST
    python, db, pidfile = sys.executable, str(host_dir / "data" / "state.db"), str(host_dir / "run" / "riskmgr.pid")
    for release in ("1", "2"):
        release_dir = host_dir / "releases" / release
        assert (release_dir / "RELEASE").read_text() == f"{release}\n"
        assert (release_dir / "bin" / "riskmgr_daemon.py").read_bytes() == (TOOLS / "riskmgr_standin.py").read_bytes()
        assert (release_dir / "scripts" / "smoke_tests.py").read_bytes() == (TOOLS / "riskmgr_smoke.py").read_bytes()
        assert not (release_dir / "FAULTS").exists()
    assert os.readlink(host_dir / "current") == str(host_dir / "releases" / "1")  # absolute, like ansistrano

    assert {key: variables[key] for key in RELEASE_VARIABLES | {"riskmgr_process_match"}} == {
        "riskmgr_release_link": str(host_dir / "current"),
        "riskmgr_release_v1_path": str(host_dir / "releases" / "1"),
        "riskmgr_release_v2_path": str(host_dir / "releases" / "2"),
        "riskmgr_smoke_command": [python, str(host_dir / "current" / "scripts" / "smoke_tests.py"),
                                  "--db", db, "--pidfile", pidfile],
        "riskmgr_smoke_timeout": 30,
        "riskmgr_process_match": str(host_dir / "current" / "bin" / "riskmgr_daemon.py"),
    }
    inventory = yaml.safe_load((fleet_root / local_fleet.INVENTORY_FILE).read_text())
    group = inventory["all"]["children"]["demo"]
    assert group["vars"] == {"riskmgr_canary_watch_seconds": 5, "riskmgr_watch_seconds": 0}
    assert group["hosts"][HOST] == variables == json.loads((fleet_root / "fleet.json").read_text())["hosts"][HOST]

    # The daemon started through the link: its command line names the link, it logged release 1.
    pid = local_fleet.read_pid(pidfile)
    assert local_fleet.is_alive(pid)
    assert variables["riskmgr_process_match"] in cmdline(pid)
    assert wait_for_release_line(variables, 1) == ["1"]
    report = host_report(fleet_root)
    assert (report["release"], report["logged_release"], report["link_target"]) == ("1", "1", str(host_dir / "releases" / "1"))
    # The smoke command as written for the playbook passes on the release the link names.
    smoke = subprocess.run(variables["riskmgr_smoke_command"], capture_output=True, text=True, timeout=30)
    assert smoke.returncode == 0, smoke.stderr
    assert re.fullmatch(r"smoke test passed: release 1, schema v1, \d+ new rows in \d+\.\d s\n", smoke.stdout)


def test_no_releases_keeps_the_layout_from_before_releases(fleet_root):
    variables = create(fleet_root, releases=False)["hosts"][HOST]
    assert sorted(path.name for path in (fleet_root / HOST).iterdir()) == ["data", "logs", "run"]
    assert not RELEASE_VARIABLES & set(variables)
    assert variables["riskmgr_process_match"] == "riskmgr_standin"
    assert variables["riskmgr_start_command"].split()[:2] == [sys.executable, str(TOOLS / "riskmgr_standin.py")]
    assert local_fleet.is_alive(local_fleet.read_pid(variables["riskmgr_pidfile"]))
    report = host_report(fleet_root)
    assert (report["release"], report["link"], report["logged_release"]) == (None, None, None)
    assert not any(line.strip().startswith("release") for line in local_fleet.status_lines([report]))


def test_a_hand_switch_of_the_link_and_a_restart_run_the_other_release(fleet_root):
    variables = create(fleet_root)["hosts"][HOST]
    link, db = Path(variables["riskmgr_release_link"]), variables["riskmgr_db_path"]
    wait_for_release_line(variables, 1)
    local_fleet.stop_daemon(HOST, variables)
    migrate_database(db, MIGRATIONS)  # the schema release 2 needs

    switch_link(link, variables["riskmgr_release_v2_path"])
    pid = local_fleet.start_daemon(HOST, variables)
    assert wait_for_release_line(variables, 2) == ["1", "2"]
    assert variables["riskmgr_process_match"] in cmdline(pid)
    on_v2 = max_id(db)
    wait_for(lambda: len(execution_times_after(db, on_v2)) >= 3)
    assert all(isinstance(ms, int) and ms >= 1 for ms in execution_times_after(db, on_v2))

    # The running daemon keeps the release it started from; status tells the link and the daemon apart.
    switch_link(link, variables["riskmgr_release_v1_path"])
    report = host_report(fleet_root)
    assert (report["release"], report["logged_release"], report["alive"]) == ("1", "2", True)
    line, = [text for text in local_fleet.status_lines([report]) if text.strip().startswith("release")]
    assert line.startswith(f"    release 1: current -> {variables['riskmgr_release_v1_path']}; daemon log: ")
    assert line.endswith(f" INFO riskmgr release 2 starting from {variables['riskmgr_release_v2_path']}")

    local_fleet.stop_daemon(HOST, variables)
    local_fleet.start_daemon(HOST, variables)
    assert wait_for_release_line(variables, 3) == ["1", "2", "1"]
    back_on_1 = max_id(db)
    wait_for(lambda: len(execution_times_after(db, back_on_1)) >= 3)
    assert set(execution_times_after(db, back_on_1)) == {None}  # release 1 does not know the column
    assert host_report(fleet_root)["logged_release"] == "1"


def test_release_fault_writes_the_faults_of_that_hosts_release_2(tmp_path):
    root = tmp_path / "fleet"
    try:
        local_fleet.create(root, 2, 60, None, "local", "demo", None, None, False, 20,
                           release_faults=["local-2=smoke-fails", "local-2=error-after=30"])
        assert (root / "local-2" / "releases" / "2" / "FAULTS").read_text() == "smoke-fails\nerror-after=30\n"
        assert not (root / "local-2" / "releases" / "1" / "FAULTS").exists()
        assert not (root / "local-1" / "releases" / "2" / "FAULTS").exists()
        assert all(host["alive"] for host in local_fleet.status(root))  # release 1 runs: its faults wait for 2
    finally:
        local_fleet.destroy(root)


@pytest.mark.parametrize("args, message", [
    (["--release-fault", "local-3=smoke-fails"],
     "--release-fault local-3=smoke-fails: 'local-3' is not one of this fleet's hosts (local-1, local-2); give HOST=FAULT"),
    (["--release-fault", "local-1=explode"],
     "--release-fault local-1=explode: 'explode' is not a fault; use refuse-start, smoke-fails, "
     "error-after=SECONDS or exit-after=SECONDS"),
    (["--release-fault", "local-1=smoke-fails", "--no-releases"],
     "--release-fault needs the releases (drop --no-releases)"),
])
def test_a_bad_release_fault_is_refused_in_one_line_before_anything_is_made(tmp_path, args, message):
    root = tmp_path / "fleet"
    cli = subprocess.run([sys.executable, TOOLS / "local_fleet.py", "create", "--root", root, "--hosts", "2", *args],
                         capture_output=True, text=True, timeout=60)
    assert (cli.returncode, cli.stderr) == (1, f"local_fleet.py create: {message}\n")
    assert not root.exists()
