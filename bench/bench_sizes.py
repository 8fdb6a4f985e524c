"""The measurements per database size (floor, the seed's manual order, this project offline and
online, a plain restart, the re-run), fleet scaling on a local fleet, and the peak RSS of each
module process; bench/bench.py runs them and bench_report.py prints them."""
from __future__ import annotations

import json
import os
import platform
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from datetime import datetime, timezone
from pathlib import Path

from bench_common import (BIN, DDL_FILES, MIGRATIONS, ONE_TASK, TIME_BIN, WRITER_INTERVAL_MS, BenchError, Fleet, db_rows,
                          local_fleet, log, playbook, recap_changed, remove_db, run, summary)

FLOOR_SAMPLES = 3  # each floor is the median of at least this many measurements on the same file

# --- the measurements -----------------------------------------------------------------------------

def ddl_script() -> str:
    files = sorted(p for p in (MIGRATIONS / "v2").glob("*.sql") if p.name.startswith(DDL_FILES))
    if len(files) != len(DDL_FILES):
        raise BenchError(f"{MIGRATIONS / 'v2'}: expected files {', '.join(DDL_FILES)}*.sql, found {files}")
    return ".bail on\nBEGIN IMMEDIATE;\n" + "\n".join(p.read_text() for p in files) + "\nCOMMIT;\n"


def sqlite_ddl(path: Path, script: str, log_file: Path) -> None:
    run(["sqlite3", path], input_text=script, log_file=log_file, what="sqlite3 (v2 DDL)")


def integrity_check(path: Path, log_file: Path) -> None:
    out = run(["sqlite3", path, "PRAGMA integrity_check;"], log_file=log_file, what="sqlite3 integrity_check").stdout
    if out.strip() != "ok":
        raise BenchError(f"{path}: integrity_check says {out.strip()[:200]}")


def floor_once(ref: Path, scratch: Path, script: str, log_file: Path) -> dict:
    copy = scratch / "floor.db"
    began = time.perf_counter()
    run(["cp", ref, copy], what="cp")
    copied = time.perf_counter()
    sqlite_ddl(copy, script, log_file)
    done = time.perf_counter()
    if "schema_version" not in db_rows(copy):
        raise BenchError(f"{copy}: the DDL ran but there is no schema_version table")
    remove_db(copy)
    return {"seconds": done - began, "cp": copied - began, "ddl": done - copied}


def manual_once(ref: Path, scratch: Path, script: str, log_file: Path) -> dict:
    live, backup = scratch / "manual_live.db", scratch / "manual_backup.db"
    shutil.copyfile(ref, live)  # setup, not timed: the live database
    marks = [time.perf_counter()]
    run(["cp", live, backup], what="cp")
    marks.append(time.perf_counter())
    integrity_check(backup, log_file)
    marks.append(time.perf_counter())
    sqlite_ddl(live, script, log_file)
    marks.append(time.perf_counter())
    integrity_check(live, log_file)
    marks.append(time.perf_counter())
    remove_db(live)
    remove_db(backup)
    parts = [b - a for a, b in zip(marks, marks[1:])]
    return {"seconds": marks[-1] - marks[0], "cp": parts[0], "integrity_backup": parts[1], "ddl": parts[2],
            "integrity_live": parts[3]}


def project_once(fleet: Fleet, work: Path, label: str) -> dict:
    name = fleet.names[0]
    fleet.reset([name])
    done = playbook(fleet, work, label, extra={"riskmgr_confirm": True})
    report = done.reports.get(name)
    if report is None or report.get("outcome") != "changed" or str(report.get("to_version")) != "2":
        raise BenchError(f"{label}: expected {name} changed to v2, report says "
                         f"{json.dumps(report)[:400] if report else 'nothing (no report written)'}")
    if report.get("downtime_seconds") in (None, ""):
        raise BenchError(f"{label}: the report of {name} has no downtime_seconds")
    if not fleet.alive(name):
        raise BenchError(f"{label}: the daemon of {name} is not running after the migration")
    return {"wall": done.wall, "cpu": done.cpu, "downtime": float(report["downtime_seconds"]),
            "phases": report["phases_seconds"], "loadavg": os.getloadavg()[0]}


