"""migrate_v2.yml through ansible-runner, the engine of AWX / Automation Platform.

`ansible-runner run PDD -p migrate_v2.yml`, as AWX's workers do: a private data directory with
`project/` (a copy of this repository, which AWX throws away after the job), `inventory/` (a local
fleet made by tools/local_fleet.py) and `env/extravars`. ansible-runner runs ansible-playbook under
a pseudo-terminal that no one types into: a prompt there waits forever, so an unconfirmed job must
end by itself. A confirmed job must migrate the fleet, write its reports outside the project
(riskmgr_report_dir) and leave every host's report in the job's artifacts (set_stats), where AWX
keeps them and hands them to the next node of a workflow.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from fault_fleet import Fleet, PlaybookRun, assert_end_state, capture

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
ANSIBLE_RUNNER = VENV_BIN / "ansible-runner"
# ansible-runner stops the job itself after this long (status "timeout"); pytest waits a little more.
JOB_TIMEOUT_S = 150
# What AWX's project sync brings: the playbooks and everything they load, not the tests or tooling.
NOT_IN_PROJECT = {".git", ".venv", ".navigator", "tests", "molecule", "bench", "reports", "demo", "__pycache__"}


@dataclass
class RunnerJob:
    """One `ansible-runner run`: its artifacts directory, status and rc, and the playbook's output."""

    artifacts: Path
    status: str
    rc: int
    seconds: float

    @property
    def run(self) -> PlaybookRun:
        """The playbook's output, for fault_fleet's checks (ansible-runner merges stderr into stdout)."""
        return PlaybookRun(self.rc, (self.artifacts / "stdout").read_text(encoding="utf-8"), "")

    def events(self, name: str) -> list[dict]:
        events = [json.loads(path.read_text()) for path in (self.artifacts / "job_events").glob("*.json")]
        return [event for event in events if event.get("event") == name]

    def artifact_data(self) -> dict:
        """The run-wide set_stats data, as AWX stores it: in the playbook_on_stats event."""
        stats, = self.events("playbook_on_stats")
        return stats["event_data"]["artifact_data"]


def private_data_dir(base: Path, fleet: Fleet) -> Path:
    pdd = base / "private data dir"
    shutil.copytree(ROOT, pdd / "project", symlinks=True,
                    ignore=lambda directory, names: [n for n in names if n in NOT_IN_PROJECT])
    (pdd / "inventory").mkdir()
    shutil.copy(fleet.root / "inventory.yml", pdd / "inventory" / "hosts.yml")
    (pdd / "env").mkdir()
    (pdd / "env" / "settings").write_text(json.dumps({"job_timeout": JOB_TIMEOUT_S}))
    return pdd


def runner_job(pdd: Path, ident: str, extravars: dict) -> RunnerJob:
    (pdd / "env" / "extravars").write_text(json.dumps(extravars))
    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}", "ANSIBLE_NOCOLOR": "1"}
    env.pop("ANSIBLE_CONFIG", None)
    started = time.monotonic()
    subprocess.run([str(ANSIBLE_RUNNER), "run", str(pdd), "-p", "migrate_v2.yml", "--ident", ident], env=env,
                   stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=JOB_TIMEOUT_S + 60, check=False)
    artifacts = pdd / "artifacts" / ident
    return RunnerJob(artifacts, (artifacts / "status").read_text().strip(), int((artifacts / "rc").read_text()),
                     time.monotonic() - started)


@pytest.fixture(scope="module")
def fleet_and_pdd(tmp_path_factory):
    """A 2-host v1 fleet, its daemons writing, and the private data directory of its jobs; shared,
    in file order: the unconfirmed job first, then the confirmed one."""
    base = tmp_path_factory.mktemp("runner")
    fleet = Fleet(base / "fleet", hosts=2)
    try:
        yield fleet, private_data_dir(base, fleet)
    finally:
        fleet.destroy()


def test_an_unconfirmed_job_ends_by_itself_failed_and_changes_nothing(fleet_and_pdd):
    fleet, pdd = fleet_and_pdd
    before = {host: capture(fleet, host) for host in fleet.hosts}
    job = runner_job(pdd, "unconfirmed", {"riskmgr_report_dir": str(fleet.reports)})
    output = job.run.output
    # Without the detection the prompt would wait on ansible-runner's pseudo-terminal until the
    # job timeout (status "timeout"): ending as "failed" within the job timeout is the point.
    assert (job.status, job.rc) == ("failed", 2), output[-3000:]
    assert job.seconds < JOB_TIMEOUT_S
    assert "Type yes to go on" not in output  # no prompt at all
    for host, state in before.items():
        assert_end_state(fleet, state, job.run, db="v1", daemon="untouched",
                         says=[r"Not confirmed: nothing was changed on any host",
                               r"cannot ask anyone: ansible-runner.*\(RUNNER_OMIT_EVENTS is set\)",
                               r"-e riskmgr_confirm=true", r"riskmgr_confirm=true in the survey"])


def test_a_confirmed_job_migrates_and_publishes_every_report_as_job_artifacts(fleet_and_pdd):
    fleet, pdd = fleet_and_pdd
    before = {host: capture(fleet, host) for host in fleet.hosts}
    job = runner_job(pdd, "confirmed", {"riskmgr_confirm": True, "riskmgr_report_dir": str(fleet.reports)})
    assert (job.status, job.rc) == ("successful", 0), job.run.output[-3000:]
    for host, state in before.items():
        assert_end_state(fleet, state, job.run, db="v2", daemon="running")

    # The job's output, as AWX shows it, reads in a screen as a terminal's does: ansible-runner's own
    # stdout callback (awx_display) is the default one underneath, and it reads the project's ansible.cfg.
    shown = job.run.output.splitlines()
    assert len(shown) <= 80, job.run.output
    for host in fleet.hosts:
        assert sum(line.startswith(f"{host}: v1 -> v2; downtime ") for line in shown) == 1, job.run.output
    assert '"outcome"' not in job.run.output and "ok: [" not in job.run.output

    # The JSON reports went to riskmgr_report_dir, an absolute path outside the project (which
    # AWX deletes after the job), and nothing was written into the project.
    run_dir, = fleet.reports.iterdir()
    on_disk = {path.stem: json.loads(path.read_text()) for path in run_dir.glob("*.json")}
    assert set(on_disk) == set(fleet.hosts)
    assert not (pdd / "project" / "reports").exists()

    # The artifacts AWX keeps: every host's report, equal to its file, and the fleet summary.
    artifacts = job.artifact_data()
    assert artifacts["riskmgr_reports"] == on_disk
    assert all(report["outcome"] == "changed" and report["to_version"] == 2 for report in on_disk.values())
    summary = artifacts["riskmgr_summary"]
    assert summary["run_id"] == run_dir.name and summary["report_dir"] == str(run_dir)
    assert (summary["mode"], summary["check_mode"]) == ("migrate", False)
    assert sorted(summary["hosts"]) == sorted(summary["changed"]) == sorted(fleet.hosts)
    assert summary["unchanged"] == summary["failed"] == []
    assert summary["longest_downtime_seconds"] == max(r["downtime_seconds"] for r in on_disk.values())
