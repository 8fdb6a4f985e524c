"""What an operator reads: a run of migrate_v2.yml fits in a screen, and the reports hold the rest.

Real ansible-playbook runs, at the default verbosity and the repository's ansible.cfg, against
local fleets (tools/local_fleet.py, through test_playbooks.Fleet). Lines are counted as the
operator's terminal shows them (stdout and stderr); the reports are read from riskmgr_report_dir.
A canary that fails stops the run before the other hosts: they keep their database, their daemon
and no run lock, and the run's last lines name them.
"""
from __future__ import annotations

import hashlib
import json
import os
import pwd
import re
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from test_playbooks import Fleet, assert_ran

pytestmark = pytest.mark.slow

SCREEN_LINES = 80  # a two-host migrate (issue 17)
RERUN_LINES = 40
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
ANSIBLE_INTERNALS = {"false_condition", "skip_reason", "skipped", "invocation", "failed_when_result"}
# Keys only the preflight's facts (sqlite_schema_facts) return: in the output, they are a facts dump.
FACT_KEYS = ("open_by", "free_bytes_backup_dir", "backup_bytes_needed", "version_rows", "schema_warnings")


def lines(run) -> list[str]:
    return run.output.splitlines()


def result_line(run, host: str) -> str:
    found = [line for line in lines(run) if line.startswith(f"{host}: v")]
    assert len(found) == 1, f"{host}: expected one result line\n{run.output}"
    return found[0]


