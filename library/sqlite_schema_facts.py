#!/usr/bin/python
# library/sqlite_schema_facts.py
from __future__ import annotations

DOCUMENTATION = r"""
module: sqlite_schema_facts
short_description: Report the schema state of a risk-manager SQLite state database
description:
  - Reads the database object by object and reports its schema state (v1, partial, v2, newer,
    unknown), how each object of the later versions stands (present, compatible, incomplete, missing or
    different, and whether a migration created or adopted it), the recorded history, size, journal mode,
    free space and row counts per table.
  - v1 is recognised by what the later versions use - the v1 tables and the columns their indexes are
    on. How the rest of the database differs from the reference schema (C(files/migrations/v1)) is
    reported in I(baseline), never a reason to refuse.
  - Read-only and safe while the daemon runs; it opens the file with C(mode=ro) and never creates it.
  - Use it in a preflight, before any daemon is stopped.
  - Without I(migrations) or I(migrations_dir) the objects cannot be compared and I(state) is C(unknown).
options:
  backup_dir:
    description: Backup directory whose free space is reported.
    type: path
  process_match:
    description:
      - Only processes whose C(/proc/PID/cmdline) contains this text count in I(open_by) (the daemon).
    type: str
  target_version:
    description: Version the state is judged against; defaults to the newest in I(migrations_dir).
    type: int
  track_unrealized_pnl:
    description: Whether the optional daily_unrealized_pnl table is part of the target.
    type: bool
  integrity:
    description: Run C(PRAGMA integrity_check) (C(integrity)), C(quick_check) (C(quick)) or neither.
    type: str
    choices: [integrity, quick, none]
    default: none
  count_rows:
    description: Count the rows of every table.
    type: bool
    default: true
  lock_path:
    description:
      - The run lock file of this host (M(riskmgr_lock)); only whether it exists is reported, in I(lock_present),
        so that a host needing nothing still gets a lock left by a dead run taken over and released.
    type: path
  plan:
    description:
      - Also return I(plan), a preview of what a migration to I(target_version) would do now (as M(sqlite_migrate) in
        check mode, on the same snapshot; the run plans again, once, under its write lock); a I(target_version) below
        the database's plans the downgrade and what it drops, and a downgrade across an irreversible file is refused.
    type: bool
    default: false
  free_space_margin:
    description: I(backup_dir) must have this factor times the database and its C(-wal) free, or the host is refused.
    type: float
    default: 1.1
  prove_writes:
    description:
      - With I(plan), when a change is planned, prove that the daemon's writes still work after it - before any
        stop. Inside one C(BEGIN IMMEDIATE) transaction on the live file that is always rolled back (the file's bytes
        never change; the write lock is held for milliseconds, reported in I(write_proof.lock_ms)), the change is
        applied (an upgrade's non-unique indexes left out) and a row is inserted into each table it alters and each
        table whose triggers name one, as the old code writes it and as the new code does; every view readable
        before must still be readable. What the change breaks is a refusal naming the trigger, view or constraint,
        SQLite's error and the fix. C(PRAGMA foreign_keys) is on for the proof when the database declares foreign keys.
    type: bool
    default: false
  require_wal:
    description: Refuse a database that is not in WAL mode when a change is planned (online mode).
    type: bool
    default: false
  fail_on_refusal:
    description:
      - Fail the task with every reason in I(refusals), one line, instead of only returning them.
      - The preflight of the playbooks sets it, so that a host that cannot be changed stops the run before any
        daemon is stopped.
    type: bool
    default: false
  release_link:
    description: The symlink naming the release of the daemon's code that runs; its target is reported as I(release).
    type: path
  release_paths:
    description: The release directory of each schema version, keyed by version (C(1) and C(2)), with I(release_link).
    type: dict
author: [Risk Platform team]
extends_documentation_fragment: [action_common_attributes, riskmgr_database, riskmgr_migrations,
                                 riskmgr_migrations.version_options,
                                 riskmgr_role_defaults.database, riskmgr_role_defaults.track_unrealized_pnl]
attributes:
  check_mode: {support: full}
  diff_mode: {support: none}
  platform: {platforms: posix}
"""

EXAMPLES = r"""
- name: Read the state of the database while the daemon runs
  sqlite_schema_facts:
    path: /opt/risk_manager/data/state.db
    migrations_dir: /tmp/riskmgr-migrations
    backup_dir: /opt/risk_manager/data/backups
    integrity: integrity
  register: __preflight_facts
"""

