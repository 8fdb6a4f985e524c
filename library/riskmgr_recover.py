#!/usr/bin/python
# library/riskmgr_recover.py
from __future__ import annotations

DOCUMENTATION = r"""
module: riskmgr_recover
short_description: Put a host back after a failed migrate or rollback run, from its real state
description:
  - The one recovery of the project; the offline unit (M(riskmgr_migrate)) runs the same code on its
    own failure path. Nothing is taken from which task failed - the database, the backups and the
    daemon are read as they are now.
  - A database consistent at a version in I(accept) (default, I(back_to) alone) is left as it is. Any
    other - changed by the run, partial, failing its quick_check, unreadable - goes back to I(back_to)
    after the daemon is stopped. In place (the downgrade of M(sqlite_migrate), every row kept, a backup
    of the file taken first) when it is partial, when the daemon I(served) on the new version, or when
    it wrote rows since this run's backup; from this run's verified backup (the file it replaces kept
    beside it, as M(sqlite_restore)) when the daemon never served there and nothing was written since,
    or when the file cannot be changed in place. Each falls back on the other; the result is verified
    (quick_check).
  - Then the daemon runs on it - started, and checked healthy on that version, when it was down, when
    the database changed under it, or when I(release_link) names another version's release (switched
    first); a running daemon on an untouched database and its own release is left alone. A release that
    does not start is replaced, once, by the one the link named before.
  - The pending record of an upgrade (see M(riskmgr_watch)) is removed once the database is back at the
    version that upgrade started from.
  - The task fails only when the host could not be put back (the message says what is left); otherwise
    it returns what was done, for the playbook's own message.
options:
  backup_dir:
    description: Directory of the backups and manifests (M(sqlite_backup)).
    type: path
    required: true
  back_to:
    description: The version the run started from, where the database goes when it is not acceptable as it is.
    type: int
    required: true
  accept:
    description: Versions the database may be left at when it is consistent there; default I(back_to) alone.
    type: list
    elements: int
  since:
    description: Host epoch time the run began; the backups taken since are this run's. Default all backups.
    type: float
  backup:
    description: This run's backup, when known; otherwise the newest verified one at I(back_to) since I(since).
    type: path
  release_before:
    description: The release the link named when the run began; tried once when the version's own release does not start.
    type: path
  served:
    description:
      - The daemon ran healthy on the database's new version before the failure (a failed smoke test or
        watch, or an earlier run's upgrade never accepted); C(auto) then downgrades in place.
    type: bool
    default: false
  method:
    description: C(auto) chooses as described; C(downgrade) or C(restore) is tried first, the other after it.
    type: str
    choices: [auto, downgrade, restore]
  keep_suffix:
    description: Suffix of the file a restore replaces, kept as C(<db>.kept-<keep_suffix>-v<N>-<UTC ts>).
    type: str
    default: failed
  track_unrealized_pnl:
    description: Whether the optional daily_unrealized_pnl table is part of the schema.
    type: bool
extends_documentation_fragment: [action_common_attributes, riskmgr_database, riskmgr_migrations, riskmgr_daemon,
                                 riskmgr_role_defaults.database, riskmgr_role_defaults.daemon,
                                 riskmgr_role_defaults.track_unrealized_pnl, riskmgr_role_defaults.recover_method]
attributes:
  check_mode: {support: none, details: A recovery acts; it runs only on a failure of a real run.}
  diff_mode: {support: none}
  platform: {platforms: linux}
author: [Risk Platform team]
"""

EXAMPLES = r"""
- name: Put the host back on v1 and start its daemon
  riskmgr_recover:
    path: /opt/risk_manager/data/state.db
    backup_dir: /opt/risk_manager/data/backups
    migrations: "{{ lookup('riskmgr_migrations', playbook_dir ~ '/files/migrations') }}"
    back_to: 1
    since: 1795522051.4
    service_manager: systemd
    service_name: risk-manager
  register: recovery
"""

RETURN = r"""
state_found: {description: The database's state before the recovery acted., type: str, returned: always, sample: v2}
database: {description: What the database is now, or was made., type: str, returned: always,
           sample: "restored from /opt/risk_manager/data/backups/state_v1_20261124T120000123456Z.db (v1)"}
method: {description: C(restore) or C(downgrade) when the database was put back; null otherwise., type: str, returned: always}
why: {description: Why that method., type: str, returned: always}
backup: {description: The backup restored, or the one taken before the downgrade., type: str, returned: always}
kept: {description: Files a restore replaced, kept beside the database., type: list, elements: str, returned: always}
version: {description: The schema version the database is at now (null when it could not be put back)., type: int, returned: always}
daemon: {description: Whether the daemon runs, and on what., type: str, returned: always,
         sample: "runs again on v1 with release v1 (/opt/risk_manager/releases/1) (pid 4242)"}
release:
  description: With I(release_link), what it names now - C(link), C(linked), C(version), C(paths); null without.
  type: dict
  returned: always
pid: {description: The daemon's pid., type: int, returned: always}
errors: {description: What could not be done., type: list, elements: str, returned: always}
msg: {description: All of it in one line., type: str, returned: always}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.module_glue import host_recovery_module, role_default, run_module_guarded
from ansible.module_utils.riskmgr_daemon import daemon_control
from ansible.module_utils.riskmgr_recover import METHODS, recover_from_params
from ansible.module_utils.sqlite_catalog import catalog_of_params


def run(module: AnsibleModule) -> dict:
    params = module.params
    return recover_from_params(params, catalog_of_params(params), daemon_control(params), params["back_to"],
                               tuple(params["accept"] or ()), params["backup"])


def main() -> None:
    module = AnsibleModule(**host_recovery_module({
        "back_to": {"type": "int", "required": True},
        "accept": {"type": "list", "elements": "int"},
        "since": {"type": "float"},
        "backup": {"type": "path"},
        "served": {"type": "bool", "default": False},
        "release_before": {"type": "path"},
        "method": role_default("riskmgr_recovery_method", type="str", choices=list(METHODS)),
        "keep_suffix": {"type": "str", "default": "failed"},
    }))
    module.exit_json(**run_module_guarded(module, run, module.params["path"], "see the host's state"))


if __name__ == "__main__":
    main()
