"""The preflight action's plain functions (action_plugins/riskmgr_preflight.py): the settings' own checks
with their messages, the one failure line, what a host needs and which later play takes it, the plan's
shape, and the run's name, the same in every worker of one ansible-playbook.

The action itself runs in every real run (tests/integration/test_playbooks.py, tests/faults/).
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("riskmgr_preflight_action", ROOT / "action_plugins" / "riskmgr_preflight.py")
action = importlib.util.module_from_spec(spec)
spec.loader.exec_module(action)

DEFAULTS = yaml.safe_load((ROOT / "roles" / "riskmgr" / "defaults" / "main.yml").read_text(encoding="utf-8"))


def settings(**changes) -> dict:
    return {**DEFAULTS, "riskmgr_db_path": "/srv/rm/state.db", "riskmgr_lock_path": "/srv/rm/state.db.migrate.lock",
            **changes}


def test_the_role_defaults_pass_the_settings_checks():
    assert action.settings_problems(settings(), "h1") is None


@pytest.mark.parametrize(("changes", "says"), [
    ({"riskmgr_service_manager": "command"}, "riskmgr_service_manager=command needs riskmgr_start_command and "
                                             "riskmgr_pidfile; set them in this host's inventory (host_vars/h1.yml)"),
    ({"riskmgr_create_backup": False}, "riskmgr_create_backup and riskmgr_verify_after must stay true"),
    ({"riskmgr_verify_after": False}, "riskmgr_create_backup and riskmgr_verify_after must stay true"),
    ({"riskmgr_watch_fail_regex": "("}, 'riskmgr_watch_fail_regex "(" is not a Python regular expression'),
    ({"riskmgr_release_link": "/srv/rm/current"}, "riskmgr_release_link is set, so riskmgr_release_v1_path"),
    ({"riskmgr_watch_seconds": -1}, "riskmgr_canary_watch_seconds and riskmgr_watch_seconds must be 0 or more"),
    ({"riskmgr_smoke_timeout": 0}, "riskmgr_smoke_timeout more than 0"),
    ({"riskmgr_stop_command": ["/bin/stop"]}, "riskmgr_stop_command is for riskmgr_service_manager=command"),
    ({"riskmgr_daemon_group": "risk"}, "riskmgr_daemon_group is set without riskmgr_daemon_user"),
    ({"riskmgr_daemon_chdir": "opt/rm"}, "riskmgr_daemon_chdir opt/rm is relative"),
])
def test_each_setting_that_cannot_work_is_named_with_its_remedy(changes, says):
    message = action.settings_problems(settings(**changes), "h1")
    assert says in message and message.endswith("Nothing was changed."), message
    assert "\n" not in message


def test_every_problem_is_named_at_once():
    message = action.settings_problems(settings(riskmgr_create_backup=False, riskmgr_daemon_group="risk"), "h1")
    assert "riskmgr_create_backup" in message and "riskmgr_daemon_group" in message


@pytest.mark.parametrize(("reason", "line"), [
    ("h1: the unit is masked", "h1: /srv/rm/state.db: the unit is masked. The daemon was not stopped and nothing was "
                               "changed."),
    ("/srv/rm/state.db is in state unknown.", "h1: /srv/rm/state.db is in state unknown. The daemon was not stopped "
                                              "and nothing was changed."),
    ("locked by run X; nothing was changed", "h1: /srv/rm/state.db: locked by run X; nothing was changed."),
    ("bad settings. Nothing was changed.", "h1: /srv/rm/state.db: bad settings. Nothing was changed."),
    ("", "h1: /srv/rm/state.db: preflight failed, see above. The daemon was not stopped and nothing was changed."),
])
def test_a_failure_is_one_line_naming_the_host_and_its_database(reason, line):
    assert action.one_line("h1", "/srv/rm/state.db", reason) == line


def facts(**changes) -> dict:
    return {"state": "v2", "version": 2, "migration_needed": False, "pending_upgrade": None, "open_by": [1234],
            "lock_present": False, "release": None, "size": 2 * 1048576, "wal_size": 0, "journal_mode": "wal",
            "read_at": 1.0, "plan": {"steps": [{"object": "index idx_a"}]}, **changes}


def test_a_database_at_its_version_open_by_its_daemon_needs_nothing_more():
    done = facts()
    assert not action.needs_change("migrate", done, 2) and not action.needs_more_checks(done, False)
    plan = action.plan_summary("h1", settings(), "migrate", done, False, None, None)
    assert not action.needs_play_2(plan)


@pytest.mark.parametrize(("found", "change", "more", "group"), [
    (facts(state="v1", version=1, migration_needed=True), True, True, "change"),
    (facts(pending_upgrade={"from_version": 1, "to_version": 2}), True, True, "change"),  # never accepted
    (facts(release={"switch_needed": True}), True, True, "change"),
    (facts(open_by=[]), False, True, "start"),  # the daemon was not seen running
    (facts(lock_present=True), False, True, None),  # a lock left behind: checked, then released
])
def test_what_a_migrate_host_needs_and_which_play_takes_it(found, change, more, group):
    assert action.needs_change("migrate", found, 2) == change
    assert action.needs_more_checks(found, change) == more
    plan = action.plan_summary("h1", settings(), "migrate", found, change, None, None)
    assert (action.group_name("migrate", plan, "restore") if action.needs_play_2(plan) else None) == group


def test_a_rollback_host_joins_the_play_of_its_method():
    plan = action.plan_summary("h1", settings(), "rollback", facts(), action.needs_change("rollback", facts(), 1),
                               None, {"backup": "/b/state_v1.db", "rows_not_in_backup": {"orders": 3}})
    assert plan["change"] and action.needs_play_2(plan)
    assert [action.group_name("rollback", plan, method) for method in ("restore", "downgrade")] == ["restore",
                                                                                                  "downgrade"]
    assert plan["backup"] == "/b/state_v1.db" and plan["rows_not_in_backup"] == {"orders": 3}


def test_the_plan_has_what_the_confirmation_and_the_report_read():
    plan = action.plan_summary("h1", settings(), "migrate", facts(state="v1", version=1), True, {"seconds": 0.4}, None)
    assert {"host", "require_confirmation", "db", "lock", "state", "version", "size_mb", "journal_mode", "change",
            "daemon_seen", "read_at", "steps", "adopted", "rehearsal_seconds", "rollback_method", "backup",
            "rows_not_in_backup", "kept", "data_dropped", "pending", "back_to", "release", "smoke",
            "watch_seconds"} <= set(plan)
    assert plan["steps"] == ["index idx_a"] and plan["size_mb"] == 2.0 and plan["rehearsal_seconds"] == 0.4
    assert plan["back_to"] == 1 and plan["lock"] == "/srv/rm/state.db.migrate.lock"


def test_every_worker_of_one_run_names_it_alike_and_another_run_otherwise():
    """The run id is ansible-playbook's pid and start time: each worker computes it and all agree."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        first, owner = action.run_naming(child.pid, "ctl01")
        again, _ = action.run_naming(child.pid, "ctl01")
        assert first == again and first.endswith(f"-{child.pid}") and owner["controller_pid"] == child.pid
        assert owner["controller"] == "ctl01" and owner["run_id"] == first
        mine, _ = action.run_naming(os.getpid(), "ctl01")
        assert mine != first
    finally:
        child.kill()
        child.wait()


def test_migrate_yml_reads_a_host_against_the_newest_version_of_the_migrations():
    # The first read of migrate.yml judges each host against this version: against the role's default (2) a
    # v2 host with a v3 shipped read "nothing to do" (a silent no-op, #19).
    shipped = {"v1/000_baseline.sql": "", "v2/001_risk_limits.sql": "", "v2/002_indexes.sql": "",
               "v3/001_trailing.sql": "", "v10/001_later.sql": ""}
    assert action.newest_version(shipped) == 10
    assert action.newest_version({"v1/000_baseline.sql": ""}) == 1
    assert action.newest_version({}) is None
