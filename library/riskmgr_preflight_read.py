#!/usr/bin/python
# library/riskmgr_preflight_read.py
from __future__ import annotations

DOCUMENTATION = r"""
module: riskmgr_preflight_read
short_description: The preflight's reads of a host in one module process, while its daemon runs
description:
  - The host side of the M(riskmgr_preflight) action, which calls it once per host. It runs, in order and
    each only when the one before says the host needs it, what M(sqlite_schema_facts),
    M(riskmgr_daemon) with C(state=checked) and M(riskmgr_lock) with C(state=present) would do as separate
    tasks, with the same options and the same results.
  - First the cheap read (I(first)). When the host needs nothing (no change, its daemon seen running with
    the database open, no lock left behind, its release link where it belongs) it stops there.
  - Otherwise the daemon check (I(daemon)), the run lock (I(lock)), and the read under the lock (I(full)),
    with the version this run goes to as decided from the first read.
  - One module process instead of four. On a fleet of thousands of hosts each one costs the controller a
    fork, an ssh command and a payload.
  - Reads only, and takes the run lock. The caller releases the lock when it is not needed, or when a later
    step failed (I(lock) in the result says whether it was acquired).
options:
  action:
    description: What the run does; it decides whether the host needs its change.
    type: str
    choices: [migrate, rollback]
    required: true
  target_version:
    description: The version the run goes to, as known before the first read.
    type: int
    required: true
  any_version:
    description:
      - For C(migrate.yml) and C(rollback.yml). Unless I(target_given), the version the run goes to is decided by
        the first read, the newest version for a migrate and the one below the host's own for a rollback.
    type: bool
    default: false
  target_given:
    description: The operator gave the target version (C(-e riskmgr_target_version)); it is kept.
    type: bool
    default: false
  first:
    description: The options of M(sqlite_schema_facts) for the first read (without I(target_version)).
    type: dict
    required: true
  full:
    description: The options of M(sqlite_schema_facts) for the read under the lock (without I(target_version)).
    type: dict
    required: true
  daemon:
    description: The options of M(riskmgr_daemon) for the daemon check (C(state=checked)).
    type: dict
    required: true
  lock:
    description: The options of M(riskmgr_lock) that take the run lock (C(state=present)).
    type: dict
    required: true
author: [Risk Platform team]
"""

EXAMPLES = r"""
- name: Read the host while its daemon runs (as riskmgr_preflight calls it)
  riskmgr_preflight_read:
    action: migrate
    target_version: 2
    first: {path: /var/lib/riskmgr/state.db, migrations_dir: files/migrations, count_rows: false}
    full: {path: /var/lib/riskmgr/state.db, migrations_dir: files/migrations, plan: true, integrity: integrity}
    daemon: {state: checked, service_manager: systemd, service_name: riskmgr}
    lock: {path: /var/lib/riskmgr/state.db.riskmgr-lock, run_id: 20261208T0300Z-1, owner: {controller: ctl}}
"""

RETURN = r"""
first:
  description: What M(sqlite_schema_facts) returned for the first read.
  type: dict
  returned: always
facts:
  description: The newest read - the read under the lock when it ran, else the first read. null when the first read failed.
  type: dict
  returned: always
daemon:
  description: What M(riskmgr_daemon) returned for the check. null when it did not run.
  type: dict
  returned: always
lock:
  description: What M(riskmgr_lock) returned. null when it did not run; C(acquired) says whether the run holds it.
  type: dict
  returned: always
to:
  description: The version the run goes to.
  type: int
  returned: always
change:
  description: Whether the host needs the run's change, by the newest read.
  type: bool
  returned: always
msg:
  description: Why the preflight stops on this host (a failed step, a refusal, a daemon problem). null when it goes on.
  type: str
  returned: always
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.module_utils.preflight_read import (DAEMON_MODULE_SPEC, DAEMON_REQUIRED_IF, FACTS_MUTUALLY_EXCLUSIVE,
                                                 FACTS_SPEC, LOCK_SPEC, preflight)

STEP_SPECS = {
    "first": ArgumentSpecValidator(FACTS_SPEC, mutually_exclusive=FACTS_MUTUALLY_EXCLUSIVE),
    "full": ArgumentSpecValidator(FACTS_SPEC, mutually_exclusive=FACTS_MUTUALLY_EXCLUSIVE),
    "daemon": ArgumentSpecValidator(DAEMON_MODULE_SPEC, required_if=DAEMON_REQUIRED_IF),
    "lock": ArgumentSpecValidator(LOCK_SPEC),
}


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "action": {"type": "str", "required": True, "choices": ["migrate", "rollback"]},
            "target_version": {"type": "int", "required": True},
            "any_version": {"type": "bool", "default": False},
            "target_given": {"type": "bool", "default": False},
            **{name: {"type": "dict", "required": True} for name in STEP_SPECS},
        },
        supports_check_mode=True,
    )
    params = dict(module.params)
    for name, validator in STEP_SPECS.items():
        # Each step's options as its own module would take them: checked, with that module's defaults.
        validated = validator.validate({**params[name], "state": "checked"} if name == "daemon" else params[name])
        if validated.error_messages:
            module.fail_json(msg=f"{name}: {'; '.join(validated.error_messages)}")
        params[name] = validated.validated_parameters
    warnings: list = []
    result = preflight(params, module.check_mode, warnings)
    for warning in warnings:
        module.warn(warning)
    module.exit_json(changed=bool((result["lock"] or {}).get("changed")), **result)


if __name__ == "__main__":
    main()
