#!/usr/bin/python
# library/riskmgr_pending.py
from __future__ import annotations

DOCUMENTATION = r"""
module: riskmgr_pending
short_description: Record an upgrade as pending beside the database until its watch accepts it
description:
  - Writes C(<db>.riskmgr-pending) - the versions the upgrade goes from and to, and the release the link
    named before it. Until M(riskmgr_watch) accepts the upgrade (its window's last look removes the record),
    a later run treats the host's upgrade as not finished - it smoke-tests and watches it again, and a
    failure puts the host back to I(from_version).
  - The online migration writes it before its backup; the offline unit M(riskmgr_migrate) writes it itself.
  - An existing record of the same upgrade is kept as it is (C(changed=false)).
  - I(state=pending) of M(riskmgr_watch), the earlier way to write it, still works.
options:
  path:
    description: Absolute path of the live state database on the host (the record lies beside it).
    type: path
    required: true
  from_version:
    description: The version the upgrade starts from.
    type: int
    required: true
  to_version:
    description: The version it goes to.
    type: int
    required: true
  release_link:
    description: The release symlink; the release it names now is recorded, to be tried again if the new one does not start.
    type: path
  release_paths:
    description: The release directory of each schema version, keyed by version, with I(release_link).
    type: dict
extends_documentation_fragment: [action_common_attributes]
attributes:
  check_mode: {support: full, details: Reports whether the record would be written; writes nothing.}
  diff_mode: {support: none}
  platform: {platforms: linux}
author: [Risk Platform team]
"""

EXAMPLES = r"""
- name: Record the upgrade as pending until its watch passes
  riskmgr_pending:
    path: /opt/risk_manager/data/state.db
    from_version: 1
    to_version: 2
"""

RETURN = r"""
changed: {description: Whether the record was written (or would be, in check mode)., type: bool, returned: always}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.daemon_watch import write_pending
from ansible.module_utils.module_glue import run_module_guarded
from ansible.module_utils.releases import Releases


def run(module: AnsibleModule) -> dict:
    params = module.params
    releases = Releases.from_params(params)
    written = write_pending(params["path"], params["from_version"], params["to_version"],
                            releases.linked() if releases else None, check_mode=module.check_mode)
    return {"changed": written}


OPTIONS = {"path": {"type": "path", "required": True},
           "from_version": {"type": "int", "required": True}, "to_version": {"type": "int", "required": True},
           "release_link": {"type": "path"}, "release_paths": {"type": "dict"}}


def main() -> None:
    module = AnsibleModule(argument_spec=OPTIONS, supports_check_mode=True)
    module.exit_json(**run_module_guarded(module, run, module.params["path"], "no pending record was written"))


if __name__ == "__main__":
    main()
