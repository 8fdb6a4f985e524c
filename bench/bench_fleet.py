"""Large fleets over ssh: the controller's cost per upgraded and per unchanged host, the cost of
a serial batch, and the settings that matter (pipelining, ControlPersist, compression, forks,
facts, Mitogen), measured on a fleet reached over real ssh (bench/loopback_sshd.py)."""
from __future__ import annotations

import os
import re
import shutil
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from bench_common import (GATHER_FACTS, ONE_TASK, PLAYBOOK, ROOT, BenchError, Fleet, PlaybookRun, local_fleet, log,
                          loopback_sshd, playbook, run)
from fleet_model import (DEFAULT_SERIAL, fit_line, fleet_costs, medians, model_check, projection_table,
                         serial_choices_table)

FLEET_HOSTS, SETTINGS_HOSTS = [1, 4, 8, 16], 8  # the ssh fleet's sizes, and the size the settings are measured on
FLEET_INTERVAL_MS = 200    # the ssh fleet's daemons: see bench_fleet

RECAP_RE = re.compile(r"^(?P<host>\S+)\s+:\s+ok=(?P<ok>\d+)\s+changed=\d+\s+unreachable=\d+\s+failed=(?P<failed>\d+)"
                      r"\s+skipped=(?P<skipped>\d+)", re.MULTILINE)
SSH_PERSIST = "-o ControlMaster=auto -o ControlPersist=60s"  # ansible-core's own ssh_args, without -C
MITOGEN_VERSION = "0.3.54"  # the newest release; it drives ansible-core 2.19.14 here (docs/awx-and-large-fleets.md)


@dataclass(frozen=True)
class Setting:
    """One way of running the playbook over ssh; the baseline is what docs/awx-and-large-fleets.md recommends."""
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
    settings, all over ssh, in interleaved rounds; see docs/awx-and-large-fleets.md."""
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
