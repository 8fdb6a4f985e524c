# action_plugins/riskmgr_report.py
from __future__ import annotations

DOCUMENTATION = r"""
module: riskmgr_report
short_description: Build one host's run report from the run's raw results, show it, save it, publish it
description:
  - Builds the report of one host from the raw results of the run (the preflight's facts and plan, the
    offline unit, the step roles, the recovery) and writes it to C(<dir>/<run_id>/<host>.json) on the
    controller through a temp file and a rename (directories 0755). It runs in the controller process, so
    reporting costs no round trip to the host.
  - Shows one line per host (version, downtime, daemon pid and user, release, backup); with C(-v) the
    whole report too. Times in the report are ISO 8601 UTC; skipped results and Ansible's own keys are
    left out.
  - Publishes the report as the run-wide stat C(riskmgr_reports) (host to report), which AWX / Automation
    Platform keep as the job's artifacts, and after the batch's last host the summary of the run so far as
    C(riskmgr_summary).
  - When this batch's failed hosts are more than I(max_fail_percentage) of it, the rollout stops (C(stops)) and
    the summary names the run's hosts it never reached (C(untouched)), still on their version, their daemon
    never stopped; the loop's items for them release their run locks and mark them (C(__riskmgr_stops)) so
    that the playbooks end the play at the next batch.
  - A report is a record of the run, not managed state, so the task never reports a change (a rerun must
    report C(changed=0)). In check mode the report is built and shown, nothing is written.
options:
  dir:
    description: The report directory on the controller (riskmgr_report_dir).
    type: path
    required: true
  run_id:
    description: The run; its reports share one directory.
    type: str
    required: true
  action:
    description: What the run does.
    type: str
    choices: [migrate, rollback]
    required: true
  host:
    description: The host of this item of the loop.
    type: str
    required: true
  batch:
    description:
      - The hosts of this batch, failed ones too. The task is one item of a loop run once per batch and delegated
        to each item's host (I(host)) - the batch's hosts first, then the run's hosts after the batch still holding
        the run's lock. One task per batch in the recap, counted for its first host only.
      - Each batch host is reported from its own variables, read in one look - the preflight's C(__riskmgr_facts)
        and C(__riskmgr_plan), the offline unit's C(__riskmgr_migrate), the step roles' results, the recovery's,
        the watch's C(__riskmgr_watch) and the failure - and its run lock released, unless its watch released it.
      - The summary is published after the batch's last host; a host after the batch has its lock released only
        when the rollout stops before it.
    type: list
    elements: str
    required: true
  max_fail_percentage:
    description: The play's max_fail_percentage (riskmgr_max_fail_percentage); tells whether this batch's failures
      stop the rollout.
    type: int
    default: 0
author: [Risk Platform team]
"""

EXAMPLES = r"""
- name: Report this batch's hosts, then publish the summary
  riskmgr_report:
    dir: "{{ riskmgr_report_dir }}"
    run_id: "{{ __riskmgr_run_id }}"
    action: migrate
    host: "{{ item }}"
    batch: "{{ ansible_play_batch }}"
  delegate_to: "{{ item }}"
  delegate_facts: true
  loop: "{{ ansible_play_batch }}"
  run_once: true
"""

RETURN = r"""
report: {description: The item's host's report., type: dict, returned: for a batch host}
path: {description: The report file written (null in check mode)., type: str, returned: always}
stops:
  description: After the batch's last host, whether this batch's failures end the rollout.
  type: bool
  returned: always
untouched:
  description: After the batch's last host, the run's hosts the rollout stops before (empty while it goes on).
  type: list
  elements: str
  returned: always
"""

import json
import os
import re
import tempfile
from datetime import datetime, timezone

from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

display = Display()

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")
RESULT_NAMES = ("facts", "plan", "unit", "backup", "migrate", "verify", "stop", "start", "restore", "recover", "watch", "failure")
# Each raw result's variable, as the role registers it.
RESULT_VARIABLES = {"facts": "__riskmgr_facts", "plan": "__riskmgr_plan", "unit": "__riskmgr_migrate",
                    "backup": "backup_result", "migrate": "migrate_result", "verify": "verify_result",
                    "stop": "daemon_stop_result", "start": "daemon_start_result", "restore": "__riskmgr_restore",
                    "recover": "__riskmgr_recover", "watch": "__riskmgr_watch"}
