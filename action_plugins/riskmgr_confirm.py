# action_plugins/riskmgr_confirm.py
from __future__ import annotations

DOCUMENTATION = r"""
module: riskmgr_confirm
short_description: Show the plan of every host, then ask for a yes on the controller's terminal, for a limited time, and only where someone can answer
description:
  - Runs in the controller process, once for the play (C(run_once)). With I(run_id), in a C(run_once) loop
    delegated to the first host and then to each host that holds its run lock (I(host) is the item) - the first
    item shows the plans, asks and decides, every other item takes its decision and, with I(fail), releases its
    host's run lock on that host and fails with that host's own line. Shows the plan of every host (I(plans), as the
    preflight summarised each one), then, when some host's daemon is to be stopped and the run is not
    already confirmed (I(given)), asks on the terminal of C(ansible-playbook) and waits for a line.
    C(yes) or C(y) confirms; anything else, Ctrl+C, or no line within I(timeout) seconds does not.
    What was typed before the timeout does not count.
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
  plans:
    description:
      - The plan of each host of the play (the preflight's summary - C(host), C(db), C(state), C(change),
        C(steps) and the rest); one line each is shown, and the hosts whose C(change) is true (or whose
        C(release) link must switch, which restarts the daemon) and whose C(require_confirmation) is true
        are the ones asked about.
      - Each line names the versions the host moves between, its own C(version) and the version it goes
        to - the plan's C(to_version), else the host's C(riskmgr_target_version) (set per host by
        C(migrate.yml) and C(rollback.yml), or given with C(-e)), else I(target_version) for a migrate
        and 1 for a rollback (C(rollback_v2.yml)).
    type: list
    elements: dict
    required: true
  refused_hosts:
    description: Hosts of the play that failed their preflight; when there is one, nothing is confirmed.
    type: list
    elements: str
    default: []
  action:
    description: What the run does, for the wording of the plan.
    type: str
    choices: [migrate, rollback]
    required: true
  target_version:
    description: The version a migrate run brings hosts to, for a host whose plan and vars name none.
    type: int
    default: 2
  given:
    description: 'Confirmed already (C(riskmgr_confirm), or check mode): show the plan, ask nothing.'
    type: bool
    default: false
  timeout:
    description: Seconds to wait for the answer (at least 1).
    type: int
    required: true
  summary:
    description:
      - C(dir) and C(run_id) of the run's reports. When given and no host goes on to play 2 (none needs a change,
        a daemon started or a release switched), the summary of the run is published here, as M(riskmgr_report)
        with C(summary) does (the preflight reported each host).
    type: dict
  run_id:
    description:
      - The run. With it the task is an item of a C(run_once) loop (I(host)) - the first item decides, the others take
        its decision.
    type: str
  host:
    description: The loop's item, the host this item is for (default the task's host, which decides).
    type: str
  fail:
    description:
      - Fail the item's host when the plan is not confirmed, with one line naming it and its database, after
        releasing its run lock when it holds one for I(run_id).
    type: bool
    default: false
author: [Risk Platform team]
"""

EXAMPLES = r"""
- name: Show the plan of every host and ask for confirmation on the terminal
  riskmgr_confirm:
    plans: "{{ ansible_play_hosts | map('extract', hostvars, '__riskmgr_plan') | list }}"
    action: migrate
    given: "{{ riskmgr_confirm }}"
    timeout: "{{ riskmgr_confirm_timeout }}"
  register: __riskmgr_answer
"""

RETURN = r"""
confirmed:
  description: True when C(yes) or C(y) was typed within the timeout, when I(given), or when no host needs asking.
  type: bool
  returned: always
plan: {description: The lines shown, one per host., type: list, elements: str, returned: always}
asked: {description: Whether the prompt was shown., type: bool, returned: always}
timed_out: {description: "Asked, and no line came within I(timeout) seconds.", type: bool, returned: always}
answer: {description: The line typed (empty when not asked or timed out)., type: str, returned: always}
no_terminal: {description: Why no one could be asked (null when asked)., type: str, returned: always}
refusal:
  description: Why the run stops, and what to do, when it is not confirmed (one line; null when confirmed).
  type: str
  returned: always
"""

import json
import os
import time
from collections.abc import Mapping

