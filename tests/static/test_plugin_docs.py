"""Every plugin's documentation is valid YAML of the shape ansible-doc expects: modules, action,
lookup, test, filter and callback plugins, and the doc fragments. ansible-doc renders the modules
and the lookup in scripts/test, but it has no way to show an action plugin without a module of its
name, nor a fragment on its own, so a broken block there went unnoticed (riskmgr_confirm's
DOCUMENTATION held an unquoted `: `). Runs in `scripts/test --fast` too: no Ansible run needed."""
from __future__ import annotations

import ast
import configparser
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BLOCKS = ("DOCUMENTATION", "EXAMPLES", "RETURN")


def plugin_directories(root: Path = ROOT) -> list[Path]:
    """library/ and every *_plugins directory, whether ansible.cfg names it or it merely exists."""
    config = configparser.ConfigParser(interpolation=None)
    config.read(root / "ansible.cfg")
    named = [value for key, value in config.items("defaults")
             if key == "library" or key.endswith("_plugins")] if config.has_section("defaults") else []
    found = {(root / value).resolve() for value in named} | {p.resolve() for p in root.glob("*_plugins")}
    found.add((root / "library").resolve())
    return sorted(path for path in found if path.is_dir())


def documented_files(root: Path = ROOT) -> list[Path]:
    return sorted(path for directory in plugin_directories(root) for path in directory.glob("*.py")
                  if path.name != "__init__.py")


def string_assignments(body: list[ast.stmt]):
    """(name, node) of each `NAME = <expression>` in body."""
    for node in body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            yield node.targets[0].id, node


def parse_block(where: str, node: ast.Assign, problems: list[str]):
    """The block's YAML, or None with a problem that names the file's line."""
    try:
        text = ast.literal_eval(node.value)
    except ValueError:
        problems.append(f"{where} (line {node.lineno}): not a plain string; ansible-doc reads it without "
                        "running the file, so it must be one")
        return None
    if not isinstance(text, str):
        problems.append(f"{where} (line {node.lineno}): not a string")
        return None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f"line {node.lineno + mark.line}" if mark is not None else f"block at line {node.lineno}"
        problems.append(f"{where} ({line}): not valid YAML: {getattr(err, 'problem', None) or err}; "
                        "quote a value that holds ': ' or starts with a YAML indicator")
        return None


def check_options(where: str, options, problems: list[str]) -> None:
    if options is None:
        return
    if not isinstance(options, dict):
        problems.append(f"{where}: options is not a mapping")
        return
    for name, option in options.items():
        if not isinstance(option, dict) or not option.get("description"):
            problems.append(f"{where}: option {name} has no description")
        elif "suboptions" in option:
            check_options(f"{where}: option {name}", option["suboptions"], problems)


def check_plugin(relative: str, tree: ast.Module, problems: list[str]) -> None:
    for name, node in string_assignments(tree.body):
        if name not in BLOCKS:
            continue
        where = f"{relative} {name}"
        data = parse_block(where, node, problems)
        if data is None:
            continue
        if name == "DOCUMENTATION":
            if not isinstance(data, dict) or not data.get("short_description"):
                problems.append(f"{where}: a mapping with a short_description is expected")
            else:
                check_options(where, data.get("options"), problems)
        elif name == "RETURN":
            if not isinstance(data, dict) or any(not isinstance(v, dict) or not v.get("description")
                                                 for v in data.values()):
                problems.append(f"{where}: a mapping of returned keys, each with a description, is expected")
        elif not isinstance(data, list):
            problems.append(f"{where}: a list of tasks is expected")


def check_fragment(relative: str, tree: ast.Module, problems: list[str]) -> None:
    """Each string attribute of ModuleDocFragment is a fragment (DOCUMENTATION, or a named one)."""
    classes = [node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "ModuleDocFragment"]
    if not classes:
        problems.append(f"{relative}: no class ModuleDocFragment")
        return
    for name, node in string_assignments(classes[0].body):
        where = f"{relative} ModuleDocFragment.{name}"
        data = parse_block(where, node, problems)
        if data is not None and not isinstance(data, dict):
            problems.append(f"{where}: a mapping is expected")
        elif data is not None:
            check_options(where, data.get("options"), problems)


def doc_problems(path: Path, root: Path = ROOT) -> list[str]:
    relative = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=relative)
    except SyntaxError as err:
        return [f"{relative} (line {err.lineno}): not valid Python: {err.msg}"]
    problems: list[str] = []
    if path.parent.name == "doc_fragments" or path.parent.name.endswith("doc_fragment_plugins"):
        check_fragment(relative, tree, problems)
    else:
        check_plugin(relative, tree, problems)
    return problems


FILES = documented_files()


def test_every_kind_of_plugin_the_project_ships_is_checked():
    directories = {path.parent.name for path in FILES}
    assert {"library", "action_plugins", "lookup_plugins", "test_plugins", "doc_fragments"} <= directories


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(ROOT)) for p in FILES])
def test_documentation_is_valid_yaml_of_the_expected_shape(path):
    assert doc_problems(path) == []


def test_an_unquoted_colon_is_reported_with_its_file_and_line(tmp_path):
    plugin = tmp_path / "action_plugins" / "broken.py"
    plugin.parent.mkdir()
    plugin.write_text('DOCUMENTATION = r"""\nshort_description: Broken\noptions:\n  given:\n'
                      '    description: Confirmed already (or check mode): ask nothing.\n"""\n'
                      'RETURN = r"""\nconfirmed:\n  type: bool\n"""\n', encoding="utf-8")
    problems = doc_problems(plugin, tmp_path)
    assert len(problems) == 2, problems
    assert problems[0].startswith("action_plugins/broken.py DOCUMENTATION (line 5): not valid YAML")
    assert "RETURN" in problems[1] and "description" in problems[1]


def test_a_fragment_that_is_not_a_mapping_is_reported(tmp_path):
    fragment = tmp_path / "doc_fragments" / "odd.py"
    fragment.parent.mkdir()
    fragment.write_text('class ModuleDocFragment:\n    DOCUMENTATION = r"""\n- options\n"""\n', encoding="utf-8")
    assert doc_problems(fragment, tmp_path) == ["doc_fragments/odd.py ModuleDocFragment.DOCUMENTATION: "
                                                "a mapping is expected"]
