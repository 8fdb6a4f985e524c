#!/usr/bin/env python3
"""A fleet of local "hosts" for the demo, Molecule and the fault-injection tests.

Each host is a directory on this machine with a realistic v1 state.db and a running stand-in
daemon (tools/riskmgr_standin.py), reached by Ansible with `ansible_connection: local`:

    ROOT/
      inventory.yml            hosts and their riskmgr_* variables (ansible-playbook -i ROOT/inventory.yml)
      fleet.json               the same, for this tool and for tests (stop/status/destroy read it),
                               and the v1 shape of each host's database ("shapes")
      <prefix>-1/
        data/state.db          v1, WAL (data/backups/ is left for the playbook to create)
        logs/daemon.log
        run/riskmgr.pid
        releases/1/            the daemon's code, release 1 (v1): RELEASE ("1"),
                               bin/riskmgr_daemon.py (tools/riskmgr_standin.py), scripts/smoke_tests.py
                               (tools/riskmgr_smoke.py)
        releases/2/            the same, release 2 (v2), and FAULTS when --release-fault names the host
        current -> <prefix>-1/releases/1   (absolute) the start command and the smoke command go through it

Commands:

    local_fleet.py create  --root DIR --hosts N [--rows R | --target-mb M] [--prefix local] [--group demo]
                           [--refuse-version V --refuse-host NAME] [--track-pnl] [--interval-ms MS]
                           [--shape reference | random:SEED | mixed:SEED] [--python PATH]
                           [--no-releases | --release-fault HOST=FAULT ...]
    local_fleet.py start   --root DIR     start every daemon that is not running (same command as create)
    local_fleet.py stop    --root DIR     SIGTERM every daemon by its pidfile and wait (SIGKILL after 10 s)
    local_fleet.py destroy --root DIR     stop, then remove DIR (only a directory this tool created)
    local_fleet.py status  --root DIR [--json]   per host: daemon pid/alive, schema version, row counts,
                                                 the release `current` names and the one the daemon logged

Releases (the default): each host's daemon runs from `current`, which names releases/1; switching
the link and restarting runs the other release (what the playbooks do with the schema). The hosts
get riskmgr_release_link, riskmgr_release_v1_path, riskmgr_release_v2_path, riskmgr_smoke_command
and riskmgr_smoke_timeout, and riskmgr_process_match is the daemon's path through the link (unique
per host, the same whichever release runs). --release-fault HOST=FAULT writes FAULT (refuse-start,
smoke-fails, error-after=SECONDS, exit-after=SECONDS; see tools/riskmgr_standin.py) into that
host's releases/2/FAULTS. --no-releases: the stand-in runs from tools/, no release variables.
The group's vars set the watch window short (riskmgr_canary_watch_seconds 5, riskmgr_watch_seconds
0): override them with -e.

--shape is the v1 schema of the databases (tools/v1_shapes.py): `reference` (the default,
000_baseline.sql), `random:SEED` (the same random shape on every host), or `mixed:SEED` (host 1
the reference, host i `random:SEED+i`: a fleet whose hosts differ, as real ones do).

Python 3 standard library only. Paths may contain spaces: the start command is quoted with
shlex, which is how riskmgr_daemon splits it again.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import closing
from pathlib import Path

TOOLS = Path(__file__).resolve().parent
STANDIN = TOOLS / "riskmgr_standin.py"
SMOKE = TOOLS / "riskmgr_smoke.py"
sys.path.insert(0, str(TOOLS))
from make_state_db import build_v1_db  # noqa: E402  (sibling tools, found through sys.path)
from riskmgr_standin import (FAULT_LINE, FAULTS_FILE, PROCESS_NAMES, RELEASE_FILE,  # noqa: E402
                             StandinError, column_names, quote_identifier, schema_version, table_named)
from v1_shapes import shape_for  # noqa: E402

FLEET_FILE = "fleet.json"
INVENTORY_FILE = "inventory.yml"
PROCESS_MATCH = "riskmgr_standin"  # the stand-in run from tools/ (--no-releases)
RELEASES = ("1", "2")
RELEASE_LINK = "current"
RELEASE_DAEMON = Path("bin") / "riskmgr_daemon.py"  # inside a release directory
RELEASE_SMOKE = Path("scripts") / "smoke_tests.py"
RELEASE_LOG_LINE = re.compile(r"^\S+ INFO riskmgr release (\S+) starting from .*$", re.MULTILINE)
SMOKE_TIMEOUT_S = 30
STOP_TIMEOUT_S = 10.0
POLL_S = 0.05
INTERVALS_MS = (20, 30, 40, 50)  # the daemons write at different rates, like real ones
# Values the playbooks need for a command-managed daemon on a local host.
COMMON_VARS = {
    "riskmgr_service_manager": "command",
    "riskmgr_process_match": PROCESS_MATCH,
    "riskmgr_start_settle": 0.5,
    "riskmgr_stop_timeout": 10,
    "riskmgr_start_timeout": 15,
    "riskmgr_require_confirmation": True,
}
# The group's vars: a short canary watch, no watch for later batches (tests and the demo wait less).
GROUP_VARS = {
    "riskmgr_canary_watch_seconds": 5,
    "riskmgr_watch_seconds": 0,
}


class FleetError(Exception):
    """An operator-ready message; main() prints it and exits 1."""


# --- create -------------------------------------------------------------------------------------

def host_names(prefix: str, count: int) -> list[str]:
    return [f"{prefix}-{number}" for number in range(1, count + 1)]


def daemon_program(host_dir: Path, releases: bool) -> Path:
    """The program the start command runs: through the host's link, or the stand-in in tools/."""
    return host_dir / RELEASE_LINK / RELEASE_DAEMON if releases else STANDIN


