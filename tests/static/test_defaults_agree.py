"""The modules' defaults are the operator's: roles/riskmgr/defaults/main.yml is the contract.

Each module option that mirrors a public riskmgr_* variable defaults to that variable's value, so
a module called without the option (ad hoc, or by a task that leaves it out) does what the
playbooks do; the options that name what a module acts on (the database, the unit) have no
default at all; every riskmgr_* variable is accounted for; and each module documents the
defaults its argument spec really has.

The argument specs are the ones each library module passes to AnsibleModule (module_arguments);
the role defaults are read as YAML. Nothing runs on a host.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml
from ansible_run import load_library_module, module_arguments
from sqlite_catalog import load_catalog

ROOT = Path(__file__).resolve().parents[2]
ROLE_DEFAULTS = ROOT / "roles" / "riskmgr" / "defaults" / "main.yml"
MODULES = sorted(path.stem for path in (ROOT / "library").glob("*.py"))

DAEMON_MODULES = ("riskmgr_daemon", "riskmgr_upgrade", "riskmgr_recover", "riskmgr_watch")
DATABASE_MODULES = ("sqlite_schema_facts", "sqlite_backup", "sqlite_migrate", "sqlite_verify", "sqlite_restore",
                    "riskmgr_upgrade", "riskmgr_recover")
MIGRATING_MODULES = ("sqlite_schema_facts", "sqlite_migrate", "sqlite_verify", "riskmgr_upgrade")

# riskmgr_X -> every (module, option) whose default must be the variable's value.
MIRRORED = {
    "riskmgr_backup_retention_days": [("sqlite_backup", "retention_days"), ("riskmgr_upgrade", "retention_days")],
    "riskmgr_backup_max": [("sqlite_backup", "max_backups"), ("riskmgr_upgrade", "max_backups")],
    "riskmgr_track_unrealized_pnl": [(module, "track_unrealized_pnl") for module in
                                     (*MIGRATING_MODULES, "riskmgr_recover")],
    "riskmgr_target_version": [(module, "target_version") for module in MIGRATING_MODULES],
    "riskmgr_service_manager": [(module, "service_manager") for module in DAEMON_MODULES],
    "riskmgr_start_command": [(module, "start_command") for module in DAEMON_MODULES],
    "riskmgr_pidfile": [(module, "pidfile") for module in DAEMON_MODULES],
    "riskmgr_process_match": [(module, "process_match") for module in (*DAEMON_MODULES, "sqlite_schema_facts")],
    "riskmgr_stop_timeout": [(module, "stop_timeout") for module in DAEMON_MODULES],
    "riskmgr_stop_force": [(module, "stop_force") for module in DAEMON_MODULES],
    "riskmgr_start_settle": [(module, "settle") for module in DAEMON_MODULES],
    "riskmgr_start_timeout": [(module, "start_timeout") for module in DAEMON_MODULES],
    "riskmgr_log_path": [(module, "log_path") for module in DAEMON_MODULES],
    "riskmgr_busy_timeout": [(module, "busy_timeout") for module in DATABASE_MODULES],
    "riskmgr_break_lock": [("riskmgr_lock", "break_stale")],
    "riskmgr_integrity_downtime": [("riskmgr_upgrade", "integrity")],
    "riskmgr_recovery_method": [("riskmgr_upgrade", "recovery_method"), ("riskmgr_recover", "method")],
    "riskmgr_smoke_timeout": [("riskmgr_upgrade", "smoke_timeout"), ("riskmgr_daemon", "smoke_timeout")],
    "riskmgr_watch_fail_regex": [("riskmgr_watch", "fail_regex")],
    "riskmgr_stop_command": [(module, "stop_command") for module in DAEMON_MODULES],
    "riskmgr_daemon_chdir": [(module, "daemon_chdir") for module in DAEMON_MODULES],
    "riskmgr_daemon_user": [(module, "daemon_user") for module in DAEMON_MODULES],
    "riskmgr_daemon_group": [(module, "daemon_group") for module in DAEMON_MODULES],
}

# riskmgr_X -> the options that name what a module acts on: no default, a module never picks a
# database, a backup directory, a lock or a unit by itself (the playbooks always pass the variable).
NAMED_BY_THE_CALLER = {
    "riskmgr_db_path": [(module, "path") for module in (*DATABASE_MODULES, "riskmgr_watch")],
    "riskmgr_backup_dir": [(module, "backup_dir") for module in
                           ("sqlite_schema_facts", "sqlite_backup", "sqlite_restore", "riskmgr_upgrade",
                            "riskmgr_recover")],
    "riskmgr_lock_path": [("riskmgr_lock", "path"), ("sqlite_schema_facts", "lock_path")],
    "riskmgr_service_name": [(module, "service_name") for module in DAEMON_MODULES],
    "riskmgr_release_link": [(module, "release_link") for module in (*DAEMON_MODULES, "sqlite_schema_facts")],
    "riskmgr_smoke_command": [("riskmgr_upgrade", "smoke_command"), ("riskmgr_daemon", "smoke_command")],
}

# riskmgr_X that no module option mirrors, and why.
NOT_A_MODULE_OPTION = {
    "riskmgr_action": "picks the riskmgr role's entry point (migrate or rollback); set by the playbook",
    "riskmgr_require_confirmation": "the riskmgr role's confirm entry point decides whether to ask",
    "riskmgr_confirm": "the answer to the riskmgr_confirm action's question, on the controller",
    "riskmgr_confirm_timeout": "the riskmgr_confirm action requires its timeout (no default there)",
    "riskmgr_rehearse": "the riskmgr role's preflight decides whether to migrate a copy first",
    "riskmgr_create_backup": "only false is refused (by the riskmgr role); no module can skip its backup",
    "riskmgr_verify_after": "only false is refused (by the riskmgr role); every migration is verified",
    "riskmgr_migration_mode": "picks the playbook's path; sqlite_migrate's transactions follow from it",
    "riskmgr_integrity_preflight": "the level the preflight asks for, see DIFFERENT_ON_PURPOSE",
    "riskmgr_rollback_method": "picks rollback_v2.yml's path (restore or downgrade)",
    "riskmgr_serial": "a play keyword",
    "riskmgr_max_fail_percentage": "a play keyword",
    "riskmgr_migrations_src": "a controller path the riskmgr_migrations lookup reads; modules get the texts",
    "riskmgr_report_dir": "a controller path; the riskmgr_report action requires its dir",
    "riskmgr_release_v1_path": "one entry of the modules' release_paths (with riskmgr_release_link)",
    "riskmgr_release_v2_path": "one entry of the modules' release_paths (with riskmgr_release_link)",
    "riskmgr_releases": "the modules' release_paths, over the v1/v2 shorthand (with riskmgr_release_link)",
    "riskmgr_canary_watch_seconds": "the first batch's seconds of the riskmgr_watch action (the riskmgr role picks)",
    "riskmgr_watch_seconds": "the later batches' seconds of the riskmgr_watch action (the riskmgr role picks)",
}

# Options named like a mirrored one whose default differs on purpose, and why.
DIFFERENT_ON_PURPOSE = {
    ("sqlite_schema_facts", "integrity"): "none: the preflight's first read stays cheap (a rerun on a done fleet "
                                          "is one read a host); it asks riskmgr_integrity_preflight under the lock",
    ("sqlite_verify", "integrity"): "integrity: a verification asked for nothing else checks everything; the verify "
                                    "role passes riskmgr_integrity_downtime, or riskmgr_integrity_preflight online",
}

# Options whose default None stands for a value the module works out: what it is for the project's files.
COMPUTED_DEFAULTS = {"target_version": load_catalog(ROOT / "files" / "migrations").newest_version}


@pytest.fixture(scope="module")
def role_defaults() -> dict:
    return yaml.safe_load(ROLE_DEFAULTS.read_text())


@pytest.fixture(scope="module")
def specs() -> dict[str, dict]:
    """{module: its argument_spec}, as each library module gives it to AnsibleModule."""
    return {module: module_arguments(module)["argument_spec"] for module in MODULES}


def as_module_value(value, spec: dict):
    """The role's value as the module receives it: the roles pass an empty one as `default(omit, true)`."""
    if value == "" and spec.get("type", "str") in ("str", "path", "raw"):
        return None
    return value


