"""Put a host back after a failed run, from its real state: the one way every failure path recovers.

The offline unit's own failure path (riskmgr_migrate), the rescue of migrate_v2.yml and the rescue
of rollback_v2.yml all end here. Nothing is taken from which task failed: the database is read
(state, version, integrity), then the backups and the daemon, and the host is brought to a state
the promise allows - the database untouched at the version the run started from, or verified at
a version the run may leave (`accept`) - with the daemon running on it.

How a database that is not acceptable goes back to `back_to`:
  - in place (the downgrade: what the migration's provenance says it made is undone, every row
    kept) when the database is partial, when the daemon has served on the new version (it started
    healthy there, then failed its smoke test or its watch: it may have written and updated rows
    for minutes, which a restore would drop from the live file), or when rows were written since
    this run's backup; a backup of the file is taken first, so the values of the columns the
    downgrade removes stay;
  - from this run's verified backup (the file it replaces kept beside it) when the daemon never
    served on the new version and nothing was written since the backup, or when the file fails its
    integrity check, or when the operator asks (riskmgr_recovery_method);
  - each falls back on the other when it cannot be done; what failed is reported, never raised.

With releases (riskmgr_release_link) the daemon starts on the release of the version the database
is left at, the link switched first; if that release does not start, the release the link named
before the recovery is tried once. An upgrade's pending record (daemon_watch) goes once the
database is back at the version that upgrade started from.

Plain Python, no Ansible import: pytest calls recover_host() on real files and processes.
"""
from __future__ import annotations

import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from ansible.module_utils.backup_restore import restore_database
from ansible.module_utils.backup_store import list_backups, read_manifest
from ansible.module_utils.daemon_watch import clear_pending, read_pending
from ansible.module_utils.host_processes import pid_is_running
from ansible.module_utils.releases import Releases, same_directory
from ansible.module_utils.riskmgr_daemon import schema_line, start_daemon, stop_daemon
from ansible.module_utils.service_manager import DaemonControl
from ansible.module_utils.sqlite_backups import backup_database
from ansible.module_utils.sqlite_catalog import Catalog
from ansible.module_utils.sqlite_common import (
    DEFAULT_BUSY_TIMEOUT_S, RiskmgrError, connect_readonly, database_row_counts, integrity_result)
from ansible.module_utils.sqlite_migration import migrate_database
from ansible.module_utils.sqlite_schema import inspect
from ansible.module_utils.sqlite_verification import verify_database

METHODS = ("auto", "downgrade", "restore")


@dataclass
class DaemonSettings:
    """How long to wait for the daemon, where it logs, how to know it (no defaults: the module's spec has them)."""

    stop_timeout: float
    settle: float
    start_timeout: float
    log_path: str | None
    process_match: str | None


@dataclass
class RecoverSettings:
    path: str
    backup_dir: str
    back_to: int  # the version the run started from
    accept: tuple = ()  # versions the database may be left at as it is, when it is consistent there
    since: float | None = None  # host epoch time the run began: its backups are the ones taken after
    method: str = "auto"  # auto | downgrade | restore
    keep_suffix: str = "failed"
    options: dict = field(default_factory=dict)
    busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S
    daemon: DaemonSettings = None
    releases: Releases | None = None
    served: bool = False  # the daemon ran healthy on the database's new version before the failure
    release_before: str | None = None  # the release the link named when the run began: tried if the version's fails



def settings_of_params(params: dict, back_to: int, accept: tuple = ()) -> RecoverSettings:
    """The recovery's settings from a module's params (riskmgr_recover, riskmgr_start_if_down)."""
    return RecoverSettings(
        path=params["path"], backup_dir=params["backup_dir"], back_to=back_to, accept=accept,
        since=params.get("since"), method=params.get("method") or "auto",
        keep_suffix=params.get("keep_suffix") or "failed",
        options={"track_unrealized_pnl": params["track_unrealized_pnl"]},
        busy_timeout_s=params["busy_timeout"], releases=Releases.from_params(params),
        served=bool(params.get("served")), release_before=params.get("release_before"),
        daemon=DaemonSettings(stop_timeout=params["stop_timeout"], settle=params["settle"],
                              start_timeout=params["start_timeout"], log_path=params["log_path"],
                              process_match=params["process_match"]))


