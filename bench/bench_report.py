"""What a bench run prints and keeps: the targets (PASS/MISS), the per-size and large-fleet
tables, and the tables of docs/benchmarks.md: `bench/run --markdown RESULTS_JSON` rewrites the
sections between its BEGIN/END markers from a results file, so that no figure there is pasted."""
from __future__ import annotations

import json
import os

from pathlib import Path

from bench_common import ROOT, fmt, ratio, summary
from bench_fleet import BASELINE
from bench_reflink import reflink_table
from bench_targets import downtime_target, online_stall_target
from fleet_model import (PROJECTION_HOSTS, PROJECTION_SETUPS, FleetCosts, projection_table, serial_batches,
                         serial_choices_table)

# Targets from the issue: (key, text, limit).
TARGET_RERUN = 3.0         # re-run wall <= 3 x one-task playbook, and no daemon stopped
TARGET_SCALING = 2.5       # wall of the most hosts (forks = hosts) <= 2.5 x wall of 1 host
TARGET_RSS_MB = 100.0      # every module process's peak RSS < 100 MB on the largest DB

TARGET_ONLINE_DOWNTIME = 1.2  # online downtime <= 1.2 x a plain stop/start of the same daemon


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
    """docs/benchmarks.md's large-fleet tables from a results file (bench/run --markdown FILE)."""
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
    # the model shows in docs/benchmarks.md without measuring again.
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


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def evaluate(results: dict, quick: bool) -> list[dict]:
    targets = []
    sizes = results["sizes"]
    largest = sizes[-1]
    targets.append(downtime_target(largest, results.get("machine", {}).get("disk", "")))
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
    targets.append(online_stall_target(largest))
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
    cores = results.get("machine", {}).get("os_cpu_count") or os.cpu_count()  # the measuring machine's
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
            ("online: longest stall (gap - writer interval)", size.get("online_stall") or summary([]), None),
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
                          ("preflight_integrity", "stop", "backup", "backup_check", "backup_check_wait", "migrate",
                           "verify", "start")
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
                 f"with {cores} cores the wall time cannot be below cpu s / {cores}")
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
    if results.get("fleet_skipped"):
        lines.append(f"  (not measured: {results['fleet_skipped']})")
    return "\n".join(lines)


# --- docs/benchmarks.md ---------------------------------------------------------------------------

DOCS = ROOT / "docs" / "benchmarks.md"
SECTIONS = ("sizes", "reflink", "fleet")


def markers(name: str) -> tuple[str, str]:
    return f"<!-- BEGIN bench/run --markdown: {name} -->", f"<!-- END bench/run --markdown: {name} -->"


def sizes_markdown(results: dict) -> str:
    """The per-size, scaling, peak RSS and target tables of a full run, as bench/run prints them."""
    machine = results["machine"]
    head = (f"Measured {results['started'].replace('T', ' ').replace('+00:00', ' UTC')}, commit {machine['commit']}, "
            f"`{results['command']}` ({results['repeat']} interleaved rounds, medians): {machine['cpu_model']}, "
            f"{machine['nproc']} cores, {machine['mem_gb']} GB RAM, disk {machine['disk']}; Python {machine['python']}, "
            f"SQLite {machine['sqlite3_cli']}, {machine['ansible']}. Load average {machine['loadavg_start'][0]:.2f} at "
            f"the start, {machine['loadavg_end'][0]:.2f} at the end.")
    return f"{head}\n\n```\n{table(results).strip(chr(10))}\n```"


def reflink_markdown(results: dict) -> str:
    """The reflink filesystem's table (bench_reflink) with its target, from a full or --reflink-only run."""
    machine = results["machine"]
    head = (f"Measured {results['started'].replace('T', ' ').replace('+00:00', ' UTC')}, commit {machine['commit']}, "
            f"`{results['command']}` ({results['repeat']} interleaved rounds, medians) on {machine['cpu_model']}, "
            f"{machine['nproc']} cores; the XFS image a sparse file on {machine['disk']}.")
    target = next((t for t in results.get("targets", []) if "reflink filesystem" in t["target"]), None)
    line = f"\n  {verdict(target['ok'])}  {target['target']}: {target['measured']}" if target else ""
    return f"{head}\n\n```\n{reflink_table(results['reflink']).strip(chr(10))}\n{line}\n```"


def markdown_sections(results: dict) -> dict[str, str]:
    """The sections of docs/benchmarks.md a results file can refresh: a full run has all three, a
    --fleet-only run the fleet one, a --reflink-only run the reflink one. A --quick run is a smoke
    test, not figures for the docs."""
    if results.get("quick"):
        raise ValueError("the results of a --quick run (one size, one round) are not figures for the docs; "
                         "give those of bench/run or bench/run --fleet-only")
    sections = {}
    if results.get("sizes"):
        sections["sizes"] = sizes_markdown(results)
    if "reflink" in results:
        sections["reflink"] = reflink_markdown(results)
    if "fleet" in results:
        sections["fleet"] = fleet_markdown(results)
    if not sections:
        raise ValueError("it holds neither per-size nor large-fleet results (nor a reflink measurement)")
    return sections


def replace_sections(text: str, sections: dict[str, str], where: Path) -> str:
    """text with what lies between each section's BEGIN and END markers replaced; nothing else moves."""
    for name, body in sections.items():
        begin, end = markers(name)
        start, stop = text.find(begin), text.find(end)
        if start < 0 or stop < start:
            raise ValueError(f"{where}: no '{begin}' followed by '{end}'; put the pair back where the {name} "
                             "tables belong")
        text = f"{text[:start + len(begin)]}\n{body.strip(chr(10))}\n{text[stop:]}"
    return text


def write_markdown(results: dict, docs: Path = DOCS) -> list[str]:
    """Refresh docs (docs/benchmarks.md) from results: the names of the sections rewritten."""
    sections = markdown_sections(results)
    docs.write_text(replace_sections(docs.read_text(encoding="utf-8"), sections, docs), encoding="utf-8")
    return list(sections)

