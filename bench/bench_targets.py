"""The cost targets of issue 20, each as a ratio to its floor measured in the same run.

- offline downtime on the work directory's filesystem (ext4 here) <= 1.15 x (cp + the v2 DDL in one
  transaction), on 600 MB;
- offline downtime on a reflink filesystem <= 1.25 x the DDL alone (bench_reflink.reflink_target);
- online mode: the longest stall of the daemon committing every 20 ms <= 1.1 x the longest single
  migration transaction of the same run;
- the controller, when the large-fleet part ran: CPU-seconds per upgraded host <= 4 x a one-task
  playbook's, per unchanged host <= 1.5 x; tasks per upgraded host <= 8 run + 2 skipped, per
  unchanged host <= 2 (counted as the PLAY RECAP counts them).

A missed downtime target says where the time went (phases_seconds).
"""
from __future__ import annotations

from bench_common import WRITER_INTERVAL_MS, fmt, ratio

TARGET_DOWNTIME = 1.15     # offline downtime <= 1.15 x (cp + DDL) floor
TARGET_ONLINE_STALL = 1.1  # longest writer stall <= 1.1 x the longest migration transaction
TARGET_CPU_UPGRADE = 4.0   # controller CPU-s per upgraded host <= 4 x one-task playbook per host
TARGET_CPU_RERUN = 1.5     # ... per unchanged host <= 1.5 x
TARGET_TASKS = {"upgrade": 10, "rerun": 2}  # recap ok + failed + skipped per host (8 run + 2 skipped; 2 in all)
PHASES = ("stop", "backup", "backup_check", "backup_check_wait", "migrate", "verify", "start")


def where(phases: dict) -> str:
    """phases_seconds medians, in the order of the downtime (backup_check runs beside migrate)."""
    return ", ".join(f"{k} {fmt(phases[k]['median'])}" for k in PHASES if k in phases)


def note_for(mb: int) -> str:
    return "" if mb == 600 else " (the target is for 600 MB)"


def downtime_target(largest: dict, disk: str) -> dict:
    fs = disk.split("(", 1)[1].split(",", 1)[0] if "(" in disk else "the work directory's filesystem"
    mb = largest["size_mb_target"]
    r = ratio(largest["downtime"]["median"], largest["floor"]["median"])
    parts = largest["floor_parts"]
    measured = (f"{fmt(largest['downtime']['median'])} s = {fmt(r)}x floor ({fmt(largest['floor']['median'])} s: cp "
                f"{fmt(parts['cp']['median'])} + DDL {fmt(parts['ddl']['median'])}, median of "
                f"{largest['floor']['n']}); phases (s): {where(largest['phases_seconds'])}")
    return {"target": f"offline downtime on {fs} ({mb} MB) <= {TARGET_DOWNTIME}x (cp + DDL){note_for(mb)}",
            "measured": measured, "ok": r is not None and r <= TARGET_DOWNTIME, "ratio": r, "limit": TARGET_DOWNTIME}


def online_stall_target(largest: dict) -> dict:
    """Stall: the longest gap between the daemon's commits less its own interval, worst run; against
    the longest migration transaction of that same run."""
    mb = largest["size_mb_target"]
    runs = largest.get("online_runs") or []
    worst = max((r for r in runs if r.get("stall") is not None and r.get("longest_lock")),
                key=lambda r: r["stall"] / r["longest_lock"], default=None)
    trouble, lost = largest["online_writer_trouble"], largest["online_rows_lost"]
    r = ratio(worst["stall"], worst["longest_lock"]) if worst else None
    measured = (f"{fmt(worst['stall'])} s = {fmt(r)}x the longest transaction ({fmt(worst['longest_lock'])} s), worst "
                f"of {len(runs)} run(s)" if worst else "not measured (no stall or no transaction time reported)")
    return {"target": f"online: longest stall of the daemon committing every {WRITER_INTERVAL_MS} ms ({mb} MB) <= "
                      f"{TARGET_ONLINE_STALL}x the longest migration transaction, no failed write, no row lost",
            "measured": f"{measured}; writer trouble: {len(trouble)} line(s); rows lost: {lost or 'none'}",
            "ok": r is not None and r <= TARGET_ONLINE_STALL and not trouble and not lost,
            "ratio": r, "limit": TARGET_ONLINE_STALL}


def fleet_targets(fleet: dict) -> list[dict]:
    """Controller CPU-seconds per host against a one-task playbook's, and the tasks per host."""
    targets = []
    floor = fleet["one_task_per_host"]
    most = str(max(int(n) for n in fleet["sizes"]))
    for kind, what, limit in (("upgrade", "upgraded", TARGET_CPU_UPGRADE), ("rerun", "unchanged", TARGET_CPU_RERUN)):
        per_host = fleet["costs"][kind]["controller_per_host"]
        r = ratio(per_host, floor)
        targets.append({"target": f"controller CPU-s per {what} host <= {limit}x a one-task playbook's (over ssh)",
                        "measured": f"{fmt(per_host)} s = {fmt(r)}x one-task ({fmt(floor)} s per host)",
                        "ok": r is not None and r <= limit, "ratio": r, "limit": limit})
        tasks = fleet["sizes"][most][kind]["tasks_per_host"]["median"]
        budget = TARGET_TASKS[kind]
        targets.append({"target": f"tasks per {what} host (recap ok + failed + skipped) <= {budget}",
                        "measured": f"{fmt(tasks)} tasks ({most} hosts)", "ok": tasks is not None and tasks <= budget,
                        "ratio": ratio(tasks, budget), "limit": 1.0})
    return targets
