#!/usr/bin/env python3
"""The migration's cost against the floor, measured in one run on this machine (run it as bench/run).

For each database size (v1, built by tools/make_state_db.py through tools/local_fleet.py):

  floor     cp of the database, then the v2 DDL (files/migrations/v2 010-030) applied to the copy in
            one transaction with plain sqlite3: the least any offline migration can cost
  manual    the seed's manual order: cp, integrity_check of the backup, the DDL, integrity_check
  project   ansible-playbook migrate_v2.yml on a 1-host local fleet: downtime_seconds from the
            run's report (daemon stop requested -> healthy on v2, host clock) and the wall time
  re-run    the same playbook again on the now-v2 host (wall time; the daemon's pid must not
            change), next to bench/one_task.yml on the same inventory

then fleet scaling (1..N hosts of the smallest size, one batch, forks = hosts) and the peak RSS of
every module process on the largest database (each module run by `ansible localhost -M library`
with an interpreter wrapped in /usr/bin/time). Repetitions are interleaved and reported as
medians, each with its ratio to the floor measured in the same run, because the machine may be
busy with other work. Prints a table with PASS/MISS per target and writes the same as JSON under
bench/results/. A MISS never fails the run; an error (a failed playbook, a wrong outcome) does.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import local_fleet  # noqa: E402  (tools/ is not a package; the bench drives its daemons directly)

BIN = Path(sys.executable).parent
PLAYBOOK = "migrate_v2.yml"
ONE_TASK = ROOT / "bench" / "one_task.yml"
MIGRATIONS = ROOT / "files" / "migrations"
DDL_FILES = ("010_", "020_", "030_")  # the v2 change without the optional 040 table
TIME_BIN = "/usr/bin/time"

FULL_SIZES, QUICK_HOSTS, FULL_HOSTS = [10, 100, 600], [1, 2], [1, 4, 8]

# Targets from the issue: (key, text, limit).
TARGET_DOWNTIME = 1.5      # downtime on the largest DB <= 1.5 x floor
TARGET_RERUN = 3.0         # re-run wall <= 3 x one-task playbook, and no daemon stopped
TARGET_SCALING = 2.5       # wall of the most hosts (forks = hosts) <= 2.5 x wall of 1 host
TARGET_RSS_MB = 100.0      # every module process's peak RSS < 100 MB on the largest DB

TARGET_ONLINE_DOWNTIME = 1.2  # online downtime <= 1.2 x a plain stop/start of the same daemon
TARGET_STALL = 1.5         # longest gap between the daemon's commits during the online migration (s)
WRITER_INTERVAL_MS = 20    # the stand-in daemon commits one row every 20 ms on every bench host


class BenchError(Exception):
    """Something did not work (not a missed target): bench/run exits 1 with this message."""


# --- small helpers --------------------------------------------------------------------------------

def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def run(argv: list, *, log_file: Path | None = None, input_text: str | None = None,
        env: dict | None = None, what: str | None = None) -> subprocess.CompletedProcess:
    """Run argv from the repo root; raise BenchError naming the command and its output's tail."""
    argv = [str(a) for a in argv]
    proc = subprocess.run(argv, cwd=ROOT, input=input_text, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, check=False)
    if log_file is not None:
        with open(log_file, "a", encoding="utf-8") as handle:
            handle.write(f"$ {' '.join(argv)}\n{proc.stdout}{proc.stderr}\n[exit {proc.returncode}]\n")
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        raise BenchError(f"{what or argv[0]} failed (exit {proc.returncode}): {' '.join(argv)}\n{tail}"
                         + (f"\n(full output: {log_file})" if log_file else ""))
    return proc


def timed(argv: list, **kwargs) -> float:
    began = time.perf_counter()
    run(argv, **kwargs)
    return time.perf_counter() - began


def remove_db(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def summary(values: list[float]) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"median": None, "min": None, "max": None, "n": 0, "samples": []}
    return {"median": round(statistics.median(values), 4), "min": round(min(values), 4),
            "max": round(max(values), 4), "n": len(values), "samples": [round(v, 4) for v in values]}