def agrees(role_value, spec: dict, option: str) -> bool:
    default = spec.get("default")
    if default is None:
        default = COMPUTED_DEFAULTS.get(option)
    value = as_module_value(role_value, spec)
    if spec.get("type") in ("int", "float"):
        numbers = (int, float)
        return (isinstance(value, numbers) and not isinstance(value, bool) and isinstance(default, numbers)
                and float(value) == float(default))
    return value == default and type(value) is type(default)


def pairs(mapping: dict) -> list[tuple[str, str, str]]:
    return [(variable, module, option) for variable, options in mapping.items() for module, option in options]


def test_every_public_variable_is_accounted_for(role_defaults):
    public = {name for name in role_defaults if name.startswith("riskmgr_")}
    groups = (MIRRORED, NAMED_BY_THE_CALLER, NOT_A_MODULE_OPTION)
    listed = [name for group in groups for name in group]
    assert len(listed) == len(set(listed)), "a variable is in more than one group"
    assert public == set(listed), (
        f"{ROLE_DEFAULTS.relative_to(ROOT)}: not in this test: {sorted(public - set(listed))}; "
        f"in this test but not in the role: {sorted(set(listed) - public)}. Say which module options mirror it")


def test_each_mirrored_option_defaults_to_the_role_value(role_defaults, specs):
    disagreements = []
    for variable, module, option in pairs(MIRRORED):
        spec = specs[module].get(option)
        if spec is None:
            disagreements.append(f"library/{module}.py has no option {option} (mirrors {variable})")
        elif not agrees(role_defaults[variable], spec, option):
            disagreements.append(f"{variable} is {role_defaults[variable]!r} in {ROLE_DEFAULTS.relative_to(ROOT)} "
                                 f"but library/{module}.py's {option} defaults to {spec.get('default')!r}")
    assert not disagreements, "\n".join(disagreements)


