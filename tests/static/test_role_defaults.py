"""A setting's default lives in roles/riskmgr/defaults/main.yml and meta/argument_specs.yml, and nowhere by hand.

The module options that mirror a setting take its default from module_utils/role_defaults.py, and document it
through doc_fragments/riskmgr_role_defaults.py: tools/role_defaults_table.py generates both from the role, by
its one table FRAGMENT_PARTS. What is left to check: the two role files agree, the generated files are current,
each module documents the defaults its argument spec has, and no third copy of a default is written by hand
(test_no_hand_written_copy_of_a_role_default, which names the file and the line of each).
"""
from __future__ import annotations

import ast
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from ansible_run import load_library_module, module_arguments

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "roles" / "riskmgr"
MODULES = sorted(path.stem for path in (ROOT / "library").glob("*.py") if not path.is_symlink())  # not the aliases

sys.path.insert(0, str(ROOT / "tools"))
from role_defaults_table import FRAGMENT, FRAGMENT_PARTS, TABLE, fragment_text, table_text  # noqa: E402

DEFAULTS = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
# module option -> the settings it mirrors (recovery_method and method mirror the same one)
MIRRORED_OPTIONS: dict[str, set[str]] = {}
for _part in FRAGMENT_PARTS.values():
    for _option, _setting in _part.items():
        MIRRORED_OPTIONS.setdefault(_option, set()).add(_setting)


def test_defaults_and_argument_specs_name_the_same_settings_with_the_same_defaults():
    specs = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    options = specs["main"]["options"]
    assert set(DEFAULTS) == set(options), (f"only in defaults/main.yml: {sorted(set(DEFAULTS) - set(options))}; "
                                           f"only in meta/argument_specs.yml: {sorted(set(options) - set(DEFAULTS))}")
    differ = [f"{name}: defaults/main.yml {DEFAULTS[name]!r}, argument_specs {spec['default']!r}"
              for name, spec in options.items() if "default" in spec and spec["default"] != DEFAULTS[name]]
    assert not differ, "\n".join(differ)
    assert all(entry["options"] == options for entry in specs.values()), "every entry point validates the same settings"


@pytest.mark.parametrize("generated, text", [(TABLE, table_text), (FRAGMENT, fragment_text)],
                         ids=["module_utils/role_defaults.py", "doc_fragments/riskmgr_role_defaults.py"])
def test_the_generated_files_are_current(generated, text):
    assert generated.read_text() == text(), (f"{generated.relative_to(ROOT)} is stale: run tools/role_defaults_table.py "
                                             "after changing roles/riskmgr/defaults/main.yml or its argument specs")


def test_the_tool_checks_without_writing(capsys):
    """scripts/test runs `tools/role_defaults_table.py --check` before it renders any documentation."""
    import role_defaults_table
    assert role_defaults_table.main(["--check"]) == 0
    assert "current: module_utils/role_defaults.py, doc_fragments/riskmgr_role_defaults.py" in capsys.readouterr().out


def test_a_module_option_that_mirrors_a_setting_takes_the_role_default():
    """Break it once: a hand-kept copy that drifts is what this table replaced."""
    spec = module_arguments("riskmgr_daemon")["argument_spec"]
    assert spec["stop_timeout"]["default"] == DEFAULTS["riskmgr_stop_timeout"]
    assert module_arguments("riskmgr_watch")["argument_spec"]["fail_regex"]["default"] == DEFAULTS["riskmgr_watch_fail_regex"]


def fragment_options(reference: str) -> dict | None:
    """The options of this project's fragment FRAGMENT.PART (None for ansible-core's, which have none)."""
    name, _, part = reference.partition(".")
    path = ROOT / "doc_fragments" / f"{name}.py"
    if not path.exists():
        return None
    loader = importlib.util.spec_from_file_location(f"doc_fragment_{name}", path)
    loaded = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(loaded)
    return yaml.safe_load(getattr(loaded.ModuleDocFragment, part.upper() or "DOCUMENTATION"))["options"]


def documented_options(module: str) -> dict:
    """The options a module documents, merged as ansible-doc merges them: a fragment adds the keys an option
    does not have yet (the default of riskmgr_role_defaults), and what is written already wins."""
    documentation = yaml.safe_load(load_library_module(module).DOCUMENTATION)
    options = {name: dict(option) for name, option in (documentation.get("options") or {}).items()}
    for reference in documentation.get("extends_documentation_fragment") or []:
        for name, option in (fragment_options(reference) or {}).items():
            options[name] = {**option, **options.get(name, {})}
    return options


@pytest.mark.parametrize("module", MODULES)
def test_each_module_documents_the_defaults_it_has(module):
    documented, spec = documented_options(module), module_arguments(module)["argument_spec"]
    assert set(documented) == set(spec), (f"library/{module}.py: undocumented {sorted(set(spec) - set(documented))}, "
                                          f"documented but no option {sorted(set(documented) - set(spec))}")
    differ = [f"{option}: documented {documented[option].get('default')!r}, argument spec "
              f"{spec[option].get('default')!r}" for option in sorted(spec)
              if documented[option].get("default") != spec[option].get("default")]
    assert not differ, f"library/{module}.py: " + "; ".join(differ)


