"""execution-environment.yml and ansible-navigator.yml: the image AWX / Automation Platform runs the
playbooks in, and the navigator settings that use it.

No image is built here (no container engine): `ansible-builder create` must turn the definition
into a complete build context, every Python pin of the image must be the one requirements.txt
installs (the version every test here runs), and the image must hold every runtime dependency of
ansible-core and ansible-runner, pinned. ansible-navigator must read the project's settings, and
run the playbook without an execution environment (`--ee false`, the command of
docs/awx-and-large-fleets.md) in check mode against a local fleet (slow).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib.metadata import requires
from pathlib import Path

import pytest
import yaml
from fault_fleet import HOST, V1_SHAPE, V2_SHAPE, Fleet, PlaybookRun, assert_end_state, capture
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
DEFINITION = ROOT / "execution-environment.yml"
TIMEOUT_S = 60
PLAYBOOK_TIMEOUT_S = 180


def tool_env() -> dict[str, str]:
    """ansible-navigator without an execution environment runs the ansible-playbook it finds on PATH."""
    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}", "ANSIBLE_NOCOLOR": "1"}
    env.pop("ANSIBLE_CONFIG", None)
    return env


def pins(lines) -> dict[str, str]:
    """{canonical name: version} of `name==version` lines; anything else is not a pin and fails."""
    found = {}
    for line in lines:
        requirement = Requirement(line.split("#", 1)[0].strip())
        specifier, = requirement.specifier  # exactly one specifier...
        assert specifier.operator == "==", f"{line}: not pinned with =="  # ...and it pins
        found[canonicalize_name(requirement.name)] = specifier.version
    return found


def requirements_txt() -> dict[str, str]:
    return pins(line for line in (ROOT / "requirements.txt").read_text().splitlines() if line.strip())


def definition() -> dict:
    return yaml.safe_load(DEFINITION.read_text())


def image_pins() -> dict[str, str]:
    dependencies = definition()["dependencies"]
    return pins([dependencies["ansible_core"]["package_pip"], dependencies["ansible_runner"]["package_pip"],
                 *dependencies["python"]])


def runtime_dependencies(*distributions: str) -> set[str]:
    """The distributions and everything they need at run time (no extras), from the installed metadata."""
    found, todo = set(), list(distributions)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in found:
            continue
        found.add(name)
        for line in requires(name) or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return found


def test_every_python_pin_of_the_image_is_the_one_requirements_txt_installs():
    wanted, image = requirements_txt(), image_pins()
    assert {"ansible-core", "ansible-runner"} <= set(image)
    assert {name: version for name, version in image.items() if wanted.get(name) != version} == {}, \
        f"pins of {DEFINITION.name} that differ from requirements.txt ({ {n: wanted.get(n) for n in image} })"


def test_the_image_pins_every_runtime_dependency_of_ansible_core_and_ansible_runner():
    needed = runtime_dependencies("ansible-core", "ansible-runner")
    assert {"jinja2", "pyyaml", "pexpect", "cryptography"} <= needed  # the walk is not vacuous
    assert sorted(needed - set(image_pins())) == []


def test_ansible_builder_create_writes_the_build_context(tmp_path):
    context = tmp_path / "context"
    created = subprocess.run([str(VENV_BIN / "ansible-builder"), "create", "-f", str(DEFINITION), "-c", str(context),
                              "--output-filename", "Containerfile"], cwd=ROOT, capture_output=True, text=True,
                             timeout=TIMEOUT_S, check=False)
    assert created.returncode == 0, created.stdout + created.stderr
    containerfile = (context / "Containerfile").read_text()
    wanted, spec = requirements_txt(), definition()
    assert f'ARG EE_BASE_IMAGE="{spec["images"]["base_image"]["name"]}"' in containerfile
    assert (f'ARG ANSIBLE_INSTALL_REFS="ansible-core=={wanted["ansible-core"]} '
            f'ansible-runner=={wanted["ansible-runner"]}"') in containerfile
    assert f'ARG PYCMD="{spec["dependencies"]["python_interpreter"]["python_path"]}"' in containerfile
    built = context / "_build"
    assert pins(built.joinpath("requirements.txt").read_text().splitlines()) == {
        name: version for name, version in image_pins().items() if name not in ("ansible-core", "ansible-runner")}
    system = built.joinpath("bindep.txt").read_text()
    assert re.search(r"^openssh-clients \[platform:rpm\]", system, re.MULTILINE), system
    # The scripts the Containerfile runs are in the context.
    for script in ("assemble", "install-from-bindep", "check_ansible", "entrypoint"):
        assert (built / "scripts" / script).is_file(), script


def test_navigator_reads_the_project_settings_and_uses_the_image_built_from_the_definition(tmp_path):
    shown = subprocess.run([str(VENV_BIN / "ansible-navigator"), "settings", "--effective", "--mode", "stdout",
                            "--ee", "false", "--lf", str(tmp_path / "navigator.log")], cwd=ROOT,
                           env=tool_env(), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    settings = yaml.safe_load(shown.stdout)["ansible-navigator"]
    image_tag, = definition()["options"]["tags"]
    # podman and docker name a locally built riskmgr-ee:latest localhost/riskmgr-ee:latest.
    assert settings["execution-environment"]["image"] == f"localhost/{image_tag}"
    assert settings["playbook-artifact"]["save-as"].startswith("{playbook_dir}/.navigator/")
    assert ".navigator/" in (ROOT / ".gitignore").read_text().splitlines()


@pytest.mark.slow
def test_navigator_without_an_execution_environment_runs_the_plan_and_changes_nothing(tmp_path):
    fleet = Fleet(tmp_path / "fleet", hosts=1)
    try:
        before = capture(fleet, HOST)
        artifact = tmp_path / "migrate_v2-artifact.json"
        # The documented command (docs/awx-and-large-fleets.md); its log and artifact go to tmp_path.
        completed = subprocess.run(
            [str(VENV_BIN / "ansible-navigator"), "run", "migrate_v2.yml", "--ee", "false", "--mode", "stdout",
             "-i", str(fleet.root / "inventory.yml"), "--check", "--diff", "-e", f"riskmgr_report_dir={fleet.reports}",
             "--pas", str(artifact), "--lf", str(tmp_path / "navigator.log")],
            cwd=ROOT, env=tool_env(), stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=PLAYBOOK_TIMEOUT_S, check=False)
        run = PlaybookRun(completed.returncode, completed.stdout, completed.stderr)
        assert_end_state(fleet, before, run, db="v1", daemon="untouched")
        new_indexes = sorted(name for kind, name in V2_SHAPE.keys() - V1_SHAPE.keys() if kind == "index")
        assert new_indexes and all(name in run.stdout for name in new_indexes), run.stdout[-3000:]
        assert json.loads(artifact.read_text())["status"] == "successful"
        assert not fleet.reports.exists()  # check mode writes no report
    finally:
        fleet.destroy()
