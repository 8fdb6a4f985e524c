# action_plugins/riskmgr_preflight.py
from __future__ import annotations

DOCUMENTATION = r"""
module: riskmgr_preflight
short_description: Check one host while its daemon still runs and plan its change, in one task
description:
  - Play 1 of migrate.yml and rollback.yml (and their pins migrate_v2.yml and rollback_v2.yml), one task per
    host. Validates the role's settings against C(roles/riskmgr/meta/argument_specs.yml) and their own checks,
    names the run, reads the database while the daemon runs (M(sqlite_schema_facts)) and refuses one this
    tool cannot recognise.
  - A host whose database needs a change, whose daemon was not seen running, that holds a lock left behind or
    whose release link must switch is checked further - a daemon the run can stop and start again
    (M(riskmgr_daemon) C(state=checked)), the run lock (M(riskmgr_lock), taking over a dead run's lock as the
    C(riskmgr_lock) action does), the database read again under the lock with its integrity checked, every
    refusal, the exact plan and the write proof; the rehearsal on a copy (C(riskmgr_rehearse)) and, for a
    rollback by restore, the backup chosen. Such a host joins a group of I(group_prefix) so that a later play takes it.
  - The reads, the daemon check and the lock run in one module process on the host (M(riskmgr_preflight_read)),
    since each module process costs the controller a fork, an ssh command and a payload.
  - A host that needs nothing is reported here (its run report, as M(riskmgr_report) writes it) and never
    enters play 2.
  - Any failure releases the run lock this task took and fails the host with one line naming the host, its
    database and what was left as it was.
  - Sets the facts the later tasks read - C(__riskmgr_run_id), C(__riskmgr_run_owner), C(__riskmgr_facts),
    C(__riskmgr_plan) (the plan summary M(riskmgr_confirm) shows), C(__riskmgr_lock) when the lock is held, and
    C(riskmgr_target_version) when the playbook takes it from the database.
  - Reports no change (run state, not managed state); the task sets C(changed_when) false since joining a
    group would mark it changed.
options:
  action:
    description: What the run does (riskmgr_action).
    type: str
    choices: [migrate, rollback]
    required: true
  any_version:
    description: Take the target version from the database and the migrations unless it was given with C(-e)
      (migrate.yml, rollback.yml). Without it the pins' riskmgr_target_version holds.
    type: bool
    default: false
  group_prefix:
    description:
      - The prefix of the inventory groups a host that needs more joins - C(<prefix>change) (a migrate),
        C(<prefix>restore) or C(<prefix>downgrade) (a rollback, by its method), C(<prefix>start) (no change, a
        daemon to start or a release to switch). The playbooks' later plays take each group.
    type: str
    default: riskmgr_to_
  entry_point:
    description: The entry point of C(meta/argument_specs.yml) whose options are validated.
    type: str
    default: preflight
  settings_only:
    description: Validate and check the settings only, and read nothing on the host (the role's plain entry
      point).
    type: bool
    default: false
author: [Risk Platform team]
"""

EXAMPLES = r"""
- name: Check the host while its daemon runs (settings, daemon, run lock, database, plan)
  riskmgr_preflight:
    action: migrate
  changed_when: false
"""

RETURN = r"""
plan: {description: The host's plan summary (also the fact C(__riskmgr_plan))., type: dict, returned: success}
needs_play_2: {description: Whether the host joined a group of I(group_prefix)., type: bool, returned: success}
"""

import importlib.util
import json
import os
import socket
import re
import sys
import time

import yaml
from ansible.errors import AnsibleError
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

display = Display()

# What the later plays keep of the read (the report's "before"): a host's facts are copied at every look at its
# variables, and the whole read is tens of kilobytes per host.
REPORTED_FACTS = ("version", "state", "pending_upgrade", "integrity", "open_by", "release")

# A migration file's name in the migrations the lookup read: vN/NNN_name.sql.
VERSION_NAME = re.compile(r"^v(\d+)/")