def standin_argv(host_dir: Path, interval_ms: int, refuse_version: int | None, python: str,
                 releases: bool) -> list[str]:
    argv = [python, str(daemon_program(host_dir, releases)), "--db", str(host_dir / "data" / "state.db"),
            "--pidfile", str(host_dir / "run" / "riskmgr.pid"), "--log", str(host_dir / "logs" / "daemon.log"),
            "--interval-ms", str(interval_ms)]
    if refuse_version is not None:
        argv += ["--refuse-version", str(refuse_version)]
    return argv


def host_vars(host_dir: Path, argv: list[str], track_pnl: bool, python: str, releases: bool) -> dict:
    """The inventory variables of one host: its paths, how to start and stop its daemon, its releases."""
    data = host_dir / "data"
    variables = {
        "ansible_connection": "local",
        # Named, not discovered: discovery could pick a python3.X shim that does not run.
        "ansible_python_interpreter": python,
        "riskmgr_db_path": str(data / "state.db"),
        "riskmgr_backup_dir": str(data / "backups"),
        "riskmgr_start_command": shlex.join(argv),
        "riskmgr_pidfile": str(host_dir / "run" / "riskmgr.pid"),
        "riskmgr_log_path": str(host_dir / "logs" / "daemon.log"),
        **COMMON_VARS,
    }
    if track_pnl:
        variables["riskmgr_track_unrealized_pnl"] = True
    if releases:
        variables.update({
            # A path, not a name: unique per host, and the same whichever release the link names.
            "riskmgr_process_match": str(daemon_program(host_dir, releases)),
            "riskmgr_release_link": str(host_dir / RELEASE_LINK),
            "riskmgr_release_v1_path": str(host_dir / "releases" / "1"),
            "riskmgr_release_v2_path": str(host_dir / "releases" / "2"),
            "riskmgr_smoke_command": [python, str(host_dir / RELEASE_LINK / RELEASE_SMOKE),
                                      "--db", variables["riskmgr_db_path"], "--pidfile", variables["riskmgr_pidfile"]],
            "riskmgr_smoke_timeout": SMOKE_TIMEOUT_S,
        })
    return variables


def lay_out_releases(host_dir: Path, faults: list[str]) -> None:
    """releases/1 and releases/2, each a copy of the stand-in and its smoke test; current -> releases/1."""
    for release in RELEASES:
        release_dir = host_dir / "releases" / release
        for sub in (RELEASE_DAEMON.parent, RELEASE_SMOKE.parent):
            (release_dir / sub).mkdir(parents=True, mode=0o755)
        (release_dir / RELEASE_FILE).write_text(f"{release}\n", encoding="utf-8")
        for source, copy in ((STANDIN, RELEASE_DAEMON), (SMOKE, RELEASE_SMOKE)):
            shutil.copyfile(source, release_dir / copy)
            (release_dir / copy).chmod(0o755)
    if faults:
        (host_dir / "releases" / "2" / FAULTS_FILE).write_text("".join(f"{fault}\n" for fault in faults),
                                                              encoding="utf-8")
    # Absolute, as ansistrano makes it: the link means the same from any directory.
    os.symlink(host_dir / "releases" / "1", host_dir / RELEASE_LINK)


