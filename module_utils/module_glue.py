"""What every module of this project shares at its Ansible boundary: the failure funnel and the option specs.

Plain Python, no Ansible import: module_utils stays importable by pytest, and the modules pass
their AnsibleModule in.
"""
from __future__ import annotations

import sqlite3
import traceback

from ansible.module_utils.role_defaults import ROLE_DEFAULTS
from ansible.module_utils.sqlite_catalog import MIGRATIONS_ORIGIN
from ansible.module_utils.sqlite_common import DEFAULT_BUSY_TIMEOUT_S, RiskmgrError, sqlite_error_text


def role_default(variable: str, **spec) -> dict:
    """An option that mirrors the riskmgr_* setting variable: its default is the role's (role_defaults.py,
    generated from roles/riskmgr/defaults/main.yml), so a module called on its own does what the playbooks do."""
    return {**spec, "default": ROLE_DEFAULTS[variable]}

# The argument_spec entries every module that reads the migrations shares.
MIGRATION_SOURCE_SPEC = {
    "migrations_dir": {"type": "path"},
    "migrations": {"type": "dict"},
    "migrations_origin": {"type": "str", "default": MIGRATIONS_ORIGIN},
}


# The database every module that reads or changes it acts on (doc fragment riskmgr_database).
DATABASE_SPEC = {
    "path": {"type": "path", "required": True},
    "busy_timeout": role_default("riskmgr_busy_timeout", type="float"),
}

# The argument_spec entries of the modules that write a backup (sqlite_backup, riskmgr_migrate;
# doc fragment riskmgr_database.backups).
BACKUP_SPEC = {
    "backup_dir": {"type": "path", "required": True},
    "retention_days": role_default("riskmgr_backup_retention_days", type="int"),
    "max_backups": role_default("riskmgr_backup_max", type="int"),
    "free_space_margin": {"type": "float", "default": 1.1},
}


# The argument_spec entries of the modules that stop or start the daemon (riskmgr_daemon, riskmgr_migrate).
# Their defaults are the operator's: those of the riskmgr_* settings (role_default).
DAEMON_SPEC = {
    "service_manager": role_default("riskmgr_service_manager", type="str", choices=["command", "systemd"]),
    "service_name": {"type": "str"},
    "pidfile": {"type": "path"},
    "start_command": {"type": "raw"},
    "stop_timeout": role_default("riskmgr_stop_timeout", type="int"),
    "stop_force": role_default("riskmgr_stop_force", type="bool"),
    "settle": role_default("riskmgr_start_settle", type="float"),
    "log_path": {"type": "path"},
    "expect_log_line": {"type": "str"},
    "start_timeout": role_default("riskmgr_start_timeout", type="int"),
    "process_match": {"type": "str"},
    "release_link": {"type": "path"},
    "release_paths": {"type": "dict"},
    "stop_command": {"type": "raw"},
    "daemon_chdir": {"type": "path"},
    "daemon_user": {"type": "str"},
    "daemon_group": {"type": "str"},
}

# The smoke test after a start on the new version (riskmgr_daemon, riskmgr_migrate).
SMOKE_SPEC = {
    "smoke_command": {"type": "list", "elements": "str"},
    "smoke_timeout": role_default("riskmgr_smoke_timeout", type="int"),
}


def host_recovery_module(options: dict) -> dict:
    """AnsibleModule's arguments for a module that runs the recovery (riskmgr_recover, riskmgr_start_if_down):
    the migrations, the daemon, the database and the backups, plus its own options."""
    return {
        "argument_spec": {
            **MIGRATION_SOURCE_SPEC,
            **{name: spec for name, spec in DAEMON_SPEC.items() if name != "expect_log_line"},
            **DATABASE_SPEC,
            "backup_dir": {"type": "path", "required": True},
            "track_unrealized_pnl": role_default("riskmgr_track_unrealized_pnl", type="bool"),
            **options,
        },
        "mutually_exclusive": [("migrations_dir", "migrations")],
        "required_one_of": [("migrations_dir", "migrations")],
        "required_if": [("service_manager", "command", ["pidfile", "start_command"]),
                        ("service_manager", "systemd", ["service_name"])],
        "supports_check_mode": False,
    }


def run_module_guarded(module, work, subject: str, after_failure: str) -> dict:
    """Run a module's work; every failure ends as one fail_json line naming subject, never a traceback.

    module is the AnsibleModule (only fail_json and params are used, so module_utils stays
    free of Ansible imports); after_failure says what the operator can rely on, such as
    "no backup was written". An unexpected error keeps its traceback for -vvv.
    """
    try:
        return work(module)
    except RiskmgrError as err:
        module.fail_json(msg=str(err), **err.fail_result)
    except sqlite3.Error as err:
        busy = module.params.get("busy_timeout") or DEFAULT_BUSY_TIMEOUT_S
        module.fail_json(msg=f"{sqlite_error_text(subject, err, busy)}; {after_failure}")
    except Exception as err:  # a bug: one line for the operator, the traceback at -vvv
        module.fail_json(msg=f"{subject}: unexpected {type(err).__name__}: {err}; {after_failure}; "
                             "this is a bug, rerun with -vvv for the traceback", exception=traceback.format_exc())
    raise AssertionError("fail_json returned")  # fail_json exits; a fake that does not is a test bug