# What Ansible adds to a result (a skipped task's reason, a failed_when's verdict): not the run's record.
ANSIBLE_KEYS = frozenset(("invocation", "false_condition", "skip_reason", "skipped", "failed_when_result",
                          "changed_when_result", "ansible_facts", "warnings", "deprecations", "exception"))


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        _, args = self.validate_argument_spec(argument_spec={
            "dir": {"type": "path", "required": True},
            "run_id": {"type": "str", "required": True},
            "action": {"type": "str", "required": True, "choices": ["migrate", "rollback"]},
            "max_fail_percentage": {"type": "int", "default": 0},
            "host": {"type": "str", "required": True},
            "batch": {"type": "list", "elements": "str", "required": True},
        })
        result.update(changed=False, path=None, stops=False, untouched=[])
        for what, name in (("run_id", args["run_id"]), ("host", args["host"])):
            if not SAFE_NAME.match(name):
                return dict(result, failed=True, msg=f"{args['host']}: {what} {name!r} cannot be a file name; "
                                                     "no report written")
        return self.batch_item(args, task_vars, result, bool(self._task.check_mode))

    def batch_item(self, args: dict, task_vars: dict, result: dict, check_mode: bool) -> dict:
        """One item of the batch's report loop (run once, delegated to each item's host): a host of the batch
        reported and released, the summary after its last one, or a host after the batch released when the
        rollout stops before it. The items run in order in one worker, which keeps the batch's reports."""
        item, batch, run_id = args["host"], args["batch"], args["run_id"]
        hostvars = task_vars["hostvars"]
        kept = _BATCHES.setdefault(run_id, {"reports": {}, "stops": False, "untouched": []})
        warnings = []
        if item in batch:
            settings, results, lock = host_inputs(hostvars[item])
            fields, unwritten = self.report_host(item, dict(args, settings=settings, results=results), check_mode)
            kept["reports"][item] = fields["report"]
            result.update(fields)
            warnings += [unwritten] if unwritten else []
            if lock:
                warnings += self.release(item, lock, run_id, task_vars)
            if item == batch[-1]:
                reported = result["ansible_stats"]["data"]
                result.update(self.batch_summary(args, task_vars, kept, check_mode))
                # One ansible_stats per result: the report and the summary (which only grows) merged into the run's.
                result["ansible_stats"] = {"data": dict(reported, **result["ansible_stats"]["data"]),
                                           "per_host": False, "aggregate": True}
                result["ansible_facts"]["__riskmgr_stops"] = kept["stops"]
        else:
            lock = next((e["lock"] for e in kept["untouched"] if e["host"] == item and e["lock"]), None)
            if kept["stops"] and lock:
                warnings += self.release(item, lock, run_id, task_vars)
                # Read by the host itself when a later batch or play starts (never every host's variables).
                result["ansible_facts"] = {"__riskmgr_stops": True}
        if warnings:
            result["warnings"] = warnings
        return result

    def batch_summary(self, args: dict, task_vars: dict, kept: dict, check_mode: bool) -> dict:
        hostvars = task_vars["hostvars"]
        play_hosts = list(task_vars.get("ansible_play_hosts_all", []))
        every_host = play_hosts + [h for h in (task_vars.get("groups") or {}).get("all", []) if h not in play_hosts]
        if check_mode:  # no report file was written: each host's report fact, a look at every host's variables
            earlier = [r for r in (hostvars[name].get("riskmgr_report") for name in every_host
                                   if name in hostvars and name not in kept["reports"])
                       if r and r.get("run_id") == args["run_id"]]
        else:  # the run's report files: a batch's end costs no look at the variables of the fleet's every host
            earlier = [r for r in written_reports(args["dir"], args["run_id"]) if r.get("host") not in kept["reports"]]
        reports = earlier + list(kept["reports"].values())
        summary = build_summary(reports, args["run_id"], args["action"], check_mode, args["dir"])
        kept["stops"] = play_stops(reports, list(kept["reports"]), args["max_fail_percentage"])
        if kept["stops"]:
            summary["untouched"] = kept["untouched"] = untouched_hosts(every_host, list(kept["reports"]), reports,
                                                                       hostvars)
        display.display(summary_text(summary))
        kept["reports"] = {}
        return {"summary": summary, "stops": kept["stops"],
                "untouched": [entry["host"] for entry in summary["untouched"]],
                "ansible_stats": {"data": {"riskmgr_summary": summary}, "per_host": False, "aggregate": False}}

    def report_host(self, host: str, args: dict, check_mode: bool) -> tuple[dict, str | None]:
        """One host's report built, shown as one line (whole with -v) and written; the error when it was not."""
        report = build_report(host, args["run_id"], args["action"], check_mode, args["settings"], args["results"])
        fields = dict(report=report, ansible_facts={"riskmgr_report": report},
                      ansible_stats={"data": {"riskmgr_reports": {host: report}}, "per_host": False, "aggregate": True})
        display.display(result_line(report))
        display.v(f"{host}: run report\n{json.dumps(report, indent=2, sort_keys=True, default=str)}")
        if check_mode:
            return fields, None
        try:
            fields["path"] = write_report(args["dir"], args["run_id"], host, report)
        except OSError as err:
            return fields, (f"{host}: the report could not be written to {args['dir']} ({err.strerror}); set "
                            "riskmgr_report_dir to a writable directory")
        return fields, None

    def release(self, host: str, path: str, run_id: str, task_vars: dict) -> list:
        """The run lock of the item's host released (on its connection); a warning when it could not be."""
        released = self._execute_module(module_name="riskmgr_lock", task_vars=task_vars,
                                        module_args={"path": path, "state": "absent", "run_id": run_id})
        if released.get("failed"):
            return [f"{host}: its run lock {path} could not be released ({released.get('msg')}); remove it once no "
                    "run is active there"]
        return []


