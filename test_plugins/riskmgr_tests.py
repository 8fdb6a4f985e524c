# test_plugins/riskmgr_tests.py
"""Jinja tests for the riskmgr role's own checks of its settings, before any daemon stops."""
from __future__ import annotations

import re


def python_regex(value) -> bool:
    """Whether value compiles as a Python regular expression (what the watch's re.search needs)."""
    if not isinstance(value, str):
        return False
    try:
        re.compile(value)
    except re.error:
        return False
    return True


class TestModule:
    def tests(self):
        return {"python_regex": python_regex}
