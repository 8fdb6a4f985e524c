"""Hosts laid out as DB-SCHEMA-006 describes, run for real by ansible-playbook (tools/local_fleet.py --seed-layout).

The risk manager in its own directory, ./scripts/start_daemon.sh and ./scripts/stop_daemon.sh run from
it (relative paths only), the daemon run by the non-root user riskmgr, no unit. The stop script leaves
a line in logs/stop_daemon.log each time it runs, as whom and from where: that is how every test
proves the daemon was stopped by its own script. Needs root (the modules switch to riskmgr).
"""
from __future__ import annotations

import hashlib
import json
import os
import pwd
import re
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
from contextlib import closing
from pathlib import Path

import local_fleet
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason="the daemon's user switch needs root")]

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
FLEET_TOOL = ROOT / "tools" / "local_fleet.py"
USER = "riskmgr"
RECAP_RE = re.compile(r"^(?P<host>\S+)\s+:\s+ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+"
                      r"unreachable=(?P<unreachable>\d+)\s+failed=(?P<failed>\d+)", re.MULTILINE)


def daemon_account() -> pwd.struct_passwd:
    """The daemon's user; made here when the machine has none (as molecule's ssh scenario does)."""
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER],
                       check=False, capture_output=True)  # another run may have made it meanwhile
        return pwd.getpwnam(USER)


class SeedFleet:
    """A --seed-layout fleet under a directory riskmgr can reach (pytest's tmp_path is root's, 0700)."""

    def __init__(self, *create_args: str, hosts: int = 2) -> None:
        self.account = daemon_account()
        self.base = Path(tempfile.mkdtemp(prefix="riskmgr-seed-", dir="/tmp"))
        self.base.chmod(0o755)
        self.root = self.base / "fleet"
        self.reports = self.base / "reports"
        subprocess.run([sys.executable, str(FLEET_TOOL), "create", "--root", str(self.root), "--hosts", str(hosts),
                        "--rows", "1000", "--seed-layout", "--user", USER, *create_args], check=True,
                       capture_output=True, text=True)
        self.hosts = local_fleet.read_fleet(self.root)["hosts"]

    def destroy(self) -> None:
        subprocess.run([sys.executable, str(FLEET_TOOL), "destroy", "--root", str(self.root)], check=False,
                       capture_output=True)
        shutil.rmtree(self.base, ignore_errors=True)

    def playbook(self, name: str, *extra: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"}
        env.pop("ANSIBLE_CONFIG", None)
        run = subprocess.run([str(ANSIBLE_PLAYBOOK), "-i", str(self.root / "inventory.yml"), name, "-e",
                              json.dumps({"riskmgr_report_dir": str(self.reports), "riskmgr_confirm": True,
                                          "riskmgr_canary_watch_seconds": 1}), *extra],
                             cwd=ROOT, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300,
                             check=False)
        run.output = run.stdout + run.stderr
        run.recap = {m["host"]: {k: int(v) for k, v in m.groupdict().items() if k != "host"}
                     for m in RECAP_RE.finditer(run.stdout)}
        return run

    def dir(self, host: str) -> Path:
        return Path(self.hosts[host]["riskmgr_daemon_chdir"])

    def db(self, host: str) -> Path:
        return Path(self.hosts[host]["riskmgr_db_path"])

    def pid(self, host: str) -> int | None:
        return local_fleet.read_pid(self.hosts[host]["riskmgr_pidfile"])

    def marks(self, host: str) -> list[str]:
        """The lines the stop script left, one per time it ran."""
        path = self.dir(host) / "logs" / "stop_daemon.log"
        return path.read_text(encoding="utf-8").splitlines() if path.exists() else []

    def snapshot(self, host: str) -> dict:
        """What a run must keep: the daemon's pid, the stop marks, and the rows (count and max id in one read)."""
        with closing(sqlite3.connect(f"{self.db(host).as_uri()}?mode=ro", uri=True, timeout=10)) as conn:
            count, max_id = conn.execute("SELECT COUNT(*), MAX(id) FROM enforcement_log").fetchone()
        return {"pid": self.pid(host), "marks": len(self.marks(host)), "count": count, "max_id": max_id}

    def assert_daemon_back_as_its_user(self, host: str) -> None:
        pid = self.pid(host)
        assert local_fleet.is_alive(pid), f"{host}: daemon down"
        assert os.stat(f"/proc/{pid}").st_uid == self.account.pw_uid, f"{host}: pid {pid} does not run as {USER}"

    def assert_files_owned_as_before(self, host: str) -> None:
        for suffix in ("", "-wal"):
            info = os.stat(f"{self.db(host)}{suffix}")
            assert (info.st_uid, info.st_gid) == (self.account.pw_uid, self.account.pw_gid), f"{host}: state.db{suffix}"
        assert stat.S_IMODE(os.stat(self.db(host)).st_mode) == 0o640

    def assert_stopped_by_its_script(self, host: str, before: dict, times: int = 1) -> None:
        marks = self.marks(host)
        assert len(marks) == before["marks"] + times, marks
        assert all(line.endswith(f"stop_daemon.sh as {USER} from {self.dir(host)}") for line in marks[before["marks"]:]), marks


def ids_kept(db: Path, before: dict) -> bool:
    """Every enforcement_log row committed before the run (ids up to the max read then) is in db."""
    with closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=10)) as conn:
        kept = conn.execute("SELECT COUNT(*) FROM enforcement_log WHERE id <= ?", (before["max_id"],)).fetchone()[0]
    return kept == before["count"]


