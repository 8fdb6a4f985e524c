"""The modules and the playbooks on the managed nodes ansible-core 2.19 supports: Python 3.8-3.13,
and the SQLite of old servers (3.31.1 as on Ubuntu 20.04, 3.34 as on Debian 11 and RHEL 9).

Each target is an interpreter wrapper made by tools/target_pythons.py (tests/targets.py), used as
`ansible_python_interpreter`, so that every module process really runs that Python with that
SQLite library. The outcome is read by a witness that shares no code with the modules: this
machine's Python and SQLite (tests/fixtures.py, the helpers of test_playbooks.py), on copies the
sqlite3 CLI took after each step (module level) or on the live files (playbook level).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import target_pythons
from ansible_run import run_playbook
from fixtures import V1_ROWS, row_counts
from make_state_db import build_v1_db
from targets import TARGET_PARAMS, checked_targets, target_params
from test_playbooks import HISTORY_TABLES, V2_OBJECTS, Fleet, assert_ran, schema_version, v2_objects_present

pytestmark = pytest.mark.slow

MODULE_FLOW = Path(__file__).with_name("target_matrix.yml")
MODULE_FLOW_TIMEOUT_S = 300
V2_PRESENT = sorted(V2_OBJECTS + ["execution_time_ms"])
V2_ONLY_TABLES = HISTORY_TABLES


# --- module level: every target, one ansible-playbook run each ----------------------------------

class FlowResults:
    """The task results of one run of target_matrix.yml; a missing or failed step fails the test
    with the step's name, the target and the module's own message."""

    def __init__(self, target: str, run, results: dict[str, dict]) -> None:
        self.target, self.run, self.results = target, run, results

    def __getitem__(self, task: str) -> dict:
        result = self.results.get(task)
        if result is None:
            pytest.fail(f"{self.target}: step '{task}' did not run; the run ended earlier:\n"
                        f"{(self.run.stdout + self.run.stderr)[-4000:]}", pytrace=False)
        if result.get("failed"):
            pytest.fail(f"{self.target}: step '{task}' failed: {result.get('msg')}", pytrace=False)
        return result


def v1_tables(counts: dict[str, int]) -> dict[str, int]:
    return {table: count for table, count in counts.items() if table not in V2_ONLY_TABLES}


@pytest.mark.parametrize("target", TARGET_PARAMS)
def test_module_flow_on_target(target, tmp_path):
    checked = checked_targets()[target.name]
    db = build_v1_db(tmp_path / "state.db", rows=V1_ROWS)
    counts = row_counts(db)
    snapshots = tmp_path / "snapshots"
    snapshots.mkdir()
    run, results = run_playbook(MODULE_FLOW, {
        "ansible_connection": "local", "ansible_python_interpreter": checked["interpreter"],
        "matrix_db": str(db), "matrix_backup_dir": str(tmp_path / "backups"), "matrix_snapshot_dir": str(snapshots),
    }, timeout=MODULE_FLOW_TIMEOUT_S)
    step = FlowResults(target.name, run, results)

    # The modules ran as processes of the target's Python, with the target's SQLite loaded.
    facts = step["Read the Python and the environment module processes run with"]["ansible_facts"]
    assert facts["ansible_python"]["executable"] == checked["executable"]
    assert facts["ansible_python_version"] == checked["python"]
    assert facts["ansible_env"].get("LD_LIBRARY_PATH") == checked["libraries"]
    assert step["Read the SQLite version a module process loads"]["stdout"] == checked["sqlite"]

    read = step["Read the facts of the v1 database with a full integrity check"]
    assert read["state"] == "v1" and read["migration_needed"]
    assert read["integrity"]["level"] == "integrity" and read["integrity"]["ok"], read["integrity"]

    backup = step["Back up the v1 database"]
    assert backup["changed"] and row_counts(backup["backup"]) == counts

    migrated = step["Migrate the database to v2"]
    assert migrated["changed"] and (migrated["from_version"], migrated["to_version"]) == (1, 2)
    assert_witness(snapshots / "migrated.db", 2, counts)
    verified = step["Verify the v2 database against the backup manifest"]
    assert verified["ok"] and verified["failed_checks"] == [], verified["failed_checks"]
    again = step["Migrate the v2 database again"]
    assert not again["changed"] and again["steps"] == []

    assert step["Restore the v1 backup"]["changed"]
    assert_witness(snapshots / "restored.db", 1, counts)
    assert step["Verify the restored database is v1 with every row of the backup"]["ok"]

    assert step["Migrate the restored database to v2 again"]["changed"]
    assert_witness(snapshots / "remigrated.db", 2, counts)
    # The in-place downgrade must work on every target, old SQLite included (no DROP COLUMN before 3.35).
    downgraded = step["Downgrade the database to v1 in place"]
    assert downgraded["changed"] and (downgraded["from_version"], downgraded["to_version"]) == (2, 1)
    assert_witness(snapshots / "downgraded.db", 1, counts)
    assert step["Verify the downgraded database is v1 with every row of the backup"]["ok"]
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]


def assert_witness(snapshot: Path, version: int, v1_counts: dict[str, int]) -> None:
    """The copy has `version`'s objects and exactly the rows of the v1 database (nothing wrote)."""
    assert schema_version(snapshot) == version, snapshot.name
    assert v2_objects_present(snapshot) == (V2_PRESENT if version == 2 else []), snapshot.name
    counts = row_counts(snapshot)
    assert v1_tables(counts) == v1_counts, snapshot.name
    assert set(counts) - set(v1_counts) == (set(V2_ONLY_TABLES) if version == 2 else set()), snapshot.name


