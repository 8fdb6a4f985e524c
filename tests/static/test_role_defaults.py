"""A setting's default lives in roles/riskmgr/defaults/main.yml and meta/argument_specs.yml, and nowhere by hand.

The module options that mirror a setting take its default from module_utils/role_defaults.py, which
tools/role_defaults_table.py generates from the defaults file. What is left to check: the two role files agree, the generated table
is current, and each module documents the defaults its argument spec has (DOCUMENTATION and the doc
fragments are text ansible-doc reads without running anything, so their defaults are written out).
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import yaml
from ansible_run import load_library_module, module_arguments

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "roles" / "riskmgr"
MODULES = sorted(path.stem for path in (ROOT / "library").glob("*.py") if not path.is_symlink())  # not the aliases

sys.path.insert(0, str(ROOT / "tools"))
from role_defaults_table import TABLE, table_text  # noqa: E402


def test_defaults_and_argument_specs_name_the_same_settings_with_the_same_defaults():
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    specs = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    options = specs["main"]["options"]
    assert set(defaults) == set(options), (f"only in defaults/main.yml: {sorted(set(defaults) - set(options))}; "
                                           f"only in meta/argument_specs.yml: {sorted(set(options) - set(defaults))}")
    differ = [f"{name}: defaults/main.yml {defaults[name]!r}, argument_specs {spec['default']!r}"
              for name, spec in options.items() if "default" in spec and spec["default"] != defaults[name]]
    assert not differ, "\n".join(differ)
    assert all(entry["options"] == options for entry in specs.values()), "every entry point validates the same settings"


def test_the_generated_table_is_current():
    assert TABLE.read_text() == table_text(), (f"{TABLE.relative_to(ROOT)} is stale: run tools/role_defaults_table.py "
                                               "after changing roles/riskmgr/defaults/main.yml")


def test_a_module_option_that_mirrors_a_setting_takes_the_role_default():
    """Break it once: a hand-kept copy that drifts is what this table replaced."""
    table = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    spec = module_arguments("riskmgr_daemon")["argument_spec"]
    assert spec["stop_timeout"]["default"] == table["riskmgr_stop_timeout"]
    assert module_arguments("riskmgr_watch")["argument_spec"]["fail_regex"]["default"] == table["riskmgr_watch_fail_regex"]


def documented_options(module: str) -> dict:
    """The options a module documents: its DOCUMENTATION and this project's fragments it extends."""
    documentation = yaml.safe_load(load_library_module(module).DOCUMENTATION)
    options = dict(documentation.get("options") or {})
    for fragment in documentation.get("extends_documentation_fragment") or []:
        name, _, part = fragment.partition(".")  # FRAGMENT.PART: the PART attribute, upper-cased
        path = ROOT / "doc_fragments" / f"{name}.py"
        if path.exists():  # the others are ansible-core's (attributes, no options)
            loader = importlib.util.spec_from_file_location(f"doc_fragment_{name}", path)
            loaded = importlib.util.module_from_spec(loader)
            loader.loader.exec_module(loaded)
            text = getattr(loaded.ModuleDocFragment, part.upper() or "DOCUMENTATION")
            options.update(yaml.safe_load(text)["options"])
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
