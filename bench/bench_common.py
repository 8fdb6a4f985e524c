"""What every part of the bench shares: running and timing commands, the machine, the local fleets
(tools/local_fleet.py) and one measured ansible-playbook run (PlaybookRun: its CPU split by where
the work ran). bench/bench.py is the entry point (bench/run)."""
from __future__ import annotations

import json
import os
import platform
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

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
    # added to the projections by hand (docs/awx-and-large-fleets.md).
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


def fmt(value, unit: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:.2f}{unit}" if isinstance(value, float) else f"{value}{unit}"