def version(db: Path) -> int:
    with closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=10)) as conn:
        if not conn.execute("SELECT COUNT(*) FROM sqlite_master WHERE name = 'schema_version'").fetchone()[0]:
            return 1
        return conn.execute("SELECT MAX(version) FROM schema_version WHERE success = 1").fetchone()[0]


def assert_ran(run: subprocess.CompletedProcess, hosts) -> None:
    assert run.returncode == 0, run.output[-6000:]
    assert set(run.recap) == set(hosts) and all(r["failed"] == 0 for r in run.recap.values()), run.recap


@pytest.fixture(scope="module")
def seed():
    fleet = SeedFleet()
    try:
        yield fleet
    finally:
        fleet.destroy()


# --- one fleet, in this order: migrate, rerun, restore, migrate + downgrade, automatic rollback --------

def test_migrate_stops_with_the_stop_script_and_brings_the_daemon_back_as_its_user(seed):
    before = {host: seed.snapshot(host) for host in seed.hosts}
    run = seed.playbook("migrate_v2.yml")
    assert_ran(run, seed.hosts)
    for host in seed.hosts:
        assert version(seed.db(host)) == 2 and ids_kept(seed.db(host), before[host])
        assert seed.pid(host) != before[host]["pid"]
        seed.assert_stopped_by_its_script(host, before[host])
        seed.assert_daemon_back_as_its_user(host)
        seed.assert_files_owned_as_before(host)
        backups = list(Path(seed.hosts[host]["riskmgr_backup_dir"]).iterdir())
        assert backups and all(os.stat(path).st_uid == seed.account.pw_uid for path in backups)


def test_a_rerun_changes_nothing_and_stops_no_daemon(seed):
    before = {host: seed.snapshot(host) for host in seed.hosts}
    run = seed.playbook("migrate_v2.yml")
    assert_ran(run, seed.hosts)
    assert all(recap["changed"] == 0 for recap in run.recap.values()), run.recap
    for host in seed.hosts:
        assert (seed.pid(host), len(seed.marks(host))) == (before[host]["pid"], before[host]["marks"])


def test_rollback_by_restore_stops_with_the_script_and_keeps_the_v2_rows_beside(seed):
    before = {host: seed.snapshot(host) for host in seed.hosts}
    run = seed.playbook("rollback_v2.yml", "-e", "riskmgr_rollback_method=restore")
    assert_ran(run, seed.hosts)
    for host in seed.hosts:
        db = seed.db(host)
        assert version(db) == 1
        kept = [path for path in db.parent.glob(f"{db.name}.kept-rollback-v2-*")
                if not path.name.endswith(("-wal", "-shm"))]
        assert len(kept) == 1 and ids_kept(kept[0], before[host])  # every row: the v2 file is kept beside
        seed.assert_stopped_by_its_script(host, before[host])
        seed.assert_daemon_back_as_its_user(host)
        seed.assert_files_owned_as_before(host)