def walk(value, key: str = ""):
    """(key, value) of every entry of a JSON document, at any depth."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield k, v
            yield from walk(v, k)
    elif isinstance(value, list):
        for item in value:
            yield from walk(item, key)


def before_recap(run) -> list[str]:
    text = lines(run)
    recap = next(i for i, line in enumerate(text) if line.startswith("PLAY RECAP"))
    return [line for line in text[:recap] if line.strip()]


@pytest.fixture(scope="module")
def screened(tmp_path_factory):
    """A two-host fleet migrated, migrated again (nothing to do) and again with -v."""
    fleet = Fleet(tmp_path_factory.mktemp("screen") / "fleet with spaces")
    try:
        first = fleet.playbook("migrate_v2.yml", "-e", "riskmgr_confirm=true")
        rerun = fleet.playbook("migrate_v2.yml", "-e", "riskmgr_confirm=true")
        verbose = fleet.playbook("migrate_v2.yml", "-e", "riskmgr_confirm=true", "-v")
        yield fleet, first, rerun, verbose
    finally:
        fleet.destroy()


def test_a_two_host_migrate_reads_in_a_screen(screened):
    fleet, run, _, _ = screened
    assert_ran(run, fleet.hosts)
    assert len(lines(run)) <= SCREEN_LINES, run.output
    me = pwd.getpwuid(os.getuid()).pw_name
    for host, settings in fleet.hosts.items():
        plans = [line for line in lines(run) if re.match(rf"^{host}: .* is v1 \(.*\) -> v2: \d+ steps \(", line)]
        assert len(plans) == 1, run.output
        pid = fleet.pids()[host]
        line = result_line(run, host)
        assert re.match(rf"^{host}: v1 -> v2; downtime [0-9.]+ s; daemon pid {pid} \({me}\); release 2 \(", line), line
        assert f"backup {Path(settings['riskmgr_backup_dir'])}" in line, line
    assert "run report" not in run.output and '"outcome"' not in run.output  # no JSON report on the screen
    assert "ok: [" not in run.output and "skipping: [" not in run.output


def test_a_rerun_that_changes_nothing_is_shorter_still(screened):
    fleet, _, rerun, _ = screened
    assert_ran(rerun, fleet.hosts)
    assert {h: r["changed"] for h, r in rerun.recap.items()} == {h: 0 for h in fleet.hosts}
    assert len(lines(rerun)) <= RERUN_LINES, rerun.output
    for host in fleet.hosts:
        line = result_line(rerun, host)
        assert line == (f"{host}: v2, nothing to do; daemon pid {fleet.pids()[host]}, not stopped; release 2 "
                        f"({Path(fleet.hosts[host]['riskmgr_release_v2_path'])})"), line


def test_verbose_shows_every_report_whole(screened):
    fleet, _, _, verbose = screened
    assert_ran(verbose, fleet.hosts)
    for host in fleet.hosts:
        assert f"{host}: run report" in verbose.stdout, verbose.stdout[-3000:]
    assert verbose.stdout.count('"outcome": "unchanged"') == len(fleet.hosts)


def test_the_reports_hold_everything_in_iso_utc_times_and_no_ansible_internals(screened):
    fleet = screened[0]
    runs = sorted(fleet.reports.iterdir())
    assert len(runs) == 3
    first = {host: json.loads((runs[0] / f"{host}.json").read_text()) for host in fleet.hosts}
    for host, report in first.items():
        assert report["outcome"] == "changed" and len(report["steps"]) == 14 and report["steps"][0]["sql"]
        assert report["daemon"] == {"pid": report["daemon"]["pid"], "user": pwd.getpwuid(os.getuid()).pw_name,
                                    "stopped": True}
        assert report["stop_requested_at"] < report["serving_at"]
    for path in sorted(fleet.reports.rglob("*.json")):
        report = json.loads(path.read_text())
        for key, value in walk(report):
            assert key not in ANSIBLE_INTERNALS, f"{path}: {key}"
            if key.endswith("_at") and value is not None:
                assert isinstance(value, str) and ISO_UTC.match(value), f"{path}: {key} = {value!r}"
            # An epoch time under any name: a float in the range of this century's seconds.
            assert not (isinstance(value, float) and value > 1e9), f"{path}: {key} = {value!r}"


def test_a_refused_preflight_shows_its_reason_without_the_facts(tmp_path):
    fleet = Fleet(tmp_path / "refused fleet", "--interval-ms", "600000")
    try:
        with closing(sqlite3.connect(fleet.db("local-1"))) as conn:
            conn.execute("CREATE TABLE schema_version (foo TEXT)")  # v2's table, in a shape v2 cannot adopt
            conn.commit()
        before, pids = fleet.snapshot(), fleet.pids()
        run = fleet.playbook("migrate_v2.yml", "-e", "riskmgr_confirm=true")
        assert run.returncode != 0
        assert re.search(r"local-1: .*state\.db is in state unknown: table schema_version exists with another "
                         r"definition", run.output), run.output
        assert "not changed because local-1 failed the preflight" in run.output
        for key in FACT_KEYS:
            assert key not in run.output, f"the facts are on the screen ({key})\n{run.output}"
        assert len(lines(run)) <= SCREEN_LINES, run.output
        assert fleet.snapshot() == before and fleet.pids() == pids
        assert not list(fleet.root.rglob("*.migrate.lock"))
    finally:
        fleet.destroy()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_failed_canary_leaves_the_hosts_it_never_reached_unlocked_and_named(tmp_path):
    # Quiet daemons (one row at start): a database that changes was changed by the run.
    fleet = Fleet(tmp_path / "canary fleet", "--interval-ms", "600000", "--release-fault", "local-1=smoke-fails",
                  hosts=3)
    try:
        others = ["local-2", "local-3"]
        before = {host: sha256(fleet.db(host)) for host in others}
        pids = fleet.pids()
        run = fleet.playbook("migrate_v2.yml", "-e", "riskmgr_confirm=true")
        assert run.returncode != 0 and run.recap["local-1"]["failed"] == 1, run.output
        # The canary's failure is its message, not the offline unit's whole result (every step and its SQL).
        assert '"steps"' not in run.output and "CREATE TABLE" not in run.output, run.output
        assert len(lines(run)) <= SCREEN_LINES, run.output
        for host in others:
            assert run.recap[host]["changed"] == 0 and run.recap[host]["failed"] == 0, run.recap
            assert sha256(fleet.db(host)) == before[host]
            assert fleet.pids()[host] == pids[host] and fleet.alive(host)
            assert fleet.logged_versions(host) == [1]
            assert not Path(f"{fleet.db(host)}.migrate.lock").exists(), f"{host} keeps its run lock"
        assert not list(fleet.root.rglob("*.migrate.lock"))
        last = before_recap(run)[-1]
        assert last == ("  untouched, the run stopped before them: local-2, local-3 - still on v1, daemon never "
                        "stopped, run lock released"), "\n".join(before_recap(run)[-6:])
        canary = json.loads(next(fleet.reports.iterdir()).joinpath("local-1.json").read_text())
        assert canary["outcome"] == "failed" and canary["to_version"] == 1
        # The next run finds no lock to break: no warning about one.
        again = fleet.playbook("migrate_v2.yml", "-e", "riskmgr_confirm=true", "-l", "local-2", "--check")
        assert_ran(again, ["local-2"])
        assert "WARNING" not in again.output, again.output  # the lock it would break, and say so
    finally:
        fleet.destroy()


def test_a_failed_host_in_a_later_batch_ends_the_rollout_there(tmp_path):
    # A batch of two with one failure: ansible-playbook alone would go on to the next batch (a host
    # failed in its rescue counts after its always section); max_fail_percentage 0 must end it.
    fleet = Fleet(tmp_path / "batch fleet", "--release-fault", "local-2=smoke-fails", hosts=4)
    try:
        pids = fleet.pids()
        run = fleet.playbook("migrate_v2.yml", "-e", json.dumps({"riskmgr_confirm": True,
                                                                 "riskmgr_serial": [1, 2, 1]}))
        assert run.returncode == 2, run.output[-3000:]
        assert {h: (r["changed"] > 0, r["failed"]) for h, r in run.recap.items()} == {
            "local-1": (True, 0), "local-2": (False, 1), "local-3": (True, 0), "local-4": (False, 0)}, run.recap
        assert fleet.pids()["local-4"] == pids["local-4"] and fleet.logged_versions("local-4") == [1]
        assert fleet.manifests("local-4") == []  # no backup: the run never began on it
        assert not list(fleet.root.rglob("*.migrate.lock"))
        # The last line but the banner of the batch that the playbook ends at once.
        *_, named, banner = before_recap(run)
        assert named == "  untouched, the run stopped before them: local-4 - still on v1, daemon never stopped, run lock " \
                        "released", before_recap(run)[-6:]
        assert banner.startswith("PLAY [Migrate each host, canary first] *")
    finally:
        fleet.destroy()
