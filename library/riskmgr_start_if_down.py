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
    description: Whether the optional daily_unrealized_pnl table is part of the schema.
    type: bool
    default: false
extends_documentation_fragment: [action_common_attributes, riskmgr_database, riskmgr_migrations, riskmgr_daemon]
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
database: {description: What the database is now., type: str, returned: always}
method: {description: C(restore) or C(downgrade) when the database had to be put back; null otherwise., type: str, returned: always}
version: {description: The schema version the database is at now., type: int, returned: always}
daemon: {description: Whether the daemon runs, and on what., type: str, returned: always,
         sample: "runs again on v2 with release v2 (/opt/risk_manager/releases/2) (pid 4242)"}
release:
  description: With I(release_link), what it names now - C(link), C(linked), C(version), C(paths); null without.
  type: dict
  returned: always
pid: {description: The daemon's pid., type: int, returned: always}
errors: {description: What could not be done., type: list, elements: str, returned: always}
msg: {description: All of it in one line., type: str, returned: always}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.module_glue import (
    DAEMON_SPEC, DATABASE_SPEC, MIGRATION_SOURCE_SPEC, role_default, run_module_guarded)
from ansible.module_utils.riskmgr_daemon import daemon_control
from ansible.module_utils.riskmgr_recover import recover_host, recovery_text, settings_of_params
from ansible.module_utils.sqlite_catalog import catalog_of_params


def run(module: AnsibleModule) -> dict:
    params = module.params
    settings = settings_of_params(params, params["version"], (params["version"],))
    report = recover_host(settings, catalog_of_params(params), daemon_control(params), None)
    report["msg"] = recovery_text(params["path"], report)
    report["changed"] = report["changed"] or bool(report.get("start"))
    if report["errors"]:
        module.fail_json(**report)
    return report


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            **MIGRATION_SOURCE_SPEC,
            **{name: spec for name, spec in DAEMON_SPEC.items() if name != "expect_log_line"},
            **DATABASE_SPEC,
            "backup_dir": {"type": "path", "required": True},
            "version": {"type": "int", "required": True},
            "track_unrealized_pnl": role_default("riskmgr_track_unrealized_pnl", type="bool"),
        },
        mutually_exclusive=[("migrations_dir", "migrations")],
        required_one_of=[("migrations_dir", "migrations")],
        required_if=[("service_manager", "command", ["pidfile", "start_command"]),
                     ("service_manager", "systemd", ["service_name"])],
        supports_check_mode=False,
    )
    module.exit_json(**run_module_guarded(module, run, module.params["path"], "see the host's state"))


if __name__ == "__main__":
    main()
