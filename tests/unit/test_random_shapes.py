"""The engine on generated v1 shapes it was not written for (tools/v1_shapes.py), seed by seed.

Each seed is one test, so a failure names its seed; tests/shape_roundtrip.py holds the round trip
(facts, migrate, verify, every v1 row, rerun, downgrade to the exact schema and rows, migrate again)
and replays one: `python tests/shape_roundtrip.py --seeds N`. The first seeds run in the quick loop
(scripts/test --fast), all of them in the full run; the old SQLite targets of the matrix (3.31.1 as
on Ubuntu 20.04, 3.34 as on Debian 11 and RHEL 9) run the same round trip under their own
interpreter.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from shape_roundtrip import round_trip
from targets import checked_targets

ROOT = Path(__file__).resolve().parents[2]
SHAPES = 200
QUICK = 25
OLD_SQLITE = {"py3.8-sqlite3.31.1": "0-199", "py3.9-sqlite3.34.0": "0-99"}


@pytest.mark.parametrize("seed", [pytest.param(seed, id=f"random:{seed}",
                                               marks=[pytest.mark.slow] if seed >= QUICK else [])
                                  for seed in range(SHAPES)])
def test_a_generated_v1_shape_migrates_verifies_and_downgrades_to_exactly_what_it_was(seed, tmp_path):
    round_trip(f"random:{seed}", tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("target", list(OLD_SQLITE))
def test_generated_shapes_on_an_old_sqlite(target, tmp_path):
    interpreter = checked_targets()[target]["interpreter"]
    done = subprocess.run([str(interpreter), str(ROOT / "tests" / "shape_roundtrip.py"), "--seeds",
                           OLD_SQLITE[target], "--workdir", str(tmp_path)],
                          capture_output=True, text=True, timeout=900, check=False)
    failed = [line for line in done.stdout.splitlines() if line.startswith("FAILED")]
    assert done.returncode == 0 and not failed, "\n".join(failed) or done.stdout[-2000:] + done.stderr[-2000:]
    header = done.stdout.splitlines()[0]
    assert header.endswith(f"sqlite {target.rsplit('sqlite', 1)[1]}"), header  # it really ran on that SQLite
