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
from riskmgr_confirm import why_no_one_can_answer  # noqa: E402  (an action plugin, found through sys.path)


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
