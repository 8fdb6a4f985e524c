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
                           [--seed-layout [--user riskmgr] [--daemon-python /usr/bin/python3]]
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

--seed-layout: hosts laid out as DB-SCHEMA-006 describes them (tools/fleet_seed.py): the risk manager
in its own directory, ./scripts/start_daemon.sh and ./scripts/stop_daemon.sh run from it as --user
(a non-root user that must exist), no releases; run as root, under a --root other users can reach.

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
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

TOOLS = Path(__file__).resolve().parent
STANDIN = TOOLS / "riskmgr_standin.py"
SMOKE = TOOLS / "riskmgr_smoke.py"
sys.path.insert(0, str(TOOLS))
# The fleet's files, daemons and status live beside this file, one concern each; their names are
# re-exported here, where the tests, the bench and Molecule have always found them.
from fleet_daemons import is_alive, read_pid, start_daemon, stop_daemon, wait_for_exit  # noqa: E402,F401
from fleet_files import FLEET_FILE, INVENTORY_FILE, FleetError, read_fleet, write_fleet  # noqa: E402,F401
from fleet_seed import (DAEMON_PYTHON, SEED_USER, check_reachable, lay_out_seed_host, own_seed_files,  # noqa: E402
                        seed_account, seed_host_vars)
from fleet_status import status, status_lines  # noqa: E402,F401
from make_state_db import build_v1_db  # noqa: E402
from riskmgr_standin import FAULT_LINE, FAULTS_FILE, RELEASE_FILE  # noqa: E402
from v1_shapes import shape_for  # noqa: E402

PROCESS_MATCH = "riskmgr_standin"  # the stand-in run from tools/ (--no-releases)
RELEASES = ("1", "2")
RELEASE_LINK = "current"
RELEASE_DAEMON = Path("bin") / "riskmgr_daemon.py"  # inside a release directory
RELEASE_SMOKE = Path("scripts") / "smoke_tests.py"
SMOKE_TIMEOUT_S = 30
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
           release_faults: list[str] | None = None, seed_user: str | None = None,
           daemon_python: str = DAEMON_PYTHON) -> dict:
    """seed_user: hosts laid out as the seed describes, their daemon run by that user (fleet_seed.py)."""
    names = host_names(prefix, count)
    if seed_user is not None:
        seed_account(seed_user)
        if refuse_version is not None or release_faults:
            raise FleetError("--seed-layout has no releases and no refusing daemon: drop --refuse-version and "
                             "--release-fault")
        releases = False
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
    if seed_user is not None:
        root.chmod(0o755)
        check_reachable(root)
    # "hosts" holds exactly the inventory variables (Molecule compares them with its own).
    fleet = {"group": group, "group_vars": dict(GROUP_VARS), "hosts": {}, "shapes": shapes}
    for number, name in enumerate(names):
        host_dir = root / name
        rate = interval_ms or INTERVALS_MS[number % len(INTERVALS_MS)]
        if seed_user is not None:
            lay_out_seed_host(host_dir, TOOLS, rate, daemon_python)
            fleet["hosts"][name] = seed_host_vars(host_dir, python, seed_user, daemon_python,
                                                  {**COMMON_VARS, **({"riskmgr_track_unrealized_pnl": True}
                                                                     if track_pnl else {})})
            continue
        for sub in ("data", "logs", "run"):
            (host_dir / sub).mkdir(parents=True, mode=0o755)
        if releases:
            lay_out_releases(host_dir, faults.get(name, []))
        argv = standin_argv(host_dir, rate, refuse_version if name == refuse_host else None, python, releases)
        fleet["hosts"][name] = host_vars(host_dir, argv, track_pnl, python, releases)
    build_databases([root / name / "data" / "state.db" for name in names], rows, target_mb,
                    [shapes[name] for name in names])
    if seed_user is not None:
        for name in names:
            own_seed_files(root / name, seed_user)
    # Written before the daemons start, so that a failed start can still be cleaned up by destroy.
    write_fleet(root, fleet)
    for name, variables in fleet["hosts"].items():
        start_daemon(name, variables)
    return fleet


# --- daemons ------------------------------------------------------------------------------------

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
            sub.add_argument("--seed-layout", action="store_true",
                             help="hosts laid out as DB-SCHEMA-006 describes: ./scripts/start_daemon.sh and "
                                  "./scripts/stop_daemon.sh run from the host's directory as --user, no releases")
            sub.add_argument("--user", default=SEED_USER, help=f"the daemon's user with --seed-layout (default {SEED_USER})")
            sub.add_argument("--daemon-python", default=DAEMON_PYTHON,
                             help=f"the daemon's interpreter with --seed-layout (default {DAEMON_PYTHON})")
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
                           args.python, args.releases, args.release_fault,
                           args.user if args.seed_layout else None, args.daemon_python)
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
