"""A catalog directory with the shipped v1 and v2 and the test-only v3 and v4 (tests/versions), never shipped.

Standard library only, so tests/shape_roundtrip.py can use it under any target interpreter.
"""
from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "files" / "migrations"
TEST_VERSIONS = ROOT / "tests" / "versions"


def versions_catalog(directory: Path, up_to: int = 4) -> Path:
    """directory/migrations holding v1..v{up_to}: the shipped ones, then tests/versions/vN."""
    target = Path(directory) / "migrations"
    if target.exists():
        shutil.rmtree(target)
    for source in sorted(SHIPPED.iterdir()) + sorted(TEST_VERSIONS.iterdir()):
        if source.is_dir() and int(source.name[1:]) <= up_to:
            shutil.copytree(source, target / source.name)
    return target
