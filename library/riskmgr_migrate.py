#!/usr/bin/python
# library/riskmgr_migrate.py
from __future__ import annotations

DOCUMENTATION = r"""
module: riskmgr_migrate
short_description: Stop the risk manager, back up, migrate and verify its database, and start it, as one host-side unit
description:
  - Its earlier name C(riskmgr_upgrade) still works (C(library/riskmgr_upgrade.py) links to this file).
  - The offline upgrade's downtime in one process on the host, so that no Ansible round trip
    falls between its steps, and so that it finishes (or puts the host back) even if the
    controller or its connection goes away meanwhile (SIGHUP, SIGINT and SIGPIPE are ignored
    from the stop to the end).
  - First, with the daemon still running, it plans the migration from the real schema (as
    M(sqlite_migrate) in check mode) and checks the backup directory's free space. A database
    that needs nothing is left alone and the daemon is not touched (C(changed=false)).
  - Then it stops the daemon (as M(riskmgr_daemon)); copies the database file under SQLite's
    write lock into I(backup_dir), hashing it on the way, with its manifest (as M(sqlite_backup);
    rows left in C(-wal) by a killed daemon are read through the backup API instead); migrates
    in one transaction (as M(sqlite_migrate)) while a second thread runs C(quick_check) and the
    row counts on the backup, and commits only once that check passed; verifies the result
    against the backup's manifest (as M(sqlite_verify), row counts equal, I(integrity) check);
    and starts the daemon, waiting until it logs C(Database schema version) and the new version in I(log_path)
    (under systemd without I(log_path), in the unit's journal).
  - With I(release_link), the start switches the link to the release of the new version first (a new
    symlink renamed over it); with I(smoke_command), the smoke test runs once the daemon is healthy.
  - Before the stop it writes the upgrade's pending record beside the database (C(<db>.riskmgr-pending));
    M(riskmgr_watch) removes it once the daemon has been watched. A database at the target whose upgrade is
    still pending (a run cut off during the watch), or whose link names another release, is finished - its
    daemon (re)started on the target's release when it must be, and smoke-tested again.
  - Any failure after the stop puts the host back before the task fails, naming the phase, the way
    M(riskmgr_recover) does - the database unchanged (the migration never committed), restored from the
    backup just confirmed (the migrated file kept beside it as C(<db>.kept-<keep_suffix>-v<N>-<UTC ts>)), or, once the
    daemon has served on the new version, downgraded in place after a backup of the new file, every row
    kept; then the daemon is started on v1 and its release. A failure to stop changes nothing.
  - The full C(integrity_check) belongs in the preflight, while the daemon still runs
    (M(sqlite_schema_facts) with I(integrity=integrity)); this unit's checks are the cheap ones.
options:
  target_version:
    description: Version to reach; defaults to the newest in the migrations. Downgrades are refused (use rollback_v2.yml).
    type: int
  track_unrealized_pnl:
    description: Also create the optional daily_unrealized_pnl table and its indexes.
    type: bool
  integrity:
    description: The integrity check of the migrated database while the daemon is down.
    type: str
    choices: [quick, integrity]
  keep_suffix:
    description:
      - Reason word of the migrated file kept beside the database when a failure puts the backup back,
        C(<db>.kept-<keep_suffix>-v<N>-<UTC ts>) (N its version). Without it, C(failed).
    type: str
  smoke_command:
    description:
      - The smoke test, an argv list run on the host (no shell) once the started daemon is healthy, from
        the release link's directory when there is one (for example C([python3, scripts/smoke_tests.py])).
        A non-zero exit, or no exit within I(smoke_timeout), fails the upgrade and puts the host back; the
        daemon served on the new version by then, so C(auto) recovery downgrades in place.
    type: list
    elements: str
  smoke_timeout:
    description: Seconds the smoke test may run.
    type: int
  recovery_method:
    description:
      - How a failure past the stop puts the database back, as M(riskmgr_recover)'s I(method). C(auto) restores
        this run's backup when the daemon never served on the new version and wrote nothing, else
        downgrades in place (every row kept).
    type: str
    choices: [auto, downgrade, restore]
extends_documentation_fragment: [action_common_attributes, riskmgr_database, riskmgr_database.backups, riskmgr_migrations, riskmgr_daemon,
                                 riskmgr_role_defaults.database, riskmgr_role_defaults.backups, riskmgr_role_defaults.daemon,
                                 riskmgr_role_defaults.smoke, riskmgr_role_defaults.track_unrealized_pnl,
                                 riskmgr_role_defaults.integrity_downtime, riskmgr_role_defaults.recovery_method]
attributes:
  check_mode: {support: full, details: Plans the migration and the backup from the real files; stops nothing and writes nothing.}
  diff_mode: {support: full, details: Shows the whole schema before and after as SQL.}
  platform: {platforms: posix}
author: [Risk Platform team]
"""