def test_ansible_doc_renders_the_role_defaults_of_the_mirrored_options():
    """What an operator reads: ansible-doc merges the generated fragment into the module's own text."""
    rendered = subprocess.run([str(ROOT / ".venv" / "bin" / "ansible-doc"), "-M", str(ROOT / "library"), "--json", "riskmgr_migrate"], cwd=ROOT,
                              capture_output=True, text=True, check=True)
    options = json.loads(rendered.stdout)["riskmgr_migrate"]["doc"]["options"]
    expected = {option: DEFAULTS[setting] for part in ("daemon", "smoke", "database", "backups", "recovery_method",
                                                       "integrity_downtime", "track_unrealized_pnl")
                for option, setting in FRAGMENT_PARTS[part].items()}
    assert {option: options[option].get("default") for option in expected} == expected
    assert options["stop_timeout"]["description"] == "Seconds to wait for the daemon to exit after the stop."  # its own text


# --- no third copy -----------------------------------------------------------------------------------------

def rendered(value) -> set[str]:
    """How a default is written in a Markdown table or in YAML text."""
    if isinstance(value, bool):
        return {str(value).lower()}
    if value == "":
        return {'""', "''", "(empty)"}
    if isinstance(value, (list, dict)):
        return {json.dumps(value), yaml.safe_dump(value, default_flow_style=True).strip()}
    return {str(value)}


def is_copy(setting: str, value) -> bool:
    default = DEFAULTS[setting]
    return type(value) is type(default) and value == default or (
        isinstance(default, (int, float)) and not isinstance(default, bool)
        and isinstance(value, (int, float)) and not isinstance(value, bool) and value == default)


def documentation_copies(relative: str, tree: ast.Module) -> list[str]:
    """A `default:` of a mirrored option, equal to the role's, in a DOCUMENTATION block or a hand fragment."""
    problems = []
    bodies = [tree.body] + [node.body for node in tree.body if isinstance(node, ast.ClassDef)]
    for body in bodies:
        for node in body:
            if not (isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
                    and isinstance(node.value.value, str) and "options:" in node.value.value):
                continue
            try:
                data = yaml.safe_load(node.value.value)
            except yaml.YAMLError:
                continue  # test_plugin_docs reports it
            options = data.get("options") if isinstance(data, dict) else None
            lines = node.value.value.splitlines()
            for option, doc in (options or {}).items():
                at = next((node.lineno + n for n, line in enumerate(lines) if line.startswith(f"  {option}:")),
                          node.lineno)
                for setting in MIRRORED_OPTIONS.get(option, ()):
                    if isinstance(doc, dict) and "default" in doc and is_copy(setting, doc["default"]):
                        problems.append(f"{relative}:{at}: option {option} writes the default of {setting} "
                                        "by hand; leave it out and extend riskmgr_role_defaults")
    return problems


def code_copies(relative: str, tree: ast.Module) -> list[str]:
    """Python that writes a mirrored default again: an option spec `"stop_timeout": {"default": 60}`, a parameter
    `stop_timeout=60`, or a distinctive string default (the watch's regex) written out."""
    distinctive = {DEFAULTS[setting]: setting for settings in MIRRORED_OPTIONS.values() for setting in settings
                   if isinstance(DEFAULTS[setting], str) and re.search(r"[^\w]", DEFAULTS[setting])}
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if not (isinstance(key, ast.Constant) and key.value in MIRRORED_OPTIONS and isinstance(value, ast.Dict)):
                    continue
                for inner_key, inner in zip(value.keys, value.values):
                    if (isinstance(inner_key, ast.Constant) and inner_key.value == "default"
                            and isinstance(inner, ast.Constant)
                            and any(is_copy(s, inner.value) for s in MIRRORED_OPTIONS[key.value])):
                        problems.append(f"{relative}:{inner.lineno}: option {key.value} has a hand-written default; "
                                        "use module_glue.role_default")
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            arguments = node.args.posonlyargs + node.args.args
            pairs = list(zip(arguments[len(arguments) - len(node.args.defaults):], node.args.defaults))
            pairs += [(a, d) for a, d in zip(node.args.kwonlyargs, node.args.kw_defaults) if d is not None]
            for argument, default in pairs:
                name = re.sub(r"_s$", "", argument.arg)
                # a False flag is a plain function's "not unless asked", not a setting's value
                if (name in MIRRORED_OPTIONS and isinstance(default, ast.Constant) and default.value is not False
                        and any(is_copy(s, default.value) for s in MIRRORED_OPTIONS[name])):
                    problems.append(f"{relative}:{default.lineno}: parameter {argument.arg} of {node.name} repeats the "
                                    "role's default; take it from role_defaults.ROLE_DEFAULTS")
        elif (isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
              and not isinstance(node.value.value, bool)):
            for target in node.targets:
                named = [option for option in MIRRORED_OPTIONS
                         if isinstance(target, ast.Name) and option.upper() in target.id]
                if any(is_copy(s, node.value.value) for option in named for s in MIRRORED_OPTIONS[option]):
                    problems.append(f"{relative}:{node.lineno}: {target.id} repeats the role's default; take it "
                                    "from role_defaults.ROLE_DEFAULTS")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in distinctive:
            problems.append(f"{relative}:{node.lineno}: {node.value!r} is the default of {distinctive[node.value]}; "
                            "take it from role_defaults.ROLE_DEFAULTS or the module's result")
    return problems