RETURN = r"""
state:
  description: Schema state; C(unknown) comes with I(problems).
  type: str
  returned: always
  sample: v1
read_at: {description: The host's epoch time when the database was read., type: float, returned: always}
version:
  description: Schema version found (1 for a database without history).
  type: int
  returned: always
  sample: 1
write_problems:
  description:
    - Why migrating the database in place would fail for this user, known before any stop - a directory,
      database or sidecar it cannot write, too little free space for the new indexes in the database's
      filesystem or in SQLite's temp dir. Empty when none.
  type: list
  elements: str
  returned: always
open_by:
  description:
    - Processes that have the database, its C(-wal) or C(-shm) open (only those matching
      I(process_match) when given), each with C(pid), C(cmdline) and C(files). Processes of
      other users are only seen when the module runs as root.
  type: list
  elements: dict
  returned: always
newest_version: {description: Newest version in I(migrations_dir)., type: int, returned: always, sample: 2}
target_version: {description: Version the state was judged against., type: int, returned: always, sample: 2}
migration_needed:
  description: True when the database is below I(target_version) (or partial) and nothing blocks the migration.
  type: bool
  returned: always
objects:
  description:
    - Every object of every later version with its status - C(present) (as the migration files make it),
      C(compatible) (there in a form the migration adopts as it is), C(incomplete) (a table the migration
      will add columns to), C(missing) or C(different) (there in a form it cannot adopt) - and its
      C(provenance) (C(created) or C(adopted), as recorded by the migration that brought it, else null).
  type: list
  elements: dict
  returned: always
  sample: [{kind: index, name: idx_positions_updated, version: 2, status: missing, required: true, detail: null,
            provenance: null}]
missing: {description: Objects the target needs that are missing., type: list, elements: str, returned: when migrations_dir is given}
adoptable:
  description: Objects the target needs that are already there and will be adopted, not made again.
  type: list
  elements: str
  returned: when migrations_dir is given
  sample: [column enforcement_log.execution_time_ms]
baseline:
  description:
    - How the v1 part differs from the reference schema, for information - per v1 table its real columns,
      the reference's columns it lacks, its own columns, the columns declared otherwise; and the tables,
      indexes, views and triggers the reference does not have.
  type: dict
  returned: when migrations_dir is given
problems: {description: Reasons the database cannot be migrated., type: list, elements: str, returned: always}
schema_warnings: {description: Differences that do not block the migration., type: list, elements: str, returned: always}
version_rows: {description: Rows of schema_version., type: list, elements: dict, returned: always}
recorded_files: {description: Migration files recorded as applied, with their sha256., type: dict, returned: when migrations_dir is given}
db_path: {description: The database path the facts are about., type: str, returned: always}
size: {description: Size of the database file in bytes., type: int, returned: always, sample: 629145600}
wal_size: {description: Size of the -wal file in bytes (0 when none)., type: int, returned: always}
backup_bytes_needed: {description: Bytes a consistent copy needs (database plus WAL)., type: int, returned: always}
free_bytes_db_dir: {description: Free bytes on the database's filesystem., type: int, returned: always}
free_bytes_backup_dir: {description: Free bytes on the backup directory's filesystem., type: int, returned: when backup_dir is given}
journal_mode: {description: Journal mode of the database., type: str, returned: always, sample: wal}
tables: {description: Tables in the database., type: list, elements: str, returned: always}
indexes: {description: Indexes in the database., type: list, elements: str, returned: always}
row_counts: {description: Rows per table, from one snapshot., type: dict, returned: when count_rows, sample: {orders: 2000}}
lock_present: {description: Whether I(lock_path) exists (false when not given)., type: bool, returned: always}
plan:
  description:
    - With I(plan), what a migration to I(target_version) would do now - C(direction) (up, down or none), C(steps)
      as M(sqlite_migrate) returns them, C(data_dropped) for a downgrade; null when the database cannot be migrated.
    - C(dependents) lists every trigger, view and index on a table the change alters (C(kind), C(name), C(table),
      C(uses) - the touched columns it names); C(blockers), for a downgrade, the objects made since the migration
      that use a column it removes, each with its fix (they are refusals).
  type: dict
  returned: always
baseline_problems:
  description:
    - With I(integrity) other than C(none), what the database has wrong before any change - C(violations) (rows
      without their parent, counted per child, parent and constraint), C(mismatches) (foreign keys into a column
      that is not unique), C(examples). Never a refusal; M(sqlite_verify) fails only on what a change adds to it.
  type: dict
  returned: always
baseline_notes:
  description: I(baseline_problems) in words, for the report.
  type: list
  elements: str
  returned: always
real_path:
  description: The file a link in I(path) names; the write and space checks are about its directory.
  type: str
  returned: always
write_proof:
  description:
    - With I(prove_writes) and a planned change, C(ok), C(failures) (the refusals it adds), C(notes) (tables whose
      writes could not be proven and why), C(tables) and C(views) proven, C(lock_ms) the write lock was held,
      C(foreign_keys) whether they were enforced; null otherwise.
  type: dict
  returned: always
refusals:
  description:
    - Every reason the host cannot be changed, each naming the file and the remedy - the database's I(problems),
      a failed integrity check, and when a change is planned, I(write_problems), too little room for the backup
      in I(backup_dir), or (I(require_wal)) a journal mode other than WAL. Empty when nothing stops it.
  type: list
  elements: str
  returned: always
pending_upgrade:
  description:
    - The record of an upgrade of this database that was started and never accepted (its watch did not pass),
      C(from_version), C(to_version), C(release_before), C(started); null when none. See M(riskmgr_watch).
  type: dict
  returned: always
release:
  description:
    - With I(release_link), what it names - C(link), C(linked) (its target), C(version) (whose release that is,
      null for another directory), C(paths), and C(switch_needed) against I(target_version). Null without.
  type: dict
  returned: always
integrity:
  description:
    - Result of the integrity check, null when not run. C(notes) lists reports that are known false ones of
      the running SQLite, checked against the table (3.40.0 to 3.41.0, which Debian 12 ships, report
      C(NULL value in t.c) for a NOT NULL column declared before the key of a WITHOUT ROWID table).
  type: dict
  returned: always
  sample: {level: integrity, ok: true, errors: [], notes: [], seconds: 0.4}
"""


from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.module_glue import run_module_guarded
from ansible.module_utils.preflight_read import FACTS_MUTUALLY_EXCLUSIVE, FACTS_SPEC, read_facts


def main() -> None:
    module = AnsibleModule(argument_spec=FACTS_SPEC, supports_check_mode=True,
                           mutually_exclusive=FACTS_MUTUALLY_EXCLUSIVE)
    result = run_module_guarded(module, read_facts, module.params["path"], "nothing was written")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
