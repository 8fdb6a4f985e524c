"""The managed-node targets of tools/target_pythons.py, for pytest parametrisation.

    from targets import TARGET_PARAMS, checked_targets

    @pytest.mark.parametrize("target", TARGET_PARAMS)      # ids: py3.8, ..., py3.8-sqlite3.31.1
    def test_on_target(target):
        wrapper = checked_targets()[target.name]["interpreter"]   # ansible_python_interpreter

Collecting builds nothing. checked_targets() makes (or keeps) every wrapper and checks each one
reports its Python and SQLite versions, once per session: about a minute on a cold cache
(.cache/target_pythons), under a second warm. A target that cannot be made fails the test with
the tool's one-line message; it is never skipped.
"""
from __future__ import annotations

import functools

import pytest
from target_pythons import TARGETS, TARGETS_BY_NAME, TargetError, ensure_targets

TARGET_PARAMS = [pytest.param(target, id=target.name) for target in TARGETS]


def target_params(*names: str) -> list:
    """Parameters for some targets only; an unknown name fails at collection."""
    return [pytest.param(TARGETS_BY_NAME[name], id=name) for name in names]


@functools.lru_cache(maxsize=None)
def _ensure_all() -> tuple[dict[str, dict], str | None]:
    """Once per session, failure included: a failed build is not tried again by every test."""
    try:
        return {row["target"]: row for row in ensure_targets()}, None
    except TargetError as err:
        return {}, f"tools/target_pythons.py: {err}"


def checked_targets() -> dict[str, dict]:
    """{target name: {"interpreter", "python", "sqlite", "executable", ...}} of every checked wrapper."""
    checked, error = _ensure_all()
    if error:
        pytest.fail(error, pytrace=False)
    return checked
