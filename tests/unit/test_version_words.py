"""The words of a run name the versions it moves between (#19 item 6): a run between v3 and v4, or from
v2 to v4, says so in its plan, its failure and recovery, its write proof, its verification remedy, its
watch and its report line, and never says v1 (nor v2, where v2 is not involved).

Real databases (the reference v1 taken up through the shipped v2 and the test-only v3 and v4) and the
real code paths that produce each text; the texts are read as an operator reads them.
"""
from __future__ import annotations

import os
import re
import signal
import sys
from pathlib import Path

import pytest
from fixtures import run_sql
from riskmgr_recover import RecoverSettings, put_database_back, read_state
from sqlite_catalog import load_catalog
from sqlite_common import MigrationError, RiskmgrError
from sqlite_facts import FactsRequest, gather
from sqlite_migration import migrate_database
from sqlite_verification import failure_message, verify_database
from versions_catalog import versions_catalog

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "action_plugins"))
import riskmgr_migrate  # noqa: E402  (module_utils/riskmgr_migrate.py, through conftest's alias)
from riskmgr_confirm import plan_lines, with_target_versions  # noqa: E402  (action plugins, through sys.path)
from riskmgr_report import result_line  # noqa: E402
from riskmgr_watch import failure_text as watch_failure, progress_line  # noqa: E402


def uninvolved(text: str, *versions: int) -> list[str]:
    """The version names in `text` ("v1", "v2", as in state_v1_...) of versions not in `versions`."""
    return [f"v{v}" for v in (1, 2) if v not in versions and re.search(rf"v{v}(?!\d)", text)]


@pytest.fixture
def catalog(tmp_path) -> Path:
    return versions_catalog(tmp_path / "catalog")


def at_version(db: Path, catalog: Path, version: int) -> Path:
    for step in range(2, version + 1):
        migrate_database(str(db), catalog, target_version=step)
    return db


def test_the_plan_names_each_hosts_own_versions(v1_db, catalog):
    at_version(v1_db, catalog, 4)
    dropped = gather(str(v1_db), catalog, FactsRequest(target_version=3, plan=True))["plan"]["data_dropped"]
    assert dropped  # the column and rows v4 brought, counted
    release = {"link": "/opt/rm/current", "linked": "/opt/rm/releases/3", "switch_needed": True,
               "paths": {str(n): f"/opt/rm/releases/{n}" for n in range(1, 5)}}
    common = {"db": "/opt/rm/data/state.db", "size_mb": 4.2, "journal_mode": "wal", "change": True,
              "require_confirmation": True, "release": release, "smoke": "smoke", "watch_seconds": {"canary": 60,
                                                                                                   "later": 0}}
    up = [dict(common, host="up-from-3", state="v3", version=3, steps=["column risk_alerts.acknowledged_at"]),
          dict(common, host="up-from-2", state="v2", version=2, steps=["table risk_alerts", "column x.y"])]
    lines = plan_lines(with_target_versions(up, "migrate", 4, {}), "migrate", 4)
    assert "is v3" in lines[0] and "-> v4: 1 steps" in lines[0] and "to the v4 release /opt/rm/releases/4" in lines[0]
    assert uninvolved(lines[0], 3, 4) == [], lines[0]
    assert "is v2" in lines[1] and uninvolved(lines[1], 2, 4) == [], lines[1]

    down = [dict(common, host="down-4", state="v4", version=4, rollback_method="downgrade", data_dropped=dropped),
            dict(common, host="down-4-restore", state="v4", version=4, rollback_method="restore",
                 backup="/opt/rm/data/backups/state_v3_20261208T000000000000Z.db", rows_not_in_backup={"orders": 3},
                 kept=["/opt/rm/data/state.db.kept-rollback-v4-20261208T010000000000Z"]),
            dict(common, host="done-3", state="v3", version=3, change=False, release=None)]
    # rollback.yml sets riskmgr_target_version per host (the one below its own, or -e): the plan takes each.
    hostvars = {"down-4": {"riskmgr_target_version": "3"}, "down-4-restore": {"riskmgr_target_version": 3},
                "done-3": {"riskmgr_target_version": 3}}
    lines = plan_lines(with_target_versions(down, "rollback", 2, {"hostvars": hostvars}), "rollback", 2)
    assert "-> v3 by downgrade" in lines[0] and "dropped with the objects of v4" in lines[0]
    assert "a backup of the v4 file is taken first" in lines[0]
    assert "the daemon starts on the v3 release (/opt/rm/releases/3)" in lines[0]
    assert "-> v3 by restore of /opt/rm/data/backups/state_v3_" in lines[1]
    assert "already v3, nothing to do" in lines[2]
    assert [uninvolved(line, 3, 4) for line in lines] == [[], [], []], lines
    # Four versions down at once: every one undone is named, the target's release starts.
    four_to_one, = plan_lines(with_target_versions([down[0]], "rollback", 1, {"hostvars": {"down-4": {
        "riskmgr_target_version": 1}}}), "rollback", 1)
    assert "-> v1 by downgrade" in four_to_one and "the objects of v4, v3 and v2" in four_to_one
    assert "the v1 release (/opt/rm/releases/1)" in four_to_one
    # rollback_v2.yml gives no target: the design card's v2 -> v1.
    v2_host = dict(down[0], state="v2", version=2, release=None)
    assert "-> v1 by downgrade; every row kept, dropped with the objects of v2" in \
        plan_lines(with_target_versions([v2_host], "rollback", 2, {}), "rollback", 2)[0]


