"""The offline downtime on a filesystem with reflinks (XFS, reflink=1), against the DDL alone.

There the backup is a reflink (FICLONE): it costs the same whatever the size, so the floor of an
offline migration is the v2 DDL alone on the same file. bench/bench.py runs this after the
per-size measurements, on the largest size: it makes an XFS loop mount as root (tools/loop_xfs.py;
skipped with the reason where it cannot), a 1-host local fleet on it, and in interleaved rounds
measures the DDL alone on a plain copy of the v1 file (the floor), a reflink then the DDL on the
reflinked file (what copy-on-write adds), and the project's offline downtime with its
phases_seconds and the backup's copy_method read back from its manifest.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import loop_xfs  # tools/ (on sys.path through bench_common): the loop mount the tests use too
from bench_common import BenchError, Fleet, db_rows, fmt, log, ratio, remove_db, run, summary
from bench_sizes import project_once, sqlite_ddl

TARGET_REFLINK = 1.25  # offline downtime on a reflink filesystem <= 1.25 x the DDL alone (issue 20)
PHASES = ("stop", "backup", "backup_check", "backup_check_wait", "migrate", "verify", "start")


def ddl_once(ref: Path, scratch: Path, script: str, log_file: Path) -> float:
    """The v2 DDL in one transaction on a plain copy of ref (made untimed, sharing no extent)."""
    copy = scratch / "ddl.db"
    shutil.copyfile(ref, copy)
    began = time.perf_counter()
    sqlite_ddl(copy, script, log_file)
    seconds = time.perf_counter() - began
    if "schema_version" not in db_rows(copy):
        raise BenchError(f"{copy}: the DDL ran but there is no schema_version table")
    remove_db(copy)
    return seconds


def clone_ddl_once(ref: Path, scratch: Path, script: str, log_file: Path) -> dict:
    """cp --reflink=always of a plain copy, then the DDL on the original: the reflink and its copy-on-write."""
    live, clone = scratch / "live.db", scratch / "clone.db"
    shutil.copyfile(ref, live)
    began = time.perf_counter()
    run(["cp", "--reflink=always", live, clone], what="cp --reflink=always")
    cloned = time.perf_counter()
    sqlite_ddl(live, script, log_file)
    done = time.perf_counter()
    remove_db(live)
    remove_db(clone)
    return {"reflink": cloned - began, "ddl_after_reflink": done - cloned}


def copy_method(fleet: Fleet, name: str) -> str | None:
    """The backup's copy_method, from the manifest of the run just made (each reset removes the old ones)."""
    manifests = sorted(Path(fleet.hosts[name]["riskmgr_backup_dir"]).glob("*.manifest.json"))
    return json.loads(manifests[-1].read_text()).get("copy_method") if manifests else None


def bench_reflink(mb: int, work: Path, repeat: int, script: str, fleets: list, ref: Path | None = None) -> dict:
    """The measurement on an XFS loop mount; {"skipped": reason} where one cannot be made.

    ref: a v1 file of about mb MB already built (the per-size run's), copied onto XFS instead of
    building another.
    """
    reason = loop_xfs.unavailable_reason()
    if reason:
        log(f"reflink: skipped: {reason}")
        return {"size_mb_target": mb, "skipped": reason}
    area = work / "reflink"
    area.mkdir()
    try:
        with loop_xfs.xfs_reflink_mount(area, 6 * mb + 512) as mount:
            return measure_on(mount, mb, work, repeat, script, fleets, ref)
    except loop_xfs.LoopMountUnavailable as err:
        log(f"reflink: skipped: {err}")
        return {"size_mb_target": mb, "skipped": str(err)}


