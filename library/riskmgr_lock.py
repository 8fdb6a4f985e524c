#!/usr/bin/python
# library/riskmgr_lock.py
from __future__ import annotations

DOCUMENTATION = r"""
module: riskmgr_lock
short_description: Take or release the per-host run lock of a migrate or rollback run
description:
  - Makes sure two migrate or rollback runs never work on the same host at once. Each task
    runs as its own process, so the lock is a file rather than a held flock. It is created
    with C(O_CREAT|O_EXCL), so only one run can create it, has mode 0600, and holds JSON naming
    the run.
  - With I(state=present) it creates the lock for I(run_id). When the same run already holds
    it, nothing changes, so the lock is re-entrant. When another run holds it, the task fails
    and names the holder, unless I(break_stale) is set or the lock is older than I(stale_after).
  - With I(state=absent) it removes the lock, but only when I(run_id) holds it. Another run's
    lock is never removed.
options:
  path:
    type: path
    required: true
    description: Lock file on the host. Its directory must exist.
  state:
    type: str
    default: present
    choices: [present, absent]
    description: Whether this run should hold the lock, or release it.
  run_id:
    type: str
    required: true
    description: Identifier of this run. It must be the same for every task of the run.
  owner:
    type: raw
    description:
      - Who holds the lock, as a dict or a string. It is stored in the lock and shown to the
        runs it blocks.
      - The dict keys used in messages are C(controller), C(controller_pid) and C(started).
      - Required when I(state=present).
  break_stale:
    type: bool
    description:
      - Take over another run's lock. Use it only when that run is known to be dead. The broken
        holder is returned in C(broke).
  stale_after:
    type: int
    default: 0
    description:
      - Age in seconds after which another run's lock may be taken over without I(break_stale).
      - 0 means a lock never goes stale on age alone.
extends_documentation_fragment: [action_common_attributes,
                                 riskmgr_role_defaults.break_lock]
attributes:
  check_mode: {support: full}
  diff_mode: {support: none}
  platform: {platforms: posix}
notes:
  - Two runs that break the same stale lock at the same moment are not fully protected from
    each other. Only one of them can create the new lock, but both may remove the old one.
author: [Risk Platform team]
"""

EXAMPLES = r"""
- name: Lock this host for the run
  riskmgr_lock:
    path: /opt/risk_manager/run/migration.lock
    state: present
    run_id: "{{ riskmgr_run_id }}"
    owner:
      run_id: "{{ riskmgr_run_id }}"
      controller: "{{ lookup('ansible.builtin.pipe', 'hostname') }}"
      started: "{{ now(utc=true).isoformat() }}"
    break_stale: "{{ riskmgr_break_lock | default(false) }}"

- name: Release the run lock
  riskmgr_lock:
    path: /opt/risk_manager/run/migration.lock
    state: absent
    run_id: "{{ riskmgr_run_id }}"
"""

RETURN = r"""
holder:
  type: dict
  returned: always
  description:
    - The lock's record after the task, or the record that would be written in check mode. With
      I(state=absent) it is the record found, including another run's. null when there is no lock.
    - Also returned, with C(acquired=false), when the task fails because another run holds the lock.
  sample: {run_id: 20261124T120000-ctl01-4242, owner: {controller: ctl01, controller_pid: 4242},
           created_at: 1795522051.43, created: "2026-11-24T12:07:31Z", host_pid: 51234}
acquired:
  type: bool
  returned: always
  description: Whether this run holds the lock after the task (I(state=present)).
  sample: true
released:
  type: bool
  returned: always
  description: Whether this run's lock was removed (I(state=absent)).
  sample: false
broke:
  type: dict
  returned: always
  description: The record of the other run whose lock was taken over. null when none was broken.
  sample: null
"""


from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.module_glue import run_module_guarded
from ansible.module_utils.preflight_read import LOCK_SPEC, lock_run


def main() -> None:
    module = AnsibleModule(
        argument_spec=LOCK_SPEC,
        required_if=[("state", "present", ["owner"])],
        supports_check_mode=True,
    )
    result = run_module_guarded(module, lock_run, module.params["path"], "the lock was left as it was")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
