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

then fleet scaling (1..N hosts of the smallest size, one batch, forks = hosts), the peak RSS of
every module process on the largest database (each module run by `ansible localhost -M library`
with an interpreter wrapped in /usr/bin/time), and large fleets (bench_fleet; not with --quick):
a fleet of 1..16 hosts of the smallest size reached over real ssh (bench/loopback_sshd.py), the
controller's CPU-seconds per upgraded and per unchanged host apart from the hosts' own, the cost
of a serial batch, the settings that matter (pipelining, ControlPersist, compression, forks,
facts, Mitogen) against the recommended baseline, and project_wall(): the wall time of 100 to
5,000 hosts on one controller or on AWX execution nodes. Repetitions are interleaved and reported
as medians, each with its ratio to the floor (or the baseline) measured in the same run, because
the machine may be busy with other work. Prints a table with PASS/MISS per target and writes the
same as JSON under bench/results/ (`--markdown FILE` prints the README's large-fleet tables from
one). A MISS never fails the run; an error (a failed playbook, a wrong outcome) does.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import local_fleet  # noqa: E402  (tools/ is not a package; the bench drives its daemons directly)
import loopback_sshd  # noqa: E402  (bench/, the directory of this script, is on sys.path)

BIN = Path(sys.executable).parent
PLAYBOOK = "migrate_v2.yml"
ONE_TASK = ROOT / "bench" / "one_task.yml"
GATHER_FACTS = ROOT / "bench" / "gather_facts.yml"
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
FLEET_HOSTS, SETTINGS_HOSTS = [1, 4, 8, 16], 8  # the ssh fleet's sizes, and the size the settings are measured on
FLEET_INTERVAL_MS = 200    # the ssh fleet's daemons: see bench_fleet


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
    commit = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=7"], capture_output=True, text=True,
                            cwd=ROOT, check=False).stdout.strip() or "unknown"
    return {"cpu_model": model, "nproc": nproc, "commit": commit, "os_cpu_count": os.cpu_count(), "mem_gb": round(mem_kb / 1048576, 1),
            "disk": disk, "work_dir": str(work), "kernel": platform.release(), "python": platform.python_version(),
            "sqlite3_cli": sqlite_cli[0] if sqlite_cli else None, "sqlite3_python": sqlite3.sqlite_version,
            "ansible": ansible[0] if ansible else None, "loadavg_start": list(os.getloadavg()),
            "page_cache": "warm: every file was just written or copied; nothing is dropped from the cache"}


# --- fleets ---------------------------------------------------------------------------------------

class Fleet:
    """A local fleet (tools/local_fleet.py) plus a v1 reference copy of each host's database.

    use_ssh() turns it into a fleet reached over real ssh (bench/loopback_sshd.py), each host's
    interpreter timed by /usr/bin/time so that its module processes' CPU and wall are known."""

    def __init__(self, root: Path, hosts: int, target_mb: float, prefix: str, log_file: Path,
                 interval_ms: int = WRITER_INTERVAL_MS) -> None:
        self.root, self.log_file = root, log_file
        self.pool: loopback_sshd.SshdPool | None = None
        try:
            self._create(hosts, target_mb, prefix, interval_ms)
        except BaseException:
            if (root / local_fleet.FLEET_FILE).exists():
                local_fleet.destroy(root)  # no daemon outlives a failed bench
            raise

    def _create(self, hosts: int, target_mb: float, prefix: str, interval_ms: int) -> None:
        root = self.root
        began = time.perf_counter()
        run([sys.executable, ROOT / "tools" / "local_fleet.py", "create", "--root", root, "--hosts", hosts,
             "--target-mb", target_mb, "--prefix", prefix, "--group", "bench", "--interval-ms", interval_ms],
            log_file=self.log_file, what="local_fleet.py create")
        self.build_seconds = time.perf_counter() - began
        self.fleet = local_fleet.read_fleet(root)
        self.hosts = self.fleet["hosts"]
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

    def use_ssh(self, pool: loopback_sshd.SshdPool) -> None:
        """Reach host i through the pool's sshd i, its interpreter wrapped in /usr/bin/time."""
        for index, (name, variables) in enumerate(self.hosts.items()):
            wrapper = self.root / name / "python-timed"
            # One line per module process: elapsed, user and sys seconds (of it and what it waited for).
            wrapper.write_text(f"#!/bin/sh\nexec {TIME_BIN} -f '%e %U %S' -a -o '{self.timings(name)}' "
                               f"'{variables['ansible_python_interpreter']}' \"$@\"\n", encoding="utf-8")
            wrapper.chmod(0o755)
            variables.update(pool.host_vars(index), ansible_python_interpreter=str(wrapper))
        local_fleet.write_fleet(self.root, self.fleet)
        self.pool = pool

    def timings(self, name: str) -> Path:
        return self.root / name / "modules.time"

    def clear_module_times(self) -> None:
        for name in self.names:
            self.timings(name).unlink(missing_ok=True)

    def module_times(self, names: list[str] | None) -> dict:
        """Per host: {cpu, wall, processes} of the module processes since clear_module_times()."""
        if not self.pool:
            return {}
        out = {}
        for name in names or self.names:
            path = self.timings(name)
            lines = path.read_text().splitlines() if path.exists() else []
            # /usr/bin/time adds "Command exited with non-zero status N" before a failed module's line.
            rows = [[float(v) for v in m.groups()] for m in
                    (re.fullmatch(r"([\d.]+) ([\d.]+) ([\d.]+)", line.strip()) for line in lines) if m]
            out[name] = {"cpu": sum(r[1] + r[2] for r in rows), "wall": sum(r[0] for r in rows), "processes": len(rows)}
        return out

    def reset(self, running: list[str]) -> None:
        """Every host back to its v1 reference, no backups; daemons running on `running` only."""
        for name, variables in self.hosts.items():
            local_fleet.stop_daemon(name, variables)
            db = Path(variables["riskmgr_db_path"])
            for leftover in db.parent.glob(f"{db.name}*"):  # -wal, -shm, lock, kept files
                leftover.unlink()
            shutil.rmtree(variables["riskmgr_backup_dir"], ignore_errors=True)
            shutil.copyfile(self.refs[name], db)
            local_fleet.point_release(variables, "1")
        for name in running:
            local_fleet.start_daemon(name, self.hosts[name])

    def pid(self, name: str) -> int | None:
        return local_fleet.read_pid(self.hosts[name]["riskmgr_pidfile"])

    def alive(self, name: str) -> bool:
        return local_fleet.is_alive(self.pid(name))

    def destroy(self) -> None:
        local_fleet.destroy(self.root)


