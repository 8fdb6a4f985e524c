"""tools/try_version.py: the one command that tries a candidate version, run as a developer runs it."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def try_version(candidate: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "tools" / "try_version.py"), str(candidate), "--seeds", "0-1",
                           "--targets", "py3.8-sqlite3.31.1", *extra], capture_output=True, text=True, timeout=600,
                          check=False)


def test_a_good_candidate_passes_on_shapes_and_an_old_sqlite():
    done = try_version(ROOT / "tests" / "versions" / "v3")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok   target py3.8-sqlite3.31.1: python 3.8" in done.stdout and "sqlite 3.31.1: 2 of 2" in done.stdout
    assert done.stdout.splitlines()[-1].startswith("verdict: PASS")


def test_a_candidate_that_deletes_rows_without_saying_so_fails_naming_the_file(tmp_path):
    candidate = tmp_path / "v3"
    candidate.mkdir()
    (candidate / "010_purge.sql").write_text("-- description: purge old orders\nDELETE FROM orders WHERE state = 'X';\n")
    done = try_version(candidate)
    assert done.returncode == 1
    assert "FAIL catalog:" in done.stdout and "010_purge.sql: DELETE changes what the engine cannot undo" in done.stdout
    assert done.stdout.splitlines()[-1].startswith("verdict: FAIL")


def test_a_candidate_whose_table_clashes_with_a_v1_shape_fails_with_the_seed_to_replay(tmp_path):
    candidate = tmp_path / "v3"
    candidate.mkdir()
    # orders.state is TEXT in every v1: a second definition with another affinity cannot be adopted
    (candidate / "010_orders_again.sql").write_text("-- description: clash\nALTER TABLE orders ADD COLUMN state INTEGER;\n")
    done = try_version(candidate)
    assert done.returncode == 1 and "FAILED random:0" in done.stdout and "--chains" in done.stdout
