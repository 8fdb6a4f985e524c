#!/usr/bin/python
# library/sqlite_backup.py
from __future__ import annotations

DOCUMENTATION = r"""
module: sqlite_backup
short_description: Write a verified, self-contained backup of a SQLite state database with its manifest
description:
  - Copies the database with the SQLite online backup API from a read-only connection, in one
    step under one read snapshot, so the copy is consistent whether the daemon is stopped or
    still writing in WAL mode, and holds the committed rows that only sit in the C(-wal) file.
    The live database is never written and never read into memory.
  - The copy goes to a private temp file in I(backup_dir) (created with C(O_EXCL|O_NOFOLLOW),
    mode 0600; a symlink planted at any name is never followed), is switched to journal mode
    DELETE (one self-contained file), fsynced, checked (header, C(PRAGMA quick_check), schema
    version, row counts equal to those of the snapshot it was copied from), hashed, and renamed
    without replacing anything to C(<db stem>_v<schema version>_<UTC %Y%m%dT%H%M%S%fZ>.db).
  - Only then is C(<backup>.manifest.json) written (sha256, size, schema version, row counts per
    table, source, host, time). A backup without a manifest is never considered valid.
  - Refuses, writing nothing, a missing, empty or non-SQLite I(path), and a I(backup_dir) whose
    filesystem has less free space than I(free_space_margin) x (database + C(-wal)) bytes.
    On any later failure the temp file is removed; no half backup is ever left.
  - I(backup_dir) is created with mode 0700 or forced to 0700; backups and manifests are 0600.
    Run as root, the directory, backup and manifest are owned like the database file.
  - After a successful backup, retention deletes (backup and manifest) the backups of this
    database (same stem, with a manifest) that are older than I(retention_days) or beyond the
    newest I(max_backups) (keep 30 days, at most 10; either limit prunes). The newest backup of each schema version and the one just written
    are always kept, and no other file is ever touched.
extends_documentation_fragment: [action_common_attributes, riskmgr_database, riskmgr_database.backups,
                                 riskmgr_role_defaults.database, riskmgr_role_defaults.backups]
attributes:
  check_mode:
    support: full
    details: Reads the live database (read-only), refuses as a real run would, and returns the would-be name and the prune list; writes nothing, not even the directory.
  diff_mode:
    support: full
    details: Shows the backup directory's backups and manifests before and after (added and pruned files).
  platform: {platforms: posix}
notes:
  - The backup is taken while the daemon may run; in rollback-journal (DELETE) mode the daemon's
    next commit waits while the copy holds its read lock.
author: [Risk Platform team]
"""

EXAMPLES = r"""
- name: Write a verified backup with its manifest
  sqlite_backup:
    path: /opt/risk_manager/data/state.db
    backup_dir: /opt/risk_manager/data/backups
  register: __backup_result

- name: Keep at most 5 backups older than a week (the newest of each schema version always stays)
  sqlite_backup:
    path: /opt/risk_manager/data/state.db
    backup_dir: /opt/risk_manager/data/backups
    retention_days: 7
    max_backups: 5
"""

RETURN = r"""
backup:
  description: Full path of the backup written (in check mode, the name it would get now).
  type: str
  returned: always
  sample: /opt/risk_manager/data/backups/state_v1_20261124T120000123456Z.db
manifest:
  description: Full path of the backup's manifest (would-be in check mode).
  type: str
  returned: always
  sample: /opt/risk_manager/data/backups/state_v1_20261124T120000123456Z.db.manifest.json
name_pattern:
  description: The backup's name pattern.
  type: str
  returned: in check mode
  sample: state_v1_<UTC %Y%m%dT%H%M%S%fZ>.db
sha256:
  description: sha256 of the backup file (null in check mode).
  type: str
  returned: always
  sample: 6839eb41d85a9b4f0bf3379a94ee096f57744b210248fc606e9c4b5516d84024
copy_method:
  description:
    - How the file was copied. This module takes a snapshot through SQLite's online backup API, so it is null here.
    - M(riskmgr_migrate), which copies the stopped database's file, says C(reflink), C(copy_file_range) or C(byte copy).
  type: str
  returned: always
  sample: null
size:
  description: Size of the backup file in bytes (null in check mode).
  type: int
  returned: always
  sample: 237568
schema_version:
  description: Schema version of the backup (of the live database in check mode).
  type: int
  returned: always
  sample: 1
row_counts:
  description: Rows per table, counted in the backup itself (in the live database's snapshot in check mode).
  type: dict
  returned: always
  sample: {enforcement_log: 2025, orders: 2000, positions: 2000}
source_journal_mode:
  description: Journal mode of the live database when it was copied.
  type: str
  returned: when changed and not in check mode
  sample: wal
seconds:
  description: Duration of the task on the host.
  type: float
  returned: always
  sample: 0.42
needed_bytes:
  description: Free bytes required in the backup dir (I(free_space_margin) x database and C(-wal)).
  type: int
  returned: always
  sample: 832419
free_bytes:
  description: Free bytes found on the backup dir's filesystem before the backup.
  type: int
  returned: always
  sample: 85477937152
pruned:
  description: Backups deleted by retention, each with its manifest (predicted in check mode).
  type: list
  elements: str
  returned: always
  sample: [/opt/risk_manager/data/backups/state_v1_20261001T120000000000Z.db]
"""


from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.module_glue import BACKUP_SPEC, DATABASE_SPEC, run_module_guarded
from ansible.module_utils.sqlite_backups import backup_database


def run(module: AnsibleModule) -> dict:
    params = module.params
    return backup_database(params["path"], params["backup_dir"], retention_days=params["retention_days"],
                           max_backups=params["max_backups"], busy_timeout_s=params["busy_timeout"],
                           free_space_margin=params["free_space_margin"], check_mode=module.check_mode,
                           want_diff=module._diff)


def main() -> None:
    module = AnsibleModule(argument_spec={**DATABASE_SPEC, **BACKUP_SPEC}, supports_check_mode=True)
    result = run_module_guarded(module, run, module.params["path"],
                                f"no backup was written (check {module.params['backup_dir']} for a leftover .tmp- file)")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
