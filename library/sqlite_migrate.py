#!/usr/bin/python
# library/sqlite_migrate.py
from __future__ import annotations

DOCUMENTATION = r"""
module: sqlite_migrate
short_description: Migrate a risk-manager SQLite state database to a target schema version
description:
  - Compares every object of every version with the database's real state and applies only the
    statements still needed, plus the history rows (version rows and the sha256 of every file),
    in one C(BEGIN IMMEDIATE) transaction; all of it commits, or nothing does.
  - v1 is what the later versions use - the v1 tables and the columns their indexes are on; any other
    column, type, default, constraint, table, index, view or trigger of the database is left as it is.
  - An object the migration would create that is already there in a usable form (a column of the same
    type affinity, an index on the same table and key columns, a table with compatible columns) is
    adopted, not made again; a table that lacks some columns gets them (C(schema_version) of another
    shape keeps its rows). The provenance table C(schema_migration_objects) records, in the same
    transaction, what was created and what adopted, and the exact text of every table whose definition
    changed.
  - The plan is made once, under the write lock, so what runs is what the locked database needs; check
    mode returns a preview (I(preview=true)) read from one snapshot while the daemon may still write.
  - Refuses, changing nothing, a database that is newer than the newest migration, misses a v1
    table or a column a later object uses, has an object of a later version in a form it cannot adopt
    (naming both definitions), records a migration file that has changed since, is not SQLite, or stays
    locked past I(busy_timeout).
  - With I(target_version) below the database's version it downgrades in place instead, to any earlier
    version; the versions above the target are undone newest first, each by its own provenance and nothing
    it adopted - dropping the views, triggers, indexes and tables they created, and giving each table they
    changed its recorded definition back by SQLite's table rebuild (no C(ALTER TABLE DROP COLUMN), so
    SQLite 3.31 does it too), every row, rowid, index, trigger and AUTOINCREMENT counter kept. A version
    with a file marked C(riskmgr irreversible) that ran is refused (restore the backup taken at the target).
options:
  target_version:
    description: Version to reach; defaults to the newest in I(migrations_dir). A version below the database's downgrades.
    type: int
  track_unrealized_pnl:
    description: Also create the optional daily_unrealized_pnl table and its indexes.
    type: bool
  transactions:
    description:
      - C(single) applies every statement and the history rows in one transaction (all or nothing).
      - C(per_step) (online mode, the daemon still writing) commits each object in its own short
        transaction and the history rows last, so the daemon's writes wait at most for the longest
        single step; every intermediate state is a C(partial) database that a rerun finishes and
        a downgrade undoes. Upgrades only.
    type: str
    choices: [single, per_step]
    default: single
extends_documentation_fragment: [action_common_attributes, riskmgr_database, riskmgr_migrations,
                                 riskmgr_migrations.version_options,
                                 riskmgr_role_defaults.database, riskmgr_role_defaults.track_unrealized_pnl]
attributes:
  check_mode: {support: full, details: Returns the exact plan from the real schema and writes nothing.}
  diff_mode: {support: full, details: Shows the whole schema before and after as SQL.}
  platform: {platforms: posix}
author: [Risk Platform team]
"""

EXAMPLES = r"""
- name: Migrate the state database to v2
  sqlite_migrate:
    path: /opt/risk_manager/data/state.db
    migrations_dir: /tmp/riskmgr-migrations

- name: Turn a v2 database back into v1 in place, keeping every row
  sqlite_migrate:
    path: /opt/risk_manager/data/state.db
    migrations_dir: /tmp/riskmgr-migrations
    target_version: 1
"""

RETURN = r"""
from_version: {description: Schema version found before the task., type: int, returned: always, sample: 1}
to_version: {description: Schema version after the task (predicted in check mode)., type: int, returned: always, sample: 2}
state_before: {description: Schema state found before the task., type: str, returned: always, sample: v1}
direction: {description: C(up), C(down) or C(none)., type: str, returned: always, sample: up}
preview:
  description: True when the result is a plan read before any write lock (check mode), false when it is the plan the write transaction computed and applied.
  type: bool
  returned: always
  sample: false
steps:
  description:
    - What was done (planned in check mode), in order, with durations - C(action) C(create), C(adopt)
      (recorded, not touched), C(record) (a history row), and for a downgrade C(drop), C(rebuild),
      C(delete) and C(restore) (history rows) - and, for create and adopt, C(provenance).
  type: list
  elements: dict
  returned: always
  sample: [{file: v2/030_analytics_indexes.sql, object: index idx_positions_updated, action: create,
            sql: CREATE INDEX idx_positions_updated ON positions(updated_at DESC), seconds: 0.0123}]
adopted:
  description: Objects that were already in the database and are adopted by this migration.
  type: list
  elements: str
  returned: always
  sample: [index idx_orders_state_account]
skipped_steps:
  description: Statements not run because their object is there and already recorded.
  type: list
  elements: dict
  returned: always
seconds: {description: Duration of the write transaction(s)., type: float, returned: when changed and not in check mode}
longest_transaction_seconds:
  description: The longest single write transaction, which is the longest the daemon's writes waited.
  type: float
  returned: with transactions=per_step, when changed and not in check mode
transactions:
  description: How many write transactions committed (one per object, then one for the history rows).
  type: int
  returned: with transactions=per_step, when changed and not in check mode
data_dropped:
  description: For a downgrade, rows of dropped tables and non-null values of the columns removed by a rebuild.
  type: dict
  returned: when direction is down
  sample: {daily_unrealized_pnl: 0, enforcement_log.execution_time_ms: 1520}
schema_warnings: {description: Differences that did not block the migration., type: list, elements: str, returned: always}
"""


from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.module_glue import DATABASE_SPEC, MIGRATION_SOURCE_SPEC, role_default, run_module_guarded
from ansible.module_utils.sqlite_catalog import catalog_of_params, options_of
from ansible.module_utils.sqlite_migration import migrate_database


def run(module: AnsibleModule) -> dict:
    params = module.params
    return migrate_database(params["path"], catalog_of_params(params), params["target_version"],
                            options_of(params),
                            check_mode=module.check_mode, want_diff=module._diff,
                            busy_timeout_s=params["busy_timeout"], transactions=params["transactions"])


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            **MIGRATION_SOURCE_SPEC,
            **DATABASE_SPEC,
            "target_version": {"type": "int"},
            "track_unrealized_pnl": role_default("riskmgr_track_unrealized_pnl", type="bool"),
            "options": {"type": "dict", "default": {}},
            "transactions": {"type": "str", "choices": ["single", "per_step"], "default": "single"},
        },
        supports_check_mode=True,
        mutually_exclusive=[("migrations_dir", "migrations")],
        required_one_of=[("migrations_dir", "migrations")],
    )
    result = run_module_guarded(module, run, module.params["path"], "the transaction was not committed")
    for warning in result.get("schema_warnings", []):
        module.warn(warning)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
