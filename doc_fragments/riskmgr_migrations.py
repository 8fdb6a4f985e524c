# doc_fragments/riskmgr_migrations.py
from __future__ import annotations


class ModuleDocFragment:
    # The options of every module that reads the migration files (MIGRATION_SOURCE_SPEC in
    # module_utils/sqlite_catalog.py): one description for all of them.
    DOCUMENTATION = r"""
options:
  migrations_dir:
    description:
      - Directory on the host holding the project's C(files/migrations) (C(v1/), C(v2/), ...).
      - Mutually exclusive with I(migrations); the playbooks send I(migrations) instead.
    type: path
  migrations:
    description:
      - The migration files themselves, a dict from C(vN/NAME.sql) (C(v2/030_analytics_indexes.sql)) to
        its text, as the controller read them (the C(riskmgr_migrations) lookup); nothing is staged on
        the host. Checksums are those of the texts in UTF-8, equal to the files'.
      - Mutually exclusive with I(migrations_dir).
    type: dict
  migrations_origin:
    description: Where the texts of I(migrations) came from, so that messages name a file the operator can fix.
    type: str
    default: files/migrations
"""

    # The versions' optional files: only the modules that plan or judge a version take this option
    # (sqlite_migrate, sqlite_verify, sqlite_schema_facts), as riskmgr_migrations.version_options.
    VERSION_OPTIONS = r"""
options:
  options:
    description:
      - The options of the versions' optional files (a file whose header says C(riskmgr option=NAME) is applied
        when NAME is true here). I(track_unrealized_pnl=true) is the same as NAME C(track_unrealized_pnl) here.
    type: dict
    default: {}
"""