def point_release(variables: dict, release: str) -> None:
    """Point a host's link at one of its releases (a new link, then rename); a host without
    releases is left as it is. What a reset to v1 needs: release 2 refuses a v1 database."""
    link = variables.get("riskmgr_release_link")
    if not link:
        return
    staged = f"{link}.new"
    if os.path.lexists(staged):
        os.unlink(staged)
    os.symlink(variables[f"riskmgr_release_v{release}_path"], staged)
    os.replace(staged, link)


def parse_release_faults(specs: list[str], names: list[str]) -> dict[str, list[str]]:
    """--release-fault HOST=FAULT, repeatable: host -> the lines of its releases/2/FAULTS."""
    faults: dict[str, list[str]] = {}
    for spec in specs:
        host, _, fault = spec.partition("=")
        if host not in names:
            raise FleetError(f"--release-fault {spec}: {host!r} is not one of this fleet's hosts ({', '.join(names)}); "
                             "give HOST=FAULT")
        if not FAULT_LINE.fullmatch(fault):
            raise FleetError(f"--release-fault {spec}: {fault!r} is not a fault; use refuse-start, smoke-fails, "
                             "error-after=SECONDS or exit-after=SECONDS")
        faults.setdefault(host, []).append(fault)
    return faults


def host_shapes(shape: str, names: list[str]) -> dict[str, str]:
    """The v1 shape of each host's database, from --shape (see the module doc)."""
    mixed = re.fullmatch(r"mixed:(-?\d+)", shape)
    if mixed:
        seed = int(mixed.group(1))
        return {name: "reference" if number == 1 else f"random:{seed + number}"
                for number, name in enumerate(names, start=1)}
    try:
        shape_for(shape)
    except ValueError:
        raise FleetError(f"--shape {shape!r}: use reference, random:<integer seed>, or mixed:<integer seed> "
                         f"(a different shape per host)") from None
    return {name: shape for name in names}


def build_database(path: str, rows: int, target_mb: float | None, seed: int, shape: str) -> str:
    build_v1_db(path, rows=rows, journal="wal", seed=seed, target_mb=target_mb, shape=shape)
    return path


def build_databases(paths: list[Path], rows: int, target_mb: float | None, shapes: list[str]) -> None:
    """One database per host, built in parallel: a 30 MB database takes a few seconds."""
    if len(paths) == 1:
        build_database(str(paths[0]), rows, target_mb, 7, shapes[0])
        return
    with ProcessPoolExecutor(max_workers=min(len(paths), os.cpu_count() or 1)) as pool:
        jobs = [pool.submit(build_database, str(path), rows, target_mb, 7 + number, shape)
                for number, (path, shape) in enumerate(zip(paths, shapes))]
        for job in jobs:
            job.result()


def create(root: Path, count: int, rows: int, target_mb: float | None, prefix: str, group: str,
           refuse_version: int | None, refuse_host: str | None, track_pnl: bool, interval_ms: int | None,
           shape: str = "reference", python: str = sys.executable, releases: bool = True,
           release_faults: list[str] | None = None) -> dict:
    names = host_names(prefix, count)
    shapes = host_shapes(shape, names)
    if release_faults and not releases:
        raise FleetError("--release-fault needs the releases (drop --no-releases)")
    faults = parse_release_faults(release_faults or [], names)
    found = shutil.which(python)
    if found is None:
        raise FleetError(f"--python {python}: not an executable interpreter; give the path of a Python 3.8+ "
                         "(tools/target_pythons.py makes them)")
    python = os.path.abspath(found)  # the inventory is used from any directory
    if (refuse_version is None) != (refuse_host is None):
        raise FleetError("--refuse-version and --refuse-host go together: name the host whose daemon refuses")
    if refuse_host is not None and refuse_host not in names:
        raise FleetError(f"--refuse-host {refuse_host}: not one of this fleet's hosts ({', '.join(names)})")
    if root.exists() and any(root.iterdir()):
        raise FleetError(f"{root}: exists and is not empty; run `local_fleet.py destroy --root {root}` first")
    root.mkdir(parents=True, exist_ok=True)
    # "hosts" holds exactly the inventory variables (Molecule compares them with its own).
    fleet = {"group": group, "group_vars": dict(GROUP_VARS), "hosts": {}, "shapes": shapes}
    for number, name in enumerate(names):
        host_dir = root / name
        for sub in ("data", "logs", "run"):
            (host_dir / sub).mkdir(parents=True, mode=0o755)
        if releases:
            lay_out_releases(host_dir, faults.get(name, []))
        rate = interval_ms or INTERVALS_MS[number % len(INTERVALS_MS)]
        argv = standin_argv(host_dir, rate, refuse_version if name == refuse_host else None, python, releases)
        fleet["hosts"][name] = host_vars(host_dir, argv, track_pnl, python, releases)
    build_databases([root / name / "data" / "state.db" for name in names], rows, target_mb,
                    [shapes[name] for name in names])
    # Written before the daemons start, so that a failed start can still be cleaned up by destroy.
    write_fleet(root, fleet)
    for name, variables in fleet["hosts"].items():
        start_daemon(name, variables)
    return fleet


