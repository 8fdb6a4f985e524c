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

then, on the largest size, the same offline downtime on an XFS loop mount with reflink=1 made as root
(bench_reflink; skipped with the reason where it cannot be made, and not with --quick), against the
v2 DDL alone on the same file: there the backup is a reflink and the DDL is the floor. Then fleet
scaling (1..N hosts of the smallest size, one batch, forks = hosts), the peak RSS of
every module process on the largest database (each module run by `ansible localhost -M library`
with an interpreter wrapped in /usr/bin/time), and large fleets (bench_fleet; not with --quick):
a fleet of 1..16 hosts of the smallest size reached over real ssh (bench/loopback_sshd.py), the
controller's CPU-seconds per upgraded and per unchanged host apart from the hosts' own, the cost
of a serial batch, the settings that matter (pipelining, ControlPersist, compression, forks,
facts, Mitogen) against the recommended baseline, and project_wall(): the wall time of 100 to
5,000 hosts on one controller or on AWX execution nodes. Repetitions are interleaved and reported
as medians, each with its ratio to the floor (or the baseline) measured in the same run, because
the machine may be busy with other work. Prints a table with PASS/MISS per target and writes the
same as JSON under bench/results/ (`--markdown FILE` rewrites the tables of docs/benchmarks.md
from one). A MISS never fails the run; an error (a failed playbook, a wrong outcome) does.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from bench_common import ROOT, TIME_BIN, BenchError, Fleet, log, loopback_sshd, machine_info
from bench_fleet import FLEET_HOSTS, SETTINGS_HOSTS, bench_fleet
from bench_reflink import bench_reflink, reflink_table, reflink_target
from bench_report import DOCS, evaluate, fleet_table, table, verdict, write_markdown
from bench_sizes import bench_scaling, bench_size, ddl_script, module_rss
from bench_targets import fleet_targets

FULL_SIZES, QUICK_HOSTS, FULL_HOSTS = [10, 100, 600], [1, 2], [1, 4, 8]


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
    parser.add_argument("--reflink-only", action="store_true",
                        help="only the offline downtime on an XFS (reflink=1) loop mount against the DDL alone, "
                             "on the largest --sizes (needs root)")
    parser.add_argument("--no-mitogen", action="store_true", help="do not make or measure the Mitogen venv")
    parser.add_argument("--no-fleet", action="store_true",
                        help="leave out the large fleet over ssh (its controller CPU and task-count targets are then "
                             "reported as not measured; bench/run --fleet-only measures them alone)")
    parser.add_argument("--markdown", type=Path, metavar="RESULTS_JSON",
                        help="rewrite the tables of docs/benchmarks.md (between its BEGIN/END markers) from a "
                             "results file of bench/run or bench/run --fleet-only, and exit")
    parser.add_argument("--docs", type=Path, default=DOCS, help=argparse.SUPPRESS)  # the tests' copy of the page
    args = parser.parse_args(argv)
    if args.quick and args.fleet_only:
        parser.error("--quick and --fleet-only do not go together: --quick never measures the fleet")
    if args.no_fleet and args.fleet_only:
        parser.error("--no-fleet and --fleet-only do not go together")
    if args.reflink_only and (args.quick or args.fleet_only):
        parser.error("--reflink-only goes with neither --quick nor --fleet-only")
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
            written = write_markdown(json.loads(args.markdown.read_text(encoding="utf-8")), args.docs)
        except (OSError, ValueError, KeyError, TypeError) as err:
            print(f"bench: --markdown {args.markdown}: {err if isinstance(err, ValueError) else repr(err)}; give a "
                  "bench/results/*.json written by bench/run or bench/run --fleet-only; nothing was written",
                  file=sys.stderr)
            return 1
        print(f"bench: {args.docs}: the {' and '.join(written)} tables rewritten from {args.markdown}")
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
    if not (args.quick or args.fleet_only):
        need_mb += 4 * max(args.sizes)  # the XFS image is sparse: what the reflink fleet and its copies fill
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
    if args.reflink_only:
        log(f"work dir {work}; reflink filesystem only: {args.sizes[-1]} MB; {args.repeat} round(s)")
    elif args.fleet_only:
        log(f"work dir {work}; large fleet only: {args.fleet_hosts} hosts over ssh; {args.repeat} round(s) each")
    else:
        log(f"work dir {work}; sizes {args.sizes} MB; scaling {args.hosts} hosts; "
            f"{'' if args.quick or args.no_fleet else f'fleet {args.fleet_hosts} hosts over ssh; '}{args.repeat} round(s) each")
    try:
        if args.reflink_only:
            results["reflink"] = bench_reflink(args.sizes[-1], work, args.repeat, ddl_script(), fleets)
        elif not args.fleet_only:
            script = ddl_script()
            largest_ref = work / "largest.v1.db"
            for mb in args.sizes:
                result, fleet = bench_size(mb, work, args.repeat, script, fleets)
                results["sizes"].append(result)
                if mb == args.sizes[-1]:
                    results["rss"] = module_rss(fleet.refs[fleet.names[0]], fleet, work)
                    shutil.copyfile(fleet.refs[fleet.names[0]], largest_ref)  # the reflink run's v1 file
                fleet.destroy()
                fleets.remove(fleet)
            if not args.quick:
                results["reflink"] = bench_reflink(args.sizes[-1], work, args.repeat, script, fleets, largest_ref)
            largest_ref.unlink()
            results["scaling"] = bench_scaling(args.sizes[0], args.hosts, work, args.repeat, fleets)
        if not (args.quick or args.reflink_only or args.no_fleet):
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
    if "reflink" in results:
        results["targets"].append(reflink_target(results["reflink"]))
    if "fleet" in results:
        results["targets"] += fleet_targets(results["fleet"])
    elif args.no_fleet:
        results["fleet_skipped"] = ("--no-fleet: the controller CPU-seconds and task counts per host were not measured "
                                    "in this run (bench/run --fleet-only measures them)")
    text = "\n".join(part for part in (reflink_table(results["reflink"]) if "reflink" in results else "",
                                       table(results) if results["sizes"] else "",
                                       fleet_table(results["fleet"]) if "fleet" in results else "") if part)
    if results["targets"] and not results["sizes"]:  # table() lists them otherwise
        text += "\n\ntargets\n" + "\n".join(f"  {verdict(t['ok'])}  {t['target']}: {t['measured']}"
                                              for t in results["targets"])
    machine = results["machine"]
    print(f"\nmachine: {machine['cpu_model']}, nproc {machine['nproc']}, {machine['mem_gb']} GB RAM, disk {machine['disk']}; "
          f"sqlite {machine['sqlite3_cli']}; {machine['ansible']}; commit {machine['commit']}; load average at start "
          f"{machine['loadavg_start'][0]:.2f}, at end {machine['loadavg_end'][0]:.2f}")
    print(text)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    kind = "-quick" if args.quick else "-fleet" if args.fleet_only else "-reflink" if args.reflink_only else ""
    out = args.results_dir / f"{stamp}{kind}.json"
    out.write_text(json.dumps({**results, "table": text}, indent=2) + "\n", encoding="utf-8")
    missed = sum(not t["ok"] for t in results["targets"])
    written = out.relative_to(ROOT) if out.is_relative_to(ROOT) else out
    print(f"\nwritten {written}; {len(results['targets']) - missed} target(s) PASS, {missed} MISS "
          f"(a MISS does not fail the bench)")
    if not args.quick:
        print(f"to put these figures in docs/benchmarks.md: bench/run --markdown {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