def project_file(directory: str, name: str):
    """A Python file of this project (an action plugin's plain functions, or a module_utils file that imports
    nothing of its own), loaded on the controller as a module."""
    key = f"riskmgr_{directory}_{name}"
    if key not in sys.modules:
        path = os.path.join(os.path.dirname(__file__), os.pardir, directory, f"{name}.py")
        spec = importlib.util.spec_from_file_location(key, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


def sibling(name: str):
    """Another action plugin of this directory, as a module (its plain functions)."""
    return project_file("action_plugins", name)


# What the first read decides, judged by the same functions on the host (riskmgr_preflight_read) and here.
_decisions = project_file("module_utils", "preflight_decisions")
needs_change, needs_more_checks, is_pending = _decisions.needs_change, _decisions.needs_more_checks, _decisions.is_pending


def argument_specs(path: str) -> dict:
    """The role's argument specs as plain data, parsed by libyaml where PyYAML has it: every host's preflight runs in a
    worker of its own, and Ansible's loader (origin tags, a deep copy) took a fifth of this task's time."""
    with open(path, encoding="utf-8") as handle:
        return yaml.load(handle, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))["argument_specs"]


class Refused(Exception):
    """A check refused the host: its reason, as the one failure line says it."""


# --- plain functions: the settings, the plan, the failure line -------------------------------------

def is_regex(text) -> bool:
    try:
        re.compile(str(text))
    except re.error:
        return False
    return True


def settings_problems(s: dict, host: str) -> str | None:
    """The settings' own checks beyond types and choices (the role's plain entry point makes them too): None, or the message."""
    command = s["riskmgr_service_manager"] == "command"
    watch_ok = (int(s["riskmgr_canary_watch_seconds"]) >= 0 and int(s["riskmgr_watch_seconds"]) >= 0
                and int(s["riskmgr_smoke_timeout"]) > 0)
    chdir = s.get("riskmgr_daemon_chdir") or ""
    checks = [
        ((not command) or (s.get("riskmgr_start_command") and s.get("riskmgr_pidfile")),
         "riskmgr_service_manager=command needs riskmgr_start_command and riskmgr_pidfile; set them in this host's "
         f"inventory (host_vars/{host}.yml). "),
        (s["riskmgr_create_backup"] and s["riskmgr_verify_after"],
         "riskmgr_create_backup and riskmgr_verify_after must stay true: rollback restores from the backup, and an "
         "unverified database is never handed to the daemon. Remove the override from the inventory. "),
        (is_regex(s["riskmgr_watch_fail_regex"]),
         f"riskmgr_watch_fail_regex {json_text(s['riskmgr_watch_fail_regex'])} is not a Python regular expression; "
         "correct it. "),
        (not s.get("riskmgr_release_link") or (s.get("riskmgr_release_v1_path") and s.get("riskmgr_release_v2_path")),
         "riskmgr_release_link is set, so riskmgr_release_v1_path and riskmgr_release_v2_path must name both release "
         "directories on the host; set them, or unset riskmgr_release_link. "),
        (watch_ok, "riskmgr_canary_watch_seconds and riskmgr_watch_seconds must be 0 or more, riskmgr_smoke_timeout "
                   "more than 0. "),
        (command or not s.get("riskmgr_stop_command"),
         "riskmgr_stop_command is for riskmgr_service_manager=command; under systemd the unit's ExecStop= stops the "
         "daemon: unset riskmgr_stop_command. "),
        (not s.get("riskmgr_daemon_group") or s.get("riskmgr_daemon_user"),
         "riskmgr_daemon_group is set without riskmgr_daemon_user: set the user too. "),
        (not chdir or os.path.isabs(chdir),
         f"riskmgr_daemon_chdir {chdir} is relative: give the absolute directory the daemon's commands run from. "),
    ]
    failed = "".join(text for ok, text in checks if not ok)
    return f"{failed}Nothing was changed." if failed else None


def json_text(value) -> str:
    return json.dumps(value)