from ansible.errors import AnsiblePromptInterrupt, AnsiblePromptNoninteractive
from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

display = Display()

YES = ("yes", "y")
DECISION_KEYS = ("confirmed", "asked", "timed_out", "answer", "no_terminal", "refusal")
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


# The first item's decision, for the loop's other items: one worker runs them all, in order.
_DECISIONS: dict = {}


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        _, args = self.validate_argument_spec(argument_spec={
            "plans": {"type": "list", "elements": "dict", "required": True},
            "refused_hosts": {"type": "list", "elements": "str", "default": []},
            "action": {"type": "str", "required": True, "choices": ["migrate", "rollback"]},
            "target_version": {"type": "int", "default": 2},
            "given": {"type": "bool", "default": False},
            "timeout": {"type": "int", "required": True},
            "summary": {"type": "dict"},
            "run_id": {"type": "str"},
            "fail": {"type": "bool", "default": False},
            "host": {"type": "str"},
        })
        task_vars = task_vars or {}
        host = task_vars.get("inventory_hostname", "")
        # Run once, in a loop over the first host then the hosts that hold their run lock (delegated to each): the
        # first item shows the plans, asks and decides; every other item takes its decision and, when the plan is
        # refused, releases its host's run lock on that host's connection and fails with the host's own line. The
        # hosts that need nothing more of the run run no task here at all.
        item = args["host"] or host
        if item == host or not args["run_id"]:
            plans = with_target_versions(args["plans"], args["action"], args["target_version"], task_vars)
            result.update(self.decide(dict(args, plans=plans), task_vars))
            _DECISIONS[args["run_id"]] = {key: result.get(key) for key in DECISION_KEYS}
        else:
            result.update(_DECISIONS.get(args["run_id"]) or {
                "confirmed": False, "asked": False, "timed_out": False, "answer": "", "no_terminal": None,
                "refusal": "Not confirmed: the first host's decision was not found. Nothing was changed on any host."})
        if args["fail"] and not result["confirmed"]:
            lock = self.held_lock(item, args["run_id"], task_vars)
            if lock:
                self._execute_module(module_name="riskmgr_lock", task_vars=task_vars, module_args={
                    "path": lock, "state": "absent", "run_id": args["run_id"]})
            db = self.db_of(item, task_vars)
            db = f"{db} and its daemon were" if db else "its daemon was"
            # Its line alone: a failed task shows its whole result, every host's plan.
            return {"failed": True, "changed": False, "confirmed": False,
                    "msg": f"{item}: {db} left as they are. {result['refusal']}"}
        return result

    @staticmethod
    def held_lock(item: str, run_id: str | None, task_vars: dict) -> str | None:
        """The path of the run lock the item's host holds for this run (its variables looked at only on a refusal)."""
        seen = (task_vars.get("hostvars") or {}).get(item) or {}
        if not run_id or seen.get("__riskmgr_lock") is None:
            return None
        return (seen.get("__riskmgr_plan") or {}).get("lock")

    @staticmethod
    def db_of(item: str, task_vars: dict) -> str:
        seen = (task_vars.get("hostvars") or {}).get(item) or {}
        return str((seen.get("__riskmgr_plan") or {}).get("db") or seen.get("riskmgr_db_path") or "")

    def decide(self, args: dict, task_vars: dict) -> dict:
        lines = plan_lines(args["plans"], args["action"], args["target_version"])
        result = dict(changed=False, confirmed=False, asked=False, timed_out=False, answer="", no_terminal=None,
                      plan=lines, refusal=None)
        # One short line per host on the screen; every step, path and command with -v or --diff.
        full = display.verbosity > 0 or bool(self._task.diff)
        for line in (lines if full else plan_lines(args["plans"], args["action"], args["target_version"], full=False)):
            display.display(line)
        if args["refused_hosts"]:
            return dict(result, refusal=f"not changed because {', '.join(args['refused_hosts'])} failed the preflight; "
                                        "no daemon was stopped anywhere. Fix them (or leave them out with -l) and rerun.")
        if args["summary"] and not any(needs_play_2(plan) for plan in args["plans"]):
            result.update(publish_summary(args["summary"], args["action"], bool(self._task.check_mode),
                                          [plan["host"] for plan in args["plans"]], task_vars.get("hostvars", {})))
        asking = [plan["host"] for plan in args["plans"]
                  if (plan.get("change") or release_switch(plan)) and plan.get("require_confirmation")]
        if not asking or args["given"]:
            return dict(result, confirmed=True)
        if args["timeout"] < 1:
            return dict(result, refusal=f"riskmgr_confirm_timeout is {args['timeout']}: give the seconds to wait for "
                                        "an answer (at least 1). Nothing was changed.")
        result["no_terminal"] = why_no_one_can_answer(os.environ, task_vars)
        if not result["no_terminal"]:
            prompt = (f"{len(asking)} host(s) will have their daemon stopped for the {args['action']} "
                      f"({', '.join(asking)}). Type yes to go on")
            result.update(self.ask(prompt, args["timeout"]))
        if not result["confirmed"]:
            result["refusal"] = refusal(result, args["timeout"])
        return result

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


