# module_utils/preflight_read.py
"""The preflight's host side: the reads and checks of sqlite_schema_facts, riskmgr_daemon (state=checked) and
riskmgr_lock (state=present), each as its own module does it, and the preflight's sequence of them in one module
process (riskmgr_preflight): every module process costs the controller a fork, an ssh command and a payload, and
a fleet has thousands of hosts.

Plain Python, no Ansible import: the modules pass their AnsibleModule in, or a Step (module_glue's failure funnel
works on either).
"""
from __future__ import annotations

import os

from ansible.module_utils.daemon_watch import SmokeTest, smoke_problems
from ansible.module_utils.module_glue import (DAEMON_SPEC, DATABASE_SPEC, MIGRATION_SOURCE_SPEC, SMOKE_SPEC,
                                              role_default, run_module_guarded)
from ansible.module_utils.preflight_decisions import needs_change, needs_more_checks, version_after_read
from ansible.module_utils.releases import Releases
from ansible.module_utils.riskmgr_daemon import check_daemon, daemon_control
from ansible.module_utils.run_lock import acquire, describe_holder, release
from ansible.module_utils.sqlite_catalog import catalog_of_params, options_of
from ansible.module_utils.sqlite_facts import FactsRequest, gather

# sqlite_schema_facts's options.
FACTS_SPEC = {
    **MIGRATION_SOURCE_SPEC,
    **DATABASE_SPEC,
    "backup_dir": {"type": "path"},
    "target_version": {"type": "int"},
    "track_unrealized_pnl": role_default("riskmgr_track_unrealized_pnl", type="bool"),
    "options": {"type": "dict", "default": {}},
    "integrity": {"type": "str", "choices": ["integrity", "quick", "none"], "default": "none"},
    "count_rows": {"type": "bool", "default": True},
    "process_match": {"type": "str"},
    "lock_path": {"type": "path"},
    "plan": {"type": "bool", "default": False},
    "free_space_margin": {"type": "float", "default": 1.1},
    "require_wal": {"type": "bool", "default": False},
    "prove_writes": {"type": "bool", "default": False},
    "fail_on_refusal": {"type": "bool", "default": False},
    "release_link": {"type": "path"},
    "release_paths": {"type": "dict"},
}
FACTS_MUTUALLY_EXCLUSIVE = [("migrations_dir", "migrations")]

# riskmgr_daemon's options.
DAEMON_MODULE_SPEC = {
    "expect_version": {"type": "int"},
    "state": {"type": "str", "required": True, "choices": ["stopped", "started", "restarted", "checked"]},
    **DAEMON_SPEC,
    **SMOKE_SPEC,
}
DAEMON_REQUIRED_IF = [("service_manager", "command", ["pidfile"]), ("service_manager", "systemd", ["service_name"])]

# riskmgr_lock's options.
LOCK_SPEC = {
    "path": {"type": "path", "required": True},
    "state": {"type": "str", "default": "present", "choices": ["present", "absent"]},
    "run_id": {"type": "str", "required": True},
    "owner": {"type": "raw"},
    "break_stale": role_default("riskmgr_break_lock", type="bool"),
    "stale_after": {"type": "int", "default": 0},
}


def read_facts(module) -> dict:
    """sqlite_schema_facts: what the database is, and with plan=True what the change would do."""
    params = module.params
    request = FactsRequest(
        backup_dir=params["backup_dir"], options=options_of(params),
        target_version=params["target_version"], integrity=params["integrity"], count_rows=params["count_rows"],
        busy_timeout_s=params["busy_timeout"], process_match=params["process_match"], plan=params["plan"],
        free_space_margin=params["free_space_margin"], require_wal=params["require_wal"],
        releases=Releases.from_params(params), prove_writes=params["prove_writes"])
    facts = gather(params["path"], catalog_of_params(params), request)
    # Not "path": exit_json() overwrites state, mode and size of any result with a "path" key
    # with the stat of that file (state would always read "file").
    facts["db_path"] = facts.pop("path")
    facts["lock_present"] = bool(params["lock_path"]) and os.path.lexists(params["lock_path"])
    # Said on the screen, never a refusal: what the database had wrong before, what could not be proven.
    for note in facts.get("baseline_notes") or []:
        module.warn(f"{params['path']}: {note}")
    for note in (facts.get("write_proof") or {}).get("notes", []):
        module.warn(f"{params['path']}: write proof: {note}")
    if params["fail_on_refusal"] and facts["refusals"]:
        module.fail_json(msg=" | ".join(facts["refusals"]), changed=False, **facts)
    return dict(changed=False, **facts)


