"""The run report, built in Python from the raw results the modules really return.

Each shape runs the real thing on a real database and a real stand-in daemon (the offline unit,
the online steps, a rollback by restore, an upgrade that fails and is put back), then builds the
report from those results, as the riskmgr_report action does in a run.
"""
from __future__ import annotations

import importlib.util
import json
import os
import pwd
import re
from pathlib import Path

import pytest
from backup_restore import restore_database
from fixtures import MIGRATIONS, ROOT, wait_for
from riskmgr_daemon import restart_daemon
from riskmgr_migrate import MigrateError
from sqlite_backups import backup_database
from sqlite_facts import FactsRequest, gather
from sqlite_migration import migrate_database
from sqlite_verification import verify_database
from test_riskmgr_migrate import FAST, Host

spec = importlib.util.spec_from_file_location("riskmgr_report_action", ROOT / "action_plugins" / "riskmgr_report.py")
report_action = importlib.util.module_from_spec(spec)
spec.loader.exec_module(report_action)
SETTINGS = {"db": "/x/state.db", "migration_mode": "offline"}


@pytest.fixture
def host(tmp_path):
    made = Host(tmp_path / "h", rows=300)
    made.start()
    yield made
    made.cleanup()


def preflight(host: Host, target: int = 2) -> dict:
    return gather(str(host.db), str(MIGRATIONS), FactsRequest(integrity="quick", target_version=target, plan=True))


def test_an_offline_upgrade_reports_its_phases_and_the_downtime_window(host):
    facts = preflight(host)
    unit = host.upgrade()
    report = report_action.build_report("h1", "run-1", "migrate", False, SETTINGS,
                                        {"facts": facts, "plan": {"change": True}, "unit": unit})
    assert (report["outcome"], report["from_version"], report["to_version"]) == ("changed", 1, 2)
    assert report["backup"] == unit["backup"]["backup"] and report["backup_method"] == "file copy"
    # a reflink where tmp_path's filesystem has them, else the kernel copy (test_reflink_backups: XFS)
    assert report["backup_copy_method"] == unit["backup"]["copy_method"] in ("copy_file_range", "reflink")
    assert report["downtime_seconds"] == unit["downtime_seconds"] > 0
    assert report["stop_requested_at"] < report["serving_at"]
    phases = report["phases_seconds"]
    assert all(isinstance(phases[name], float) for name in ("stop", "backup", "backup_check", "migrate", "verify",
                                                             "start", "preflight_integrity"))
    assert report["recovery"] is None and report["failure"] is None and report["migration_mode"] == "offline"
    assert report["daemon"] == {"pid": unit["start"]["pid"], "user": pwd.getpwuid(os.getuid()).pw_name,
                                "stopped": True}
    assert report_action.result_line(report) == (
        f"h1: v1 -> v2; downtime {unit['downtime_seconds']} s; daemon pid {unit['start']['pid']} "
        f"({pwd.getpwuid(os.getuid()).pw_name}); backup {unit['backup']['backup']}")
    json.dumps(report)  # what is written and published is plain JSON


def test_the_facts_the_preflight_keeps_make_the_same_report_as_its_whole_read(host):
    """The later plays keep only REPORTED_FACTS of the preflight's read: a key the report reads and the list
    lacks would silently be null in every report."""
    spec = importlib.util.spec_from_file_location("riskmgr_preflight_action",
                                                  ROOT / "action_plugins" / "riskmgr_preflight.py")
    preflight_action = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(preflight_action)
    facts = preflight(host)
    facts["release"] = {"link": "/srv/current", "linked": "/srv/releases/1", "version": 1}  # the report names it
    unit = host.upgrade()
    kept = {key: facts.get(key) for key in preflight_action.REPORTED_FACTS}
    whole, slim = (report_action.build_report("h1", "run-1", "migrate", False, SETTINGS,
                                              {"facts": f, "plan": {"change": True}, "unit": unit})
                   for f in (facts, kept))
    assert slim == whole