def recover_from_params(params: dict, catalog: Catalog, control: DaemonControl, back_to: int, accept: tuple = (),
                        backup: str | None = None) -> dict:
    """recover_host for a module (riskmgr_recover, riskmgr_start_if_down): its report, with msg and changed;
    RecoveryFailed, carrying the whole report, when the host could not be put back."""
    report = recover_host(settings_of_params(params, back_to, accept), catalog, control, backup)
    report["msg"] = recovery_text(params["path"], report)
    report["changed"] = report["changed"] or bool(report.get("start"))
    if report["errors"]:
        raise RecoveryFailed(report)
    return report


class RecoveryFailed(RiskmgrError):
    """The host could not be put back: the message says what is left, the task result keeps the report."""

    def __init__(self, report: dict):
        super().__init__(report["msg"])
        self.fail_result = {key: value for key, value in report.items() if key != "msg"}


def read_state(path: str, catalog: Catalog, options: dict, busy_timeout_s: float) -> dict:
    """{"state", "version", "consistent", "detail"} of the database now; never raises."""
    try:
        with closing(connect_readonly(path, busy_timeout_s)) as conn:
            conn.execute("BEGIN")
            inspection = inspect(conn, catalog, options)
            checked = integrity_result(conn, "quick")
            conn.execute("COMMIT")
    except (RiskmgrError, sqlite3.Error, OSError) as err:
        return {"state": "unreadable", "version": None, "consistent": False, "detail": str(err)}
    consistent = inspection.state == f"v{inspection.version}" and checked["ok"]
    detail = None if checked["ok"] else "quick_check: " + "; ".join(checked["errors"][:3])
    return {"state": inspection.state, "version": inspection.version, "consistent": consistent, "detail": detail}


def run_backups(settings: RecoverSettings, version: int) -> list[Path]:
    """This run's backups at `version`, newest first (all of them when the run's start is unknown)."""
    found = []
    for entry in list_backups(settings.backup_dir, Path(settings.path).stem):
        if entry.version == version and entry.has_manifest and \
                (settings.since is None or entry.created.timestamp() >= settings.since - 1):
            found.append(entry.path)
    return found


def written_since(settings: RecoverSettings, backup: Path) -> dict[str, int]:
    """{table: rows the live database has beyond the backup's manifest}: what the daemon wrote since."""
    try:
        recorded = read_manifest(backup)["row_counts"]
        live = database_row_counts(settings.path, settings.busy_timeout_s)
    except (RiskmgrError, sqlite3.Error, OSError):
        return {}
    return {table: count - recorded.get(table, 0) for table, count in live.items()
            if table in recorded and count > recorded[table]}


def choose_method(settings: RecoverSettings, state: dict, backup: Path | None) -> tuple[str, str]:
    """(method, why) for a database that must go back to settings.back_to."""
    if settings.method != "auto":
        return settings.method, "asked for (riskmgr_recovery_method)"
    if settings.served and state["state"] != "unreadable" and not (state["detail"] or "").startswith("quick_check"):
        return "downgrade", (f"the daemon served on v{state['version']}: a restore would drop what it wrote and "
                             "changed there")
    if state["state"] == "unreadable" or (state["detail"] or "").startswith("quick_check"):
        return "restore", f"the file cannot be changed in place ({state['detail']})"
    if state["version"] is not None and state["version"] < settings.back_to:
        return "restore", f"v{state['version']} is below v{settings.back_to}: only a backup brings it back up"
    if state["state"] == "partial":
        return "downgrade", "a partial database is undone in place"
    if backup is None:
        return "downgrade", "no backup of this run to restore"
    since = written_since(settings, backup)
    if since:
        return "downgrade", f"the daemon wrote rows since the backup ({', '.join(f'{t} +{n}' for t, n in since.items())})"
    return "restore", "nothing was written since the backup"