# --- playbook level: a local fleet whose hosts and daemons run the target ------------------------

def daemon_libraries(pid: int) -> set[str]:
    """The libsqlite3 files the running daemon process has mapped."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return {line.split()[-1] for line in maps.splitlines() if "libsqlite3" in line}


class TargetFleet:
    """A one-host local fleet on the target, and the checks made after each playbook run."""

    def __init__(self, root: Path, checked: dict) -> None:
        self.checked = checked
        self.fleet = Fleet(root, "--python", checked["interpreter"], hosts=1)
        (self.host,) = self.fleet.hosts
        self.db = self.fleet.db(self.host)

    def pid(self) -> int:
        return self.fleet.pids()[self.host]

    def assert_daemon_on_target(self) -> None:
        """Running, as the target's Python with the target's SQLite library mapped."""
        pid = self.pid()
        assert self.fleet.alive(self.host), self.fleet.log(self.host)[-2000:]
        assert os.path.realpath(f"/proc/{pid}/exe") == os.path.realpath(self.checked["executable"])
        mapped = daemon_libraries(pid)
        if self.checked["libraries"]:
            assert mapped == {f"{self.checked['libraries']}/libsqlite3.so.0"}
        else:
            assert len(mapped) == 1 and not mapped.pop().startswith(str(target_pythons.CACHE)), mapped

    def counts(self) -> dict[str, int]:
        return row_counts(self.db)

    def playbook(self, name: str, *extra: str):
        run = self.fleet.playbook(name, "-e", "riskmgr_confirm=true", *extra)
        assert_ran(run, self.fleet.hosts)
        return run


def assert_no_row_lost(before: dict[str, int], after: dict[str, int], where: str) -> None:
    lost = {table: (count, after.get(table)) for table, count in v1_tables(before).items()
            if after.get(table, 0) < count}
    assert not lost, f"{where}: tables with fewer rows than before (before, after): {lost}"


# The old SQLite of Ubuntu 20.04 and of Debian 11 / RHEL 9, and the newest Python: the playbooks
# also run the modules the module-level flow does not (riskmgr_migrate, riskmgr_daemon, riskmgr_lock).
@pytest.mark.parametrize("target", target_params("py3.8-sqlite3.31.1", "py3.9-sqlite3.34.0", "py3.13"))
def test_playbooks_on_target(target, tmp_path):
    checked = checked_targets()[target.name]
    fleet = TargetFleet(tmp_path / "fleet on target", checked)
    try:
        assert fleet.fleet.hosts[fleet.host]["ansible_python_interpreter"] == checked["interpreter"]
        fleet.assert_daemon_on_target()

        before = fleet.counts()
        fleet.playbook("migrate_v2.yml")
        assert schema_version(fleet.db) == 2 and v2_objects_present(fleet.db) == V2_PRESENT
        fleet.assert_daemon_on_target()
        migrated = fleet.counts()
        assert_no_row_lost(before, migrated, "migrate_v2.yml")

        pid = fleet.pid()
        rerun = fleet.playbook("migrate_v2.yml")
        assert rerun.recap[fleet.host]["changed"] == 0, rerun.recap
        assert fleet.pid() == pid and schema_version(fleet.db) == 2
        before_rollback = fleet.counts()
        assert_no_row_lost(migrated, before_rollback, "migrate_v2.yml again")

        fleet.playbook("rollback_v2.yml")
        assert schema_version(fleet.db) == 1 and v2_objects_present(fleet.db) == []
        fleet.assert_daemon_on_target()
        # The live file is the v1 backup plus what the daemon wrote since; the v2 file it replaced,
        # with every row the daemon wrote on v2, is kept beside it.
        v1_backup = fleet.fleet.manifests(fleet.host)[0]
        assert v1_backup["schema_version"] == 1
        assert_no_row_lost(v1_backup["row_counts"], fleet.counts(), "rollback_v2.yml (live file)")
        (kept,) = fleet.fleet.kept(fleet.host, "rollback")
        assert_no_row_lost(before_rollback, row_counts(kept), "rollback_v2.yml (the kept v2 file)")

        restored = fleet.counts()
        fleet.playbook("migrate_v2.yml")
        assert schema_version(fleet.db) == 2
        fleet.assert_daemon_on_target()
        remigrated = fleet.counts()
        assert_no_row_lost(restored, remigrated, "migrate_v2.yml after the rollback")

        fleet.playbook("rollback_v2.yml", "-e", "riskmgr_rollback_method=downgrade")
        assert schema_version(fleet.db) == 1 and v2_objects_present(fleet.db) == []
        fleet.assert_daemon_on_target()
        assert_no_row_lost(remigrated, fleet.counts(), "rollback_v2.yml with riskmgr_rollback_method=downgrade")
        assert fleet.fleet.logged_versions(fleet.host) == [1, 2, 1, 2, 1]
    finally:
        fleet.fleet.destroy()
