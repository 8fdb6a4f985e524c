#!/usr/bin/python
# library/sqlite_verify.py
from __future__ import annotations

DOCUMENTATION = r"""
module: sqlite_verify
short_description: Verify a risk-manager SQLite state database against a schema version
description:
  - Runs every check of DB-SCHEMA-006 Phase 4 (C(schema_version), C(v1_tables), C(schema_version_table),
    C(optional_table), C(indexes), C(integrity), C(sample_queries)) plus C(definitions) (the state is the
    target's; every object the target requires is there in a form its migration made or adopted, and is
    recorded in the provenance; for the baseline, no migration has left anything), C(foreign_keys),
    C(row_counts) (against a backup manifest), C(query_plans) (C(EXPLAIN QUERY PLAN) of each index's
    C(-- used-by:) query names that index, or, when the planner prefers an index the database already
    had, the query forced with C(INDEXED BY) is served by it), C(checksums) (applied migration files
    recorded in the history still match the files) and C(writes) (the daemon's inserts into each table a
    later version adds a column to, and each table whose triggers name one, as v1 code writes them and, where
    the column is there, as v2 code does; after a downgrade, the v1 daemon's).
  - C(foreign_keys) judges against the database as it was before the change (I(baseline_from), or the backup
    beside I(manifest)); rows without their parent and foreign key mismatches it already had are reported, only
    new ones fail.
  - Every check runs and every failed one is reported; the task fails when any check fails, with one
    line naming the database, each failed check and the next step, and still returns I(checks).
  - Read-only; all checks read one snapshot in a single read transaction, so it is safe while the daemon
    runs. In rollback-journal mode the daemon's commits wait while it reads; in WAL mode they do not.
    C(writes) takes the write lock for the few milliseconds of its inserts, in a transaction that is always
    rolled back (the file keeps its bytes); while another writer holds the lock past I(busy_timeout), or when
    this user cannot write the file, it is reported as not run.
options:
  target_version:
    description:
      - Version the database must be at; defaults to the newest in I(migrations_dir).
      - C(1) verifies the baseline (a restored or downgraded database).
    type: int
  manifest:
    description:
      - A backup manifest (C(<backup>.manifest.json)); every table it lists is compared with its recorded row count.
      - Omit it to skip the row count comparison.
    type: path
  baseline_from:
    description:
      - The database as it was before the change (a backup or copy of it). Rows without their parent and foreign
        key mismatches it already had are reported, not failed; only what the change introduced fails C(foreign_keys).
      - Defaults to the backup beside I(manifest). Without either, every violation fails.
    type: path
  row_counts:
    description: C(at_least) (after a migration, the daemon may have added rows) or C(equal) (after a restore).
    type: str
    choices: [at_least, equal]
    default: at_least
  integrity:
    description: C(integrity) runs C(PRAGMA integrity_check), C(quick) C(PRAGMA quick_check), C(none) neither.
    type: str
    choices: [integrity, quick, none]
    default: integrity
  track_unrealized_pnl:
    description: The optional daily_unrealized_pnl table and its indexes must exist too.
    type: bool
extends_documentation_fragment: [action_common_attributes, riskmgr_database, riskmgr_migrations,
                                 riskmgr_migrations.version_options,
                                 riskmgr_role_defaults.database, riskmgr_role_defaults.track_unrealized_pnl]
attributes:
  check_mode: {support: full, details: The module only reads; check mode runs the same checks.}
  diff_mode: {support: none}
  platform: {platforms: posix}
author: [Risk Platform team]
"""

EXAMPLES = r"""
- name: Verify the migrated database kept every row of the backup
  sqlite_verify:
    path: /opt/risk_manager/data/state.db
    migrations_dir: /tmp/riskmgr-migrations
    target_version: 2
    manifest: /opt/risk_manager/data/backups/state_v1_20261124T120000123456Z.db.manifest.json
    integrity: quick
# After a restore: target_version 1 and row_counts equal check that the database is exactly the backup.
"""

RETURN = r"""
ok: {description: Whether every check passed., type: bool, returned: always, sample: true}
target_version: {description: Version verified against., type: int, returned: always, sample: 2}
version: {description: Schema version found (1 when no history is recorded)., type: int, returned: always, sample: 2}
state: {description: "Schema state found: v1, partial, v2, newer or unknown.", type: str, returned: always, sample: v2}
checks:
  description: Every check, in order, with its outcome.
  type: list
  elements: dict
  returned: always
  sample: [{name: schema_version, ok: true, detail: MAX(version) WHERE success = 1 is 2},
           {name: indexes, ok: false, detail: "missing index(es): idx_positions_updated"}]
failed_checks:
  description: "One C(<name>: <detail>) line per failed check (empty when all passed)."
  type: list
  elements: str
  returned: always
  sample: ["indexes: missing index(es): idx_positions_updated"]
row_counts:
  description: Current row count of every table, read in the same snapshot as the checks.
  type: dict
  returned: always
  sample: {orders: 2000, positions: 2000}
schema_warnings:
  description: Differences of v1 objects that do not fail the verification (also shown as warnings).
  type: list
  elements: str
  returned: always
seconds: {description: Duration of the verification., type: float, returned: always, sample: 0.0421}
"""


from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.module_glue import DATABASE_SPEC, MIGRATION_SOURCE_SPEC, role_default, run_module_guarded
from ansible.module_utils.sqlite_catalog import catalog_of_params, options_of
from ansible.module_utils.sqlite_verification import (
    INTEGRITY_LEVELS, ROW_COUNT_MODES, failure_message, verify_database)


def run(module: AnsibleModule) -> dict:
    params = module.params
    return verify_database(params["path"], catalog_of_params(params), params["target_version"],
                           options_of(params), manifest=params["manifest"],
                           integrity=params["integrity"], row_count_mode=params["row_counts"],
                           busy_timeout_s=params["busy_timeout"], baseline_from=params["baseline_from"])


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            **MIGRATION_SOURCE_SPEC,
            **DATABASE_SPEC,
            "target_version": {"type": "int"},
            "manifest": {"type": "path"},
            "baseline_from": {"type": "path"},
            "row_counts": {"type": "str", "choices": list(ROW_COUNT_MODES), "default": "at_least"},
            "integrity": {"type": "str", "choices": list(INTEGRITY_LEVELS), "default": "integrity"},
            "track_unrealized_pnl": role_default("riskmgr_track_unrealized_pnl", type="bool"),
            "options": {"type": "dict", "default": {}},
        },
        supports_check_mode=True,  # read-only: check mode runs the very same checks
        required_one_of=[("migrations_dir", "migrations")],
        mutually_exclusive=[("migrations_dir", "migrations")],
    )
    result = run_module_guarded(module, run, module.params["path"],
                                "nothing was written, the verification did not finish")
    for warning in result["schema_warnings"]:
        module.warn(warning)
    if not result["ok"]:
        module.fail_json(msg=failure_message(module.params["path"], result), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