def host_inputs(seen) -> tuple[dict, dict, str | None]:
    """A batch host's settings, raw results and run lock (None when it holds none, or its watch released it), from
    its variables (seen: hostvars[host], looked up once)."""
    plan = seen.get("__riskmgr_plan") or {}
    settings = {"db": plan.get("db") or seen.get("riskmgr_db_path"),
                "migration_mode": plan.get("migration_mode") or seen.get("riskmgr_migration_mode")}
    results = {name: seen.get(variable) or {} for name, variable in RESULT_VARIABLES.items()}
    results["recover"] = results["recover"] or seen.get("__riskmgr_started_if_down") or {}
    results["failure"] = seen.get("__riskmgr_failure")
    held = seen.get("__riskmgr_lock") is not None and not results["watch"].get("released")
    return settings, results, plan.get("lock") if held else None


# The reports of the batch being reported, kept between the items of its loop (one worker runs them all).
_BATCHES: dict = {}


# --- the report: pure functions over the raw results ----------------------------------------------

def first(*values):
    """The first value that is set (not None), else None."""
    return next((value for value in values if value is not None), None)


def number(value):
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def build_report(host: str, run_id: str, action: str, check_mode: bool, settings: dict, results: dict) -> dict:
    """One host's report: plain JSON, times in ISO 8601 UTC, no Ansible internals."""
    return record(raw_report(host, run_id, action, check_mode, settings, results))


def plain_result(value) -> dict:
    """A registered result as the report keeps it: a skipped task is no result; Ansible's keys go."""
    if not isinstance(value, dict) or value.get("skipped"):
        return {}
    return {key: item for key, item in value.items() if key not in ANSIBLE_KEYS and not key.startswith("_ansible")}