HEARTBEAT_TIMES = ("SELECT timestamp FROM enforcement_log WHERE reason LIKE 'standin heartbeat %' "
                   "AND timestamp >= ? AND timestamp < ? ORDER BY id")


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def longest_write_gap(db: Path, start: float, end: float) -> tuple[float | None, int]:
    """The longest gap between consecutive commits of the stand-in between two epoch times, and the count.

    Each row's timestamp is taken just before its BEGIN IMMEDIATE, so a row that waited for a
    lock shows as a longer gap before the next one: gap - interval is the stall."""
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        stamps = [datetime.strptime(r[0], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()
                  for r in conn.execute(HEARTBEAT_TIMES, (iso(start), iso(end)))]
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    return (max(gaps) if gaps else None), len(stamps)


def writer_trouble(log_path: Path, offset: int) -> list[str]:
    """Lines of the stand-in's log since offset that mean a write failed or waited past its busy timeout."""
    with open(log_path, encoding="utf-8", errors="replace") as handle:
        handle.seek(offset)
        return [line.strip() for line in handle if " ERROR " in line or "locked" in line or "waited" in line]


def online_once(fleet: Fleet, work: Path, label: str) -> dict:
    """riskmgr_migration_mode=online on the host whose daemon writes every 20 ms: downtime, stall, no loss."""
    name = fleet.names[0]
    fleet.reset([name])
    host = fleet.hosts[name]
    db, log_path = Path(host["riskmgr_db_path"]), Path(host["riskmgr_log_path"])
    time.sleep(0.5)  # let the daemon settle into its rhythm
    before = db_rows(db)
    log_offset = log_path.stat().st_size
    began = time.time()
    done = playbook(fleet, work, label, extra={"riskmgr_confirm": True, "riskmgr_migration_mode": "online"})
    report = done.reports.get(name)
    if report is None or report.get("outcome") != "changed" or str(report.get("to_version")) != "2":
        raise BenchError(f"{label}: expected {name} changed to v2 online, report says "
                         f"{json.dumps(report)[:400] if report else 'nothing'}")
    if not fleet.alive(name):
        raise BenchError(f"{label}: the daemon of {name} is not running after the online migration")
    stop_at = epoch_of(report["stop_requested_at"])
    gap, rows_written = longest_write_gap(db, began, stop_at)
    after = db_rows(db)
    lost = {t: before[t] - after.get(t, 0) for t in before if after.get(t, 0) < before[t]}
    # The stall: what the writer waited beyond its own interval, in the run that measured the transaction.
    stall = None if gap is None else max(0.0, gap - WRITER_INTERVAL_MS / 1000)
    return {"wall": done.wall, "cpu": done.cpu, "downtime": float(report["downtime_seconds"]), "longest_gap": gap,
            "stall": stall,
            "rows_during_run": rows_written, "longest_lock": report.get("longest_migration_lock_seconds"),
            "trouble": writer_trouble(log_path, log_offset), "rows_lost": lost, "phases": report["phases_seconds"]}


def epoch_of(report_time: str) -> float:
    """A report's ISO 8601 UTC time ('2026-12-07T21:40:12.123456Z') as seconds since the epoch."""
    return datetime.fromisoformat(report_time.replace("Z", "+00:00")).timestamp()


def plain_restart_once(fleet: Fleet) -> float:
    """The same daemon stopped and started by hand, no Ansible: SIGTERM, wait for the exit, start
    command (a blocking wait: it returns once the daemon wrote its pidfile), wait for its schema
    version line; polled every 5 ms, finer than riskmgr_daemon's 10 ms, so this is a floor."""
    name = fleet.names[0]
    host = fleet.hosts[name]
    log_path = Path(host["riskmgr_log_path"])
    pid = fleet.pid(name)
    if not fleet.alive(name):
        raise BenchError(f"plain restart: the daemon of {name} is not running")
    offset = log_path.stat().st_size
    began = time.time()
    os.kill(pid, signal.SIGTERM)
    while local_fleet.is_alive(pid):
        time.sleep(0.005)
    subprocess.run(host["riskmgr_start_command"].split(), check=True, capture_output=True)
    while True:
        with open(log_path, encoding="utf-8", errors="replace") as handle:
            handle.seek(offset)
            if "Database schema version" in handle.read():
                return time.time() - began
        if time.time() - began > 30:
            raise BenchError(f"plain restart: {name} did not log its schema version within 30 s")
        time.sleep(0.005)


def rerun_once(fleet: Fleet, work: Path, label: str) -> dict:
    name = fleet.names[0]
    pid_before = fleet.pid(name)
    done = playbook(fleet, work, label, extra={"riskmgr_confirm": True})
    report = done.reports.get(name) or {}
    if report.get("outcome") != "unchanged" or str(report.get("to_version")) != "2":
        raise BenchError(f"{label}: expected {name} unchanged on v2, report says {json.dumps(report)[:400]}")
    pid_after = fleet.pid(name)
    stop_phase = (report.get("phases_seconds") or {}).get("stop")
    stopped = pid_after != pid_before or not fleet.alive(name) or stop_phase not in (None, "")
    return {"wall": done.wall, "cpu": done.cpu, "pid_before": pid_before, "pid_after": pid_after,
            "daemon_stopped": stopped, "changed": recap_changed(done.output)}


def one_task_once(fleet: Fleet, work: Path, label: str) -> dict:
    done = playbook(fleet, work, label, book=ONE_TASK)
    return {"wall": done.wall, "cpu": done.cpu}


def bench_size(mb: int, work: Path, repeat: int, script: str, fleets: list) -> tuple[dict, Fleet]:
    log(f"{mb} MB: building a 1-host fleet with a v1 state.db of about {mb} MB")
    fleet = Fleet(work / f"size{mb}", 1, mb, f"bench{mb}mb", work / "setup.log")
    fleets.append(fleet)
    name = fleet.names[0]
    ref = fleet.refs[name]
    rows = db_rows(ref)
    size_mb = ref.stat().st_size / 1048576
    log(f"{mb} MB: built {size_mb:.1f} MB in {fleet.build_seconds:.0f} s; rows per large table "
        f"{min(rows[t] for t in ('positions', 'orders', 'trade_history', 'enforcement_log'))}")
    scratch = work / f"scratch{mb}"
    scratch.mkdir()
    floor, manual, project = [], [], []
    per_round = -(-FLOOR_SAMPLES // repeat)  # ceil: at least FLOOR_SAMPLES floors, spread over the rounds
    for i in range(repeat):
        log(f"{mb} MB: round {i + 1}/{repeat}: floor x{per_round}, seed's manual order, project playbook")
        floor += [floor_once(ref, scratch, script, work / "sqlite.log") for _ in range(per_round)]
        manual.append(manual_once(ref, scratch, script, work / "sqlite.log"))
        project.append(project_once(fleet, work, f"size{mb}-migrate-{i + 1}"))
    online, plain = [], []
    for i in range(repeat):
        log(f"{mb} MB: round {i + 1}/{repeat}: online mode, plain stop/start of the same daemon")
        online.append(online_once(fleet, work, f"size{mb}-online-{i + 1}"))
        plain.append(plain_restart_once(fleet))
    rerun, one_task = [], []  # on the v2 host the last round left, its daemon running
    for i in range(repeat):
        log(f"{mb} MB: round {i + 1}/{repeat}: re-run on the v2 host, one-task playbook")
        rerun.append(rerun_once(fleet, work, f"size{mb}-rerun-{i + 1}"))
        one_task.append(one_task_once(fleet, work, f"size{mb}-onetask-{i + 1}"))
    shutil.rmtree(scratch)
    phases = sorted({k for sample in project for k, v in sample["phases"].items() if v not in (None, "")})
    phase_medians = {k: summary([float(s["phases"][k]) for s in project if s["phases"].get(k) not in (None, "")])
                     for k in phases}
    in_downtime = sum(phase_medians[k]["median"] for k in ("stop", "backup", "migrate", "verify", "start")
                      if k in phase_medians)
    result = {
        "size_mb_target": mb, "size_mb": round(size_mb, 1), "rows": rows, "build_seconds": round(fleet.build_seconds, 1),
        "floor": summary([s["seconds"] for s in floor]),
        "floor_parts": {k: summary([s[k] for s in floor]) for k in ("cp", "ddl")},
        "manual": summary([s["seconds"] for s in manual]),
        "manual_parts": {k: summary([s[k] for s in manual]) for k in ("cp", "integrity_backup", "ddl", "integrity_live")},
        "downtime": summary([s["downtime"] for s in project]),
        "playbook_wall": summary([s["wall"] for s in project]),
        "playbook_cpu": summary([s["cpu"] for s in project]),
        "phases_seconds": phase_medians,
        "downtime_outside_phases": None,
        "rerun_wall": summary([s["wall"] for s in rerun]),
        "rerun_cpu": summary([s["cpu"] for s in rerun]),
        "rerun_daemon_stopped": any(s["daemon_stopped"] for s in rerun),
        "rerun_changed": max(s["changed"] for s in rerun),
        "rerun_samples": rerun,
        "one_task_wall": summary([s["wall"] for s in one_task]),
        "one_task_cpu": summary([s["cpu"] for s in one_task]),
        "loadavg_during_project": [round(s["loadavg"], 2) for s in project],
        "online_downtime": summary([s["downtime"] for s in online]),
        "online_wall": summary([s["wall"] for s in online]),
        "online_cpu": summary([s["cpu"] for s in online]),
        "online_longest_gap": summary([s["longest_gap"] for s in online]),
        "online_longest_lock": summary([s["longest_lock"] for s in online if s["longest_lock"] not in (None, "")]),
        "online_stall": summary([s["stall"] for s in online]),
        "online_runs": [{"stall": s["stall"], "longest_lock": float(s["longest_lock"])
                         if s["longest_lock"] not in (None, "") else None, "phases": s["phases"]} for s in online],
        "online_rows_during_run": [s["rows_during_run"] for s in online],
        "online_writer_trouble": [line for s in online for line in s["trouble"]],
        "online_rows_lost": [s["rows_lost"] for s in online if s["rows_lost"]],
        "plain_restart": summary(plain),
    }
    if result["downtime"]["median"] is not None:
        result["downtime_outside_phases"] = round(result["downtime"]["median"] - in_downtime, 3)
    return result, fleet


def bench_scaling(mb: int, counts: list[int], work: Path, repeat: int, fleets: list) -> dict:
    most = max(counts)
    log(f"scaling: building a {most}-host fleet of {mb} MB databases")
    fleet = Fleet(work / "scale", most, mb, "scale", work / "setup.log")
    fleets.append(fleet)
    walls: dict[int, list[float]] = {n: [] for n in counts}
    cpus: dict[int, list[float]] = {n: [] for n in counts}
    downtimes: dict[int, list[float]] = {n: [] for n in counts}
    for i in range(repeat):
        for n in counts:
            log(f"scaling: round {i + 1}/{repeat}: {n} host(s), forks {n}, one batch")
            hosts = fleet.names[:n]
            fleet.reset(hosts)
            done = playbook(fleet, work, f"scale{n}-{i + 1}", limit=hosts, forks=n,
                            extra={"riskmgr_confirm": True, "riskmgr_serial": [n]})
            bad = [h for h in hosts if (done.reports.get(h) or {}).get("outcome") != "changed"]
            if bad:
                raise BenchError(f"scaling with {n} hosts: not changed to v2 on {', '.join(bad)}")
            walls[n].append(done.wall)
            cpus[n].append(done.cpu)
            downtimes[n].append(max(float(done.reports[h]["downtime_seconds"]) for h in hosts))
    fleet.destroy()
    fleets.remove(fleet)
    return {"size_mb_target": mb, "hosts": {str(n): {"forks": n, "wall": summary(walls[n]), "cpu": summary(cpus[n]),
                                                   "max_host_downtime": summary(downtimes[n])} for n in counts}}


# --- peak RSS of each module process --------------------------------------------------------------

def module_rss(ref: Path, fleet: Fleet, work: Path) -> dict:
    """Each module's work on a copy of the largest database, through `ansible localhost -M library`,
    its interpreter wrapped in /usr/bin/time: the peak RSS of exactly that module's python process."""
    d = work / "rss"
    d.mkdir()
    db, backups, lock, timings = d / "state.db", d / "backups", d / "state.db.migrate.lock", d / "time.log"
    shutil.copyfile(ref, db)
    wrapper = d / "python"
    wrapper.write_text(f"#!/bin/sh\nexec {TIME_BIN} -f '%M %e' -a -o '{timings}' '{sys.executable}' \"$@\"\n")
    wrapper.chmod(0o755)
    host = fleet.hosts[fleet.names[0]]

    def adhoc(module: str, args: dict, check: bool = False) -> tuple[dict, dict]:
        timings.unlink(missing_ok=True)
        argv = [BIN / "ansible", "localhost", "-i", "localhost,", "-c", "local", "-M", "library", "-m", module,
                "-e", json.dumps({"ansible_python_interpreter": str(wrapper)})]
        if args:
            argv += ["-a", json.dumps(args)]
        if check:
            argv.append("--check")
        proc = run(argv, log_file=work / "ansible.log", what=f"ansible localhost -m {module}",
                   env={"ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1", "ANSIBLE_DEPRECATION_WARNINGS": "0"})
        result = json.loads(proc.stdout.split(" => ", 1)[1]) if " => " in proc.stdout else {}
        lines = [m for m in (re.fullmatch(r"(\d+) ([\d.]+)", line.strip())
                             for line in timings.read_text().splitlines()) if m] if timings.exists() else []
        if not lines:
            raise BenchError(f"{module}: {TIME_BIN} recorded nothing for the module's interpreter ({timings})")
        peak_kb = max(int(m.group(1)) for m in lines)
        return result, {"peak_rss_mb": round(peak_kb / 1024, 1), "process_seconds": float(lines[-1].group(2)),
                        "module_seconds": result.get("seconds"), "interpreter_runs": len(lines)}

    common = {"migrations_dir": str(MIGRATIONS), "target_version": 2}
    out: dict[str, dict] = {}
    log("RSS: ansible.builtin.ping (the interpreter's own baseline)")
    out["ansible.builtin.ping (baseline)"] = adhoc("ansible.builtin.ping", {})[1]
    steps = [
        ("sqlite_schema_facts (integrity)", "sqlite_schema_facts",
         {"path": str(db), "backup_dir": str(backups), "integrity": "integrity", **common}, False),
        ("sqlite_migrate (check: plan)", "sqlite_migrate", {"path": str(db), **common}, True),
        ("riskmgr_lock (take)", "riskmgr_lock", {"path": str(lock), "state": "present", "run_id": "bench",
                                                 "owner": {"controller": platform.node(), "controller_pid": os.getpid(),
                                                           "started": datetime.now(timezone.utc).isoformat()}}, False),
        ("sqlite_backup", "sqlite_backup", {"path": str(db), "backup_dir": str(backups)}, False),
        ("sqlite_migrate", "sqlite_migrate", {"path": str(db), **common}, False),
        ("sqlite_verify (quick, manifest)", "sqlite_verify", None, False),
        ("sqlite_restore (back to v1)", "sqlite_restore",
         {"path": str(db), "backup_dir": str(backups), "schema_version": 1}, False),
        ("riskmgr_lock (release)", "riskmgr_lock", {"path": str(lock), "state": "absent", "run_id": "bench"}, False),
        ("riskmgr_daemon (stop)", "riskmgr_daemon",
         {"state": "stopped", "service_manager": "command", "pidfile": host["riskmgr_pidfile"],
          "process_match": host["riskmgr_process_match"], "stop_timeout": 10, "log_path": host["riskmgr_log_path"]}, False),
        ("riskmgr_daemon (start, healthy on v2)", "riskmgr_daemon",
         {"state": "started", "service_manager": "command", "pidfile": host["riskmgr_pidfile"],
          "start_command": host["riskmgr_start_command"], "process_match": host["riskmgr_process_match"],
          "settle": 0.5, "log_path": host["riskmgr_log_path"], "expect_log_line": "Database schema version: 2",
          "start_timeout": 15}, False),
    ]
    name = fleet.names[0]
    upgrade_args = {"path": host["riskmgr_db_path"], "backup_dir": host["riskmgr_backup_dir"], **common,
                    "service_manager": "command", "pidfile": host["riskmgr_pidfile"],
                    "start_command": host["riskmgr_start_command"], "process_match": host["riskmgr_process_match"],
                    "log_path": host["riskmgr_log_path"],
                    "settle": 0.5, "stop_timeout": 10, "start_timeout": 15}
    manifest = None
    log("RSS: riskmgr_migrate (the whole offline downtime, on the fleet host)")
    fleet.reset([name])
    out["riskmgr_migrate (stop .. start)"] = adhoc("riskmgr_migrate", upgrade_args)[1]
    for label, module, args, check in steps:
        if module == "sqlite_verify":
            args = {"path": str(db), "manifest": manifest, "integrity": "quick", "row_counts": "at_least", **common}
        log(f"RSS: {label}")
        result, figures = adhoc(module, args, check)
        if module == "sqlite_backup":
            manifest = result.get("manifest")
        out[label] = figures
    for leftover in d.iterdir():
        if leftover.is_file():
            leftover.unlink()
    shutil.rmtree(d)
    return out