def python_copies(root: Path = ROOT) -> list[str]:
    problems = []
    files = [path for directory in ("library", "action_plugins", "module_utils", "doc_fragments")
             for path in sorted((root / directory).glob("*.py")) if not path.is_symlink()]
    for path in files:
        if path in (root / TABLE.relative_to(ROOT), root / FRAGMENT.relative_to(ROOT)):
            continue  # the generated ones
        relative = str(path.relative_to(root))
        tree = ast.parse(path.read_text(), filename=relative)
        problems += documentation_copies(relative, tree) + code_copies(relative, tree)
    return problems


def yaml_copies(relative: str, data, problems: list[str]) -> None:
    if isinstance(data, dict):
        for key, value in data.items():
            if key in DEFAULTS and is_copy(key, value):
                problems.append(f"{relative}: {key}: {value!r} is the role's default; set only what differs")
            else:
                yaml_copies(relative, value, problems)
    elif isinstance(data, list):
        for item in data:
            yaml_copies(relative, item, problems)


SETTING = re.compile(r"`(riskmgr_\w+)`")
ASSIGNMENT = re.compile(r"^\s*(riskmgr_\w+):\s*(\S[^#]*?)\s*(?:#.*)?$")


def markdown_copies(relative: str, text: str) -> list[str]:
    """A table row about a setting with its default in a cell, or a YAML line in a code block setting it to
    its default (an example inventory shows what differs)."""
    problems, in_code = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            in_code = not in_code
            continue
        if in_code:
            match = ASSIGNMENT.match(line)
            if match and match.group(1) in DEFAULTS:
                try:
                    value = yaml.safe_load(match.group(2))
                except yaml.YAMLError:
                    continue
                if is_copy(match.group(1), value):
                    problems.append(f"{relative}:{number}: {match.group(1)}: {match.group(2)} is the role's default")
        elif line.startswith("|"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            settings = [name for name in SETTING.findall(cells[0]) if name in DEFAULTS]
            written = {piece.strip().strip("`") for cell in cells[1:] for piece in cell.split(" / ")}
            for setting in settings:
                if written & {text.strip("`") for text in rendered(DEFAULTS[setting])}:
                    problems.append(f"{relative}:{number}: the table row of {setting} writes its default; "
                                    "`ansible-doc -t role -r roles riskmgr` shows it")
    return problems


def prose_copies(root: Path = ROOT) -> list[str]:
    problems = []
    for path in sorted((root / "inventory").rglob("*.yml")):
        yaml_copies(str(path.relative_to(root)), yaml.safe_load(path.read_text()), problems)
    for path in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        problems += markdown_copies(str(path.relative_to(root)), path.read_text())
    return problems


def test_no_hand_written_copy_of_a_role_default():
    """Every setting's default is in exactly two places, the defaults and the argument specs (and the files made
    from them): not in library/, action_plugins/, module_utils/, doc_fragments/, inventory/, docs/ or the README."""
    problems = python_copies() + prose_copies()
    assert not problems, "\n".join(problems)


def test_each_kind_of_copy_is_found(tmp_path):
    """The checks above find what they look for: a copy of each kind, in a tree of its own."""
    (tmp_path / "library").mkdir()
    (tmp_path / "library" / "m.py").write_text(
        'DOCUMENTATION = r"""\noptions:\n  stop_timeout:\n    description: x\n    type: int\n    default: 60\n"""\n'
        'SPEC = {"smoke_timeout": {"type": "int", "default": 120}}\n'
        'def stop(stop_timeout=60):\n    return "ERROR|CRITICAL|Traceback"\n'
        'DEFAULT_BUSY_TIMEOUT_S = 10.0\n')
    for directory in ("action_plugins", "module_utils", "doc_fragments", "inventory", "docs"):
        (tmp_path / directory).mkdir()
    (tmp_path / "inventory" / "all.yml").write_text("all:\n  vars:\n    riskmgr_stop_timeout: 60\n")
    (tmp_path / "README.md").write_text("| `riskmgr_start_settle` / `riskmgr_start_timeout` | 3 / 60 | x |\n"
                                        "```yaml\n    riskmgr_service_manager: systemd   # a unit\n```\n")
    (tmp_path / "docs" / "x.md").write_text("| `riskmgr_stop_timeout` | 90 | differs: fine |\n")
    found = python_copies(tmp_path) + prose_copies(tmp_path)
    assert [line.split(":")[0] for line in found] == [
        "library/m.py", "library/m.py", "library/m.py", "library/m.py", "library/m.py", "inventory/all.yml", "README.md",
        "README.md", "README.md"], "\n".join(found)
