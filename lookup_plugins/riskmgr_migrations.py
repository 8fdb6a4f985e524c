# lookup_plugins/riskmgr_migrations.py
from __future__ import annotations

DOCUMENTATION = r"""
name: riskmgr_migrations
short_description: The project's migration files, read on the controller, for the modules to receive as text
description:
  - Returns one dict, C({"v1/000_baseline.sql" -> text, "v2/010_schema_version.sql" -> text, ...}),
    of every C(vN/*.sql) under the given directory, read as UTF-8 with every byte kept (line ends,
    trailing newline), so the checksums the hosts compute and record equal those of the files.
  - The playbooks pass it as the modules' I(migrations) option, so nothing is staged on the hosts.
options:
  _terms:
    description: The migrations directory on the controller (the project's C(files/migrations)).
    required: true
author: [Risk Platform team]
"""

EXAMPLES = r"""
- name: Send the migrations to the host with the module call
  sqlite_migrate:
    path: /opt/risk_manager/data/state.db
    migrations: "{{ lookup('riskmgr_migrations', playbook_dir ~ '/files/migrations') }}"
"""

RETURN = r"""
_raw:
  description: One dict from C(vN/NAME.sql) to the file's text.
  type: list
  elements: dict
"""

import re
from pathlib import Path

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase

VERSION_DIR = re.compile(r"^v\d+$")


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        if len(terms) != 1:
            raise AnsibleLookupError("riskmgr_migrations takes one directory (riskmgr_migrations_src)")
        return [read_migrations(Path(str(terms[0])))]


def read_migrations(root: Path) -> dict[str, str]:
    if not root.is_dir():
        raise AnsibleLookupError(f"{root}: no such directory on the controller; point riskmgr_migrations_src at "
                                 "the project's files/migrations")
    texts = {}
    for version_dir in sorted(p for p in root.iterdir() if p.is_dir() and VERSION_DIR.match(p.name)):
        for sql in sorted(version_dir.glob("*.sql")):
            try:
                # newline="" keeps \r\n as it is: the text must hash like the file.
                with open(sql, encoding="utf-8", newline="") as handle:
                    texts[f"{version_dir.name}/{sql.name}"] = handle.read()
            except (OSError, UnicodeDecodeError) as err:
                raise AnsibleLookupError(f"{sql}: cannot be read as UTF-8 text ({err}); restore it from the "
                                         "project") from err
    if not texts:
        raise AnsibleLookupError(f"{root}: no vN/*.sql migration files; point riskmgr_migrations_src at the "
                                 "project's files/migrations")
    return texts
