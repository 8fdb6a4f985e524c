"""Faults of the new code: it refuses to start, fails its smoke test, logs an ERROR while watched, or
the controller dies during the watch (docs/guarantees.md #14-#17).

Each host of these fleets has two releases of the stand-in side by side and the link its start
command goes through (tools/local_fleet.py: <host>/releases/1, 2 and <host>/current). Release 1
runs on v1 or v2 and never writes execution_time_ms; release 2 refuses v1 and fills it. A fault is
written into a host's releases/2/FAULTS (--release-fault). Every test ends with assert_end_state()
and then checks the release side: the link, and the release each start of the daemon logged.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from fault_fleet import (
    CONFIRM, HOST, Fleet, assert_end_state, capture, freeze_and_kill, query, scalar, wait_until)

pytestmark = pytest.mark.slow

NEXT = "local-2"
RELEASE_RE = re.compile(r"INFO riskmgr release (\d+) starting")
WATCHING = re.compile(rf"^{HOST}: watching the daemon \(pid (\d+)\)", re.MULTILINE)
WATCH_TASK = "Watch the daemon on its new version, then accept the upgrade"


def linked_release(fleet: Fleet, host: str) -> str:
    return Path(fleet.hosts[host]["riskmgr_release_link"]).resolve().name


def logged_releases(fleet: Fleet, host: str) -> list[int]:
    return [int(n) for n in RELEASE_RE.findall(fleet.log(host))]


def ids(db: Path) -> set[int]:
    return {row[0] for row in query(db, "SELECT id FROM enforcement_log")}


def backups(fleet: Fleet, host: str) -> dict[int, Path]:
    """The host's backups by the schema version their manifest records."""
    found = {}
    for manifest in sorted(fleet.backup_dir(host).glob("*.manifest.json")):
        found[json.loads(manifest.read_text())["schema_version"]] = Path(str(manifest)[: -len(".manifest.json")])
    return found


def last_id_at_stop(fleet: Fleet, host: str) -> int:
    """The last enforcement_log id the daemon committed before its latest clean stop (its own log)."""
    return int(re.findall(r"INFO stopped after \d+ rows; last id (\d+)", fleet.log(host))[-1])


def pending(db: Path) -> Path:
    return Path(f"{db}.riskmgr-pending")


def test_release_2_refusing_to_start_gets_release_1_back_on_v1_with_every_row(tmp_path):
    fleet = Fleet(tmp_path / "fleet", releases=True, release_faults=[f"{HOST}=refuse-start"])
    try:
        before = capture(fleet, HOST)
        run = fleet.playbook("migrate_v2.yml", *CONFIRM)
        # It never served on v2: this run's verified v1 backup is put back, the v2 file kept beside it.
        assert_end_state(fleet, before, run, db="v1", daemon="running", says=[
            r"the upgrade failed while start", r"refusing to start", r"was restored from .*state_v1_.*\(v1\)",
            r"kept as .*state\.db\.kept-failed-v2-", r"runs again on v1 with release v1"])
        assert linked_release(fleet, HOST) == "1" and logged_releases(fleet, HOST) == [1, 2, 1]
        assert fleet.logged_versions(HOST)[-1] == 1 and not pending(before.db).exists()
    finally:
        fleet.destroy()


