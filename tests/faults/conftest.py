"""Fixtures of the fault-injection suite: fleets under tmp_path, always torn down."""
from __future__ import annotations

import pytest
from fault_fleet import Fleet


@pytest.fixture
def make_fleet(tmp_path):
    """make_fleet(hosts=1, **create options) -> Fleet; every daemon is stopped after the test."""
    fleets: list[Fleet] = []

    def make(hosts: int = 1, **options) -> Fleet:
        fleet = Fleet(tmp_path / f"fleet{len(fleets) + 1}", hosts=hosts, **options)
        fleets.append(fleet)
        return fleet

    yield make
    for fleet in fleets:
        fleet.destroy()