def refusal(answer: dict, timeout: int) -> str:
    """Why the plan was not confirmed, and the ways to confirm it."""
    if answer["no_terminal"]:
        why = (f"This run cannot ask anyone: {answer['no_terminal']}. Rerun with -e riskmgr_confirm=true, or in "
               "AWX / Automation Platform answer riskmgr_confirm=true in the survey of the job template.")
    elif answer["timed_out"]:
        why = (f"No answer within {timeout} s (riskmgr_confirm_timeout). Rerun and type yes, or rerun with "
               "-e riskmgr_confirm=true.")
    else:
        why = (f"The answer was {json.dumps(answer['answer'])}, not yes. Rerun and type yes, or rerun with "
               "-e riskmgr_confirm=true.")
    return (f"Not confirmed: nothing was changed on any host. {why} Staging-like groups can set "
            "riskmgr_require_confirmation=false.")


def with_target_versions(plans: list, action: str, target_version: int, task_vars: Mapping) -> list:
    """Each plan with its own `to_version`: the plan's, else the host's riskmgr_target_version (set per
    host by migrate.yml and rollback.yml, or given with -e), else `target_version` for a migrate and the
    design card's v1 for a rollback (rollback_v2.yml)."""
    hostvars = task_vars.get("hostvars") or {}
    done = []
    for plan in plans:
        to = plan.get("to_version")
        if to in (None, ""):
            try:
                to = (hostvars.get(plan.get("host")) or {}).get("riskmgr_target_version")
            except Exception:  # noqa: BLE001  (a host's vars that do not template: the run's own target)
                to = None
        if to in (None, ""):
            to = target_version if action == "migrate" else 1
        try:
            to = int(to)
        except (TypeError, ValueError):
            to = target_version
        done.append(dict(plan, to_version=to))
    return done


def versions_above(plan: dict) -> str:
    """The versions a downgrade of this host undoes, newest first: "v4", "v4 and v3", "v4, v3 and v2"."""
    try:
        start, to = int(plan.get("version")), int(plan["to_version"])
    except (TypeError, ValueError, KeyError):
        return "the later versions"
    names = [f"v{v}" for v in range(start, to, -1)] or [f"v{start}"]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def plan_lines(plans: list, action: str, target_version: int, full: bool = True) -> list[str]:
    """One line per host: what it is, and what the run will do to it (or that it will not touch it), naming
    the versions it moves between; not full: the steps counted by kind, the release, smoke test and watch
    named, not spelled out."""
    lines = []
    for plan in plans:
        to = plan.get("to_version", target_version if action == "migrate" else 1)
        head = f"{plan['host']}: {plan['db']} is {plan['state']}"
        if action == "migrate":
            head += f" ({plan.get('size_mb')} MB, {plan.get('journal_mode')})"
            if not plan.get("change"):
                lines.append(f"{head} -> nothing to do, the daemon will not be touched")
                continue
            lines.append(f"{head} -> {migration_text(plan, to, full)}"
                         f"{after_start_text(plan, to, full)}")
        elif not plan.get("change"):
            lines.append(f"{head} -> already v{to}, nothing to do"
                         + (f"; its daemon restarts on the v{to} release" if release_switch(plan) else ""))
        elif plan.get("rollback_method") == "restore":
            lines.append(f"{head} -> v{to} by restore of {plan.get('backup')}; rows written since that backup, not "
                         f"in it: {json.dumps(plan.get('rows_not_in_backup') or {})}, kept in "
                         f"{', '.join(plan.get('kept') or [])}")
        else:
            state = plan["state"] if str(plan.get("state", "")).startswith("v") else "current"
            lines.append(f"{head} -> v{to} by downgrade; every row kept, dropped with the objects of "
                         f"{versions_above(plan)}: {json.dumps(plan.get('data_dropped') or {})} (a backup of the "
                         f"{state} file is taken first)")
        if action == "rollback" and plan.get("change") and plan.get("release"):
            lines[-1] += f"; the daemon starts on the v{to} release ({plan['release']['paths'].get(str(to))})"
    return lines


