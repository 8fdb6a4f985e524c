"""The large-fleet model: the controller's and the hosts' costs fitted from the runs (FleetCosts),
Ansible's split of a fleet into serial batches, and project_wall(), the wall time of a run on any
number of hosts, on one controller or on AWX execution nodes (docs/awx-and-large-fleets.md).
Pure functions: tests/unit/test_bench_fleet.py checks them without running anything."""
from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass

from bench_common import summary

DEFAULT_SERIAL = [1, "25%", "100%"]  # playbooks/migrate_v2.yml's riskmgr_serial default


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
    """Projected wall seconds of one run on `hosts` hosts (docs/awx-and-large-fleets.md explains the model).

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