@dataclass
class PlaybookRun:
    """One ansible-playbook run and what it cost, split by where the work ran.

    main: user+sys of the ansible-playbook process itself (the strategy loop: one core at most);
    children: user+sys of every process it waited for (its forks, the ssh clients and, on a
    local fleet, the module processes too); masters: the ssh ControlPersist masters, which
    detach from the run (0 on a local fleet); modules: per host, the module processes that
    the host's timed interpreter recorded (an ssh fleet's hosts; empty otherwise); hosts_cpu: all
    the hosts did (sshd sessions, shells, modules; ssh fleet); others_cpu: what the rest of this
    machine used meanwhile (other jobs, the daemons), from /proc/stat (ssh fleet)."""
    wall: float
    main: float
    children: float
    masters: float
    reports: dict
    output: str
    modules: dict = field(default_factory=dict)
    master_count: int = 0
    hosts_cpu: float = 0.0
    others_cpu: float | None = None

    @property
    def cpu(self) -> float:
        """Everything the run cost on this machine's cores that its rusage can see."""
        return self.main + self.children + self.masters


def run_measured(argv: list, *, env: dict, log_file: Path, what: str) -> tuple[subprocess.CompletedProcess, float,
                                                                              float, float]:
    """run() plus (wall, own CPU, waited-for children's CPU) of the process.

    The split is read from /proc/PID/stat while the process is a zombie (waitid WNOWAIT: it has
    exited, its own and its children's times are final, it is not reaped yet); a rusage of
    RUSAGE_CHILDREN could only give their sum."""
    argv = [str(a) for a in argv]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        began = time.perf_counter()
        child = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=err, text=True,
                                 env={**os.environ, **env})
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
        wall = time.perf_counter() - began
        own, children = loopback_sshd.cpu_seconds(child.pid)
        child.wait()
        out.seek(0)
        err.seek(0)
        proc = subprocess.CompletedProcess(argv, child.returncode, out.read(), err.read())
    with open(log_file, "a", encoding="utf-8") as handle:
        handle.write(f"$ {' '.join(argv)}\n{proc.stdout}{proc.stderr}\n[exit {proc.returncode}]\n")
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        raise BenchError(f"{what} failed (exit {proc.returncode}): {' '.join(argv)}\n{tail}\n(full output: {log_file})")
    return proc, wall, own, children


def playbook(fleet: Fleet, work: Path, label: str, *, extra: dict | None = None, limit: list[str] | None = None,
             forks: int | None = None, book: str | Path = PLAYBOOK, env: dict | None = None,
             ansible_playbook: Path | None = None) -> PlaybookRun:
    """Run a playbook on the fleet and measure it (see PlaybookRun).

    On a local fleet the "hosts" are this machine: their module processes are among the
    children, so cpu says how much of the wall time is work rather than waiting. On an ssh fleet
    each run gets its own ControlPath directory, and its masters are ended afterwards: every run
    pays for its own connections, as a run on a real controller does."""
    reports = work / "reports" / label
    # The watch window is a wait the operator chooses, not work: it is left out of every figure and
    # added to the projections by hand (README "Large fleets").
    extra = {"riskmgr_canary_watch_seconds": 0, "riskmgr_watch_seconds": 0, **(extra or {}),
             "riskmgr_report_dir": str(reports)}
    control_dir = Path(tempfile.mkdtemp(prefix="rmb", dir="/tmp")) if fleet.pool else None  # a socket path: short
    if control_dir:
        extra["ansible_control_path_dir"] = str(control_dir)
    argv = [ansible_playbook or BIN / "ansible-playbook", "-i", fleet.inventory, book, "-e", json.dumps(extra)]
    if limit:
        argv += ["-l", ",".join(limit)]
    if forks:
        argv += ["-f", forks]
    fleet.clear_module_times()
    masters, master_count = 0.0, 0
    hosts_before = fleet.pool.sessions_cpu() if fleet.pool else 0.0
    busy_before = machine_busy_seconds()
    try:
        proc, wall, main, children = run_measured(
            argv, log_file=work / "ansible.log", what=f"ansible-playbook {Path(book).name} ({label})",
            env={"ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1", **(env or {})})
    finally:
        if control_dir:
            masters, master_count = loopback_sshd.stop_control_masters(control_dir)
            shutil.rmtree(control_dir, ignore_errors=True)
    hosts_cpu = fleet.pool.sessions_cpu() - hosts_before if fleet.pool else 0.0
    others = machine_busy_seconds() - busy_before - main - children - masters - hosts_cpu if fleet.pool else None
    found = {path.stem: json.loads(path.read_text()) for path in reports.glob("*/*.json")}
    return PlaybookRun(wall, main, children, masters, found, proc.stdout, fleet.module_times(limit), master_count,
                       hosts_cpu, others)