def put_database_back(settings: RecoverSettings, catalog: Catalog, state: dict, backup: Path | None,
                      report: dict) -> None:
    """The database back at back_to by the chosen method, falling back on the other; errors reported."""
    method, why = choose_method(settings, state, backup)
    order = [method] + [m for m in ("downgrade", "restore") if m != method]
    for attempt in order:
        try:
            if attempt == "downgrade":
                kept = backup_database(settings.path, settings.backup_dir, busy_timeout_s=settings.busy_timeout_s,
                                       daemon_stopped=True)
                migrate_database(settings.path, catalog, settings.back_to, settings.options,
                                 busy_timeout_s=settings.busy_timeout_s)
                report.update(method="downgrade", why=why, backup=kept["backup"],
                              database=f"returned to v{settings.back_to} in place, every row kept (the v"
                                       f"{state['version']} file was backed up first as {kept['backup']})")
            else:
                source = backup or next(iter(run_backups(settings, settings.back_to)), None)
                if source is None:
                    raise RiskmgrError(f"no verified v{settings.back_to} backup of this run in {settings.backup_dir}")
                restored = restore_database(settings.path, backup=source, keep_suffix=settings.keep_suffix,
                                            busy_timeout_s=settings.busy_timeout_s)
                report.update(method="restore", why=why, backup=restored["backup"], kept=restored["kept"],
                              database=f"restored from {restored['backup']} (v{settings.back_to})")
            # Judged against the file as it was just before this put it back: what it had wrong already
            # (orphans, a foreign key into a non-unique column) is not this recovery's doing.
            before = kept["backup"] if attempt == "downgrade" else restored["backup"]
            checked = verify_database(settings.path, catalog, settings.back_to, settings.options, integrity="quick",
                                      busy_timeout_s=settings.busy_timeout_s, baseline_from=before)
            if not checked["ok"]:
                raise RiskmgrError(f"after the {attempt}: " + " | ".join(checked["failed_checks"]))
            report["changed"] = True
            report["version"] = settings.back_to
            return
        except BaseException as err:  # noqa: BLE001 - reported; the other method is tried, the daemon started
            report["errors"].append(f"{attempt}: {err}")
    # What the file is now, read from it, never inferred from which attempt failed: an attempt may
    # have put it back and only its verification failed.
    now = read_state(settings.path, catalog, settings.options, settings.busy_timeout_s)
    report["state_now"] = now["state"]
    if now["consistent"]:
        report["version"] = now["version"]
    if now["state"] == f"v{settings.back_to}":
        report["database"] = (f"is v{settings.back_to} now (read from the file), but its verification after being "
                              "put back failed (see errors): it is not proven sound")
    else:
        detail = f" ({now['detail']})" if now["detail"] else ""
        report["database"] = f"could not be put back to v{settings.back_to}; read from the file now, it is " \
                             f"{now['state']}{detail}"


def recover_host(settings: RecoverSettings, catalog: Catalog, control: DaemonControl,
                 backup: str | None = None) -> dict:
    """Bring the host to an acceptable database with its daemon running on it; see the module doc.

    backup: this run's backup, when the caller knows it (the offline unit does); otherwise the
    newest verified one at back_to taken since settings.since. Never raises: what could not be done
    is in report["errors"], and report["daemon"] says whether it runs.
    """
    started = time.monotonic()
    report = {"changed": False, "database": None, "method": None, "why": None, "backup": None, "kept": [],
              "daemon": None, "pid": None, "errors": [], "state_found": None, "version": None, "release": None}
    state = read_state(settings.path, catalog, settings.options, settings.busy_timeout_s)
    report["state_found"] = state["state"]
    acceptable = state["consistent"] and state["version"] in (settings.accept or (settings.back_to,))
    if acceptable:
        report["database"] = f"is v{state['version']}, as the run left it"
        report["version"] = state["version"]
    else:
        try:
            # Nothing changes under a running daemon: it goes down first (forced: it may be hanging on v2).
            report["stopped"] = stop_daemon(control, settings.daemon.stop_timeout, True,
                                            settings.daemon.process_match, settings.daemon.log_path)["changed"]
        except BaseException as err:  # noqa: BLE001
            report["errors"].append(f"stopping the daemon: {err}")
        chosen = Path(backup) if backup else next(iter(run_backups(settings, settings.back_to)), None)
        put_database_back(settings, catalog, state, chosen, report)
    ensure_running(settings, control, report)
    forget_undone_upgrade(settings.path, report)
    report["seconds"] = round(time.monotonic() - started, 3)
    return report