def test_failure_and_recovery_name_the_upgrade_and_where_the_host_went_back(v1_db, catalog, tmp_path):
    at_version(v1_db, catalog, 3)
    migrate_database(str(v1_db), catalog, target_version=4)  # the run that failed after its commit, from v3
    loaded = load_catalog(catalog)
    settings = RecoverSettings(path=str(v1_db), backup_dir=str(tmp_path / "backups"), back_to=3, method="downgrade")
    report = {"errors": [], "kept": [], "daemon": "runs again on v3 with release v3 (/opt/rm/releases/3), pid 7"}
    put_database_back(settings, loaded, read_state(str(v1_db), loaded, {}, 5.0), None, report)
    assert report["errors"] == [] and report["version"] == 3
    text = riskmgr_migrate.failure_text(str(v1_db), "smoke", RiskmgrError("the smoke test exited with status 1"),
                                        report, (3, 4))
    assert f"{v1_db} (v3 -> v4): the upgrade failed while smoke-testing" in text
    assert "returned to v3 in place, every row kept (the v4 file was backed up first as" in text
    assert text.endswith("Fix the cause, then rerun migrate.yml -e riskmgr_target_version=4.")
    assert uninvolved(text, 3, 4) == [], text
    # The design card's v1 -> v2 keeps its own playbook.
    assert riskmgr_migrate.failure_text("db", "start", RiskmgrError("x"), dict(report, errors=[]), (1, 2)) \
        .endswith("rerun migrate_v2.yml.")


def test_a_downgrade_blocked_by_a_trigger_names_the_target_versions_code(v1_db, catalog):
    at_version(v1_db, catalog, 4)
    run_sql(v1_db, "CREATE TABLE ack_log (alert_id INTEGER, at TEXT); CREATE TRIGGER trg_ack_log AFTER INSERT ON "
                   "risk_alerts BEGIN INSERT INTO ack_log VALUES (NEW.alert_id, NEW.acknowledged_at); END;")
    with pytest.raises(MigrationError) as refused:
        migrate_database(str(v1_db), catalog, target_version=3)
    text = str(refused.value)
    assert "trigger trg_ack_log uses risk_alerts.acknowledged_at" in text
    assert "every insert of v3 code would then fail" in text and uninvolved(text, 3, 4) == [], text
    blockers = gather(str(v1_db), catalog, FactsRequest(target_version=3, plan=True))["plan"]["blockers"]
    assert blockers and "every insert of v3 code" in blockers[0] and uninvolved(blockers[0], 3, 4) == []


def test_the_write_proof_names_the_code_of_each_version(v1_db, catalog):
    at_version(v1_db, catalog, 3)
    # A copy with SELECT * follows risk_alerts' column count: v4's column breaks every insert into it.
    run_sql(v1_db, "CREATE TABLE alerts_archive AS SELECT * FROM risk_alerts WHERE 0; CREATE TRIGGER trg_archive "
                   "AFTER INSERT ON risk_alerts BEGIN INSERT INTO alerts_archive SELECT * FROM risk_alerts "
                   "WHERE alert_id = NEW.alert_id; END;")
    with pytest.raises(MigrationError) as refused:
        migrate_database(str(v1_db), catalog, target_version=4)
    text = str(refused.value)
    assert "an insert into risk_alerts as v3 code writes it (without acknowledged_at) and as v4 code writes it " \
           "(with acknowledged_at) fails after the change, because of trigger trg_archive" in text, text
    assert uninvolved(text, 3, 4) == [], text


def test_the_verification_names_the_target_and_its_playbook(v1_db, catalog):
    at_version(v1_db, catalog, 4)
    # A trigger made by hand whose body names a column no version has: every insert into risk_alerts fails.
    run_sql(v1_db, "CREATE TRIGGER trg_bad AFTER INSERT ON risk_alerts BEGIN UPDATE orders SET state = "
                   "NEW.no_such_column WHERE 0; END;")
    result = verify_database(str(v1_db), catalog, target_version=4)
    assert not result["ok"]
    text = failure_message(str(v1_db), result)
    assert "verification against v4 failed" in text
    assert text.endswith("or fix the cause and rerun migrate.yml -e riskmgr_target_version=4")
    assert uninvolved(text, 3, 4) == [], text
    writes = next(c for c in result["checks"] if c["name"] == "writes")
    assert not writes["ok"] and "as v4 code writes it (with acknowledged_at)" in writes["detail"], writes
    assert uninvolved(writes["detail"], 3, 4) == [], writes
    # At the baseline the remedy is the baseline's restore, named by its version.
    one = failure_message("db", {"target_version": 1, "failed_checks": ["x"]})
    assert "restore another verified v1 backup (rollback.yml -e riskmgr_target_version=1" in one


