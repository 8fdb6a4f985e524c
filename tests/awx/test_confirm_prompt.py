"""The confirmation question on a real terminal: it times out, it is never asked where no one can
answer, and a yes typed in time still migrates.

ansible-playbook runs under a pseudo-terminal (pexpect), as on an operator's terminal: Ansible
asks only when its standard input is a terminal whose foreground it is. Every wait on it is
bounded, and a run still alive at the end is killed with all its processes (an ansible-core 2.19
worker calls setsid() and would outlive its controller, waiting for an answer forever).
"""
from __future__ import annotations

import io
import json
import termios
import time

import pexpect
import pytest
from fault_fleet import HOST, ROOT, Fleet, PlaybookRun, assert_end_state, capture, freeze_and_kill, playbook_env

pytestmark = pytest.mark.slow

PROMPT = "Type yes to go on"
RUN_TIMEOUT_S = 120  # a whole run on one host; the question itself waits a few seconds at most


class TerminalRun:
    """ansible-playbook on a pseudo-terminal of its own, as if typed into a shell."""

    def __init__(self, fleet: Fleet, *extra: str) -> None:
        command = fleet.playbook_command("migrate_v2.yml", *extra)
        self.output = io.StringIO()
        self.child = pexpect.spawn(command[0], command[1:], cwd=str(ROOT), env=playbook_env(),
                                   encoding="utf-8", codec_errors="replace", timeout=RUN_TIMEOUT_S,
                                   dimensions=(50, 250))
        self.child.logfile_read = self.output
        self.started = time.monotonic()

    def wait_for_question(self) -> float:
        """Wait until the question is on the screen and the terminal reads keys one by one; the time."""
        self.child.expect_exact(PROMPT)
        asked = time.monotonic()
        # Ansible puts the terminal in raw mode and flushes pending input after showing the
        # question: keys sent before that are lost.
        deadline = asked + 30
        while termios.tcgetattr(self.child.child_fd)[3] & termios.ICANON:
            assert time.monotonic() < deadline, "the terminal never left line mode"
            time.sleep(0.05)
        time.sleep(0.3)
        return asked

    def type(self, keys: str) -> None:
        self.child.send(keys)

    def finish(self) -> PlaybookRun:
        """Wait for the end of the run (bounded), then its exit status and output."""
        try:
            self.child.expect(pexpect.EOF, timeout=max(1.0, RUN_TIMEOUT_S - (time.monotonic() - self.started)))
        finally:
            self.kill()
        return PlaybookRun(self.child.exitstatus, self.output.getvalue(), "")

    def kill(self) -> None:
        if self.child.isalive():
            freeze_and_kill(self.child.pid)
        self.child.close(force=True)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """One v1 host whose daemon writes; shared in file order (the last test migrates it)."""
    fleet = Fleet(tmp_path_factory.mktemp("terminal") / "fleet", hosts=1)
    try:
        yield fleet
    finally:
        fleet.destroy()


@pytest.fixture
def terminal_runs():
    runs: list[TerminalRun] = []

    def start(fleet: Fleet, *extra: str) -> TerminalRun:
        runs.append(TerminalRun(fleet, *extra))
        return runs[-1]

    yield start
    for run in runs:
        run.kill()  # a failed assertion must not leave a run waiting on its terminal


def test_an_awx_job_is_never_asked_even_on_a_terminal(fleet, terminal_runs):
    before = capture(fleet, HOST)
    run = terminal_runs(fleet, "-e", json.dumps({"awx_job_id": 42})).finish()
    assert PROMPT not in run.output
    assert_end_state(fleet, before, run, db="v1", daemon="untouched",
                     says=[r"Not confirmed: nothing was changed on any host",
                           r"cannot ask anyone: an AWX / Automation Platform job \(awx_job_id 42\)",
                           r"riskmgr_confirm=true in the survey"])


def test_no_answer_within_the_timeout_is_a_no_even_a_yes_without_enter(fleet, terminal_runs):
    before = capture(fleet, HOST)
    terminal = terminal_runs(fleet, "-e", "riskmgr_confirm_timeout=3")
    asked = terminal.wait_for_question()
    terminal.type("yes")  # never finished with Enter
    run = terminal.finish()
    assert time.monotonic() - asked >= 3
    assert "(within 3 s; anything else is a no)" in run.output
    assert_end_state(fleet, before, run, db="v1", daemon="untouched",
                     says=[r"Not confirmed: nothing was changed on any host",
                           r"No answer within 3 s \(riskmgr_confirm_timeout\)"])


def test_another_answer_is_a_no(fleet, terminal_runs):
    before = capture(fleet, HOST)
    terminal = terminal_runs(fleet)  # the default timeout: the answer ends the question
    terminal.wait_for_question()
    terminal.type("no\r")
    run = terminal.finish()
    assert_end_state(fleet, before, run, db="v1", daemon="untouched",
                     says=[r'The answer was "no", not yes'])


def test_yes_typed_in_time_migrates(fleet, terminal_runs):
    before = capture(fleet, HOST)
    terminal = terminal_runs(fleet, "-e", "riskmgr_confirm_timeout=60")
    terminal.wait_for_question()
    terminal.type("yes\r")
    run = terminal.finish()
    assert_end_state(fleet, before, run, db="v2", daemon="running")

