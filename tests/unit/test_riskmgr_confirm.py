"""Where the riskmgr_confirm action plugin asks no one: the markers AWX and ansible-runner set.

The real runs (tests/awx) prove the ansible-runner and awx_job_id cases and the pseudo-terminal
itself; these cover every other marker, and the run that may ask.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "action_plugins"))
from riskmgr_confirm import plan_lines, why_no_one_can_answer  # noqa: E402  (an action plugin, through sys.path)


@pytest.mark.parametrize("environ, task_vars, reason", [
    ({}, {"awx_job_id": 7}, "an AWX / Automation Platform job (awx_job_id 7)"),
    ({}, {"tower_job_id": 8}, "an AWX / Automation Platform job (tower_job_id 8)"),
    ({"AWX_HOST": "https://awx.example"}, {}, "an AWX / Automation Platform job (AWX_HOST is set)"),
    ({"RUNNER_OMIT_EVENTS": "False"}, {}, "ansible-runner, whose pseudo-terminal no one types into "
                                          "(RUNNER_OMIT_EVENTS is set)"),
    ({"RUNNER_ONLY_FAILED_EVENTS": "False"}, {}, "ansible-runner, whose pseudo-terminal no one types into "
                                                 "(RUNNER_ONLY_FAILED_EVENTS is set)"),
])
def test_awx_and_ansible_runner_are_never_asked(environ, task_vars, reason):
    assert why_no_one_can_answer(environ, task_vars) == reason


def test_a_plain_run_may_ask_even_under_ansible_navigator_stdout_mode():
    # ansible-navigator --mode stdout passes the operator's terminal through, and sets only these.
    navigator = {"AWX_ISOLATED_DATA_DIR": "/tmp/ansible-navigator_x/artifacts/1", "ANSIBLE_STDOUT_CALLBACK": "awx_display"}
    assert why_no_one_can_answer(navigator, {"awx_job_id": "", "riskmgr_confirm": False}) is None


PLAN = {"host": "h1", "db": "/srv/r/data/state.db", "state": "v1", "size_mb": 4.2, "journal_mode": "wal",
        "change": True, "steps": ["table schema_version", "index idx_a", "index idx_b", "column t.c", "row v:1",
                                  "row v:2"],
        "release": {"switch_needed": True, "link": "/srv/r/current", "linked": "/srv/r/releases/1",
                    "paths": {"1": "/srv/r/releases/1", "2": "/srv/r/releases/2"}},
        "smoke": "bin/smoke --db data/state.db", "watch_seconds": {"canary": 600, "later": 60}}


def test_the_plan_is_one_short_line_per_host_and_every_step_with_verbose_or_diff():
    short, = plan_lines([PLAN], "migrate", 2, full=False)
    assert short == ("h1: /srv/r/data/state.db is v1 (4.2 MB, wal) -> v2: 6 steps (1 table, 2 indexes, 1 column, "
                     "2 rows); expected downtime: not measured (add -e riskmgr_rehearse=true); release link switched "
                     "to v2's; smoke test; watched 600 s in the first batch, 60 s in later ones")
    full, = plan_lines([PLAN], "migrate", 2)
    assert all(step in full for step in PLAN["steps"]) and "/srv/r/releases/2" in full and PLAN["smoke"] in full


