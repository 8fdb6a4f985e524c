# doc_fragments/riskmgr_database.py
from __future__ import annotations


class ModuleDocFragment:
    # The database every module that reads or changes it acts on, and how long it waits for its lock
    # (DATABASE_SPEC in module_utils/module_glue.py).
    DOCUMENTATION = r"""
options:
  path:
    description: Absolute path of the live state database on the host (the daemon's C(state.db)).
    type: path
    required: true
  busy_timeout:
    description:
      - Seconds SQLite waits for a lock another connection (the daemon) holds before the module refuses, naming
        the holder when it can.
    type: float
"""

    # The backup options of the modules that write a backup (BACKUP_SPEC): sqlite_backup, riskmgr_migrate.
    BACKUPS = r"""
options:
  backup_dir:
    description: Directory for the backups and their manifests (mode 0700, created if missing).
    type: path
    required: true
  retention_days:
    description:
      - A backup older than this many days is pruned, once the new one is confirmed.
      - 0 turns the age limit off (I(max_backups) alone prunes).
    type: int
  max_backups:
    description:
      - A backup beyond the newest this many is pruned, once the new one is confirmed.
      - 0 turns the count limit off (I(retention_days) alone prunes). The newest backup of each schema version always stays.
    type: int
  free_space_margin:
    description: I(backup_dir) must have this factor times the size of the database and its C(-wal) free. At least 1.0.
    type: float
    default: 1.1
"""