def test_migrate_again_then_rollback_by_downgrade_keeps_every_row_in_place(seed):
    before = {host: seed.snapshot(host) for host in seed.hosts}
    assert_ran(seed.playbook("migrate_v2.yml"), seed.hosts)
    middle = {host: seed.snapshot(host) for host in seed.hosts}
    run = seed.playbook("rollback_v2.yml", "-e", "riskmgr_rollback_method=downgrade")
    assert_ran(run, seed.hosts)
    for host in seed.hosts:
        assert version(seed.db(host)) == 1 and ids_kept(seed.db(host), middle[host])
        seed.assert_stopped_by_its_script(host, before[host], times=2)
        seed.assert_daemon_back_as_its_user(host)
        seed.assert_files_owned_as_before(host)


def test_a_failed_smoke_test_rolls_the_canary_back_with_its_own_scripts(seed):
    before = {host: seed.snapshot(host) for host in seed.hosts}
    run = seed.playbook("migrate_v2.yml", "-e", json.dumps({"riskmgr_smoke_command": ["/bin/false"]}))
    assert run.returncode != 0
    canary, *others = sorted(seed.hosts)
    assert version(seed.db(canary)) == 1 and ids_kept(seed.db(canary), before[canary])
    seed.assert_stopped_by_its_script(canary, before[canary], times=2)  # the upgrade's stop, then the recovery's
    seed.assert_daemon_back_as_its_user(canary)
    seed.assert_files_owned_as_before(canary)
    for host in others:  # never reached: max_fail_percentage 0 stops the rollout after the canary
        assert (seed.pid(host), len(seed.marks(host)), version(seed.db(host))) == (
            before[host]["pid"], before[host]["marks"], 1)


# --- the preflight refuses before any daemon stops -----------------------------------------------

@pytest.fixture(scope="module")
def quiet_seed():
    """One host whose daemon writes one row only, at its start: its files change only if the run changes them."""
    fleet = SeedFleet("--interval-ms", "600000", hosts=1)
    try:
        yield fleet
    finally:
        fleet.destroy()


def make_unexecutable(host_dir: Path) -> str:
    (host_dir / "scripts" / "start_daemon.sh").chmod(0o700)  # root's alone
    return f"riskmgr may not execute {host_dir}/scripts/start_daemon.sh"


def remove_stop_script(host_dir: Path) -> str:
    (host_dir / "scripts" / "stop_daemon.sh").rename(host_dir / "scripts" / "stop_daemon.sh.away")
    return f"its program ./scripts/stop_daemon.sh (from {host_dir}, as riskmgr) cannot run: " \
           f"{host_dir}/scripts/stop_daemon.sh does not exist"


def close_the_directory(host_dir: Path) -> str:
    host_dir.chmod(0o700)
    return (f"the directory the commands run from, {host_dir} (riskmgr_daemon_chdir), is not usable: riskmgr may not "
            f"enter {host_dir}")


def take_the_pid_directory(host_dir: Path) -> str:
    os.chown(host_dir / "run", 0, 0)
    return f"the directory {host_dir}/run is not writable by riskmgr"


def put_back(host_dir: Path, account: pwd.struct_passwd) -> None:
    for name in ("start_daemon.sh", "stop_daemon.sh"):
        if (host_dir / "scripts" / f"{name}.away").exists():
            (host_dir / "scripts" / f"{name}.away").rename(host_dir / "scripts" / name)
        (host_dir / "scripts" / name).chmod(0o755)
    host_dir.chmod(0o755)
    os.chown(host_dir / "run", account.pw_uid, account.pw_gid)


@pytest.mark.parametrize("spoil", [make_unexecutable, remove_stop_script, close_the_directory,
                                   take_the_pid_directory, None],
                         ids=["start-not-executable", "stop-missing", "chdir-closed", "pid-dir-not-writable",
                              "relative-without-chdir"])
def test_the_preflight_refuses_before_any_daemon_stops(quiet_seed, spoil):
    host = next(iter(quiet_seed.hosts))
    host_dir, db = quiet_seed.dir(host), quiet_seed.db(host)
    before = quiet_seed.snapshot(host)
    digests = {suffix: hashlib.sha256(Path(f"{db}{suffix}").read_bytes()).hexdigest() for suffix in ("", "-wal")}
    try:
        if spoil is None:
            expected, extra = "riskmgr_daemon_chdir is not set", ["-e", json.dumps({"riskmgr_daemon_chdir": ""})]
        else:
            expected, extra = spoil(host_dir), []
        run = quiet_seed.playbook("migrate_v2.yml", *extra)
    finally:
        put_back(host_dir, quiet_seed.account)
    assert run.returncode != 0 and expected in run.output, run.output[-4000:]
    assert "The daemon was not stopped and nothing was changed" in run.output
    assert (quiet_seed.pid(host), len(quiet_seed.marks(host))) == (before["pid"], before["marks"])
    assert {suffix: hashlib.sha256(Path(f"{db}{suffix}").read_bytes()).hexdigest() for suffix in ("", "-wal")} == digests
    assert version(db) == 1


