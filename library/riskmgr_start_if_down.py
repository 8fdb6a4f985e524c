#!/usr/bin/python
# library/riskmgr_start_if_down.py
from __future__ import annotations

DOCUMENTATION = r"""
module: riskmgr_start_if_down
short_description: Start the risk manager if it is down, on a database that needs no change
description:
  - For a host whose database is already where the run would take it - a run cut off after its stop
    may have left it so, with the daemon down. The daemon is started on the release of I(version) (the
    link switched first when it names another), and checked healthy; a daemon that runs on its own
    release is left alone (C(changed=false)).
  - The database is read first. Should it no longer be consistent at I(version), it is put back there
    as M(riskmgr_recover) does (the same code), and the result says so (I(method)); the task fails only
    when the host could not be put back.
options:
  backup_dir:
    description: Directory of the backups and manifests (M(sqlite_backup)), for the case the database must be put back.
    type: path
    required: true
  version:
    description: The version the database is at and stays at.
    type: int
    required: true
  track_unrealized_pnl:
    description: The schema has the optional daily_unrealized_pnl table (riskmgr_track_unrealized_pnl).
    type: bool
extends_documentation_fragment:
  - action_common_attributes
  - riskmgr_database
  - riskmgr_migrations
  - riskmgr_daemon
  - riskmgr_role_defaults.database
  - riskmgr_role_defaults.daemon
  - riskmgr_role_defaults.track_unrealized_pnl
attributes:
  check_mode: {support: none, details: It starts a daemon.}
  diff_mode: {support: none}
  platform: {platforms: linux}
author: [Risk Platform team]
"""

EXAMPLES = r"""
- name: Start the daemon if it is down on a database that needs no change
  riskmgr_start_if_down:
    path: /opt/risk_manager/data/state.db
    backup_dir: /opt/risk_manager/data/backups
    migrations: "{{ lookup('riskmgr_migrations', playbook_dir ~ '/files/migrations') }}"
    version: 2
    service_manager: systemd
    service_name: risk-manager
"""

RETURN = r"""
state_found: {description: The database's state when read., type: str, returned: always, sample: v2}
daemon:
  description: Whether the daemon runs, and on what (the other keys are those of M(riskmgr_recover)).
  type: str
  returned: always
  sample: "runs again on v2 with release v2 (/opt/risk_manager/releases/2) (pid 4242)"
method:
  description: C(restore) or C(downgrade) when the database had to be put back; null when it was left as it is.
  type: str
  returned: always
msg:
  description: All of it in one line.
  type: str
  returned: always
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.module_glue import host_recovery_module, run_module_guarded
from ansible.module_utils.riskmgr_daemon import daemon_control
from ansible.module_utils.riskmgr_recover import recover_from_params
from ansible.module_utils.sqlite_catalog import catalog_of_params


def run(module: AnsibleModule) -> dict:
    version = module.params["version"]  # the database stays there: back_to and the one version accepted
    return recover_from_params(module.params, catalog_of_params(module.params), daemon_control(module.params),
                               version, (version,))


def main() -> None:
    module = AnsibleModule(**host_recovery_module({"version": {"type": "int", "required": True}}))
    module.exit_json(**run_module_guarded(module, run, module.params["path"], "see the host's state"))


if __name__ == "__main__":
    main()