def machine_busy_seconds() -> float:
    """CPU-seconds every core of this machine has spent busy since boot (/proc/stat: all but idle and iowait)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:9]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields)
    return (user + nice + system + irq + softirq + steal) / loopback_sshd.CLOCK_TICKS


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
    stop_at = float(report["stop_requested_at"])
    gap, rows_written = longest_write_gap(db, began, stop_at)
    after = db_rows(db)
    lost = {t: before[t] - after.get(t, 0) for t in before if after.get(t, 0) < before[t]}
    return {"wall": done.wall, "cpu": done.cpu, "downtime": float(report["downtime_seconds"]), "longest_gap": gap,
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


# --- large fleets over ssh: the controller's cost per host, the settings that matter -----------------

RECAP_RE = re.compile(r"^(?P<host>\S+)\s+:\s+ok=(?P<ok>\d+)\s+changed=\d+\s+unreachable=\d+\s+failed=(?P<failed>\d+)"
                      r"\s+skipped=(?P<skipped>\d+)", re.MULTILINE)
DEFAULT_SERIAL = [1, "25%", "100%"]  # playbooks/migrate_v2.yml's riskmgr_serial default
SSH_PERSIST = "-o ControlMaster=auto -o ControlPersist=60s"  # ansible-core's own ssh_args, without -C
MITOGEN_VERSION = "0.3.54"  # the newest release; it drives ansible-core 2.19.14 here (README "Large fleets")


@dataclass(frozen=True)
class Setting:
    """One way of running the playbook over ssh; the baseline is what the README recommends."""
    key: str
    label: str
    extra: dict = field(default_factory=dict)
    env: dict = field(default_factory=dict)
    forks: int | None = None  # None: one fork per host
    book: str | Path = PLAYBOOK
    ansible_playbook: Path | None = None


BASELINE = Setting("baseline", "pipelining, ControlPersist 60s, ssh -C, forks = hosts, no facts",
                   extra={"ansible_pipelining": True, "ansible_ssh_args": f"-C {SSH_PERSIST}"})


def settings_to_measure(hosts: int, mitogen: Setting | None) -> list[Setting]:
    """The variants of the baseline, each changing one thing."""
    base = BASELINE.extra
    variants = [
        Setting("no_pipelining", "pipelining off (module copied over sftp, then run)",
                extra={**base, "ansible_pipelining": False}),
        # ssh_args without ControlPersist: Ansible then adds no ControlPath, one connection per command.
        Setting("no_controlpersist", "ControlPersist off (one ssh connection per command)",
                extra={**base, "ansible_ssh_args": "-C -o ControlMaster=no"}),
        Setting("no_compression", "ssh compression off (-C dropped from ssh_args)",
                extra={**base, "ansible_ssh_args": SSH_PERSIST}),
        Setting("forks_half", f"forks {max(1, hosts // 2)} (half the hosts)", extra=base, forks=max(1, hosts // 2)),
        Setting("forks_quarter", f"forks {max(1, hosts // 4)} (a quarter of the hosts)", extra=base,
                forks=max(1, hosts // 4)),
        Setting("facts", "facts gathered once per host first (bench/gather_facts.yml)", extra=base, book=GATHER_FACTS),
    ]
    return variants + ([mitogen] if mitogen else [])


def mitogen_setting(log_file: Path) -> tuple[Setting | None, str]:
    """Mitogen in a venv of its own (never the project's .venv): (the setting, what was used) or (None, why not).

    Made once under .cache/ with `pip install ansible-core mitogen==MITOGEN_VERSION` constrained by
    requirements.txt, so the controller is the same ansible-core as everywhere else."""
    venv = ROOT / ".cache" / f"bench-mitogen-{MITOGEN_VERSION}"
    playbook_bin = venv / "bin" / "ansible-playbook"
    if not playbook_bin.exists():
        log(f"mitogen: making {venv.relative_to(ROOT)} (pip install ansible-core mitogen=={MITOGEN_VERSION})")
        try:
            run([sys.executable, "-m", "venv", "--clear", venv], log_file=log_file, what="python -m venv")
            run([venv / "bin" / "pip", "install", "-q", "--disable-pip-version-check", "-c", ROOT / "requirements.txt",
                 "ansible-core", f"mitogen=={MITOGEN_VERSION}"], log_file=log_file, what="pip install mitogen")
        except BenchError as err:
            shutil.rmtree(venv, ignore_errors=True)
            return None, f"not measured: {str(err).splitlines()[0]}"
    strategies = next(venv.glob("lib/python*/site-packages/ansible_mitogen/plugins/strategy"), None)
    if strategies is None:
        return None, f"not measured: {venv} has no ansible_mitogen strategy plugins"
    versions = run([venv / "bin" / "python", "-c", "import ansible.release, importlib.metadata as m; "
                    "print(m.version('mitogen'), ansible.release.__version__)"], what="mitogen version").stdout.split()
    used = f"mitogen {versions[0]} on ansible-core {versions[1]}"
    # Mitogen connects with its own ssh code, which reads host key checking from the environment.
    return Setting("mitogen", f"Mitogen {versions[0]} (strategy mitogen_linear), otherwise the baseline",
                   extra=BASELINE.extra, ansible_playbook=playbook_bin,
                   env={"ANSIBLE_STRATEGY_PLUGINS": str(strategies), "ANSIBLE_STRATEGY": "mitogen_linear",
                        "ANSIBLE_HOST_KEY_CHECKING": "False"}), used


def tasks_per_host(output: str) -> float | None:
    """Median over hosts of the tasks each one ran or skipped (the recap's ok + failed + skipped)."""
    counts = [int(m["ok"]) + int(m["failed"]) + int(m["skipped"]) for m in RECAP_RE.finditer(output)]
    return statistics.median(counts) if counts else None


def run_figures(done: PlaybookRun) -> dict:
    modules = done.modules.values()
    return {"wall": done.wall, "controller": done.cpu, "main": done.main, "children": done.children,
            "masters": done.masters, "master_count": done.master_count, "hosts_cpu": done.hosts_cpu,
            "others_cpu": done.others_cpu, "cores_free": cores_free(done),
            "module_cpu": sum(m["cpu"] for m in modules),
            "module_cpu_per_host": statistics.median(m["cpu"] for m in modules) if modules else None,
            "module_wall_per_host": statistics.median(m["wall"] for m in modules) if modules else None,
            "module_processes_per_host": statistics.median(m["processes"] for m in modules) if modules else None,
            "tasks_per_host": tasks_per_host(done.output), "loadavg": os.getloadavg()[0]}


def cores_free(done: PlaybookRun) -> float:
    """Cores this run had to itself: all of them less what other processes used meanwhile, on average."""
    cores = os.cpu_count() or 1
    return round(max(0.1, cores - max(0.0, done.others_cpu or 0.0) / done.wall), 2)


def fleet_pass(fleet: Fleet, work: Path, hosts: list[str], setting: Setting, label: str,
               serial: list | None = None) -> dict:
    """Upgrade `hosts` from v1 (daemons running) and run again on the done fleet, both measured."""
    fleet.reset(hosts)
    extra = {**setting.extra, "riskmgr_confirm": True, "riskmgr_serial": serial or [len(hosts)]}
    options = {"extra": extra, "limit": hosts, "forks": setting.forks or len(hosts), "book": setting.book,
               "env": setting.env, "ansible_playbook": setting.ansible_playbook}
    upgrade = playbook(fleet, work, f"{label}-upgrade", **options)
    wrong = [h for h in hosts if (upgrade.reports.get(h) or {}).get("outcome") != "changed" or not fleet.alive(h)]
    if wrong:
        raise BenchError(f"{label}: not changed to v2 with its daemon running on {', '.join(wrong)}")
    pids = {h: fleet.pid(h) for h in hosts}
    rerun = playbook(fleet, work, f"{label}-rerun", **options)
    wrong = [h for h in hosts if (rerun.reports.get(h) or {}).get("outcome") != "unchanged" or fleet.pid(h) != pids[h]]
    if wrong:
        raise BenchError(f"{label}: the re-run changed or restarted {', '.join(wrong)}")
    return {"upgrade": {**run_figures(upgrade), "downtime_max": max(float(upgrade.reports[h]["downtime_seconds"])
                                                                    for h in hosts)},
            "rerun": run_figures(rerun)}


def one_task_pass(fleet: Fleet, work: Path, hosts: list[str], label: str) -> dict:
    done = playbook(fleet, work, label, extra=BASELINE.extra, limit=hosts, forks=len(hosts), book=ONE_TASK)
    return run_figures(done)


def bench_fleet(mb: int, counts: list[int], settings_hosts: int, work: Path, repeat: int, fleets: list,
                mitogen: bool) -> dict:
    """The controller's CPU per upgraded and per unchanged host, the cost of a serial batch, and the
    settings, all over ssh, in interleaved rounds; see README "Large fleets"."""
    most = max(counts)
    setup_log = work / "setup.log"
    log(f"fleet: building a {most}-host fleet of {mb} MB databases reached over ssh (127.0.0.40-)")
    # The daemons write every 200 ms, not 20: sixteen of them at 20 ms take a quarter of a core
    # from what is measured, and the controller's cost does not depend on their rate.
    fleet = Fleet(work / "fleet", most, mb, "ssh", setup_log, interval_ms=FLEET_INTERVAL_MS)
    fleets.append(fleet)
    pool = loopback_sshd.SshdPool(work / "sshd", most)
    try:
        fleet.use_ssh(pool)
        mitogen_used, why = (mitogen_setting(setup_log) if mitogen else (None, "not measured: --no-mitogen"))
        variants = settings_to_measure(settings_hosts, mitogen_used)
        samples: dict = {"sizes": {n: [] for n in counts}, "one_task": {n: [] for n in counts}, "serial": [],
                         "settings": {s.key: [] for s in variants}}
        for i in range(repeat):
            for n in counts:
                log(f"fleet: round {i + 1}/{repeat}: {n} host(s) over ssh, one batch, forks {n}: upgrade, re-run, one task")
                hosts = fleet.names[:n]
                samples["sizes"][n].append(fleet_pass(fleet, work, hosts, BASELINE, f"fleet{n}-{i + 1}"))
                samples["one_task"][n].append(one_task_pass(fleet, work, hosts, f"fleet{n}-onetask-{i + 1}"))
            log(f"fleet: round {i + 1}/{repeat}: {most} hosts, serial {DEFAULT_SERIAL} (the playbook's default)")
            samples["serial"].append(fleet_pass(fleet, work, fleet.names, BASELINE, f"serial{most}-{i + 1}",
                                                serial=DEFAULT_SERIAL))
            for setting in list(variants):
                log(f"fleet: round {i + 1}/{repeat}: {settings_hosts} hosts, {setting.label}")
                try:
                    samples["settings"][setting.key].append(
                        fleet_pass(fleet, work, fleet.names[:settings_hosts], setting, f"{setting.key}-{i + 1}"))
                except BenchError as err:
                    if setting is not mitogen_used:
                        raise
                    # Mitogen is measured only if it works here: a failure is its result, not the bench's.
                    why = f"failed here, not measured: {str(err).splitlines()[0]}"
                    log(f"mitogen: {why}")
                    variants.remove(setting)
                    del samples["settings"][setting.key]
                    mitogen_used = None
    finally:
        pool.stop()
        fleet.destroy()
        fleets.remove(fleet)
    return fleet_results(mb, counts, settings_hosts, samples, variants, why)


def medians(samples: list[dict]) -> dict:
    """Per figure, the summary over rounds of a list of run_figures dicts."""
    keys = [k for k in samples[0] if isinstance(samples[0][k], (int, float)) or samples[0][k] is None]
    return {k: summary([s[k] for s in samples]) for k in keys}


def fit_line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares (intercept, slope) of ys against xs."""
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / spread if spread else 0.0
    return mean_y - slope * mean_x, slope


def serial_batches(hosts: int, serial: list) -> list[int]:
    """The batch sizes Ansible makes of `hosts` hosts for a play's serial list.

    As ansible-core's PlaybookExecutor does: each entry is a count or a percentage of ALL the
    play's hosts (rounded down, at least 1), the last entry repeats until no host is left."""
    sizes, left, index = [], hosts, 0
    while left > 0:
        entry = serial[min(index, len(serial) - 1)]
        if isinstance(entry, str) and entry.strip().endswith("%"):
            size = max(1, int(float(entry.strip()[:-1]) / 100.0 * hosts))
        else:
            size = int(entry)
        size = left if size <= 0 else min(size, left)
        sizes.append(size)
        left -= size
        index += 1
    return sizes


@dataclass(frozen=True)
class FleetCosts:
    """What one run costs, measured (bench_fleet): controller CPU-seconds, and each host's wait.

    controller_*: user+sys of ansible-playbook, its forks, the ssh clients and masters; main_*:
    the ansible-playbook process alone (its strategy loop cannot use more than one core).
    *_fixed per run, *_per_host per host, *_per_batch per serial batch beyond the first.
    host_wall: seconds each host's own work keeps its tasks waiting (its module processes' wall
    time); host_idle: the part of it that is not CPU (sleeps, waits for the daemon); host_cpu:
    all the CPU a host spends on the run (sshd, shells, modules)."""
    controller_fixed: float
    controller_per_host: float
    controller_per_batch: float
    main_fixed: float
    main_per_host: float
    main_per_batch: float
    host_wall: float
    host_idle: float
    host_cpu: float


def project_wall(costs: FleetCosts, hosts: int, forks: int, serial: list, cores: int, slices: int = 1,
                 hosts_share_cores: bool = False) -> dict:
    """Projected wall seconds of one run on `hosts` hosts (see README "Large fleets" for the model).

    The controller's work and the hosts' work are added, not overlapped: the playbook's tasks run in
    lock-step over a batch, and the ones that cost the controller (templating, action plugins,
    reports) are not the ones that keep a host busy (the upgrade unit, the integrity check). The
    controller part is its CPU over min(cores, forks) cores, or the main process's CPU if that is
    more (one core). The host part is, per batch, ceil(batch / forks) waves of host_wall.
    slices: AWX job slicing, each slice its own run on ceil(hosts / slices) hosts, on a node of its
    own with `cores` cores, all slices at once. hosts_share_cores: the hosts run on the controller's
    cores (the bench's loopback fleet), so their CPU joins the controller's and only their idle
    time is left in the host part."""
    per_slice = math.ceil(hosts / slices)
    batches = serial_batches(per_slice, serial)
    extra_batches = len(batches) - 1
    controller = costs.controller_fixed + costs.controller_per_host * per_slice + costs.controller_per_batch * extra_batches
    main = costs.main_fixed + costs.main_per_host * per_slice + costs.main_per_batch * extra_batches
    host_wall = costs.host_wall
    if hosts_share_cores:
        controller += costs.host_cpu * per_slice
        host_wall = costs.host_idle
    controller_part = max(main, controller / min(cores, forks))
    waves = sum(math.ceil(size / forks) for size in batches)
    return {"seconds": controller_part + waves * host_wall, "controller_part": controller_part,
            "main_bound": main >= controller / min(cores, forks), "host_part": waves * host_wall, "waves": waves,
            "batches": batches, "hosts_per_slice": per_slice}


def fleet_costs(sizes: dict, serial: dict, counts: list[int], kind: str, settle_added: float) -> FleetCosts:
    """FleetCosts of `kind` (upgrade or rerun) from the medians: lines through the one-batch sizes,
    the batch cost from the default-serial run on the most hosts against one batch of as many."""
    most = max(counts)
    controller = [sizes[n][kind]["controller"]["median"] for n in counts]
    main = [sizes[n][kind]["main"]["median"] for n in counts]
    controller_fixed, controller_per_host = fit_line(counts, controller)
    main_fixed, main_per_host = fit_line(counts, main)
    extra_batches = len(serial_batches(most, DEFAULT_SERIAL)) - 1
    per_batch = (serial[kind]["controller"]["median"] - sizes[most][kind]["controller"]["median"]) / extra_batches
    main_per_batch = (serial[kind]["main"]["median"] - sizes[most][kind]["main"]["median"]) / extra_batches
    one = sizes[min(counts)][kind]  # the host's own time without other hosts on its cores
    wall, cpu = one["module_wall_per_host"]["median"], one["module_cpu_per_host"]["median"]
    return FleetCosts(controller_fixed, controller_per_host, max(0.0, per_batch), main_fixed, main_per_host,
                      max(0.0, main_per_batch), wall + settle_added, max(0.0, wall - cpu) + settle_added,
                      one["hosts_cpu"]["median"] / min(counts))


def fleet_results(mb: int, counts: list[int], settings_hosts: int, samples: dict, variants: list[Setting],
                  mitogen_note: str) -> dict:
    sizes = {n: {kind: medians([s[kind] for s in samples["sizes"][n]]) for kind in ("upgrade", "rerun")}
             for n in counts}
    one_task = {n: medians(samples["one_task"][n]) for n in counts}
    serial = {kind: medians([s[kind] for s in samples["serial"]]) for kind in ("upgrade", "rerun")}
    settings = {s.key: {"label": s.label, **{kind: medians([x[kind] for x in samples["settings"][s.key]])
                                              for kind in ("upgrade", "rerun")}} for s in variants}
    settle_default = float(yaml.safe_load((ROOT / "roles/riskmgr/defaults/main.yml").read_text())["riskmgr_start_settle"])
    settle_fleet = float(local_fleet.COMMON_VARS["riskmgr_start_settle"])
    costs = {"upgrade": fleet_costs(sizes, serial, counts, "upgrade", 0.0),
             "rerun": fleet_costs(sizes, serial, counts, "rerun", 0.0)}
    # The projection is for the production default settle time, not the fleet's shorter one.
    production = {"upgrade": fleet_costs(sizes, serial, counts, "upgrade", settle_default - settle_fleet),
                  "rerun": costs["rerun"]}
    one_task_fixed, one_task_per_host = fit_line(counts, [one_task[n]["controller"]["median"] for n in counts])
    loads = [run[kind]["loadavg"] for group in (*samples["sizes"].values(), samples["serial"],
                                                *samples["settings"].values())
             for run in group for kind in ("upgrade", "rerun")]
    return {"loadavg_after_runs": {"min": min(loads), "max": max(loads)},"size_mb_target": mb, "hosts": counts, "settings_hosts": settings_hosts, "serial": DEFAULT_SERIAL,
            "sizes": {str(n): v for n, v in sizes.items()}, "one_task": {str(n): v for n, v in one_task.items()},
            "serial_run": serial, "settings": settings, "mitogen": mitogen_note,
            "settle": {"fleet": settle_fleet, "default": settle_default},
            "costs": {k: v.__dict__ for k, v in costs.items()},
            "production_costs": {k: v.__dict__ for k, v in production.items()},
            "one_task_per_host": one_task_per_host, "one_task_fixed": one_task_fixed,
            "model_check": model_check(costs, sizes, serial, counts),
            "projection": projection_table(production), "serial_choices": serial_choices_table(production["upgrade"])}


def model_check(costs: dict, sizes: dict, serial: dict, counts: list[int]) -> list[dict]:
    """The model against the runs it was fitted on, as they ran: the hosts' CPU on the controller's
    cores, and only the cores other processes left free (median over the rounds)."""
    rows = []
    for kind in ("upgrade", "rerun"):
        runs = [(n, [n], sizes[n][kind]) for n in counts] + [(max(counts), DEFAULT_SERIAL, serial[kind])]
        for n, batches, figures in runs:
            cores = figures["cores_free"]["median"]
            predicted = project_wall(costs[kind], n, n, batches, cores, hosts_share_cores=True)["seconds"]
            rows.append({"run": kind, "hosts": n, "serial": json.dumps(batches), "cores_free": cores,
                         "measured": figures["wall"]["median"], "predicted": round(predicted, 2)})
    return rows


PROJECTION_HOSTS = [100, 1000, 5000]
# (label, cores per controller or execution node, forks, slices): this machine, a larger controller,
# AWX with 4 and 10 execution nodes of that size, one slice each.
PROJECTION_SETUPS = [("1 controller, 2 cores", 2, 50, 1), ("1 controller, 8 cores", 8, 50, 1),
                     ("AWX, 4 nodes x 8 cores, 4 slices", 8, 50, 4), ("AWX, 10 nodes x 8 cores, 10 slices", 8, 50, 10)]


def projection_table(costs: dict[str, FleetCosts]) -> list[dict]:
    rows = []
    for kind in ("upgrade", "rerun"):
        for hosts in PROJECTION_HOSTS:
            row = {"run": kind, "hosts": hosts, "setups": {}}
            for label, cores, forks, slices in PROJECTION_SETUPS:
                row["setups"][label] = project_wall(costs[kind], hosts, forks, DEFAULT_SERIAL, cores, slices)
            rows.append(row)
    return rows


# Serial lists the projection compares, for the upgrade on one 8-core controller at forks 50: the
# default, a gentler ramp, a shorter one, and no canary at all (what the canary costs).
SERIAL_CHOICES = [DEFAULT_SERIAL, [1, "1%", "10%", "100%"], [1, "10%", "100%"], ["100%"]]


def serial_choices_table(costs: FleetCosts) -> list[dict]:
    label, cores, forks, slices = PROJECTION_SETUPS[1]
    return [{"serial": serial, "setup": label,
             "hosts": {str(h): project_wall(costs, h, forks, serial, cores, slices) for h in PROJECTION_HOSTS[1:]}}
            for serial in SERIAL_CHOICES]


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def fleet_table(fleet: dict) -> str:
    counts, most = fleet["hosts"], max(fleet["hosts"])
    cores = os.cpu_count()
    lines = ["", f"large fleets: the controller's cost per host over ssh ({fleet['size_mb_target']} MB hosts, "
                 f"{BASELINE.label.replace(', forks = hosts', '')}; one batch and forks = hosts unless said)",
             f"{'hosts':>7}  {'run':<34} {'wall':>8} {'ctrl cpu':>9} {'main':>6} {'masters':>8} "
             f"{'hosts cpu':>10} {'free cores':>10} {'tasks/host':>10}  n"]

    def row(n, label, figures):
        lines.append(f"{n:>7}  {label:<34} {fmt(figures['wall']['median'], ' s'):>8} "
                     f"{fmt(figures['controller']['median'], ' s'):>9} {fmt(figures['main']['median']):>6} "
                     f"{fmt(figures['masters']['median']):>8} {fmt(figures['hosts_cpu']['median']):>10} "
                     f"{fmt(figures['cores_free']['median']):>10} {fmt(figures['tasks_per_host']['median']):>10}  "
                     f"{figures['wall']['n']}")

    for n in counts:
        row(n, "upgrade (all v1)", fleet["sizes"][str(n)]["upgrade"])
        row(n, "re-run (all v2)", fleet["sizes"][str(n)]["rerun"])
        row(n, "one-task playbook", fleet["one_task"][str(n)])
    batches = serial_batches(most, fleet["serial"])
    row(most, f"upgrade, serial {batches}", fleet["serial_run"]["upgrade"])
    row(most, f"re-run, serial {batches}", fleet["serial_run"]["rerun"])
    lines.append(f"{'':>7}  ctrl cpu: user+sys of ansible-playbook, its forks and ssh clients, plus the ssh "
                 f"ControlPersist masters (masters); main: ansible-playbook's own process; hosts cpu: everything the "
                 f"hosts ran (sshd sessions, shells, modules); free cores: {cores} less what other processes used "
                 f"meanwhile")
    costs, floor = fleet["costs"], fleet["one_task_per_host"]
    lines.append(f"  per host (least squares over {', '.join(map(str, counts))} hosts): "
                 f"controller CPU-seconds = fixed + per host x hosts")
    for kind, what in (("upgrade", "upgraded host "), ("rerun", "unchanged host")):
        c = costs[kind]
        tasks = fleet["sizes"][str(most)][kind]["tasks_per_host"]["median"]
        per_task = f"; {c['controller_per_host'] / tasks:.3f} s per task ({tasks:.0f} tasks per host)" if tasks else ""
        lines.append(f"    {what}: {c['controller_per_host']:.3f} s per host (main process {c['main_per_host']:.3f} s), "
                     f"fixed {c['controller_fixed']:.2f} s; = {fmt(ratio(c['controller_per_host'], floor), 'x')} "
                     f"the one-task playbook's {floor:.3f} s per host{per_task}")
    lines.append(f"    per serial batch beyond the first: upgrade {costs['upgrade']['controller_per_batch']:.2f} s "
                 f"(main {costs['upgrade']['main_per_batch']:.2f} s), re-run {costs['rerun']['controller_per_batch']:.2f} s "
                 f"(main {costs['rerun']['main_per_batch']:.2f} s)")
    for kind, what in (("upgrade", "upgraded host "), ("rerun", "unchanged host")):
        one = fleet["sizes"][str(min(counts))][kind]
        lines.append(f"    host side, per {what.strip()}: all CPU {fmt(one['hosts_cpu']['median'] / min(counts))} s, "
                     f"of which modules {fmt(one['module_cpu_per_host']['median'])} s; "
                     f"module wall {fmt(one['module_wall_per_host']['median'])} s in "
                     f"{fmt(one['module_processes_per_host']['median'])} processes ({min(counts)} host)")
    lines.append("")
    lines.append(f"model check: the model (project_wall) against the runs above as they ran: the hosts' CPU on the "
                 f"same {cores} cores, less what other processes used meanwhile (free cores)")
    lines.append(f"  {'run':<8} {'hosts':>5}  {'serial':<18} {'free cores':>10} {'measured':>9} {'model':>8} {'x':>6}")
    for r in fleet["model_check"]:
        lines.append(f"  {r['run']:<8} {r['hosts']:>5}  {r['serial']:<18} {fmt(r['cores_free']):>10} "
                     f"{fmt(r['measured'], ' s'):>9} {fmt(r['predicted'], ' s'):>8} "
                     f"{fmt(ratio(r['predicted'], r['measured']), 'x'):>6}")
    lines.append("")
    settle = fleet["settle"]
    lines.append(f"projection: wall time of one run, serial {json.dumps(fleet['serial'])}, forks 50 per run, no host "
                 f"failing; each host's own wait {costs['upgrade']['host_wall']:.2f} s + {settle['default'] - settle['fleet']:.1f} s "
                 f"(riskmgr_start_settle {settle['default']:g} s, not the fleet's {settle['fleet']:g} s) when upgraded, "
                 f"{costs['rerun']['host_wall']:.2f} s when unchanged")
    setups = [label for label, *_ in PROJECTION_SETUPS]
    lines.append(f"  {'run':<8} {'hosts':>5}  " + "  ".join(f"{label:>34}" for label in setups))
    for r in fleet["projection"]:
        cells = []
        for label in setups:
            p = r["setups"][label]
            bound = "main" if p["main_bound"] else "cpu"
            cells.append(f"{duration(p['seconds'])} ({bound} {duration(p['controller_part'])}, hosts "
                         f"{duration(p['host_part'])})")
        lines.append(f"  {r['run']:<8} {r['hosts']:>5}  " + "  ".join(f"{c:>34}" for c in cells))
    lines.append(f"{'':>7}  (controller part: 'cpu' = CPU over min(cores, forks), 'main' = the main process's CPU "
                 f"(one core) when that is more; hosts: ceil(batch / forks) waves of a host's wait, per batch)")
    for choice in fleet["serial_choices"]:
        cells = ", ".join(f"{h} hosts {duration(p['seconds'])} (batches {p['batches'][:4]}"
                          f"{'...' if len(p['batches']) > 4 else ''})" for h, p in choice["hosts"].items())
        lines.append(f"  upgrade, {choice['setup']}, serial {json.dumps(choice['serial'])}: {cells}")
    lines.append("")
    n = fleet["settings_hosts"]
    base = fleet["sizes"][str(n)]
    lines.append(f"settings ({n} hosts over ssh, one batch; ratio to the baseline measured in the same rounds)")
    lines.append(f"  {'setting':<62} {'upgrade':>8} {'x base':>7} {'ctrl cpu':>9} {'x base':>7}  "
                 f"{'re-run':>7} {'x base':>7} {'ctrl cpu':>9} {'x base':>7} {'hosts cpu':>9} {'masters':>8} "
                 f"{'free cores':>10}")

    def setting_row(label, figures):
        up, re_ = figures["upgrade"], figures["rerun"]
        lines.append(f"  {label:<62} {fmt(up['wall']['median'], ' s'):>8} "
                     f"{fmt(ratio(up['wall']['median'], base['upgrade']['wall']['median']), 'x'):>7} "
                     f"{fmt(up['controller']['median'], ' s'):>9} "
                     f"{fmt(ratio(up['controller']['median'], base['upgrade']['controller']['median']), 'x'):>7}  "
                     f"{fmt(re_['wall']['median'], ' s'):>7} "
                     f"{fmt(ratio(re_['wall']['median'], base['rerun']['wall']['median']), 'x'):>7} "
                     f"{fmt(re_['controller']['median'], ' s'):>9} "
                     f"{fmt(ratio(re_['controller']['median'], base['rerun']['controller']['median']), 'x'):>7} "
                     f"{fmt(up['hosts_cpu']['median'], ' s'):>9} {fmt(up['master_count']['median']):>8} "
                     f"{fmt(up['cores_free']['median']):>10}")

    setting_row(f"baseline: {BASELINE.label}", base)
    for key, figures in fleet["settings"].items():
        setting_row(figures["label"], figures)
    lines.append(f"  load average (1 min) after each run: {fleet['loadavg_after_runs']['min']:.2f} to "
                 f"{fleet['loadavg_after_runs']['max']:.2f}")
    lines.append(f"  hosts cpu, masters, free cores: of the upgrade runs; masters: ssh ControlPersist masters (one per "
                 f"host when persistence works); the wall times follow the free cores, the CPU-seconds do not; "
                 f"mitogen: {fleet['mitogen']}")
    return "\n".join(lines)


def fleet_markdown(results: dict) -> str:
    """README "Large fleets" tables from a results file (bench/run --markdown FILE prints them)."""
    fleet, machine = results["fleet"], results["machine"]
    counts, most, n = fleet["hosts"], max(fleet["hosts"]), fleet["settings_hosts"]
    costs, floor = fleet["costs"], fleet["one_task_per_host"]
    out = [f"Measured {results['started'].replace('T', ' ').replace('+00:00', ' UTC')}, commit {machine['commit']}, "
           f"`{results['command']}` ({results['repeat']} interleaved rounds, medians): {machine['cpu_model']}, "
           f"{machine['nproc']} cores, {machine['mem_gb']} GB RAM; {machine['ansible']}, Python {machine['python']}. "
           f"Load average {machine['loadavg_start'][0]:.2f} at the start, {machine['loadavg_end'][0]:.2f} at the end "
           f"({fleet['loadavg_after_runs']['min']:.2f} to {fleet['loadavg_after_runs']['max']:.2f} after each run).",
           "",
           f"| controller CPU-seconds ({fleet['size_mb_target']} MB hosts over ssh) | per host | of which the main "
           f"process | fixed per run | x one-task playbook per host ({floor:.3f} s) | per task |",
           "|---|---|---|---|---|---|"]
    for kind, what in (("upgrade", "upgraded host (v1 to v2)"), ("rerun", "unchanged host (re-run on v2)")):
        c = costs[kind]
        tasks = fleet["sizes"][str(most)][kind]["tasks_per_host"]["median"]
        out.append(f"| {what} | {c['controller_per_host']:.2f} | {c['main_per_host']:.2f} | {c['controller_fixed']:.2f} "
                   f"| {fmt(ratio(c['controller_per_host'], floor), 'x')} | "
                   f"{c['controller_per_host'] / tasks:.3f} ({tasks:.0f} tasks) |")
    out.append(f"| each serial batch beyond the first | upgrade {costs['upgrade']['controller_per_batch']:.2f}, "
               f"re-run {costs['rerun']['controller_per_batch']:.2f} | {costs['upgrade']['main_per_batch']:.2f}, "
               f"{costs['rerun']['main_per_batch']:.2f} | | | |")
    one = fleet["sizes"][str(min(counts))]
    out += ["", f"On the host side, per upgraded host: {one['upgrade']['hosts_cpu']['median'] / min(counts):.2f} CPU-seconds "
                f"(sshd, shells, modules; the modules {one['upgrade']['module_cpu_per_host']['median']:.2f}), its "
                f"module processes {one['upgrade']['module_wall_per_host']['median']:.2f} s of wall time in "
                f"{one['upgrade']['module_processes_per_host']['median']:.0f} processes; per unchanged host "
                f"{one['rerun']['hosts_cpu']['median'] / min(counts):.2f} CPU-seconds, "
                f"{one['rerun']['module_wall_per_host']['median']:.2f} s in "
                f"{one['rerun']['module_processes_per_host']['median']:.0f} process.", "",
            f"| setting ({n} hosts over ssh, one batch) | upgrade wall | x baseline | controller CPU | x baseline "
            f"| re-run wall | x baseline | controller CPU | x baseline | hosts' CPU (upgrade) | free cores (upgrade) |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    base = fleet["sizes"][str(n)]
    for label, figures in [(f"**baseline**: {BASELINE.label}", base)] + [(f["label"], f) for f in fleet["settings"].values()]:
        cells = []
        for kind in ("upgrade", "rerun"):
            for figure in ("wall", "controller"):
                value = figures[kind][figure]["median"]
                cells += [f"{value:.1f} s", fmt(ratio(value, base[kind][figure]["median"]), "x")]
        cells += [f"{figures['upgrade']['hosts_cpu']['median']:.1f} s", f"{figures['upgrade']['cores_free']['median']:.2f}"]
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    # The projections come from the measured costs through this file's model, so that a change to
    # the model shows in the README without measuring again.
    production = {kind: FleetCosts(**values) for kind, values in fleet["production_costs"].items()}
    out += ["", f"Mitogen: {fleet['mitogen']}.", "",
            "| run | hosts | " + " | ".join(label for label, *_ in PROJECTION_SETUPS) + " |",
            "|---|---|" + "---|" * len(PROJECTION_SETUPS)]
    for r in projection_table(production):
        cells = []
        for label, *_ in PROJECTION_SETUPS:
            p = r["setups"][label]
            cells.append(f"**{duration(p['seconds'])}** ({'main' if p['main_bound'] else 'cpu'} "
                         f"{duration(p['controller_part'])} + hosts {duration(p['host_part'])})")
        out.append(f"| {'upgrade' if r['run'] == 'upgrade' else 're-run'} | {r['hosts']:,} | " + " | ".join(cells) + " |")
    out += ["", f"| upgrade, {PROJECTION_SETUPS[1][0]}, forks {PROJECTION_SETUPS[1][2]}: serial | "
                + " | ".join(f"{h:,} hosts" for h in PROJECTION_HOSTS[1:]) + " |", "|---|" + "---|" * len(PROJECTION_HOSTS[1:])]
    for choice in serial_choices_table(production["upgrade"]):
        cells = [f"{duration(p['seconds'])} ({len(p['batches'])} batches: {', '.join(map(str, p['batches'][:4]))}"
                 f"{', ...' if len(p['batches']) > 4 else ''})" for p in choice["hosts"].values()]
        out.append(f"| `{json.dumps(choice['serial'])}` | " + " | ".join(cells) + " |")
    out += ["", "| model check: run as measured | hosts | serial | free cores | measured | model | x |",
            "|---|---|---|---|---|---|---|"]
    for r in fleet["model_check"]:
        out.append(f"| {r['run']} | {r['hosts']} | `{r['serial']}` | {r['cores_free']:.2f} | {r['measured']:.1f} s "
                   f"| {r['predicted']:.1f} s | {fmt(ratio(r['predicted'], r['measured']), 'x')} |")
    return "\n".join(out)


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
    parser.add_argument("--fleet-only", action="store_true",
                        help="only the large-fleet measurement over ssh (per-host controller cost, settings, projection)")
    parser.add_argument("--fleet-hosts", default=None,
                        help=f"ssh fleet sizes, at most 20 (default {','.join(map(str, FLEET_HOSTS))})")
    parser.add_argument("--settings-hosts", type=int, default=SETTINGS_HOSTS,
                        help=f"hosts the settings are measured on (default {SETTINGS_HOSTS}; added to --fleet-hosts)")
    parser.add_argument("--no-mitogen", action="store_true", help="do not make or measure the Mitogen venv")
    parser.add_argument("--markdown", type=Path, metavar="RESULTS_JSON",
                        help="print README \"Large fleets\" tables from a results file of a fleet run, and exit")
    args = parser.parse_args(argv)
    if args.quick and args.fleet_only:
        parser.error("--quick and --fleet-only do not go together: --quick never measures the fleet")
    sizes = sorted({int(s) for s in (args.sizes or ",".join(map(str, FULL_SIZES))).split(",") if s.strip()})
    args.sizes = sizes[:1] if args.quick else sizes
    args.hosts = sorted({int(s) for s in args.hosts.split(",")}) if args.hosts else (QUICK_HOSTS if args.quick else FULL_HOSTS)
    if 1 not in args.hosts:
        args.hosts = [1, *args.hosts]
    args.repeat = args.repeat or (1 if args.quick else 3)
    if args.repeat < 1 or min(args.sizes) < 1:
        parser.error("--repeat and --sizes must be positive")
    fleet_hosts = {int(s) for s in args.fleet_hosts.split(",")} if args.fleet_hosts else set(FLEET_HOSTS)
    args.fleet_hosts = sorted(fleet_hosts | {1, args.settings_hosts})
    capacity = loopback_sshd.LAST_ADDRESS - loopback_sshd.FIRST_ADDRESS + 1
    if min(args.fleet_hosts) < 1 or max(args.fleet_hosts) > capacity or len(args.fleet_hosts) < 2:
        parser.error(f"--fleet-hosts and --settings-hosts: at least two sizes, each 1 to {capacity} "
                     "(one loopback sshd per host)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.markdown:
        try:
            print(fleet_markdown(json.loads(args.markdown.read_text(encoding="utf-8"))))
        except (OSError, ValueError, KeyError) as err:
            print(f"bench: {args.markdown}: not the results of a fleet run ({type(err).__name__}: {err}); "
                  "give a bench/results/*.json written by bench/run or bench/run --fleet-only", file=sys.stderr)
            return 1
        return 0
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
    need_mb = (4 * max(args.fleet_hosts) * args.sizes[0] if args.fleet_only else 8 * max(args.sizes)) + 500
    if free_mb < need_mb:
        print(f"bench: {work} has {free_mb:.0f} MB free; this run needs about {need_mb} MB", file=sys.stderr)
        shutil.rmtree(work)
        return 1
    started = datetime.now(timezone.utc)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    fleets: list[Fleet] = []
    results = {"started": started.isoformat(timespec="seconds"), "quick": args.quick, "repeat": args.repeat,
               "command": "bench/run " + " ".join(sys.argv[1:] if argv is None else argv),
               "machine": machine_info(work), "sizes": []}
    if args.fleet_only:
        log(f"work dir {work}; large fleet only: {args.fleet_hosts} hosts over ssh; {args.repeat} round(s) each")
    else:
        log(f"work dir {work}; sizes {args.sizes} MB; scaling {args.hosts} hosts; "
            f"{'' if args.quick else f'fleet {args.fleet_hosts} hosts over ssh; '}{args.repeat} round(s) each")
    try:
        if not args.fleet_only:
            script = ddl_script()
            for mb in args.sizes:
                result, fleet = bench_size(mb, work, args.repeat, script, fleets)
                results["sizes"].append(result)
                if mb == args.sizes[-1]:
                    results["rss"] = module_rss(fleet.refs[fleet.names[0]], fleet, work)
                fleet.destroy()
                fleets.remove(fleet)
            results["scaling"] = bench_scaling(args.sizes[0], args.hosts, work, args.repeat, fleets)
        if not args.quick:
            results["fleet"] = bench_fleet(args.sizes[0], args.fleet_hosts, args.settings_hosts, work, args.repeat,
                                           fleets, mitogen=not args.no_mitogen)
    except (BenchError, loopback_sshd.SshdError) as err:
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
    results["targets"] = evaluate(results, args.quick) if results["sizes"] else []
    text = "\n".join(part for part in (table(results) if results["sizes"] else "",
                                       fleet_table(results["fleet"]) if "fleet" in results else "") if part)
    machine = results["machine"]
    print(f"\nmachine: {machine['cpu_model']}, nproc {machine['nproc']}, {machine['mem_gb']} GB RAM, disk {machine['disk']}; "
          f"sqlite {machine['sqlite3_cli']}; {machine['ansible']}; commit {machine['commit']}; load average at start "
          f"{machine['loadavg_start'][0]:.2f}, at end {machine['loadavg_end'][0]:.2f}")
    print(text)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    out = args.results_dir / f"{stamp}{'-quick' if args.quick else '-fleet' if args.fleet_only else ''}.json"
    out.write_text(json.dumps({**results, "table": text}, indent=2) + "\n", encoding="utf-8")
    missed = sum(not t["ok"] for t in results["targets"])
    written = out.relative_to(ROOT) if out.is_relative_to(ROOT) else out
    print(f"\nwritten {written}; {len(results['targets']) - missed} target(s) PASS, {missed} MISS "
          f"(a MISS does not fail the bench)")
    if "fleet" in results:
        print(f"README \"Large fleets\" tables: bench/run --markdown {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