def test_the_watch_and_the_report_line_name_the_upgrade():
    upgrade = {"from_version": 3, "to_version": 4}
    line = progress_line("h", 60, 30, 2, 42, "ERROR", upgrade)
    assert line.startswith("h: watching the daemon (pid 42) on v4 (the upgrade v3 -> v4) for 60 s")
    failed = watch_failure("h", "canary watch", {"alive": False, "pid": 42, "upgrade": upgrade}, 12, "ERROR")
    assert failed.endswith("(the upgrade v3 -> v4)") and uninvolved(line + failed, 3, 4) == []
    report = {"host": "h", "outcome": "changed", "from_version": 3, "to_version": 4, "downtime_seconds": 0.3,
              "daemon": {"pid": 42, "stopped": True}, "release": {"version": 4, "now": "/opt/rm/releases/4"},
              "backup": "/opt/rm/data/backups/state_v3_20261208T000000000000Z.db"}
    text = result_line(report)
    assert text.startswith("h: v3 -> v4; downtime 0.3 s") and uninvolved(text, 3, 4) == [], text
    back = dict(report, from_version=4, to_version=3, release={"version": 3, "now": "/opt/rm/releases/3"},
                restored_from="/opt/rm/data/backups/state_v3_20261208T000000000000Z.db", backup=None,
                kept_files=["/opt/rm/data/state.db.kept-rollback-v4-20261208T010000000000Z"])
    text = result_line(back)
    assert text.startswith("h: v4 -> v3;") and uninvolved(text, 3, 4) == [], text
    two_to_four = riskmgr_migrate.failure_text("/opt/rm/data/state.db", "verify", RiskmgrError("a check failed"), {
        "database": "restored from /opt/rm/data/backups/state_v2_20261208T000000000000Z.db (v2)", "kept": [],
        "errors": [], "daemon": "runs again on v2 with release v2 (/opt/rm/releases/2), pid 7"}, (2, 4))
    assert "(v2 -> v4): the upgrade failed while verify" in two_to_four and uninvolved(two_to_four, 2, 4) == []
    assert two_to_four.endswith("rerun migrate.yml -e riskmgr_target_version=4.")


def test_a_failed_upgrade_between_later_versions_says_so_and_goes_back_to_where_it_began(v1_db, catalog, tmp_path):
    """The host-side unit for real: a v3 database, a daemon that refuses v4; the failure and the recovery."""
    from ansible_run import module_defaults
    from fixtures import wait_for
    from host_processes import pid_is_running, read_pid
    from pidfile_control import PidfileControl
    at_version(v1_db, catalog, 3)
    pidfile, log = tmp_path / "riskmgr.pid", tmp_path / "riskmgr.log"
    control = PidfileControl(str(pidfile), [sys.executable, str(ROOT / "tools" / "riskmgr_standin.py"), "--db",
                                            str(v1_db), "--pidfile", str(pidfile), "--log", str(log), "--interval-ms",
                                            "20", "--refuse-version", "4"])
    control.launch(10)
    try:
        wait_for(lambda: log.exists() and "Database schema version" in log.read_text())
        settings = riskmgr_migrate.MigrateSettings.from_params({
            **module_defaults("riskmgr_migrate"), "log_path": str(log), "process_match": "riskmgr_standin",
            "settle": 0.3, "start_timeout": 10, "stop_timeout": 5})
        with pytest.raises(riskmgr_migrate.MigrateError) as caught:
            riskmgr_migrate.migrate_host(str(v1_db), str(tmp_path / "backups"), load_catalog(catalog), control,
                                         settings, check_mode=False, want_diff=False)
        text = str(caught.value)
        assert f"{v1_db} (v3 -> v4): the upgrade failed while start" in text, text
        # In place when the daemon wrote rows since the backup, else the backup: back at v3 either way.
        assert re.search(r"was (returned to v3 in place, every row kept \(the v4 file was backed up first as "
                         r"\S*state_v4_|restored from \S*state_v3_\S* \(v3\))", text), text
        assert "runs again on v3" in text and text.endswith("rerun migrate.yml -e riskmgr_target_version=4.")
        assert uninvolved(text, 3, 4) == [], text
        # Asked to go down, the unit says which way and which playbook does it, before any stop.
        migrate_database(str(v1_db), catalog, target_version=4)
        down = riskmgr_migrate.MigrateSettings.from_params({**module_defaults("riskmgr_migrate"), "target_version": 3})
        with pytest.raises(RiskmgrError, match=r"\(v4 -> v3 is a downgrade\); use rollback\.yml -e "
                                               r"riskmgr_target_version=3"):
            riskmgr_migrate.preview_migration(str(v1_db), str(tmp_path / "backups"), load_catalog(catalog), control,
                                              down, check_mode=False, want_diff=False)
    finally:
        pid = read_pid(str(pidfile))
        if pid and pid_is_running(pid):
            os.kill(pid, signal.SIGKILL)