def yaml_scalar(value) -> str:
    """A YAML scalar: JSON's string, number and boolean forms are all valid YAML."""
    return json.dumps(value)


def yaml_key(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z][A-Za-z0-9_.-]*", name) else json.dumps(name)


def inventory_text(fleet: dict, root: Path) -> str:
    lines = [
        "---",
        f"# Written by tools/local_fleet.py create --root {root}; every host is a directory of this",
        "# machine with its own state.db and stand-in daemon. Use: ansible-playbook -i <this file> ...",
        "all:",
        "  children:",
        f"    {yaml_key(fleet['group'])}:",
    ]
    group_vars = fleet.get("group_vars", {})  # fleets written before group vars existed have none
    if group_vars:
        lines.append("      vars:")
        lines += [f"        {key}: {yaml_scalar(value)}" for key, value in group_vars.items()]
    lines.append("      hosts:")
    for name, variables in fleet["hosts"].items():
        lines.append(f"        {yaml_key(name)}:")
        lines += [f"          {key}: {yaml_scalar(value)}" for key, value in variables.items()]
    return "\n".join(lines) + "\n"


def write_fleet(root: Path, fleet: dict) -> None:
    for name, text in ((FLEET_FILE, json.dumps(fleet, indent=2) + "\n"), (INVENTORY_FILE, inventory_text(fleet, root))):
        temp = root / f".{name}.tmp"
        temp.write_text(text, encoding="utf-8")
        os.replace(temp, root / name)


