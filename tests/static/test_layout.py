"""The test tree collects as one pytest session: `scripts/test` runs `pytest tests` once, and
pytest's default (prepend) import mode imports each test file by its basename, so two test
files with the same name in different folders stop the whole session at collection."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def duplicate_basenames(paths):
    by_name = defaultdict(list)
    for path in paths:
        by_name[path.name].append(path)
    return {name: sorted(found) for name, found in by_name.items() if len(found) > 1}


def test_every_test_file_under_tests_has_its_own_basename():
    files = [p.relative_to(ROOT) for p in (ROOT / "tests").rglob("test_*.py")
             if "__pycache__" not in p.parts]
    assert files, "no test file found under tests/"
    assert duplicate_basenames(files) == {}


def test_the_check_sees_two_files_of_one_name():
    found = duplicate_basenames([Path("tests/unit/test_a.py"), Path("tests/faults/test_a.py"),
                                 Path("tests/unit/test_b.py")])
    assert found == {"test_a.py": [Path("tests/faults/test_a.py"), Path("tests/unit/test_a.py")]}