EXAMPLES = r"""
- name: Migrate the state database with the daemon down as briefly as possible
  riskmgr_migrate:
    path: /opt/risk_manager/data/state.db
    backup_dir: /opt/risk_manager/data/backups
    migrations: "{{ riskmgr_migration_texts }}"
    service_manager: command
    pidfile: /opt/risk_manager/run/riskmgr.pid
    start_command: [/opt/risk_manager/bin/riskmgr, --daemon]
    process_match: risk_manager
    log_path: /opt/risk_manager/logs/riskmgr.log
  register: migrated
"""

RETURN = r"""
from_version: {description: Schema version before the task., type: int, returned: always, sample: 1}
to_version: {description: Schema version after the task (predicted in check mode)., type: int, returned: always, sample: 2}
state_before: {description: Schema state found before the task., type: str, returned: always, sample: v1}
steps: {description: The migration's steps (planned in check mode)., type: list, elements: dict, returned: always}
stop: {description: The stop, as M(riskmgr_daemon) returns it; null when nothing was needed., type: dict, returned: always}
backup:
  description: The backup, as M(sqlite_backup) returns it (predicted in check mode), with C(method) (C(file copy) or C(backup API)), C(copy_method) (how a file copy was made, C(reflink), C(copy_file_range) or C(byte copy); a reflink is hashed and its manifest written beside the migration), C(confirmed) and C(confirm_seconds).
  type: dict
  returned: always
migration: {description: The migration, as M(sqlite_migrate) returns it., type: dict, returned: when it ran}
verification: {description: The verification, as M(sqlite_verify) returns it., type: dict, returned: when it ran}
start: {description: The start, as M(riskmgr_daemon) returns it (C(release) - the link's switch - and C(log_mark))., type: dict, returned: when it ran}
smoke: {description: The smoke test - C(argv), C(rc), C(seconds), C(output)., type: dict, returned: when it ran}
release:
  description: With I(release_link) - C(link), C(linked) (its target before the task), C(version), C(paths), C(switch_needed).
  type: dict
  returned: always
pending: {description: The pending record of an upgrade found before the task (C(from_version), C(to_version)); null when none., type: dict, returned: always}
finish: {description: Whether the task finished an upgrade whose database was done already (pending, or on another release)., type: bool, returned: always}
downtime_seconds:
  description: From the stop request to the daemon serving on the new version (its log line), on the host's clock.
  type: float
  returned: when the upgrade ran
  sample: 4.61
failed_phase: {description: stop, backup, migrate, verify, start or smoke; null on success., type: str, returned: on failure}
recovery:
  description: How a failure left the host - database (unchanged or restored from), kept files, daemon, errors.
  type: dict
  returned: on failure after the stop
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.module_glue import (
    BACKUP_SPEC, DAEMON_SPEC, DATABASE_SPEC, MIGRATION_SOURCE_SPEC, SMOKE_SPEC, role_default, run_module_guarded)
from ansible.module_utils.riskmgr_daemon import daemon_control
from ansible.module_utils.riskmgr_migrate import MigrateSettings, migrate_host
from ansible.module_utils.sqlite_catalog import catalog_of_params


def run(module: AnsibleModule) -> dict:
    params = module.params
    return migrate_host(params["path"], params["backup_dir"], catalog_of_params(params), daemon_control(params),
                        MigrateSettings.from_params(params), check_mode=module.check_mode, want_diff=module._diff)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            **DATABASE_SPEC,
            **BACKUP_SPEC,
            **MIGRATION_SOURCE_SPEC,
            "target_version": {"type": "int"},
            "track_unrealized_pnl": role_default("riskmgr_track_unrealized_pnl", type="bool"),
            "integrity": role_default("riskmgr_integrity_downtime", type="str", choices=["quick", "integrity"]),
            "keep_suffix": {"type": "str"},
            "recovery_method": role_default("riskmgr_recovery_method", type="str", choices=["auto", "downgrade", "restore"]),
            **SMOKE_SPEC,
            # The expected log line is not an option: it is the version being started.
            **{name: spec for name, spec in DAEMON_SPEC.items() if name != "expect_log_line"},
        },
        mutually_exclusive=[("migrations_dir", "migrations")],
        required_one_of=[("migrations_dir", "migrations")],
        required_if=[("service_manager", "command", ["pidfile", "start_command"]),
                     ("service_manager", "systemd", ["service_name"])],
        supports_check_mode=True,
    )
    result = run_module_guarded(module, run, module.params["path"],
                                "the daemon was not stopped and nothing was changed")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