def read_fleet(root: Path) -> dict:
    try:
        return json.loads((root / FLEET_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FleetError(f"{root}: no {FLEET_FILE}; not a fleet made by `local_fleet.py create`") from None


# --- daemons ------------------------------------------------------------------------------------

def read_pid(pidfile: str) -> int | None:
    try:
        text = Path(pidfile).read_text(encoding="ascii", errors="replace").strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def is_alive(pid: int | None) -> bool:
    """A live (not zombie) process whose command line names the stand-in: a pid can be reused."""
    if pid is None:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X") and any(name.encode() in cmdline for name in PROCESS_NAMES)


def start_daemon(name: str, variables: dict) -> int:
    """Run the host's start command (it returns once the pidfile names the daemon); its pid."""
    pid = read_pid(variables["riskmgr_pidfile"])
    if is_alive(pid):
        return pid
    # Not a shell: the command is the same string riskmgr_daemon splits with shlex.
    launched = subprocess.run(shlex.split(variables["riskmgr_start_command"]), stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=30, check=False)
    pid = read_pid(variables["riskmgr_pidfile"])
    if launched.returncode != 0 or not is_alive(pid):
        raise FleetError(f"{name}: the stand-in daemon did not start (exit {launched.returncode}: "
                         f"{launched.stderr.strip() or 'no output'}); see {variables['riskmgr_log_path']}")
    return pid


def stop_daemon(name: str, variables: dict, timeout: float = STOP_TIMEOUT_S) -> str:
    """SIGTERM the daemon named by the pidfile and wait for it; SIGKILL one that ignores it."""
    pid = read_pid(variables["riskmgr_pidfile"])
    if not is_alive(pid):
        return f"{name}: not running"
    os.kill(pid, signal.SIGTERM)
    if wait_for_exit(pid, timeout):
        return f"{name}: stopped pid {pid}"
    os.kill(pid, signal.SIGKILL)  # a fault-injection daemon (--ignore-sigterm) must not outlive the fleet
    wait_for_exit(pid, timeout)
    return f"{name}: pid {pid} ignored SIGTERM for {timeout:g}s and was killed"


def wait_for_exit(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while is_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_S)
    return True


def stop(root: Path) -> list[str]:
    fleet = read_fleet(root)
    return [stop_daemon(name, variables) for name, variables in fleet["hosts"].items()]


def start(root: Path) -> list[str]:
    fleet = read_fleet(root)
    return [f"{name}: running as pid {start_daemon(name, variables)}" for name, variables in fleet["hosts"].items()]


def destroy(root: Path) -> list[str]:
    if not root.exists():
        return [f"{root}: nothing to destroy"]
    if not (root / FLEET_FILE).is_file():
        # Never rm -r a directory this tool did not make (a mistyped --root).
        raise FleetError(f"{root}: has no {FLEET_FILE}; refusing to remove a directory local_fleet.py did not create")
    lines = stop(root)
    shutil.rmtree(root)
    return lines + [f"{root}: removed"]


# --- status -------------------------------------------------------------------------------------

def database_facts(path: str) -> dict:
    """Schema version and row counts, read-only: what the daemon would see."""
    if not Path(path).is_file():
        return {"exists": False}
    uri = Path(path).as_uri() + "?mode=ro"
    with closing(sqlite3.connect(uri, uri=True, timeout=5)) as conn:
        tables = [row[0] for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
        try:
            version = schema_version(conn)  # the daemon's own reading, for a schema_version of any shape
        except StandinError as err:
            raise FleetError(f"{path}: {err}") from None
        counts = {table: conn.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0] for table in tables}
        timed = timed_rows(conn)
        indexes = conn.execute("SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' "
                               "AND name NOT LIKE 'sqlite_%'").fetchone()[0]
    size = Path(path).stat().st_size + (Path(f"{path}-wal").stat().st_size if Path(f"{path}-wal").exists() else 0)
    return {"exists": True, "version": version, "size": size, "indexes": indexes, "row_counts": counts,
            "rows_with_execution_time": timed}


def timed_rows(conn: sqlite3.Connection) -> int:
    """enforcement_log rows whose execution_time_ms is set (> 0): what a release 2 daemon writes."""
    table = table_named(conn, "enforcement_log")
    column = column_names(conn, table).get("execution_time_ms") if table else None
    if column is None:
        return 0
    return conn.execute(f"SELECT COUNT(*) FROM {quote_identifier(table)} "
                        f"WHERE {quote_identifier(column)} > 0").fetchone()[0]


def link_facts(variables: dict) -> dict:
    """The host's link, its target, and the release it names: "1", "2", or the target when it is neither."""
    link = variables.get("riskmgr_release_link")
    if link is None:
        return {"link": None, "link_target": None, "release": None}
    try:
        target = os.readlink(link)
    except OSError as err:
        return {"link": link, "link_target": None, "release": f"({link}: {err.strerror})"}
    releases = {variables["riskmgr_release_v1_path"]: "1", variables["riskmgr_release_v2_path"]: "2"}
    named = releases.get(os.path.normpath(os.path.join(os.path.dirname(link), target)), target)
    return {"link": link, "link_target": target, "release": named}


def logged_release(log_path: str) -> tuple[str | None, str | None]:
    """(N, the whole line) of the last "riskmgr release N starting" line of the daemon's log."""
    try:
        text = Path(log_path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None, None
    found = list(RELEASE_LOG_LINE.finditer(text))
    return (found[-1].group(1), found[-1].group(0)) if found else (None, None)


def host_status(name: str, variables: dict, shape: str) -> dict:
    pid = read_pid(variables["riskmgr_pidfile"])
    logged, release_line = logged_release(variables["riskmgr_log_path"])
    db = Path(variables["riskmgr_db_path"])
    backup_dir = Path(variables["riskmgr_backup_dir"])
    backups = sorted(p.name for p in backup_dir.glob("*.db")) if backup_dir.is_dir() else []
    kept = sorted(p.name for p in db.parent.glob(f"{db.name}.*_*") if not re.search(r"-(wal|shm)$", p.name))
    return {"host": name, "pid": pid, "alive": is_alive(pid), "db": str(db), "shape": shape, "backups": backups,
            "kept": kept, **link_facts(variables), "logged_release": logged, "release_line": release_line,
            **database_facts(str(db))}


def status(root: Path) -> list[dict]:
    fleet = read_fleet(root)
    shapes = fleet.get("shapes", {})  # fleets created before shapes existed are all reference
    return [host_status(name, variables, shapes.get(name, "reference")) for name, variables in fleet["hosts"].items()]


def status_lines(report: list[dict]) -> list[str]:
    lines = []
    for host in report:
        daemon = f"pid {host['pid']} alive" if host["alive"] else f"DOWN (pidfile: {host['pid'] or 'none'})"
        if not host["exists"]:
            lines.append(f"{host['host']}: daemon {daemon}; {host['db']} is missing")
            continue
        lines.append(f"{host['host']}: daemon {daemon}; schema v{host['version']}; shape {host['shape']}; "
                     f"{host['size'] / 1048576:.1f} MB; "
                     f"{host['indexes']} indexes; backups {len(host['backups'])}"
                     + (f"; kept {', '.join(host['kept'])}" if host["kept"] else ""))
        lines.append("    rows: " + ", ".join(f"{table} {count}" for table, count in host["row_counts"].items()))
        if host["link"]:
            lines.append(f"    release {host['release']}: {Path(host['link']).name} -> {host['link_target']}; "
                         f"daemon log: {host['release_line'] or 'no release line yet'}")
    return lines


# --- command line -------------------------------------------------------------------------------

def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for command in ("create", "start", "stop", "destroy", "status"):
        sub = commands.add_parser(command)
        sub.add_argument("--root", required=True, type=Path, help="the fleet's directory")
        if command == "status":
            sub.add_argument("--json", action="store_true", help="machine-readable, for tests")
        if command == "create":
            sub.add_argument("--hosts", type=int, required=True, help="number of hosts")
            size = sub.add_mutually_exclusive_group()
            size.add_argument("--rows", type=int, default=2000, help="rows per large table (default 2000)")
            size.add_argument("--target-mb", type=float, help="grow each database to about this size instead")
            sub.add_argument("--prefix", default="local", help="host names are PREFIX-1..N (default local)")
            sub.add_argument("--group", default="demo", help="inventory group of the hosts (default demo)")
            sub.add_argument("--refuse-version", type=int, help="this schema version makes --refuse-host's daemon exit")
            sub.add_argument("--refuse-host", help="the host whose daemon refuses --refuse-version")
            sub.add_argument("--track-pnl", action="store_true", help="set riskmgr_track_unrealized_pnl: true")
            sub.add_argument("--interval-ms", type=int, help="one row per this many ms on every host "
                                                             "(default 20-50, different per host)")
            sub.add_argument("--shape", default="reference",
                             help="v1 schema of the databases: reference (default), random:SEED, or mixed:SEED "
                                  "(host 1 reference, host i random:SEED+i)")
            sub.add_argument("--python", default=sys.executable,
                             help="the hosts' ansible_python_interpreter and their daemons' interpreter "
                                  "(default: the one running this tool)")
            sub.add_argument("--no-releases", dest="releases", action="store_false",
                             help="no releases/ and link: the daemon runs from tools/ (the layout before releases)")
            sub.add_argument("--release-fault", action="append", default=[], metavar="HOST=FAULT",
                             help="write FAULT into HOST's releases/2/FAULTS: refuse-start, smoke-fails, "
                                  "error-after=SECONDS or exit-after=SECONDS (repeatable)")
    args = parser.parse_args(argv)
    if args.command == "create" and args.hosts < 1:
        parser.error("--hosts must be at least 1")
    args.root = args.root.absolute()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.command == "create":
            fleet = create(args.root, args.hosts, args.rows, args.target_mb, args.prefix, args.group,
                           args.refuse_version, args.refuse_host, args.track_pnl, args.interval_ms, args.shape,
                           args.python, args.releases, args.release_fault)
            print(f"{args.root / INVENTORY_FILE}: {len(fleet['hosts'])} host(s) in group {fleet['group']}")
            print("\n".join(status_lines(status(args.root))))
        elif args.command == "status":
            report = status(args.root)
            print(json.dumps(report, indent=2) if args.json else "\n".join(status_lines(report)))
        else:
            print("\n".join({"start": start, "stop": stop, "destroy": destroy}[args.command](args.root)))
    except FleetError as err:
        print(f"local_fleet.py {args.command}: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
