"""A database path that is a symbolic link into a read-only place (issue 16, case 6): the write and space
checks look at the real file's directory, where SQLite writes its journal. The read-only place is a real
read-only bind mount in a private mount namespace (root writes through chmod, not through EROFS)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures import MIGRATIONS, ROOT, sha256
from make_state_db import build_v1_db

RUNNER = r"""
import json, sys
import ansible.module_utils
ansible.module_utils.__path__.append(sys.argv[1])
from ansible.module_utils.sqlite_common import RiskmgrError
from ansible.module_utils.sqlite_facts import FactsRequest, gather
from ansible.module_utils.sqlite_migration import migrate_database
facts = gather(sys.argv[2], sys.argv[3], FactsRequest(plan=True, prove_writes=True))
try:
    migrate_database(sys.argv[2], sys.argv[3])
    migrated = "migrated"
except RiskmgrError as err:
    migrated = str(err)
print(json.dumps({"write_problems": facts["write_problems"], "refusals": facts["refusals"], "migrate": migrated}))
"""


def read_only_mount_works(tmp_path) -> bool:
    probe = tmp_path / "probe"
    probe.mkdir()
    done = subprocess.run(["unshare", "-m", "sh", "-c", f"mount --bind {probe} {probe} && "
                           f"mount -o remount,bind,ro {probe} && ! touch {probe}/x"],
                          capture_output=True, timeout=30, check=False)
    return shutil.which("unshare") is not None and done.returncode == 0


def test_a_link_into_a_read_only_place_is_refused_before_any_stop(tmp_path):
    if os.geteuid() != 0 or not read_only_mount_works(tmp_path):
        pytest.skip("needs root and mount namespaces for a read-only bind mount")
    place = tmp_path / "readonly"
    place.mkdir()
    # Rollback journal: a WAL file that nobody holds open cannot even be read where its -shm cannot be made.
    real = build_v1_db(place / "state.db", rows=200, journal="delete")
    links = tmp_path / "etc"
    links.mkdir()
    link = links / "state.db"
    link.symlink_to(real)
    runner = tmp_path / "runner.py"
    runner.write_text(RUNNER)
    before = sha256(real)
    script = (f"mount --bind {place} {place} && mount -o remount,bind,ro {place} && "
              f"exec {sys.executable} -B {runner} {ROOT / 'module_utils'} {link} {MIGRATIONS}")
    done = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    result = json.loads(done.stdout)
    text = " | ".join(result["refusals"])
    assert f"directory {place} ({link} is a link to {real}) is not writable" in text, text
    assert result["migrate"] != "migrated" and str(place) in result["migrate"]
    assert "nothing was changed" in result["migrate"]
    assert sha256(real) == before
    assert sorted(os.listdir(place)) == ["state.db"]
    assert Path(link).resolve() == real