def needs_play_2(plan: dict) -> bool:
    """Whether play 2 has something to do on the host (riskmgr_preflight put it into its group)."""
    return bool(plan.get("change") or not plan.get("daemon_seen", True) or release_switch(plan))


def publish_summary(where: dict, action: str, check_mode: bool, hosts: list, hostvars) -> dict:
    """The run's summary when no host goes on to play 2, built by riskmgr_report's own functions."""
    import importlib.util
    import sys
    name = "riskmgr_sibling_riskmgr_report"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, os.path.join(os.path.dirname(__file__), "riskmgr_report.py"))
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    report = sys.modules[name]
    reports = [r for r in ((hostvars[h] if h in hostvars else {}).get("riskmgr_report") for h in hosts)
               if r and r.get("run_id") == where["run_id"]]
    summary = report.build_summary(reports, where["run_id"], action, check_mode, where["dir"])
    display.display(report.summary_text(summary))
    return {"summary": summary,
            "ansible_stats": {"data": {"riskmgr_summary": summary}, "per_host": False, "aggregate": False}}


def release_switch(plan: dict) -> bool:
    return bool((plan.get("release") or {}).get("switch_needed"))


def steps_text(steps: list, full: bool) -> str:
    """Each step's object, or how many of each kind ("4 tables, 1 column, 4 indexes, 6 rows")."""
    if full:
        return f"[{', '.join(steps)}]"
    kinds: dict = {}
    for step in steps:
        kind = str(step).split(" ", 1)[0]
        kinds[kind] = kinds.get(kind, 0) + 1
    plural = {"index": "indexes"}
    return "(" + ", ".join(f"{n} {kind if n == 1 else plural.get(kind, kind + 's')}" for kind, n in kinds.items()) + ")"


def migration_text(plan: dict, target_version: int, full: bool = True) -> str:
    """What a migrate run does to the host's database (or why it touches a host whose database is done)."""
    steps = plan.get("steps") or []
    if plan.get("pending"):
        return (f"v{target_version} already, but its upgrade was never accepted (an earlier run was cut off before "
                f"its watch passed): its daemon is checked, smoke-tested and watched again, and a failure returns it "
                f"to v{plan.get('back_to')} in place")
    if not steps:
        return f"v{target_version} already; its daemon restarts on the v{target_version} release"
    measured = plan.get("rehearsal_seconds")
    downtime = (f"{measured} s of migration measured on a copy, plus daemon stop, backup, check and start"
                if measured not in (None, "") else "not measured (add -e riskmgr_rehearse=true)")
    adopted = f"; adopts {', '.join(plan['adopted'])}" if plan.get("adopted") else ""
    return f"v{target_version}: {len(steps)} steps {steps_text(steps, full)}{adopted}; expected downtime: {downtime}"


def after_start_text(plan: dict, target_version: int, full: bool = True) -> str:
    """The release switch, the smoke test and the watch that follow the start on the new version."""
    parts = []
    if release_switch(plan):
        release = plan["release"]
        if full:
            parts.append(f"{release['link']} switched from {release.get('linked')} to the v{target_version} release "
                         f"{release['paths'].get(str(target_version))}")
        else:
            parts.append(f"release link switched to v{target_version}'s")
    if plan.get("smoke"):
        parts.append(f"smoke test `{plan['smoke']}`" if full else "smoke test")
    watch = plan.get("watch_seconds") or {}
    if watch:
        parts.append(f"watched {watch.get('canary')} s in the first batch, {watch.get('later')} s in later ones")
    return "".join(f"; {part}" for part in parts)