def iso_time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def record(value, key: str = ""):
    """The report as written: every epoch time (a key ending in _at) in ISO 8601 UTC, recursively, and
    no Ansible internals at any depth."""
    if isinstance(value, dict):
        return {k: record(v, k) for k, v in value.items() if k not in ANSIBLE_KEYS and not k.startswith("_ansible")}
    if isinstance(value, list):
        return [record(item) for item in value]
    if key.endswith("_at") and number(value) is not None and value > 0:
        return iso_time(value)
    return value


def raw_report(host: str, run_id: str, action: str, check_mode: bool, settings: dict, results: dict) -> dict:
    """One host's report; each field says where it comes from, whichever path the run took."""
    results = dict(results)
    results.setdefault("unit", results.get("upgrade"))  # the unit's result under its earlier key
    raw = {name: plain_result(results.get(name)) for name in RESULT_NAMES if name != "failure"}
    raw["failure"] = results.get("failure") or {}
    facts, plan, unit = raw["facts"], raw["plan"], raw["unit"]
    recover, failure = raw["recover"], raw["failure"] or None
    unit_backup, unit_stop, unit_start = unit.get("backup") or {}, unit.get("stop") or {}, unit.get("start") or {}
    unit_migration, unit_verify = unit.get("migration") or {}, unit.get("verification") or {}
    backup, migrate, restore = raw["backup"], raw["migrate"], raw["restore"]
    stop, start = raw["stop"], raw["start"]
    recovery = plain_result(unit.get("recovery")) or recover or None
    if failure:
        outcome = "failed"
        to_version = first(recover.get("version"), (unit.get("recovery") or {}).get("version"), facts.get("version"))
    else:
        outcome = "changed" if plan.get("change") else "unchanged"
        to_version = first(unit.get("to_version") if unit.get("changed") else None,
                           migrate.get("to_version") if migrate.get("changed") else None,
                           restore.get("schema_version") if restore.get("changed") else None, facts.get("version"))
    stop_requested = first(unit_stop.get("stop_requested_at"), start.get("stop_requested_at"),
                           stop.get("stop_requested_at"))
    serving = first(unit_start.get("serving_at"), start.get("serving_at"))
    return {
        "host": host, "run_id": run_id, "mode": action, "check_mode": check_mode, "db": settings.get("db"),
        "outcome": outcome, "failure": failure,
        "state_before": facts.get("state"), "from_version": facts.get("version"), "to_version": to_version,
        "migration_mode": settings.get("migration_mode") if action == "migrate" else None,
        "steps": unit.get("steps") or migrate.get("steps") or [],
        "adopted": unit_migration.get("adopted") or migrate.get("adopted") or [],
        "backup": first(unit_backup.get("backup"), backup.get("backup")),
        "backup_sha256": first(unit_backup.get("sha256"), backup.get("sha256")),
        "backup_method": first(unit_backup.get("method"), backup.get("method")),
        "backup_copy_method": first(unit_backup.get("copy_method"), backup.get("copy_method")),
        "restored_from": first(restore.get("backup"), recover.get("backup") if recover.get("method") == "restore"
                               else None),
        "kept_files": (restore.get("kept") or []) + ((recovery or {}).get("kept") or []),
        "rows_not_in_backup": restore.get("rows_not_in_backup") or {},
        "data_dropped": migrate.get("data_dropped") or {},
        "recovery": recovery,
        "release": release_report(facts, unit_start, start, recovery),
        "smoke": first(unit.get("smoke"), start.get("smoke")),
        "watch": {key: raw["watch"].get(key) for key in ("watched_seconds", "lines_seen", "accepted", "msg")}
                 if raw["watch"].get("msg") else None,
        "pending_before": facts.get("pending_upgrade"),
        "phases_seconds": {
            "preflight_integrity": (facts.get("integrity") or {}).get("seconds"),
            "stop": first(unit_stop.get("stop_seconds"), stop.get("stop_seconds"), start.get("stop_seconds")),
            "backup": first(unit_backup.get("seconds"), backup.get("seconds")),
            "backup_check": unit_backup.get("confirm_seconds"),
            "backup_check_wait": unit_backup.get("wait_seconds"),  # the commit waiting for it: downtime
            "migrate": first(unit_migration.get("seconds"), migrate.get("seconds")),
            "restore": restore.get("seconds"),
            "verify": first(unit_verify.get("seconds"), raw["verify"].get("seconds")),
            # Up to the daemon serving; the settle time after it is not downtime.
            "start": first(unit_start.get("serve_seconds"), start.get("serve_seconds")),
        },
        "longest_migration_lock_seconds": migrate.get("longest_transaction_seconds"),
        # The downtime's window (ISO 8601 UTC, from the host's clock) and length: from the stop request to
        # the daemon serving again (its schema version line).
        "stop_requested_at": stop_requested,
        "serving_at": serving,
        "downtime_seconds": first(number(unit.get("downtime_seconds")), number(start.get("downtime_seconds")),
                                  round(serving - stop_requested, 3) if number(serving) and number(stop_requested)
                                  else None),
        "daemon": daemon_report(facts, unit, start, recovery, raw["watch"], stop_requested is not None),
    }