def one_line(host: str, db: str, reason: str) -> str:
    """The one failure line of a host (the preflight's rescue wrote it): the host, its database, the reason and
    what was left as it was."""
    reason = re.sub("^" + re.escape(host) + ": ", "", (reason or "").strip() or "preflight failed, see above")
    head = "" if not db or "{{" in db or db in reason else f"{db}: "
    tail = "" if re.search("nothing was changed|no daemon was stopped", reason, re.IGNORECASE) else \
        " The daemon was not stopped and nothing was changed."
    return f"{host}: {head}{reason.rstrip('.')}.{tail}"


def newest_version(migrations: dict) -> int | None:
    """The highest vN among the migration files' names (vN/NNN_name.sql), None when there are none."""
    versions = [int(m.group(1)) for m in (VERSION_NAME.match(name) for name in migrations) if m]
    return max(versions) if versions else None


def needs_play_2(plan: dict) -> bool:
    """Whether play 2 has something to do on the host: its change, a daemon found down, a release to switch."""
    return bool(plan["change"] or not plan["daemon_seen"] or (plan.get("release") or {}).get("switch_needed"))


def group_name(action: str, plan: dict, rollback_method: str) -> str:
    """Which later play takes the host: its change (a rollback's by its method), or only its daemon's start."""
    if not plan["change"]:
        return "start"
    return "change" if action == "migrate" else rollback_method


def plan_summary(host: str, s: dict, action: str, facts: dict, change: bool, rehearsal: dict | None,
                 restore: dict | None) -> dict:
    """The plan of one host, as riskmgr_confirm shows it and riskmgr_report records it."""
    restore = restore or {}
    pending = is_pending(facts)
    return {
        "host": host, "require_confirmation": bool(s["riskmgr_require_confirmation"]), "db": s["riskmgr_db_path"],
        "lock": s["riskmgr_lock_path"], "state": facts.get("state"), "version": facts.get("version"),
        "size_mb": round(((facts.get("size") or 0) + (facts.get("wal_size") or 0)) / 1048576, 1),
        "journal_mode": facts.get("journal_mode"), "migration_mode": s["riskmgr_migration_mode"], "change": change, "daemon_seen": len(facts.get("open_by") or []) > 0,
        "read_at": facts.get("read_at"),
        "steps": [step.get("object") for step in ((facts.get("plan") or {}).get("steps") or [])],
        "adopted": facts.get("adoptable") or [], "rehearsal_seconds": (rehearsal or {}).get("seconds"),
        "rollback_method": s["riskmgr_rollback_method"] if action == "rollback" else None,
        "backup": restore.get("backup"), "rows_not_in_backup": restore.get("rows_not_in_backup") or {},
        "kept": restore.get("kept") or [], "data_dropped": (facts.get("plan") or {}).get("data_dropped") or {},
        "pending": pending,
        "back_to": facts["pending_upgrade"]["from_version"] if pending else facts.get("version"),
        "release": facts.get("release"), "smoke": " ".join(s.get("riskmgr_smoke_command") or []),
        "watch_seconds": {"canary": s["riskmgr_canary_watch_seconds"], "later": s["riskmgr_watch_seconds"]},
    }


def run_naming(controller_pid: int, hostname: str, proc: str = "/proc") -> tuple[str, dict]:
    """The run id and lock owner, the same in every worker: ansible-playbook's pid and its start time."""
    started = process_start(controller_pid, proc) or time.time()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started))
    run_id = f"{stamp}-{controller_pid}"
    return run_id, {"run_id": run_id, "controller": hostname, "controller_pid": controller_pid,
                    "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started))}


def process_start(pid: int, proc: str = "/proc") -> float | None:
    """When the process started (epoch seconds), from /proc; None when it cannot be read."""
    try:
        with open(f"{proc}/{pid}/stat", encoding="utf-8") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        with open(f"{proc}/stat", encoding="utf-8") as handle:
            boot = next(int(line.split()[1]) for line in handle if line.startswith("btime "))
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError, StopIteration):
        return None


