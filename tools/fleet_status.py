"""What a local fleet (tools/local_fleet.py) looks like now: per host its daemon, schema, rows, release.

Python 3 standard library only.
"""
from __future__ import annotations

import os
import re
import sqlite3
import sys
from contextlib import closing
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fleet_daemons import is_alive, read_pid  # noqa: E402  (sibling tools, found through sys.path)
from fleet_files import FleetError, read_fleet  # noqa: E402
from riskmgr_standin import StandinError, column_names, quote_identifier, schema_version, table_named  # noqa: E402

RELEASE_LOG_LINE = re.compile(r"^\S+ INFO riskmgr release (\S+) starting from .*$", re.MULTILINE)


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


def kept_files(db: Path) -> list[Path]:
    """The files a restore kept beside db: <db>.kept-<reason>-... and the earlier <db>.<reason>_<stamp>."""
    found = {p for pattern in ("kept-*", "failed_*", "rollback_*", "replaced_*") for p in db.parent.glob(f"{db.name}.{pattern}")}
    return sorted(p for p in found if not re.search(r"-(wal|shm)$", p.name))


def host_status(name: str, variables: dict, shape: str) -> dict:
    pid = read_pid(variables["riskmgr_pidfile"])
    logged, release_line = logged_release(variables["riskmgr_log_path"])
    db = Path(variables["riskmgr_db_path"])
    backup_dir = Path(variables["riskmgr_backup_dir"])
    backups = sorted(p.name for p in backup_dir.glob("*.db")) if backup_dir.is_dir() else []
    kept = [p.name for p in kept_files(db)]
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
