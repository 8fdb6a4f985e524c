#!/usr/bin/python
# library/sqlite_restore.py
from __future__ import annotations

DOCUMENTATION = r"""
module: sqlite_restore
short_description: Put a verified backup back in place of a SQLite state database, keeping the current files
description:
  - Restores a backup written by M(sqlite_backup), either the one named by I(backup) or the newest
    one in I(backup_dir) whose manifest says I(schema_version) and whose sha256 still matches.
  - Refuses, changing nothing, a backup whose sha256 differs from its manifest (tampered or
    truncated; the message names both hashes) or that has no manifest; a live database that any
    process still has open (its C(/proc/PID/fd) links name the file, its C(-wal) or C(-shm); stop
    the daemon first); and a database directory without free space for a copy of the backup.
  - The backup is copied to a temp file in the database's directory (C(O_EXCL), mode and owner
    like the live file) and fsynced. The current database is kept under a second name
    C(<db>.kept-<keep_suffix>-v<N>-<UTC ts>) (a hard link; N its schema version), its C(-wal) and C(-shm) are renamed to that
    name's C(-wal) and C(-shm) (so opening the kept file with sqlite3 still sees the rows that
    were only in the WAL), then the copy is renamed over the live name in one atomic step. No
    file is ever deleted.
  - Idempotent, when the live database already has the backup's sha256 and no C(-wal) content,
    nothing changes.
  - With no live database the backup is simply put in place.
options:
  backup:
    description:
      - Path of a backup C(.db) file; its manifest is C(<backup>.manifest.json).
      - Mutually exclusive with I(backup_dir) and I(schema_version).
    type: path
  backup_dir:
    description:
      - Choose the newest valid backup of this database in this directory instead of naming one.
      - Requires I(schema_version).
    type: path
  schema_version:
    description: Schema version the backup chosen from I(backup_dir) must have (by its manifest).
    type: int
  keep_suffix:
    description: Word in the names of the kept files, C(state.db.kept-<keep_suffix>-v<N>-<UTC ts>). Letters, digits, C(.), C(_), C(-).
    type: str
    default: replaced
extends_documentation_fragment: [action_common_attributes, riskmgr_database,
                                 riskmgr_role_defaults.database]
attributes:
  check_mode:
    support: full
    details:
      - Checks the backup's sha256 and the free space, chooses the backup, and predicts C(changed),
        C(kept) and C(rows_not_in_backup); writes nothing.
      - A process holding the database open does not fail check mode (the playbook stops the daemon
        before the real step); it is returned in C(open_by) and as a warning.
  diff_mode:
    support: full
    details: Shows sha256, schema version and row counts per table of the live database before and after.
  platform: {platforms: posix}
notes:
  - Processes of other users are only visible to root; run the task with become.
author: [Risk Platform team]
"""

EXAMPLES = r"""
- name: Put the pre-migration backup back, keeping the current database beside it
  sqlite_restore:
    path: /opt/risk_manager/data/state.db
    backup: "{{ __backup_result.backup }}"
    keep_suffix: rollback

- name: Restore the newest verified v1 backup
  sqlite_restore:
    path: /opt/risk_manager/data/state.db
    backup_dir: /opt/risk_manager/data/backups
    schema_version: 1
  register: __restore_result
"""

RETURN = r"""
backup:
  description: Backup restored (chosen, in check mode).
  type: str
  returned: always
  sample: /opt/risk_manager/data/backups/state_v1_20261124T120000123456Z.db
manifest:
  description: The backup's manifest.
  type: str
  returned: always
  sample: /opt/risk_manager/data/backups/state_v1_20261124T120000123456Z.db.manifest.json
sha256:
  description: sha256 of the backup, equal to its manifest's and, after the task, to the live database's.
  type: str
  returned: always
  sample: 6839eb41d85a9b4f0bf3379a94ee096f57744b210248fc606e9c4b5516d84024
schema_version:
  description: Schema version of the backup, from its manifest.
  type: int
  returned: always
  sample: 1
kept:
  description: Paths the replaced database, its C(-wal) and C(-shm) now have (predicted in check mode; empty when unchanged).
  type: list
  elements: str
  returned: always
  sample: [/opt/risk_manager/data/state.db.kept-replaced-v2-20261124T130000000000Z,
           /opt/risk_manager/data/state.db.kept-replaced-v2-20261124T130000000000Z-wal]
row_counts_before:
  description: Rows per table of the live database before the task, read-only; null when missing or unreadable.
  type: dict
  returned: always
  sample: {enforcement_log: 2100, orders: 2000}
rows_not_in_backup:
  description:
    - For every table where the live database has more rows than the backup (tables absent from the
      backup included), how many more. Those rows stay in the first file of C(kept).
  type: dict
  returned: always
  sample: {enforcement_log: 75}
plan:
  description: The steps, and per table where the rows not in the backup are kept.
  type: list
  elements: str
  returned: always
  sample: ["keep the current files as /opt/risk_manager/data/state.db.kept-replaced-v2-20261124T130000000000Z",
           "enforcement_log: 75 row(s) not in the backup, kept in /opt/risk_manager/data/state.db.kept-replaced-v2-20261124T130000000000Z"]
rejected:
  description: Newer candidates in I(backup_dir) that were skipped, with the reason.
  type: list
  elements: dict
  returned: always
  sample: [{backup: /opt/risk_manager/data/backups/state_v1_20261124T140000000000Z.db,
            reason: "sha256 is 1f... but its manifest records 68..."}]
open_by:
  description: Processes holding the database open, as {pid, [files]} (a real run refuses when not empty).
  type: dict
  returned: always
  sample: {}
seconds:
  description: Duration of the task on the host.
  type: float
  returned: always
  sample: 0.31
"""


from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.backup_restore import restore_database
from ansible.module_utils.module_glue import DATABASE_SPEC, run_module_guarded
from ansible.module_utils.sqlite_history import HISTORY_TABLES


def run(module: AnsibleModule) -> dict:
    params = module.params
    return restore_database(params["path"], backup=params["backup"], backup_dir=params["backup_dir"],
                            schema_version=params["schema_version"], keep_suffix=params["keep_suffix"],
                            busy_timeout_s=params["busy_timeout"], check_mode=module.check_mode,
                            want_diff=module._diff)


ARGUMENT_SPEC = {
    **DATABASE_SPEC,
    "backup": {"type": "path"},
    "backup_dir": {"type": "path"},
    "schema_version": {"type": "int"},
    "keep_suffix": {"type": "str", "default": "replaced"},
}


def main() -> None:
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        mutually_exclusive=[["backup", "backup_dir"], ["backup", "schema_version"]],
        required_one_of=[["backup", "backup_dir"]],
        required_together=[["backup_dir", "schema_version"]],
        supports_check_mode=True,
    )
    result = run_module_guarded(module, run, module.params["path"], "nothing was restored")
    for pid, files in sorted(result["open_by"].items()):
        module.warn(f"{module.params['path']}: pid {pid} has {', '.join(files)} open; a real run refuses until "
                    "the daemon is stopped")
    for line in result["plan"]:
        # The operator must see which of the application's rows only the kept file holds; the migration's own
        # records of the version left behind are expected to be missing from an older backup.
        if "not in the backup" in line and line.split(":", 1)[0] not in HISTORY_TABLES:
            module.warn(f"{module.params['path']}: {line}")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