def test_an_online_upgrade_reports_the_restart_as_its_downtime_and_the_longest_lock(host):
    facts = preflight(host)
    backup = backup_database(str(host.db), str(host.backups))
    migrate = migrate_database(str(host.db), MIGRATIONS, transactions="per_step")
    verify = verify_database(str(host.db), MIGRATIONS, manifest=backup["manifest"])
    start = restart_daemon(host.control(), FAST["stop_timeout"], settle=FAST["settle"],
                           start_timeout=FAST["start_timeout"], log_path=str(host.log),
                           expect_log_line="Database schema version: 2", process_match="riskmgr_standin")
    report = report_action.build_report(
        "h1", "run-1", "migrate", False, dict(SETTINGS, migration_mode="online"),
        {"facts": facts, "plan": {"change": True}, "backup": backup, "migrate": migrate, "verify": verify,
         "start": start})
    assert (report["outcome"], report["to_version"], report["migration_mode"]) == ("changed", 2, "online")
    assert report["downtime_seconds"] == start["downtime_seconds"] and report["backup_method"] == "backup API"
    assert report["longest_migration_lock_seconds"] == migrate["longest_transaction_seconds"] > 0
    assert report["steps"] == migrate["steps"]


def test_a_rollback_by_restore_names_the_backup_the_kept_file_and_the_rows_it_lacks(host):
    taken = backup_database(str(host.db), str(host.backups))
    migrate_database(str(host.db), MIGRATIONS)
    facts = preflight(host, target=1)
    host.control().request_stop(host.pid())
    wait_for(lambda: host.pid() is None)
    restored = restore_database(str(host.db), backup=taken["backup"], keep_suffix="rollback")
    report = report_action.build_report("h1", "run-2", "rollback", False, SETTINGS,
                                        {"facts": facts, "plan": {"change": True}, "restore": restored})
    assert (report["outcome"], report["from_version"], report["to_version"]) == ("changed", 2, 1)
    assert report["restored_from"] == taken["backup"] and report["kept_files"] == restored["kept"]
    assert report["rows_not_in_backup"]["enforcement_log"] > 0 and report["migration_mode"] is None


def test_a_failed_upgrade_put_back_reports_the_version_it_ended_on_and_the_recovery(tmp_path):
    host = Host(tmp_path / "h", "--refuse-version", "2", rows=300)
    try:
        host.start()
        facts = preflight(host)
        with pytest.raises(MigrateError) as caught:
            host.upgrade()
        unit = caught.value.fail_result
        report = report_action.build_report(
            "h1", "run-3", "migrate", False, SETTINGS,
            {"facts": facts, "plan": {"change": True}, "unit": unit,
             "failure": {"phase": unit["failed_phase"], "msg": str(caught.value)}})
        assert report["outcome"] == "failed" and report["failure"]["phase"] == "start"
        assert report["to_version"] == 1  # put back: not the version it aimed at
        assert report["recovery"] == report_action.record(unit["recovery"])  # its times in ISO 8601 UTC
        assert report["kept_files"] == unit["recovery"]["kept"]
        assert report_action.result_line(report).startswith("h1: FAILED, now v1; daemon pid ")
    finally:
        host.cleanup()


def test_the_summary_counts_the_fleet_so_far():
    reports = [{"host": "a", "outcome": "changed", "downtime_seconds": 1.5},
               {"host": "b", "outcome": "failed", "downtime_seconds": None},
               {"host": "c", "outcome": "unchanged", "downtime_seconds": None}]
    summary = report_action.build_summary(reports, "run-1", "migrate", False, "/r")
    assert (summary["changed"], summary["failed"], summary["unchanged"]) == (["a"], ["b"], ["c"])
    assert summary["longest_downtime_seconds"] == 1.5 and summary["report_dir"] == str(Path("/r") / "run-1")
    assert report_action.build_summary([], "r", "rollback", True, "/r")["report_dir"] is None