def forget_undone_upgrade(path: str, report: dict) -> None:
    """The pending record of an upgrade goes once the database is back at the version it started from."""
    try:
        pending = read_pending(path)
        if pending and report["version"] == pending["from_version"]:
            clear_pending(path)
    except (RiskmgrError, OSError) as err:
        report["errors"].append(f"the record of the upgrade: {err}")


def ensure_running(settings: RecoverSettings, control: DaemonControl, report: dict) -> None:
    """The daemon running on the database as it is now, on that version's release; a running one is left
    alone when nothing changed and it runs the right release."""
    daemon = settings.daemon
    releases = settings.releases
    version = report["version"]
    try:
        pid = control.find_pid()
        wrong_release = releases is not None and version is not None and releases.version_linked() != version
        if pid_is_running(pid, daemon.process_match) and not report["changed"] and not wrong_release:
            report.update(daemon=f"runs (pid {pid})", pid=pid, release=releases.facts() if releases else None)
            return
        if pid_is_running(pid, daemon.process_match):
            stop_daemon(control, daemon.stop_timeout, True, daemon.process_match, daemon.log_path)
        release_before = settings.release_before or (releases.linked() if releases else None)
        try:
            started = start_on_release(settings, control, version)
        except BaseException as err:  # noqa: BLE001 - the release the host ran before is tried once
            if releases is None or release_before is None or version is None or \
                    same_directory(release_before, releases.paths.get(version, "")):
                raise
            report["errors"].append(f"starting the daemon on {releases.describe(version)}: {err}")
            fallback = Releases(link=releases.link, paths={version: release_before})
            started = start_on_release(settings, control, version, fallback)
        running_on = f"runs again on v{version}" if version else "runs"
        if releases:
            running_on += f" with {releases.describe()}"
        report.update(daemon=f"{running_on}, pid {started['pid']}", pid=started["pid"], start=started,
                      release=releases.facts() if releases else None)
    except BaseException as err:  # noqa: BLE001
        report["daemon"] = "is NOT running"
        report["errors"].append(f"starting the daemon: {err}")


def start_on_release(settings: RecoverSettings, control: DaemonControl, version: int | None,
                     releases: Releases | None = None) -> dict:
    daemon = settings.daemon
    releases = releases or settings.releases
    return start_daemon(control, settle=daemon.settle, start_timeout=daemon.start_timeout,
                        log_path=daemon.log_path, process_match=daemon.process_match,
                        expect_log_line=schema_line(control, daemon.log_path, version) if version else None,
                        releases=releases if version else None, version=version)


def recovery_text(path: str, report: dict) -> str:
    """One line: what the database is now, where the files are, whether the daemon runs, what is left to do."""
    parts = []
    if report["database"]:
        parts.append(f"{path} {report['database'] if report['database'].startswith(('is ', 'could')) else 'was ' + report['database']}"
                     + (f"; the file it replaced is kept as {', '.join(report['kept'])}" if report["kept"] else "")
                     + ".")
    parts.append(f"The daemon {report['daemon']}.")
    if report["errors"]:
        parts.append("Could not finish putting the host back: " + " | ".join(report["errors"]) + ". Check the host now.")
    return " ".join(parts)
