"""Makes library/ and module_utils/ importable by plain pytest, exactly as Ansible ships them.

Modules and module_utils import each other as ansible.module_utils.<name>; adding our
module_utils/ to that package's search path makes pytest load the very same files, and the
short alias (import sqlite_schema) points at the same module object.
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for sub in ("library", "tools", "tests"):
    path = str(ROOT / sub)
    if path not in sys.path:
        sys.path.insert(0, path)

import ansible.module_utils  # noqa: E402  (needs ansible-core, as the modules do)

if str(ROOT / "module_utils") not in ansible.module_utils.__path__:
    ansible.module_utils.__path__.append(str(ROOT / "module_utils"))
for file in sorted((ROOT / "module_utils").glob("*.py")):
    sys.modules[file.stem] = importlib.import_module(f"ansible.module_utils.{file.stem}")

from fixtures import *  # noqa: E402,F401,F403  (shared database fixtures)
