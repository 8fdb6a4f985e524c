# action_plugins/riskmgr_confirm.py
from __future__ import annotations

DOCUMENTATION = r"""
module: riskmgr_confirm
short_description: Ask for a yes on the controller's terminal, for a limited time, and only where someone can answer
description:
  - Runs once for the play, in the controller process. Shows I(prompt) on the terminal of
    C(ansible-playbook) and waits for a line. C(yes) or C(y) confirms; anything else, Ctrl+C, or no
    line within I(timeout) seconds does not. What was typed before the timeout does not count.
  - Asks nothing where no one can answer, and says why in C(no_terminal). That is an AWX /
    Automation Platform job (the extra variable C(awx_job_id) or C(tower_job_id), or the environment
    variable C(AWX_HOST), which AWX sets for its jobs).
  - It is also C(ansible-runner run) and its Python API (the environment variables
    C(RUNNER_OMIT_EVENTS) and C(RUNNER_ONLY_FAILED_EVENTS), which ansible-runner sets for the
    playbook), which run C(ansible-playbook) under a pseudo-terminal that no one types into, so a
    prompt there would wait forever. C(ansible-navigator run --mode stdout) passes the operator's own
    terminal through and sets neither, so it asks like C(ansible-playbook).
  - And it is a standard input that is not a terminal, or a run in the background of one (cron, CI, C(&)).
  - Never changes anything.
options:
  prompt:
    description: The question; the timeout and what to type are added to it.
    type: str
    required: true
  timeout:
    description: Seconds to wait for the answer (at least 1).
    type: int
    required: true
author: [Risk Platform team]
"""

EXAMPLES = r"""
- name: Ask for confirmation on the terminal
  riskmgr_confirm:
    prompt: 3 host(s) will have their daemon stopped
    timeout: "{{ riskmgr_confirm_timeout }}"
  register: __confirm_answer
"""

RETURN = r"""
confirmed: {description: True only when C(yes) or C(y) was typed within the timeout., type: bool, returned: always}
asked: {description: Whether the prompt was shown., type: bool, returned: always}
timed_out: {description: "Asked, and no line came within I(timeout) seconds.", type: bool, returned: always}
answer: {description: The line typed (empty when not asked or timed out)., type: str, returned: always}
no_terminal: {description: Why no one could be asked (null when asked)., type: str, returned: always}
"""

import os
import time
from collections.abc import Mapping

from ansible.errors import AnsiblePromptInterrupt, AnsiblePromptNoninteractive
from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

display = Display()

YES = ("yes", "y")
# Set by ansible-runner's RunnerConfig for every playbook it runs on its pseudo-terminal: `ansible-runner
# run`, ansible_runner.run() and AWX's jobs. Its run_command() interface, which ansible-navigator uses,
# sets neither (navigator's interactive mode then waits for the timeout).
RUNNER_VARIABLES = ("RUNNER_OMIT_EVENTS", "RUNNER_ONLY_FAILED_EVENTS")
AWX_EXTRA_VARS = ("awx_job_id", "tower_job_id")


def why_no_one_can_answer(environ: Mapping[str, str], task_vars: Mapping) -> str | None:
    """The reason no prompt can be answered in this run, or None when a terminal may have someone."""
    for name in AWX_EXTRA_VARS:
        if task_vars.get(name) not in (None, ""):
            return f"an AWX / Automation Platform job ({name} {task_vars[name]})"
    if environ.get("AWX_HOST"):
        return "an AWX / Automation Platform job (AWX_HOST is set)"
    for name in RUNNER_VARIABLES:
        if name in environ:
            return f"ansible-runner, whose pseudo-terminal no one types into ({name} is set)"
    return None


class ActionModule(ActionBase):
    BYPASS_HOST_LOOP = True
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        _, args = self.validate_argument_spec(argument_spec={
            "prompt": {"type": "str", "required": True},
            "timeout": {"type": "int", "required": True},
        })
        result.update(changed=False, confirmed=False, asked=False, timed_out=False, answer="", no_terminal=None)
        if args["timeout"] < 1:
            # The preflight's rescue adds that nothing was changed and releases the lock.
            return dict(result, failed=True, msg=f"riskmgr_confirm_timeout is {args['timeout']}: give the seconds "
                                                 "to wait for an answer (at least 1)")
        result["no_terminal"] = why_no_one_can_answer(os.environ, task_vars or {})
        if result["no_terminal"]:
            return result
        return dict(result, **self.ask(args["prompt"], args["timeout"]))

    def ask(self, prompt: str, timeout: int) -> dict:
        text = f"[{self._task.get_name().strip()}]\n{prompt} (within {timeout} s; anything else is a no): "
        started = time.monotonic()
        try:
            # The main process reads its own terminal (Display relays the prompt there); a line ends
            # it, or the timeout, which returns whatever was typed so far.
            typed = display.prompt_until(text, seconds=timeout)
        except AnsiblePromptNoninteractive:
            return {"no_terminal": "standard input is not a terminal, or the run is in its background"}
        except AnsiblePromptInterrupt:
            return {"asked": True}
        # An unfinished line at the timeout is not an answer, even if it reads "yes".
        if time.monotonic() - started >= timeout:
            return {"asked": True, "timed_out": True}
        answer = to_text(typed, errors="surrogate_or_strict").strip()
        return {"asked": True, "answer": answer, "confirmed": answer.lower() in YES}