# --- a stop script that fails: the run goes no further on that host, and says what the daemon is doing ---

def failing_stop_script(host_dir: Path, body: str) -> None:
    script = host_dir / "scripts" / "stop_daemon.sh"
    script.rename(host_dir / "scripts" / "stop_daemon.sh.away")
    script.write_text("#!/bin/sh\necho \"$(date -u +%Y-%m-%dT%H:%M:%SZ) stop_daemon.sh as $(id -un) from $(pwd -P)\" "
                      f">> logs/stop_daemon.log\n{body}\n", encoding="utf-8")
    script.chmod(0o755)


def test_a_stop_script_that_fails_leaves_the_daemon_running_and_the_database_untouched(quiet_seed):
    host = next(iter(quiet_seed.hosts))
    host_dir, db = quiet_seed.dir(host), quiet_seed.db(host)
    before = quiet_seed.snapshot(host)
    digests = {suffix: hashlib.sha256(Path(f"{db}{suffix}").read_bytes()).hexdigest() for suffix in ("", "-wal")}
    failing_stop_script(host_dir, "echo cannot deregister from the gateway >&2; exit 3")
    try:
        run = quiet_seed.playbook("migrate_v2.yml")
    finally:
        put_back(host_dir, quiet_seed.account)
    assert run.returncode != 0, run.output[-4000:]
    assert (f"stop_command `./scripts/stop_daemon.sh` (run from {host_dir} as riskmgr) exited with status 3 "
            "(stderr: cannot deregister from the gateway)") in run.output, run.output[-4000:]
    assert f"the daemon (pid {before['pid']}) is still running" in run.output
    quiet_seed.assert_stopped_by_its_script(host, before)  # it ran, once; nothing else did
    assert quiet_seed.pid(host) == before["pid"] and local_fleet.is_alive(before["pid"])
    assert {suffix: hashlib.sha256(Path(f"{db}{suffix}").read_bytes()).hexdigest() for suffix in ("", "-wal")} == digests
    assert not Path(f"{db}.riskmgr-pending").exists()


def test_a_stop_script_that_fails_after_the_daemon_exited_gets_the_daemon_started_again(quiet_seed):
    host = next(iter(quiet_seed.hosts))
    host_dir, db = quiet_seed.dir(host), quiet_seed.db(host)
    before = quiet_seed.snapshot(host)
    failing_stop_script(host_dir, 'kill -TERM "$(cat run/riskmgr.pid)"; echo notify failed >&2; exit 4')
    try:
        run = quiet_seed.playbook("migrate_v2.yml")
    finally:
        put_back(host_dir, quiet_seed.account)
    assert run.returncode != 0, run.output[-4000:]
    assert f"the daemon (pid {before['pid']}) exited anyway and is down" in run.output, run.output[-4000:]
    assert version(db) == 1 and ids_kept(db, before)
    assert quiet_seed.pid(host) != before["pid"]
    quiet_seed.assert_daemon_back_as_its_user(host)
    quiet_seed.assert_files_owned_as_before(host)


# --- the oldest managed node: Python 3.8 (no subprocess user=) with SQLite 3.31.1 ----------------

def test_the_user_switch_and_the_stop_script_on_the_oldest_target():
    from targets import checked_targets  # builds the target wrappers only when this test runs

    fleet = SeedFleet("--python", checked_targets()["py3.8-sqlite3.31.1"]["interpreter"], hosts=1)
    try:
        host = next(iter(fleet.hosts))
        before = fleet.snapshot(host)
        assert_ran(fleet.playbook("migrate_v2.yml"), fleet.hosts)
        assert_ran(fleet.playbook("rollback_v2.yml", "-e", "riskmgr_rollback_method=downgrade"), fleet.hosts)
        assert version(fleet.db(host)) == 1 and ids_kept(fleet.db(host), before)
        fleet.assert_stopped_by_its_script(host, before, times=2)
        fleet.assert_daemon_back_as_its_user(host)
        fleet.assert_files_owned_as_before(host)
    finally:
        fleet.destroy()