@pytest.mark.parametrize("fault, failure", [
    ("smoke-fails", r"the upgrade failed while smoke-testing the daemon on the new version: the smoke test `.*"
                    r"smoke_tests\.py.*` \(run from .* as root\) exited with status 1 \(stderr: smoke test failed: "
                    r"injected fault"),
    ("error-after=2", rf"the upgrade failed at '?{WATCH_TASK}'?: the daemon logged 1 line matching "
                      r"ERROR\|CRITICAL\|Traceback \d+ s into its canary watch: .*ERROR injected fault"),
], ids=["smoke_test_fails", "error_logged_during_the_canary_watch"])
def test_a_canary_failing_after_it_served_on_v2_is_back_on_release_1_with_its_v2_rows_and_the_rollout_stops(
        tmp_path, fault, failure):
    fleet = Fleet(tmp_path / "fleet", hosts=2, releases=True, release_faults=[f"{HOST}={fault}"])
    try:
        before, later = capture(fleet, HOST), capture(fleet, NEXT)
        run = fleet.playbook("migrate_v2.yml", *CONFIRM, "-e", "riskmgr_canary_watch_seconds=20")
        # Served on v2, so back in place: v1 with every row, the v2 file backed up first.
        assert_end_state(fleet, before, run, db="v1", daemon="running", says=[
            failure, r"returned to v1 in place, every row kept \(the v2 file was backed up first as .*state_v2_.*\.db\)",
            r"runs again on v1 with release v1", r"Fix the cause, then rerun migrate_v2\.yml"])
        assert linked_release(fleet, HOST) == "1" and logged_releases(fleet, HOST) == [1, 2, 1]
        # Every row release 2 wrote on v2, up to its last one before the stop, is in the live file;
        # the v2 backup keeps their execution_time_ms, which the downgrade dropped.
        taken = backups(fleet, HOST)
        written_on_v2 = ids(taken[2]) - ids(taken[1])
        assert written_on_v2 and written_on_v2 <= ids(before.db)
        assert max(written_on_v2) == last_id_at_stop(fleet, HOST)
        assert scalar(taken[2], "SELECT COUNT(*) FROM enforcement_log WHERE execution_time_ms > 0") > 0
        assert not list(before.db.parent.glob("state.db.kept-failed-v2-*")) and not pending(before.db).exists()
        # The second batch never started: its host was neither stopped nor changed.
        assert fleet.pid(NEXT) == later.pid and fleet.alive(NEXT) and run.recap[NEXT]["changed"] == 0
        assert linked_release(fleet, NEXT) == "1" and logged_releases(fleet, NEXT) == [1]
        assert backups(fleet, NEXT) == {}
        assert set(query(later.db, "SELECT type, name, sql FROM sqlite_master")) == later.objects  # still v1
    finally:
        fleet.destroy()


def test_a_controller_killed_during_the_canary_watch_leaves_release_2_on_v2_and_the_rerun_watches_again(tmp_path):
    fleet = Fleet(tmp_path / "fleet", releases=True)
    try:
        before = capture(fleet, HOST)
        run = fleet.start_playbook("migrate_v2.yml", *CONFIRM, "-e", "riskmgr_canary_watch_seconds=300")
        watched = int(wait_until(lambda: WATCHING.search(run.out.read_text()), 240, "the canary's watch").group(1))
        freeze_and_kill(run.pid)  # the controller and every worker below it: the operator's machine is gone
        # As the unit left it: a verified v2, release 2 serving, the upgrade pending (never accepted).
        assert fleet.pid(HOST) == watched and fleet.alive(HOST) and fleet.lock(HOST).exists()
        assert linked_release(fleet, HOST) == "2" and logged_releases(fleet, HOST) == [1, 2]
        record = json.loads(pending(before.db).read_text())
        assert (record["from_version"], record["to_version"]) == (1, 2)
        # The rerun takes the dead run's lock over, smoke-tests the same daemon and watches it again,
        # for the whole window, then accepts the upgrade.
        rerun = fleet.playbook("migrate_v2.yml", *CONFIRM, "-e", "riskmgr_canary_watch_seconds=4")
        assert_end_state(fleet, before, rerun, db="v2", daemon="running")
        assert "its upgrade was never accepted" in rerun.output and WATCHING.search(rerun.output)
        # The watch's own account is in the run's report (the screen shows one result line per host).
        report = json.loads((sorted(fleet.reports.iterdir())[-1] / f"{HOST}.json").read_text())
        assert re.search(r"ran 4 s \(canary watch\)", report["watch"]["msg"]), report["watch"]
        assert fleet.pid(HOST) == watched and logged_releases(fleet, HOST) == [1, 2]
        assert not pending(before.db).exists()
        # Accepted: the next run changes nothing and leaves the daemon alone.
        again = fleet.playbook("migrate_v2.yml", *CONFIRM)
        assert_end_state(fleet, before, again, db="v2", daemon="running")
        assert again.recap[HOST]["changed"] == 0 and fleet.pid(HOST) == watched
    finally:
        fleet.destroy()
