"""The files of a local fleet (tools/local_fleet.py): fleet.json, and inventory.yml written from it.

Python 3 standard library only.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

FLEET_FILE = "fleet.json"
INVENTORY_FILE = "inventory.yml"


class FleetError(Exception):
    """An operator-ready message; main() prints it and exits 1."""


def yaml_scalar(value) -> str:
    """A YAML scalar: JSON's string, number and boolean forms are all valid YAML."""
    return json.dumps(value)


def yaml_key(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z][A-Za-z0-9_.-]*", name) else json.dumps(name)


def inventory_text(fleet: dict, root: Path) -> str:
    lines = [
        "---",
        f"# Written by tools/local_fleet.py create --root {root}; every host is a directory of this",
        "# machine with its own state.db and stand-in daemon. Use: ansible-playbook -i <this file> ...",
        "all:",
        "  children:",
        f"    {yaml_key(fleet['group'])}:",
    ]
    group_vars = fleet.get("group_vars", {})  # fleets written before group vars existed have none
    if group_vars:
        lines.append("      vars:")
        lines += [f"        {key}: {yaml_scalar(value)}" for key, value in group_vars.items()]
    lines.append("      hosts:")
    for name, variables in fleet["hosts"].items():
        lines.append(f"        {yaml_key(name)}:")
        lines += [f"          {key}: {yaml_scalar(value)}" for key, value in variables.items()]
    return "\n".join(lines) + "\n"


def write_fleet(root: Path, fleet: dict) -> None:
    for name, text in ((FLEET_FILE, json.dumps(fleet, indent=2) + "\n"), (INVENTORY_FILE, inventory_text(fleet, root))):
        temp = root / f".{name}.tmp"
        temp.write_text(text, encoding="utf-8")
        os.replace(temp, root / name)


def read_fleet(root: Path) -> dict:
    try:
        return json.loads((root / FLEET_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FleetError(f"{root}: no {FLEET_FILE}; not a fleet made by `local_fleet.py create`") from None