def daemon_report(facts: dict, unit: dict, start: dict, recovery: dict | None, watch: dict, stopped: bool) -> dict:
    """The daemon after the run: its pid and user (the user where the start read it), and whether the run
    stopped it."""
    started = (recovery or {}).get("start") or unit.get("start") or start or {}
    pid = first((recovery or {}).get("pid"), started.get("pid"), watch.get("pid"))
    stopped = stopped or bool((recovery or {}).get("pid"))
    if pid is None and not stopped:
        pid = next((seen.get("pid") for seen in facts.get("open_by") or []), None)
    return {"pid": pid, "user": started.get("user") if started.get("pid") == pid else None, "stopped": stopped}


def release_report(facts: dict, unit_start: dict, start: dict, recovery: dict | None) -> dict | None:
    """The release link before the run and the release that runs after it (None without a release link)."""
    before = facts.get("release")
    if not before:
        return None
    now = {"path": before.get("linked"), "version": before.get("version")}
    for switched in (unit_start.get("release"), start.get("release")):
        if switched:
            now = {"path": switched.get("after"), "version": switched.get("version")}
    if recovery and recovery.get("release"):
        now = {"path": recovery["release"].get("linked"), "version": recovery["release"].get("version")}
    return {"link": before.get("link"), "before": before.get("linked"), "before_version": before.get("version"),
            "now": now["path"], "version": now["version"]}


def build_summary(reports: list[dict], run_id: str, action: str, check_mode: bool, directory: str) -> dict:
    """The fleet so far: which hosts changed, stayed, failed, and the longest downtime."""
    def hosts(outcome: str) -> list[str]:
        return sorted(r["host"] for r in reports if r["outcome"] == outcome)
    downtimes = [r["downtime_seconds"] for r in reports if number(r.get("downtime_seconds")) is not None]
    return {"run_id": run_id, "mode": action, "check_mode": check_mode,
            "report_dir": None if check_mode else os.path.join(directory, run_id),
            "hosts": sorted(r["host"] for r in reports), "changed": hosts("changed"), "unchanged": hosts("unchanged"),
            "failed": hosts("failed"), "longest_downtime_seconds": max(downtimes) if downtimes else None,
            "untouched": []}


def play_stops(reports: list[dict], batch: list[str], max_fail_percentage: int) -> bool:
    """Whether the rollout stops after this batch: its failed hosts are more than max_fail_percentage of it
    (every host of it, at 100). ansible-playbook alone stops only when the whole batch failed (a host
    failed in a rescue counts only once its always section is done), so the caller ends the play."""
    failed_hosts = {r["host"] for r in reports if r["outcome"] == "failed"}  # a set: a batch can be thousands
    failed = [host for host in batch if host in failed_hosts]
    if not batch or not failed:
        return False
    return len(failed) == len(batch) or len(failed) / len(batch) > max_fail_percentage / 100.0