def measure_on(mount: Path, mb: int, work: Path, repeat: int, script: str, fleets: list, ref: Path | None) -> dict:
    log(f"reflink: an XFS (reflink=1) loop mount at {mount}; a 1-host fleet of {mb} MB on it")
    fleet = Fleet(mount / "fleet", 1, 1 if ref else mb, "reflink", work / "setup.log")
    fleets.append(fleet)
    try:
        name = fleet.names[0]
        if ref:
            shutil.copyfile(ref, fleet.refs[name])  # a plain copy: the host's file shares no extent with it
        size_mb = fleet.refs[name].stat().st_size / 1048576
        scratch = mount / "scratch"
        scratch.mkdir()
        ddl, clone, project, methods = [], [], [], []
        for i in range(repeat):
            log(f"reflink {mb} MB: round {i + 1}/{repeat}: DDL alone, reflink + DDL, project playbook")
            ddl.append(ddl_once(fleet.refs[name], scratch, script, work / "sqlite.log"))
            clone.append(clone_ddl_once(fleet.refs[name], scratch, script, work / "sqlite.log"))
            project.append(project_once(fleet, work, f"reflink{mb}-migrate-{i + 1}"))
            methods.append(copy_method(fleet, name))
    finally:
        fleet.destroy()
        fleets.remove(fleet)
    phases = {k: summary([float(s["phases"][k]) for s in project if s["phases"].get(k) not in (None, "")])
              for k in sorted({k for s in project for k, v in s["phases"].items() if v not in (None, "")})}
    return {"size_mb_target": mb, "size_mb": round(size_mb, 1), "filesystem": "xfs (reflink=1, loop mount)",
            "ddl": summary(ddl), "reflink": summary([s["reflink"] for s in clone]),
            "ddl_after_reflink": summary([s["ddl_after_reflink"] for s in clone]),
            "downtime": summary([s["downtime"] for s in project]),
            "playbook_wall": summary([s["wall"] for s in project]), "phases_seconds": phases,
            "copy_methods": methods}


def reflink_target(reflink: dict) -> dict:
    mb = reflink["size_mb_target"]
    note = "" if mb == 600 else " (the target is for 600 MB)"
    text = f"offline downtime on a reflink filesystem ({mb} MB) <= {TARGET_REFLINK}x the DDL alone{note}"
    if "skipped" in reflink:
        return {"target": text, "measured": f"not measured: {reflink['skipped']}", "ok": False, "ratio": None,
                "limit": TARGET_REFLINK}
    r = ratio(reflink["downtime"]["median"], reflink["ddl"]["median"])
    phases = reflink["phases_seconds"]
    where = ", ".join(f"{k} {fmt(phases[k]['median'])}" for k in PHASES if k in phases)
    methods = sorted(set(map(str, reflink["copy_methods"])))
    ok = r is not None and r <= TARGET_REFLINK and methods == ["reflink"]
    return {"target": text, "ok": ok, "ratio": r, "limit": TARGET_REFLINK,
            "measured": f"{fmt(reflink['downtime']['median'])} s = {fmt(r)}x DDL ({fmt(reflink['ddl']['median'])} s); "
                        f"backup copy_method {', '.join(methods)}; phases (s): {where}"}


def reflink_table(reflink: dict) -> str:
    mb = reflink["size_mb_target"]
    if "skipped" in reflink:
        return f"reflink filesystem ({mb} MB): not measured: {reflink['skipped']}"
    floor = reflink["ddl"]["median"]
    lines = [f"{reflink['size_mb']} MB v1 database on {reflink['filesystem']}",
             f"{'size':>7}  {'measurement':<46} {'median':>9} {'x DDL':>8}  {'min-max':>13}  n"]
    for label, s in (("floor: v2 DDL alone in one txn (sqlite3)", reflink["ddl"]),
                     ("cp --reflink=always", reflink["reflink"]),
                     ("v2 DDL on a file just reflinked (CoW)", reflink["ddl_after_reflink"]),
                     ("project offline: downtime (report, host clock)", reflink["downtime"]),
                     ("project: playbook wall, 1 host", reflink["playbook_wall"])):
        spread = f"{fmt(s['min'])}-{fmt(s['max'])}" if s["n"] else "-"
        lines.append(f"{mb:>5}MB  {label:<46} {fmt(s['median'], ' s'):>9} {fmt(ratio(s['median'], floor), 'x'):>8}  "
                     f"{spread:>13}  {s['n']}")
    phases = reflink["phases_seconds"]
    parts = ", ".join(f"{k} {fmt(phases[k]['median'])}" for k in
                      PHASES if k in phases)
    lines.append(f"{'':>7}  project offline phases_seconds (median; backup_check runs beside migrate): {parts}")
    lines.append(f"{'':>7}  backup copy_method per round: {', '.join(map(str, reflink['copy_methods']))}")
    return "\n".join(lines)