def test_a_batch_summary_reads_the_reports_the_run_has_written_and_only_those(tmp_path):
    for host in ("h2", "h1"):
        report_action.write_report(str(tmp_path), "run-1", host, {"host": host, "run_id": "run-1", "outcome": "changed"})
    report_action.write_report(str(tmp_path), "run-2", "h3", {"host": "h3", "run_id": "run-2", "outcome": "changed"})
    (tmp_path / "run-1" / ".h4.json.x1y2").write_text("{partial", encoding="utf-8")  # a report still being written
    assert [r["host"] for r in report_action.written_reports(str(tmp_path), "run-1")] == ["h1", "h2"]
    assert report_action.written_reports(str(tmp_path), "run-3") == []  # no report yet: no directory


def test_times_are_iso_utc_and_a_skipped_result_is_no_recovery():
    skipped = {"changed": False, "skipped": True, "false_condition": "not (x | bool)",
               "skip_reason": "Conditional result was False"}
    report = report_action.build_report(
        "h1", "run-1", "migrate", False, SETTINGS,
        {"facts": {"state": "v2", "version": 2}, "plan": {"change": False}, "recover": skipped,
         "start": {"stop_requested_at": 1796676449.6954556, "serving_at": 1796676449.806257, "pid": 7,
                   "invocation": {"module_args": {}}}})
    assert report["recovery"] is None
    assert (report["stop_requested_at"], report["serving_at"]) == ("2026-12-07T20:47:29.695456Z",
                                                                   "2026-12-07T20:47:29.806257Z")
    assert report["downtime_seconds"] == 0.111
    text = json.dumps(report)
    assert not re.search(r"false_condition|skip_reason|invocation|1796676449", text), text


def untouched_run(failed: list[str], batch: list[str], max_fail: int) -> tuple[bool, list[str]]:
    hosts = ["a", "b", "c", "d"]
    reports = [{"host": h, "outcome": "failed" if h in failed else "changed"} for h in batch]
    hostvars = {h: {"__riskmgr_plan": {"version": 1, "db": f"/{h}/state.db", "lock": f"/{h}/state.db.migrate.lock"},
                    "__riskmgr_lock": {}} for h in hosts}
    stops = report_action.play_stops(reports, batch, max_fail)
    return stops, [e["host"] for e in report_action.untouched_hosts(hosts, batch, reports, hostvars)]


def test_the_hosts_a_stopped_play_never_reaches_are_named_only_when_it_stops():
    assert untouched_run(["a"], ["a"], 0) == (True, ["b", "c", "d"])  # a failed canary
    assert untouched_run([], ["a"], 0)[0] is False
    assert untouched_run(["b"], ["b", "c"], 50)[0] is False  # 1 of 2 is not more than 50 %
    assert untouched_run(["b", "c"], ["b", "c"], 100)[0] is True  # the whole batch failed
    assert untouched_run(["b"], ["b", "c"], 0) == (True, ["a", "d"])
    summary = report_action.build_summary([{"host": "a", "outcome": "failed", "downtime_seconds": 0.2}],
                                          "run-1", "migrate", False, "/r")
    summary["untouched"] = [{"host": "b", "version": 1, "db": "/b", "lock": "/b.lock"},
                            {"host": "c", "version": 1, "db": "/c", "lock": None}]
    assert report_action.summary_text(summary).splitlines()[-1] == (
        "  untouched, the run stopped before them: b, c - still on v1, daemon never stopped, run lock released")


def test_a_rollback_by_the_step_roles_reports_the_daemon_it_stopped_and_started():
    report = report_action.build_report(
        "h1", "run-2", "rollback", False, SETTINGS,
        {"facts": {"state": "v2", "version": 2}, "plan": {"change": True},
         "stop": {"changed": True, "pid": 5, "stop_requested_at": 1796676449.5, "stop_seconds": 0.1},
         "start": {"changed": True, "pid": 9, "user": "riskmgr", "serving_at": 1796676451.5},
         "restore": {"changed": True, "schema_version": 1, "backup": "/b/state_v1.db", "kept": ["/k"]}})
    assert report["daemon"] == {"pid": 9, "user": "riskmgr", "stopped": True}
    assert report_action.result_line(report) == ("h1: v2 -> v1; downtime 2.0 s; daemon pid 9 (riskmgr); restored from "
                                                 "/b/state_v1.db; kept /k")