def test_options_that_name_what_a_module_acts_on_have_no_default(specs):
    defaulted = [f"library/{module}.py's {option} defaults to {specs[module][option]['default']!r} (it names "
                 f"what {variable} names: the caller must give it)"
                 for variable, module, option in pairs(NAMED_BY_THE_CALLER) if "default" in specs[module][option]]
    assert not defaulted, "\n".join(defaulted)


def test_no_option_named_like_a_variable_is_left_out(specs):
    """A new module (or option) with, say, a settle of its own must join MIRRORED or say why not."""
    accounted = {(module, option) for _, module, option in pairs(MIRRORED) + pairs(NAMED_BY_THE_CALLER)}
    accounted |= set(DIFFERENT_ON_PURPOSE)
    names = {option for _, _, option in pairs(MIRRORED) + pairs(NAMED_BY_THE_CALLER)}
    names |= {variable[len("riskmgr_"):] for variable in (*MIRRORED, *NAMED_BY_THE_CALLER, *NOT_A_MODULE_OPTION)}
    left_out = sorted(f"library/{module}.py: {option}" for module, spec in specs.items() for option in spec
                      if option in names and (module, option) not in accounted)
    assert not left_out, f"options named like a riskmgr_* variable's, in no group of this test: {left_out}"


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
def test_each_module_documents_the_defaults_it_has(module, specs):
    documented, spec = documented_options(module), specs[module]
    assert set(documented) == set(spec), (f"library/{module}.py: undocumented {sorted(set(spec) - set(documented))}, "
                                          f"documented but no option {sorted(set(documented) - set(spec))}")
    differ = [f"{option}: documented {documented[option].get('default')!r}, argument spec "
              f"{spec[option].get('default')!r}" for option in sorted(spec)
              if documented[option].get("default") != spec[option].get("default")]
    assert not differ, f"library/{module}.py: " + "; ".join(differ)
