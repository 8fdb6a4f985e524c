"""The default inventory names no host that does not exist; the examples parse, set only what differs from
the role's defaults, and describe the two kinds of host docs/hosts.md explains.

Read by the real ansible-inventory, from the project root, so ansible.cfg applies as it does for operators.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_INVENTORY = ROOT / ".venv" / "bin" / "ansible-inventory"
EXAMPLES = sorted((ROOT / "inventory" / "examples").glob("*.yml"))
ROLE_DEFAULTS = yaml.safe_load((ROOT / "roles" / "riskmgr" / "defaults" / "main.yml").read_text())


def inventory(*args: str) -> dict:
    listed = subprocess.run([str(ANSIBLE_INVENTORY), *args, "--list"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120, check=True)
    return json.loads(listed.stdout)


def test_the_default_inventory_has_no_hosts():
    assert inventory()["_meta"]["hostvars"] == {}


def test_group_vars_all_sets_only_what_differs_from_the_defaults():
    settings = yaml.safe_load((ROOT / "inventory" / "group_vars" / "all.yml").read_text()) or {}
    assert {key: value for key, value in settings.items() if ROLE_DEFAULTS.get(key) == value} == {}


@pytest.mark.parametrize("example", EXAMPLES, ids=[path.stem for path in EXAMPLES])
def test_an_example_sets_known_variables_that_differ_from_the_defaults(example):
    hostvars = inventory("-i", str(example))["_meta"]["hostvars"]
    assert hostvars, f"{example.name} lists no host"
    for host, variables in hostvars.items():
        ours = {key: value for key, value in variables.items() if key.startswith("riskmgr_")}
        assert set(ours) <= set(ROLE_DEFAULTS), f"{host}: unknown {sorted(set(ours) - set(ROLE_DEFAULTS))}"
        assert {key: value for key, value in ours.items() if ROLE_DEFAULTS[key] == value} == {}, host


def test_the_seed_layout_example_runs_relative_scripts_from_the_daemon_directory_as_its_user():
    hostvars = inventory("-i", str(ROOT / "inventory" / "examples" / "seed_layout.yml"))["_meta"]["hostvars"]
    for variables in hostvars.values():
        assert variables["riskmgr_service_manager"] == "command"
        assert (variables["riskmgr_start_command"], variables["riskmgr_stop_command"]) == (
            "./scripts/start_daemon.sh", "./scripts/stop_daemon.sh")
        assert variables["riskmgr_daemon_chdir"].startswith("/") and variables["riskmgr_daemon_user"] not in ("", "root")