# --- the action -----------------------------------------------------------------------------------

class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        _, args = self.validate_argument_spec(argument_spec={
            "action": {"type": "str", "required": True, "choices": ["migrate", "rollback"]},
            "any_version": {"type": "bool", "default": False},
            "group_prefix": {"type": "str", "default": "riskmgr_to_"},
            "entry_point": {"type": "str", "default": "preflight"},
            "settings_only": {"type": "bool", "default": False},
        })
        self._vars = task_vars
        self._warnings: list = []
        self._lock_held = False
        self._db_given = ""
        self._given_target: bool | None = None
        host = task_vars["inventory_hostname"]
        db = str(task_vars.get("riskmgr_db_path") or "")
        try:
            s = self._settings(args["entry_point"], host)
            db = self._db_given or s["riskmgr_db_path"]  # as the inventory says it (a path option expands $VAR, ~)
            if args["settings_only"]:
                return dict(result, changed=False, msg=f"{host}: the settings are valid")
            outcome = self._check(host, s, args)
        except Refused as err:
            if self._lock_held:
                self._release(s)
            return dict(result, failed=True, changed=False, msg=one_line(host, db, str(err)),
                        warnings=self._warnings)
        result.update(outcome, changed=False)
        if self._warnings:
            result["warnings"] = self._warnings
        return result

    # settings ---------------------------------------------------------------------------------------

    def _settings(self, entry_point: str, host: str) -> dict:
        role_path = self._task._role._role_path if self._task._role else os.path.join(os.getcwd(), "roles", "riskmgr")
        spec = argument_specs(os.path.join(role_path, "meta", "argument_specs.yml"))[entry_point]["options"]
        try:
            given = self._templar.template({name: self._vars[name] for name in spec if name in self._vars})
        except AnsibleError as err:  # a setting whose template cannot be rendered (an undefined variable)
            raise Refused(f"{host}: a setting cannot be read: {str(err).splitlines()[0]}; correct it in the inventory "
                          "or the -e options. Nothing was changed.") from None
        self._db_given = str(given.get("riskmgr_db_path") or "")
        validated = ArgumentSpecValidator(spec).validate(given, validate_role_argument_spec=True)
        if validated.error_messages:
            raise Refused(f"{host}: the settings are not valid: {'; '.join(validated.error_messages)}; correct them "
                          "in the inventory or the -e options. Nothing was changed.")
        settings = validated.validated_parameters
        problem = settings_problems(settings, host)
        if problem:
            raise Refused(f"{host}: {problem}")
        return settings

    def _role_var(self, name: str):
        return self._templar.template(self._vars[name])

    # modules ----------------------------------------------------------------------------------------

    def _module(self, name: str, args: dict, check_mode: bool | None = None) -> dict:
        saved = (self._task.check_mode, self._task.diff)
        if check_mode is not None:
            self._task.check_mode, self._task.diff = check_mode, False
        try:
            outcome = self._execute_module(module_name=name, module_args=args, task_vars=self._vars)
        finally:
            self._task.check_mode, self._task.diff = saved
        self._warnings.extend(outcome.get("warnings") or [])
        return outcome

    def _must(self, name: str, args: dict, check_mode: bool | None = None) -> dict:
        outcome = self._module(name, args, check_mode)
        if outcome.get("failed"):
            raise Refused(outcome.get("msg") or f"{name} failed")
        return outcome

    def _release(self, s: dict) -> None:
        self._module("riskmgr_lock", {"path": s["riskmgr_lock_path"], "state": "absent", "run_id": self._run_id})
        self._lock_held = False

    # the checks -------------------------------------------------------------------------------------

    def _check(self, host: str, s: dict, args: dict) -> dict:
        action = args["action"]
        self._run_id, owner = run_naming(os.getppid(), socket.gethostname())
        migration_args = self._role_var("__riskmgr_migration_args")
        release_args = self._role_var("__riskmgr_release_args")
        process = {"process_match": s["riskmgr_process_match"]} if s.get("riskmgr_process_match") else {}
        to = self._target(s, args, migration_args["migrations"])
        backup_taken = action == "migrate" or s["riskmgr_rollback_method"] == "downgrade"
        source = dict(migration_args, **release_args, **process, path=s["riskmgr_db_path"])
        lock_args = {"path": s["riskmgr_lock_path"], "state": "present", "run_id": self._run_id, "owner": owner,
                     "break_stale": s["riskmgr_break_lock"]}
        full_args = dict(source, integrity=s["riskmgr_integrity_preflight"], plan=True, prove_writes=True,
                         require_wal=action == "migrate" and s["riskmgr_migration_mode"] == "online",
                         **({"backup_dir": s["riskmgr_backup_dir"]} if backup_taken else {}))
        # One module process for the reads, the daemon check and the lock (module_utils/preflight_read.py).
        read = self._module("riskmgr_preflight_read", {
            "action": action, "target_version": to, "any_version": args["any_version"],
            "target_given": self._target_given(),
            "first": dict(source, count_rows=False, lock_path=s["riskmgr_lock_path"]), "full": full_args,
            "daemon": dict(self._role_var("__riskmgr_daemon_args"),
                           smoke_command=s["riskmgr_smoke_command"] if action == "migrate" else [],
                           smoke_timeout=s["riskmgr_smoke_timeout"]),
            "lock": lock_args})
        lock = read.get("lock")
        self._lock_held = bool(lock and lock.get("acquired"))
        if lock and not lock.get("acquired") and not lock_args["break_stale"] and sibling(
                "riskmgr_lock").holder_is_dead_here(lock.get("holder"), owner["controller"]):
            # A run of this controller that died holding the lock: taken over, then the read under it.
            dead = lock.get("holder")
            lock = self._must("riskmgr_lock", dict(lock_args, break_stale=True))
            lock["taken_over_from_dead_run"] = dead
            self._lock_held = bool(lock.get("acquired"))
            facts = self._must("sqlite_schema_facts", dict(full_args, target_version=read["to"]))
            if facts.get("refusals"):
                raise Refused(" | ".join(facts["refusals"]))
            change = needs_change(action, facts, read["to"])
        elif read.get("msg"):
            raise Refused(read["msg"])
        else:
            facts, change = read["facts"], read["change"]
        to = read["to"]
        rehearsal = restore = None
        if lock is not None:
            if action == "migrate" and s["riskmgr_rehearse"] and change and not self._task.check_mode:
                rehearsal = self._rehearse(s, migration_args, to)
            if action == "rollback" and s["riskmgr_rollback_method"] == "restore" and change:
                restore = self._plan_restore(host, s, migration_args, to)
        plan = plan_summary(host, s, action, facts, change, rehearsal, restore)
        play_2 = needs_play_2(plan)
        set_facts = {"__riskmgr_run_id": self._run_id, "__riskmgr_run_owner": owner,
                     "__riskmgr_facts": {key: facts.get(key) for key in REPORTED_FACTS},
                     "__riskmgr_plan": plan}
        if lock is not None and play_2:
            set_facts["__riskmgr_lock"] = lock
        elif lock is not None:
            self._release(s)  # taken for the checks alone: the host needs nothing more from this run
        if args["any_version"] and not self._target_given():
            set_facts["riskmgr_target_version"] = to
        outcome = {"plan": plan, "needs_play_2": play_2, "ansible_facts": set_facts}
        if play_2:
            outcome["add_group"] = args["group_prefix"] + group_name(action, plan, s["riskmgr_rollback_method"])
        else:
            outcome.update(self._report(host, s, action, facts, plan))
            set_facts["riskmgr_report"] = outcome["report"]
        return outcome

    def _target(self, s: dict, args: dict, migrations: dict) -> int:
        if args["action"] == "migrate" and args["any_version"] and not self._target_given():
            # migrate.yml: the first read already judges the host against the newest version, so that a host
            # at an older one is never read as needing nothing.
            return newest_version(migrations or {}) or int(s["riskmgr_target_version"])
        if args["action"] == "migrate" or args["any_version"]:
            return int(s["riskmgr_target_version"])
        return 1  # rollback_v2.yml without a pin: the design card's v1

    def _target_given(self) -> bool:
        """Whether -e gave riskmgr_target_version (it wins over the version the database suggests); the -e options
        are parsed once per task, not at every question."""
        if self._given_target is None:
            from ansible.utils.vars import load_extra_vars
            self._given_target = "riskmgr_target_version" in load_extra_vars(self._loader)
        return self._given_target

    def _rehearse(self, s: dict, migration_args: dict, to: int) -> dict:
        """A consistent copy migrated in a private temporary directory and removed: its seconds feed the plan."""
        tmpdir = self._must("ansible.builtin.tempfile", {"state": "directory", "prefix": "riskmgr-rehearsal-"})["path"]
        try:
            copy = self._must("sqlite_backup", {"path": s["riskmgr_db_path"], "backup_dir": tmpdir,
                                                "busy_timeout": s["riskmgr_busy_timeout"]})
            rehearsal = self._module("sqlite_migrate", dict(migration_args, path=copy["backup"], target_version=to))
        finally:
            self._module("ansible.builtin.file", {"path": tmpdir, "state": "absent"})
        if rehearsal.get("failed") or rehearsal.get("msg"):
            raise Refused(f"the rehearsal on a copy of {s['riskmgr_db_path']} failed: {rehearsal.get('msg')}. "
                          "The daemon was not stopped and nothing was changed.")
        return rehearsal

    def _plan_restore(self, host: str, s: dict, migration_args: dict, to: int) -> dict:
        """The backup a restore would put back and what it lacks (check mode: writes nothing)."""
        chosen = self._module("sqlite_restore", {"path": s["riskmgr_db_path"], "backup_dir": s["riskmgr_backup_dir"],
                                                 "schema_version": to, "keep_suffix": "rollback"}, check_mode=True)
        if chosen.get("backup") is None:
            # The module's own remedy ("restore a named backup") is not a playbook option: say what the operator
            # of rollback.yml can do instead.
            raise Refused(
                f"{s['riskmgr_db_path']} cannot be rolled back by restore: "
                f"{chosen.get('msg') or 'the backup could not be chosen'}. Rerun with -e riskmgr_rollback_method="
                f"downgrade to return it to v{to} in place (every row kept), or put a verified v{to} backup and its "
                f"manifest back into {s['riskmgr_backup_dir']}. The daemon was not stopped and nothing was changed.")
        return chosen

    def _report(self, host: str, s: dict, action: str, facts: dict, plan: dict) -> dict:
        """The run report of a host that needs nothing, as riskmgr_report writes it (no play 2 for it)."""
        report_plugin = sibling("riskmgr_report")
        check_mode = bool(self._task.check_mode)
        settings = {"db": s["riskmgr_db_path"], "migration_mode": s["riskmgr_migration_mode"]}
        report = report_plugin.build_report(host, self._run_id, action, check_mode, settings,
                                            {"facts": facts, "plan": plan})
        display.display(report_plugin.result_line(report))
        display.v(f"{host}: run report\n{json.dumps(report, indent=2, sort_keys=True, default=str)}")
        outcome = {"report": report, "ansible_stats": {"data": {"riskmgr_reports": {host: report}},
                                                       "per_host": False, "aggregate": True}}
        if not check_mode:
            directory = self._templar.template(self._vars["riskmgr_report_dir"])
            try:
                outcome["path"] = report_plugin.write_report(directory, self._run_id, host, report)
            except OSError as err:
                raise Refused(f"the report could not be written to {directory} ({err.strerror}); set "
                              "riskmgr_report_dir to a writable directory")
        return outcome