def check_running_daemon(params: dict) -> dict:
    """riskmgr_daemon state=checked: the daemon, its commands and its smoke test, read while it runs."""
    releases = Releases.from_params(params)
    result = check_daemon(daemon_control(params, can_start=bool(params["start_command"])), params["process_match"],
                          releases)
    result["problems"] += smoke_problems(SmokeTest.from_params(params), releases.link if releases else None)
    return result


def lock_run(module) -> dict:
    """riskmgr_lock: take the run lock (state=present) or release it (absent)."""
    params = module.params
    if params["state"] == "absent":
        result = release(params["path"], params["run_id"], check_mode=module.check_mode)
        if result["holder"] and not result["released"]:
            module.warn(f"{params['path']}: held by {describe_holder(result['holder'])}, not by run "
                        f"{params['run_id']}; left in place")
        return result
    result = acquire(params["path"], params["run_id"], params["owner"], break_stale=params["break_stale"],
                     stale_after=params["stale_after"], check_mode=module.check_mode)
    if result["broke"]:
        module.warn(f"{params['path']}: broke the lock of {describe_holder(result['broke'])}")
    return result


class StepFailed(Exception):
    """A step of the preflight failed as its own module would have: its fail_json arguments."""

    def __init__(self, result: dict) -> None:
        super().__init__(result.get("msg"))
        self.result = result


class Step:
    """One step run inside riskmgr_preflight, as if it were its own module: its params, the run's check mode and
    warnings, and a fail_json that ends the step (not the process)."""

    def __init__(self, params: dict, check_mode: bool, warnings: list) -> None:
        self.params, self.check_mode, self._warnings = params, check_mode, warnings

    def warn(self, message: str) -> None:
        self._warnings.append(message)

    def fail_json(self, **result) -> None:
        raise StepFailed(result)


def preflight(params: dict, check_mode: bool, warnings: list) -> dict:
    """The preflight's host side, in order, each step only when the one before it says the host needs it.

    params: first (the cheap read's options), full (the read under the lock's, less its target), daemon,
    lock, action, target_version, any_version, target_given. Returns what each step returned (None when it did
    not run), the version the run goes to, whether the host needs the change, and `msg` when a step failed or
    refused (the lock is then still held if `lock` says it was acquired: the caller releases it)."""
    out = {"first": None, "facts": None, "daemon": None, "lock": None, "to": params["target_version"],
           "change": False, "msg": None}

    def step(name: str, work, step_params: dict, subject: str, after: str) -> dict | None:
        try:
            out[name] = run_module_guarded(Step(step_params, check_mode, warnings), work, subject, after)
        except StepFailed as failed:
            out[name] = failed.result
            out["msg"] = failed.result.get("msg") or f"{name} failed"
        return out[name]

    first = step("first", read_facts, dict(params["first"], target_version=out["to"]), params["first"]["path"],
                 "nothing was written")
    if out["msg"]:
        return out
    out["facts"] = first
    out["to"] = version_after_read(params["action"], first, out["to"], params["any_version"], params["target_given"])
    if first.get("refusals"):
        return dict(out, msg=" | ".join(first["refusals"]))
    out["change"] = needs_change(params["action"], first, out["to"])
    if not needs_more_checks(first, out["change"]):
        return out
    daemon = step("daemon", lambda m: check_running_daemon(m.params), params["daemon"],
                  str(params["daemon"].get("pidfile") or params["daemon"].get("service_name")), "see the daemon's log")
    if out["msg"]:
        return out
    if daemon.get("problems"):
        return dict(out, msg=" | ".join(daemon["problems"]))
    lock = step("lock", lock_run, params["lock"], params["lock"]["path"], "the lock was left as it was")
    if out["msg"] or not lock.get("acquired", True):
        return out
    facts = step("facts", read_facts, dict(params["full"], target_version=out["to"]), params["full"]["path"],
                 "nothing was written")
    if out["msg"]:
        return out
    if facts.get("refusals"):
        return dict(out, msg=" | ".join(facts["refusals"]))
    out["change"] = needs_change(params["action"], facts, out["to"])
    return out