def untouched_hosts(play_hosts: list[str], batch: list[str], reports: list[dict], hostvars) -> list[dict]:
    """The run's hosts after this batch that no batch reached (the preflight planned a change or a start for
    them): each with the version its preflight read and whether this run holds its lock."""
    reported = {r["host"] for r in reports}
    left = []
    for host in play_hosts:
        if host in reported or host in batch:
            continue
        seen = hostvars[host] if host in hostvars else {}
        plan = seen.get("__riskmgr_plan") or {}
        if not plan:
            continue  # not in this run (left out with -l, or failed before its plan)
        left.append({"host": host, "version": plan.get("version"), "db": plan.get("db"),
                     "lock": plan.get("lock") if seen.get("__riskmgr_lock") is not None else None})
    return left


def summary_text(summary: dict) -> str:
    """Two lines at most, three when the run stops before some hosts (then the last lines of the run)."""
    counts = ", ".join(f"{outcome} {', '.join(summary[outcome])}" for outcome in ("changed", "unchanged", "failed")
                       if summary[outcome])
    head = (f"run {summary['run_id']} ({summary['mode']}{', check mode' if summary['check_mode'] else ''}), "
            f"{len(summary['hosts'])} host(s) so far: {counts or 'none'}")
    if summary["longest_downtime_seconds"] is not None:
        head += f"; longest downtime {summary['longest_downtime_seconds']} s"
    lines = [head]
    if summary["report_dir"]:
        lines.append(f"  reports: {summary['report_dir']}")
    if summary["untouched"]:
        versions = sorted({f"v{entry['version']}" for entry in summary["untouched"] if entry["version"] is not None})
        lines.append(f"  untouched, the run stopped before them: {', '.join(e['host'] for e in summary['untouched'])}"
                     f" - still on {' / '.join(versions) or 'their version'}, daemon never stopped, run lock released")
    return "\n".join(lines)


def result_line(report: dict) -> str:
    """The host's run in one line: version (from -> to), downtime, daemon pid and user, release, backup."""
    daemon, release = report.get("daemon") or {}, report.get("release") or {}
    if report["outcome"] == "failed":
        head = f"FAILED, now v{report['to_version']}"
    elif report["outcome"] == "changed":
        head = f"v{report['from_version']} -> v{report['to_version']}"
    else:
        head = f"v{report['to_version']}, nothing to do"
    if report.get("check_mode"):
        head += " (check mode: nothing was changed)"
    parts = [head]
    if report.get("downtime_seconds") is not None:
        parts.append(f"downtime {report['downtime_seconds']} s")
    if daemon.get("pid"):
        who = f" ({daemon['user']})" if daemon.get("user") else ""
        parts.append(f"daemon pid {daemon['pid']}{who}{'' if daemon.get('stopped') else ', not stopped'}")
    if release.get("now"):
        parts.append(f"release {release.get('version')} ({release['now']})")
    if report.get("restored_from"):
        parts.append(f"restored from {report['restored_from']}")
    if report.get("backup") and not report.get("check_mode"):
        parts.append(f"backup {report['backup']}")
    if report.get("kept_files"):
        parts.append(f"kept {', '.join(report['kept_files'])}")
    return f"{report['host']}: " + "; ".join(parts)


def written_reports(directory: str, run_id: str) -> list[dict]:
    """The reports this run has written so far (write_report's files; a report being written is not one yet)."""
    run_dir = os.path.join(directory, run_id)
    found = []
    for entry in sorted(os.scandir(run_dir), key=lambda e: e.name) if os.path.isdir(run_dir) else []:
        if entry.name.endswith(".json") and not entry.name.startswith("."):
            with open(entry.path, encoding="utf-8") as handle:
                report = json.load(handle)
            if isinstance(report, dict) and report.get("run_id") == run_id:
                found.append(report)
    return found


def write_report(directory: str, run_id: str, host: str, report: dict) -> str:
    run_dir = os.path.join(directory, run_id)
    os.makedirs(run_dir, mode=0o755, exist_ok=True)
    target = os.path.join(run_dir, f"{host}.json")
    fd, temp = tempfile.mkstemp(dir=run_dir, prefix=f".{host}.json.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(report, indent=2, sort_keys=True, default=str) + "\n")
        os.chmod(temp, 0o644)
        os.replace(temp, target)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise
    return target