def ratio(value: float | None, base: float | None) -> float | None:
    if value is None or not base:
        return None
    return round(value / base, 2)


def db_rows(path: Path) -> dict:
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' "
                                             "AND name NOT LIKE 'sqlite_%'")]
        return {t: conn.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in tables}


def checkpoint(path: Path) -> None:
    """Fold any WAL into the main file, so one cp copies every row."""
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


# --- the machine ----------------------------------------------------------------------------------

def machine_info(work: Path) -> dict:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or "unknown")
    mem_kb = next((int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal:")), 0)
    nproc = subprocess.run(["nproc"], capture_output=True, text=True, check=False).stdout.strip()
    disk = "unknown"
    found = subprocess.run(["findmnt", "-n", "-o", "SOURCE,FSTYPE", "--target", str(work)],
                           capture_output=True, text=True, check=False).stdout.split()
    if len(found) == 2:
        source, fstype = found
        device = Path(source).name
        parent = subprocess.run(["lsblk", "-no", "PKNAME", source], capture_output=True, text=True,
                                check=False).stdout.strip() or device
        rota = Path(f"/sys/block/{parent}/queue/rotational")
        kind = f"rotational flag {rota.read_text().strip()}" if rota.exists() else "rotational flag unknown"
        size = Path(f"/sys/block/{parent}/size")
        gb = f", {int(size.read_text()) * 512 / 1e9:.0f} GB" if size.exists() else ""
        disk = f"{source} ({fstype}, {kind}{gb}{', virtio' if parent.startswith('vd') else ''})"
    sqlite_cli = subprocess.run(["sqlite3", "--version"], capture_output=True, text=True, check=False).stdout.split()
    ansible = subprocess.run([BIN / "ansible", "--version"], capture_output=True, text=True, cwd=ROOT,
                             check=False).stdout.splitlines()
    return {"cpu_model": model, "nproc": nproc, "os_cpu_count": os.cpu_count(), "mem_gb": round(mem_kb / 1048576, 1),
            "disk": disk, "work_dir": str(work), "kernel": platform.release(), "python": platform.python_version(),
            "sqlite3_cli": sqlite_cli[0] if sqlite_cli else None, "sqlite3_python": sqlite3.sqlite_version,
            "ansible": ansible[0] if ansible else None, "loadavg_start": list(os.getloadavg()),
            "page_cache": "warm: every file was just written or copied; nothing is dropped from the cache"}


# --- fleets ---------------------------------------------------------------------------------------

class Fleet:
    """A local fleet (tools/local_fleet.py) plus a v1 reference copy of each host's database."""

    def __init__(self, root: Path, hosts: int, target_mb: float, prefix: str, log_file: Path) -> None:
        self.root, self.log_file = root, log_file
        try:
            self._create(hosts, target_mb, prefix)
        except BaseException:
            if (root / local_fleet.FLEET_FILE).exists():
                local_fleet.destroy(root)  # no daemon outlives a failed bench
            raise

    def _create(self, hosts: int, target_mb: float, prefix: str) -> None:
        root = self.root
        began = time.perf_counter()
        run([sys.executable, ROOT / "tools" / "local_fleet.py", "create", "--root", root, "--hosts", hosts,
             "--target-mb", target_mb, "--prefix", prefix, "--group", "bench", "--interval-ms", WRITER_INTERVAL_MS],
            log_file=self.log_file, what="local_fleet.py create")
        self.build_seconds = time.perf_counter() - began
        self.hosts = local_fleet.read_fleet(root)["hosts"]
        self.names = list(self.hosts)
        self.inventory = root / local_fleet.INVENTORY_FILE
        # The reference: each host's v1 file with every row checkpointed, daemons stopped meanwhile.
        local_fleet.stop(root)
        self.refs = {}
        for name, variables in self.hosts.items():
            db = Path(variables["riskmgr_db_path"])
            checkpoint(db)
            self.refs[name] = root / f"{name}.v1.db"
            shutil.copyfile(db, self.refs[name])

    def reset(self, running: list[str]) -> None:
        """Every host back to its v1 reference, no backups; daemons running on `running` only."""
        for name, variables in self.hosts.items():
            local_fleet.stop_daemon(name, variables)
            db = Path(variables["riskmgr_db_path"])
            for leftover in db.parent.glob(f"{db.name}*"):  # -wal, -shm, lock, kept files
                leftover.unlink()
            shutil.rmtree(variables["riskmgr_backup_dir"], ignore_errors=True)
            shutil.copyfile(self.refs[name], db)
        for name in running:
            local_fleet.start_daemon(name, self.hosts[name])

    def pid(self, name: str) -> int | None:
        return local_fleet.read_pid(self.hosts[name]["riskmgr_pidfile"])

    def alive(self, name: str) -> bool:
        return local_fleet.is_alive(self.pid(name))

    def destroy(self) -> None:
        local_fleet.destroy(self.root)


def playbook(fleet: Fleet, work: Path, label: str, *, extra: dict | None = None, limit: list[str] | None = None,
             forks: int | None = None, book: str | Path = PLAYBOOK) -> tuple[float, dict, str]:
    """Run a playbook on the fleet; (wall seconds, cpu seconds, reports by host, output).

    cpu is user+sys of ansible-playbook and every process it waited for (its forks and their
    module processes; not the daemons, which detach): on this machine the "hosts" share the
    controller's cores, so it says how much of the wall time is work rather than waiting."""
    reports = work / "reports" / label
    extra = {**(extra or {}), "riskmgr_report_dir": str(reports)}
    argv = [BIN / "ansible-playbook", "-i", fleet.inventory, book, "-e", json.dumps(extra)]
    if limit:
        argv += ["-l", ",".join(limit)]
    if forks:
        argv += ["-f", forks]
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    proc = run(argv, log_file=work / "ansible.log", what=f"ansible-playbook {Path(book).name} ({label})",
               env={"ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1"})
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - usage.ru_utime + after.ru_stime - usage.ru_stime
    found = {path.stem: json.loads(path.read_text()) for path in reports.glob("*/*.json")}
    return wall, cpu, found, proc.stdout


def recap_changed(output: str) -> int:
    return sum(int(n) for n in re.findall(r"\bchanged=(\d+)", output))


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
    wall, cpu, reports, _ = playbook(fleet, work, label, extra={"riskmgr_confirm": True})
    report = reports.get(name)
    if report is None or report.get("outcome") != "changed" or str(report.get("to_version")) != "2":
        raise BenchError(f"{label}: expected {name} changed to v2, report says "
                         f"{json.dumps(report)[:400] if report else 'nothing (no report written)'}")
    if report.get("downtime_seconds") in (None, ""):
        raise BenchError(f"{label}: the report of {name} has no downtime_seconds")
    if not fleet.alive(name):
        raise BenchError(f"{label}: the daemon of {name} is not running after the migration")
    return {"wall": wall, "cpu": cpu, "downtime": float(report["downtime_seconds"]), "phases": report["phases_seconds"],
            "loadavg": os.getloadavg()[0]}


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
    wall, cpu, reports, _ = playbook(fleet, work, label, extra={"riskmgr_confirm": True,
                                                                "riskmgr_migration_mode": "online"})
    report = reports.get(name)
    if report is None or report.get("outcome") != "changed" or str(report.get("to_version")) != "2":
        raise BenchError(f"{label}: expected {name} changed to v2 online, report says "
                         f"{json.dumps(report)[:400] if report else 'nothing'}")
    if not fleet.alive(name):
        raise BenchError(f"{label}: the daemon of {name} is not running after the online migration")
    stop_at = float(report["stop_requested_at"])
    gap, rows_written = longest_write_gap(db, began, stop_at)
    after = db_rows(db)
    lost = {t: before[t] - after.get(t, 0) for t in before if after.get(t, 0) < before[t]}
    return {"wall": wall, "cpu": cpu, "downtime": float(report["downtime_seconds"]), "longest_gap": gap,
            "rows_during_run": rows_written, "longest_lock": report.get("longest_migration_lock_seconds"),
            "trouble": writer_trouble(log_path, log_offset), "rows_lost": lost, "phases": report["phases_seconds"]}


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
    wall, cpu, reports, output = playbook(fleet, work, label, extra={"riskmgr_confirm": True})
    report = reports.get(name) or {}
    if report.get("outcome") != "unchanged" or str(report.get("to_version")) != "2":
        raise BenchError(f"{label}: expected {name} unchanged on v2, report says {json.dumps(report)[:400]}")
    pid_after = fleet.pid(name)
    stop_phase = (report.get("phases_seconds") or {}).get("stop")
    stopped = pid_after != pid_before or not fleet.alive(name) or stop_phase not in (None, "")
    return {"wall": wall, "cpu": cpu, "pid_before": pid_before, "pid_after": pid_after, "daemon_stopped": stopped,
            "changed": recap_changed(output)}


def one_task_once(fleet: Fleet, work: Path, label: str) -> dict:
    wall, cpu, _, _ = playbook(fleet, work, label, book=ONE_TASK)
    return {"wall": wall, "cpu": cpu}


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
    for i in range(repeat):
        log(f"{mb} MB: round {i + 1}/{repeat}: floor, seed's manual order, project playbook")
        floor.append(floor_once(ref, scratch, script, work / "sqlite.log"))
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
            wall, cpu, reports, _ = playbook(fleet, work, f"scale{n}-{i + 1}", limit=hosts, forks=n,
                                        extra={"riskmgr_confirm": True, "riskmgr_serial": [n]})
            bad = [h for h in hosts if (reports.get(h) or {}).get("outcome") != "changed"]
            if bad:
                raise BenchError(f"scaling with {n} hosts: not changed to v2 on {', '.join(bad)}")
            walls[n].append(wall)
            cpus[n].append(cpu)
            downtimes[n].append(max(float(reports[h]["downtime_seconds"]) for h in hosts))
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
    log("RSS: riskmgr_upgrade (the whole offline downtime, on the fleet host)")
    fleet.reset([name])
    out["riskmgr_upgrade (stop .. start)"] = adhoc("riskmgr_upgrade", upgrade_args)[1]
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


# --- report ---------------------------------------------------------------------------------------

def fmt(value, unit: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:.2f}{unit}" if isinstance(value, float) else f"{value}{unit}"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def evaluate(results: dict, quick: bool) -> list[dict]:
    targets = []
    sizes = results["sizes"]
    largest = sizes[-1]
    note = "" if largest["size_mb_target"] == 600 else " (the target is for 600 MB)"
    r = ratio(largest["downtime"]["median"], largest["floor"]["median"])
    targets.append({"target": f"downtime on {largest['size_mb_target']} MB <= {TARGET_DOWNTIME}x floor{note}",
                    "measured": f"{fmt(largest['downtime']['median'])} s = {fmt(r)}x floor "
                                f"({fmt(largest['floor']['median'])} s)",
                    "ok": r is not None and r <= TARGET_DOWNTIME, "ratio": r, "limit": TARGET_DOWNTIME})
    for size in sizes:
        r = ratio(size["rerun_wall"]["median"], size["one_task_wall"]["median"])
        targets.append({"target": f"re-run on v2 ({size['size_mb_target']} MB) <= {TARGET_RERUN}x one-task playbook, "
                                  "no daemon stopped",
                        "measured": f"{fmt(size['rerun_wall']['median'])} s = {fmt(r)}x one-task "
                                    f"({fmt(size['one_task_wall']['median'])} s); daemon stopped: "
                                    f"{'YES' if size['rerun_daemon_stopped'] else 'no'}; changed={size['rerun_changed']}",
                        "ok": r is not None and r <= TARGET_RERUN and not size["rerun_daemon_stopped"],
                        "ratio": r, "limit": TARGET_RERUN})
    scaling = results["scaling"]["hosts"]
    most = max(scaling, key=int)
    one = scaling.get("1")
    r = ratio(scaling[most]["wall"]["median"], one["wall"]["median"]) if one else None
    note = "" if most == "8" else " (the target is for 8 hosts)"
    targets.append({"target": f"{most} hosts at forks {most} <= {TARGET_SCALING}x wall of 1 host{note}",
                    "measured": f"{fmt(scaling[most]['wall']['median'])} s = {fmt(r)}x 1 host "
                                f"({fmt(one['wall']['median'] if one else None)} s)",
                    "ok": r is not None and r <= TARGET_SCALING, "ratio": r, "limit": TARGET_SCALING})
    note = "" if largest["size_mb_target"] == 600 else " (the target is for 600 MB)"
    r = ratio(largest["online_downtime"]["median"], largest["plain_restart"]["median"])
    targets.append({"target": f"online downtime on {largest['size_mb_target']} MB <= {TARGET_ONLINE_DOWNTIME}x a plain "
                              f"stop/start of the same daemon{note}",
                    "measured": f"{fmt(largest['online_downtime']['median'])} s = {fmt(r)}x plain "
                                f"({fmt(largest['plain_restart']['median'])} s)",
                    "ok": r is not None and r <= TARGET_ONLINE_DOWNTIME, "ratio": r, "limit": TARGET_ONLINE_DOWNTIME})
    gap = largest["online_longest_gap"]["max"]
    trouble = largest["online_writer_trouble"]
    targets.append({"target": f"online: longest gap between the daemon's commits (every {WRITER_INTERVAL_MS} ms) on "
                              f"{largest['size_mb_target']} MB <= {TARGET_STALL} s, no failed write, no row lost{note}",
                    "measured": f"{fmt(gap)} s (worst of {largest['online_longest_gap']['n']} runs; longest migration "
                                f"transaction {fmt(largest['online_longest_lock']['max'])} s); writer trouble: "
                                f"{len(trouble)} line(s); rows lost: {largest['online_rows_lost'] or 'none'}",
                    "ok": gap is not None and gap <= TARGET_STALL and not trouble and not largest["online_rows_lost"],
                    "ratio": ratio(gap, TARGET_STALL), "limit": 1.0})
    modules = {k: v for k, v in results["rss"].items() if "baseline" not in k}
    worst = max(modules, key=lambda k: modules[k]["peak_rss_mb"])
    note = "" if largest["size_mb_target"] == 600 else " (the target is for 600 MB)"
    targets.append({"target": f"peak RSS of every module process < {TARGET_RSS_MB:.0f} MB on the "
                              f"{largest['size_mb_target']} MB DB{note}",
                    "measured": f"highest {modules[worst]['peak_rss_mb']} MB ({worst})",
                    "ok": modules[worst]["peak_rss_mb"] < TARGET_RSS_MB,
                    "ratio": round(modules[worst]["peak_rss_mb"] / TARGET_RSS_MB, 2), "limit": 1.0})
    return targets


def table(results: dict) -> str:
    lines = []
    head = f"{'size':>7}  {'measurement':<46} {'median':>9} {'x floor':>8}  {'min-max':>13}  n  {'cpu s':>6}"
    for size in results["sizes"]:
        floor = size["floor"]["median"]
        lines.append("")
        lines.append(f"{size['size_mb']} MB v1 database ({size['rows']['enforcement_log']:,} enforcement_log rows, "
                     f"{size['rows']['orders']:,} orders; built in {size['build_seconds']:.0f} s)")
        lines.append(head)
        rows = [
            ("floor: cp + v2 DDL in one txn (sqlite3)", size["floor"], None),
            ("  of which cp", size["floor_parts"]["cp"], None),
            ("  of which DDL", size["floor_parts"]["ddl"], None),
            ("seed manual: cp, integrity, DDL, integrity", size["manual"], None),
            ("project offline: downtime (report, host clock)", size["downtime"], None),
            ("project: playbook wall, 1 host", size["playbook_wall"], size["playbook_cpu"]),
            ("project online: downtime (the restart)", size["online_downtime"], None),
            ("plain stop/start of the same daemon", size["plain_restart"], None),
            ("online: longest gap between daemon commits", size["online_longest_gap"], None),
            ("online: longest migration transaction", size["online_longest_lock"], None),
            ("project online: playbook wall, 1 host", size["online_wall"], size["online_cpu"]),
            ("re-run on v2: playbook wall", size["rerun_wall"], size["rerun_cpu"]),
            ("one-task playbook wall (same inventory)", size["one_task_wall"], size["one_task_cpu"]),
        ]
        for label, s, cpu in rows:
            spread = f"{fmt(s['min'])}-{fmt(s['max'])}" if s["n"] else "-"
            lines.append(f"{size['size_mb_target']:>5}MB  {label:<46} {fmt(s['median'], ' s'):>9} "
                         f"{fmt(ratio(s['median'], floor), 'x'):>8}  {spread:>13}  {s['n']}  "
                         f"{fmt(cpu['median'] if cpu else None):>6}")
        phases = size["phases_seconds"]
        parts = ", ".join(f"{k} {fmt(phases[k]['median'])}" for k in
                          ("preflight_integrity", "stop", "backup", "backup_check", "migrate", "verify", "start")
                          if k in phases)
        lines.append(f"{'':>7}  project offline phases_seconds (median; backup_check runs beside migrate): {parts}")
        lines.append(f"{'':>7}  downtime not in any phase: {fmt(size['downtime_outside_phases'])} s;"
                     f" re-run: daemon stopped {'YES' if size['rerun_daemon_stopped'] else 'no'},"
                     f" changed={size['rerun_changed']}")
    scaling = results["scaling"]
    floor_small = next((s["floor"]["median"] for s in results["sizes"]
                        if s["size_mb_target"] == scaling["size_mb_target"]), None)
    lines.append("")
    lines.append(f"fleet scaling ({scaling['size_mb_target']} MB hosts, one batch, forks = hosts)")
    lines.append(f"{'hosts':>7}  {'forks':>5} {'wall median':>12} {'x 1 host':>9} {'x floor':>8}  "
                 f"{'max host downtime':>18}  {'min-max':>13}  n  {'cpu s':>6}")
    one = scaling["hosts"].get("1", {}).get("wall", {}).get("median")
    for n, s in scaling["hosts"].items():
        w = s["wall"]
        lines.append(f"{n:>7}  {s['forks']:>5} {fmt(w['median'], ' s'):>12} {fmt(ratio(w['median'], one), 'x'):>9} "
                     f"{fmt(ratio(w['median'], floor_small), 'x'):>8}  {fmt(s['max_host_downtime']['median'], ' s'):>18}  "
                     f"{fmt(w['min']) + '-' + fmt(w['max']):>13}  {w['n']}  {fmt(s['cpu']['median']):>6}")
    lines.append(f"{'':>7}  cpu s: user+sys of ansible-playbook and of every process it waited for (forks, modules); "
                 f"with {os.cpu_count()} cores the wall time cannot be below cpu s / {os.cpu_count()}")
    lines.append("")
    lines.append(f"peak RSS per module process ({results['sizes'][-1]['size_mb']} MB DB; "
                 f"ratio to the interpreter baseline, ansible.builtin.ping)")
    lines.append(f"{'module':<42} {'peak RSS':>9} {'x base':>7} {'process s':>10} {'module s':>9}")
    base = results["rss"]["ansible.builtin.ping (baseline)"]["peak_rss_mb"]
    for label, s in results["rss"].items():
        lines.append(f"{label:<42} {fmt(s['peak_rss_mb'], ' MB'):>9} {fmt(ratio(s['peak_rss_mb'], base), 'x'):>7} "
                     f"{fmt(s['process_seconds']):>10} {fmt(s['module_seconds']):>9}")
    lines.append("")
    lines.append("targets")
    for t in results["targets"]:
        lines.append(f"  {verdict(t['ok'])}  {t['target']}: {t['measured']}")
    return "\n".join(lines)


# --- main -----------------------------------------------------------------------------------------

def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=None, help="database sizes in MB, comma-separated (default 10,100,600)")
    parser.add_argument("--hosts", default=None, help="fleet sizes for scaling (default 1,4,8; --quick 1,2)")
    parser.add_argument("--repeat", type=int, default=None, help="interleaved rounds per figure (default 3; --quick 1)")
    parser.add_argument("--quick", action="store_true", help="smallest size only, 1 and 2 hosts, one round "
                                                             "(the CI smoke run, well under 2 minutes)")
    parser.add_argument("--work-dir", type=Path, default=None, help="scratch directory (default: a new one in "
                                                                    "$TMPDIR or /tmp, removed at the end)")
    parser.add_argument("--keep-work", action="store_true", help="leave the scratch directory in place")
    parser.add_argument("--results-dir", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    sizes = sorted({int(s) for s in (args.sizes or ",".join(map(str, FULL_SIZES))).split(",") if s.strip()})
    args.sizes = sizes[:1] if args.quick else sizes
    args.hosts = sorted({int(s) for s in args.hosts.split(",")}) if args.hosts else (QUICK_HOSTS if args.quick else FULL_HOSTS)
    if 1 not in args.hosts:
        args.hosts = [1, *args.hosts]
    args.repeat = args.repeat or (1 if args.quick else 3)
    if args.repeat < 1 or min(args.sizes) < 1:
        parser.error("--repeat and --sizes must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # still clean up fleets and files
    for tool in ("sqlite3", "cp", TIME_BIN):
        if shutil.which(tool) is None:
            print(f"bench: {tool} is missing (bench/run installs sqlite3 and time)", file=sys.stderr)
            return 1
    if args.work_dir:
        args.work_dir.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="run-", dir=args.work_dir.resolve()))
    else:
        work = Path(tempfile.mkdtemp(prefix="riskmgr-bench-"))
    free_mb = shutil.disk_usage(work).free / 1048576
    if free_mb < 8 * max(args.sizes) + 500:
        print(f"bench: {work} has {free_mb:.0f} MB free; the {max(args.sizes)} MB size needs about "
              f"{8 * max(args.sizes) + 500} MB", file=sys.stderr)
        shutil.rmtree(work)
        return 1
    started = datetime.now(timezone.utc)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    fleets: list[Fleet] = []
    results = {"started": started.isoformat(timespec="seconds"), "quick": args.quick, "repeat": args.repeat,
               "command": "bench/run " + " ".join(sys.argv[1:] if argv is None else argv),
               "machine": machine_info(work), "sizes": []}
    log(f"work dir {work}; sizes {args.sizes} MB; scaling {args.hosts} hosts; {args.repeat} round(s) each")
    try:
        script = ddl_script()
        for mb in args.sizes:
            result, fleet = bench_size(mb, work, args.repeat, script, fleets)
            results["sizes"].append(result)
            if mb == args.sizes[-1]:
                results["rss"] = module_rss(fleet.refs[fleet.names[0]], fleet, work)
            fleet.destroy()
            fleets.remove(fleet)
        results["scaling"] = bench_scaling(args.sizes[0], args.hosts, work, args.repeat, fleets)
    except BenchError as err:
        print(f"\nbench: ERROR: {err}", file=sys.stderr)
        return 1
    finally:
        for fleet in fleets:
            try:
                fleet.destroy()
            except Exception as err:  # noqa: BLE001 - keep cleaning up the others
                print(f"bench: could not destroy {fleet.root}: {err}", file=sys.stderr)
        if args.keep_work:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    results["machine"]["loadavg_end"] = list(os.getloadavg())
    results["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    results["targets"] = evaluate(results, args.quick)
    text = table(results)
    machine = results["machine"]
    print(f"\nmachine: {machine['cpu_model']}, nproc {machine['nproc']}, {machine['mem_gb']} GB RAM, disk {machine['disk']}; "
          f"sqlite {machine['sqlite3_cli']}; {machine['ansible']}; load average at start "
          f"{machine['loadavg_start'][0]:.2f}, at end {machine['loadavg_end'][0]:.2f}")
    print(text)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    out = args.results_dir / f"{stamp}{'-quick' if args.quick else ''}.json"
    out.write_text(json.dumps({**results, "table": text}, indent=2) + "\n", encoding="utf-8")
    missed = sum(not t["ok"] for t in results["targets"])
    print(f"\nwritten {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}; "
          f"{len(results['targets']) - missed} target(s) PASS, {missed} MISS (a MISS does not fail the bench)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
