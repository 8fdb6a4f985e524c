"""The downtime of an offline upgrade as one host-side unit: stop, back up, migrate, verify, start.

Why one process rather than one task per step:
- every Ansible task is a round trip (about 0.3 s on a local connection, more over ssh) and
  four of them would fall inside the downtime;
- a unit that runs on the host finishes, or puts the host back, even when the controller or
  its connection goes away while the daemon is down: SIGHUP, SIGINT, SIGPIPE and SIGTERM are
  ignored from the stop to the end, so a dropped ssh session, a Ctrl-C or a terminated
  ansible-playbook does not leave the daemon down (SIGKILL still can: the rescue, or the rerun,
  then starts it).

With releases (riskmgr_release_link) the start switches the link to the target's release, and with
a smoke test (riskmgr_smoke_command) the unit runs it once the daemon is healthy: the daemon has then
served on the new version, so a failure from here puts the database back in place (every row it
wrote kept). Before the stop the unit records the upgrade as pending (daemon_watch); the watch that
follows removes the record. A host whose database is at the target already but whose upgrade is
pending, or whose link names another release, is finished: its daemon is (re)started on the target's
release if it must be, and smoke-tested again.

The steps are the same functions the single-step modules run (riskmgr_daemon, sqlite_backup,
sqlite_migrate, sqlite_verify, sqlite_restore); only the order of two checks changes, never
their presence: the backup is copied as a file (the daemon is stopped; a reflink where the
filesystem has them) and its check (a reflink's sha256 and manifest too) runs in a second thread
while the migration builds its indexes; the migration commits only once that check passed. On
any failure after the stop the unit puts the host back itself: v1 (untouched, or restored from
the backup just confirmed, the migrated file kept beside it) and the daemon running on it.

Plain Python, no Ansible import: pytest calls migrate_host() on real files and processes.
"""
from __future__ import annotations

import signal
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from ansible.module_utils.daemon_watch import SmokeTest, clear_pending, read_pending, run_smoke, write_pending
from ansible.module_utils.host_processes import pid_is_running
from ansible.module_utils.releases import Releases
from ansible.module_utils.riskmgr_daemon import schema_line, start_daemon, stop_daemon
from ansible.module_utils.riskmgr_recover import DaemonSettings, RecoverSettings, recover_host, recovery_text
from ansible.module_utils.service_manager import DaemonControl
from ansible.module_utils.sqlite_backups import backup_database, finish_backup
from ansible.module_utils.sqlite_catalog import Catalog
from ansible.module_utils.sqlite_common import RiskmgrError, migration_write_problems, sqlite_error_text
from ansible.module_utils.sqlite_migration import migrate_database, prove_change
from ansible.module_utils.sqlite_touched import touched_objects
from ansible.module_utils.sqlite_verification import failure_message, verify_database

# What a lost controller or connection sends: ssh's hangup, Ctrl-C passed on, a closed pipe, and
# the SIGTERM ansible-playbook passes to its workers' process groups when it is itself terminated
# (a CI timeout or cancel). The daemon it starts does not inherit them (host_processes.run_quietly).
SHIELDED_SIGNALS = (signal.SIGHUP, signal.SIGINT, signal.SIGPIPE, signal.SIGTERM)


@dataclass(frozen=True)
class MigrateSettings:
    """How one host is upgraded: riskmgr_migrate's options, built once from the module's params.

    Its defaults are the module's (argument spec), so this class has none of its own.
    """

    target_version: int | None  # None: the newest version of the migrations
    options: dict  # the optional objects: {"track_unrealized_pnl": bool}
    retention_days: int
    max_backups: int
    free_space_margin: float
    integrity: str  # of the migrated file, while the daemon is down: quick or integrity
    keep_suffix: str | None  # of the migrated file kept when the backup is put back; None: failed_v<target>
    stop_timeout: float
    stop_force: bool
    settle: float
    start_timeout: float
    log_path: str | None
    process_match: str | None
    busy_timeout_s: float
    releases: Releases | None
    smoke: SmokeTest | None
    recovery_method: str  # auto | downgrade | restore (riskmgr_recover's method)

    @classmethod
    def from_params(cls, params: dict) -> MigrateSettings:
        return cls(target_version=params["target_version"],
                   options={"track_unrealized_pnl": params["track_unrealized_pnl"]},
                   retention_days=params["retention_days"], max_backups=params["max_backups"],
                   free_space_margin=params["free_space_margin"], integrity=params["integrity"],
                   keep_suffix=params["keep_suffix"], stop_timeout=params["stop_timeout"],
                   stop_force=params["stop_force"], settle=params["settle"], start_timeout=params["start_timeout"],
                   log_path=params["log_path"], process_match=params["process_match"],
                   busy_timeout_s=params["busy_timeout"], releases=Releases.from_params(params),
                   smoke=SmokeTest.from_params(params), recovery_method=params["recovery_method"])


class MigrateError(RiskmgrError):
    """The upgrade failed; fail_result says in which phase and how the host was left."""

    def __init__(self, message: str, fail_result: dict) -> None:
        super().__init__(message)
        self.fail_result = fail_result


@contextmanager
def shielded_from_hangups():
    """Ignore the signals a lost controller or connection sends, for the duration of the downtime."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread (tests call from others)
        return
    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in SHIELDED_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class BackupCheck:
    """finish_backup() in a second thread while the migration runs.

    That is the quick_check and counts of the copy, its retention, and for a reflink its sha256 and
    manifest: none of them stands between the stop and the start, and the commit waits for all.
    """

    def __init__(self, backup: dict, source: Path, backup_dir: Path, retention_days: int, max_backups: int,
                 busy_timeout_s: float) -> None:
        self.error: BaseException | None = None
        self.waited = 0.0
        self.thread = threading.Thread(
            target=self.run, name="backup-check", daemon=True,
            args=(backup, source, backup_dir, retention_days, max_backups, busy_timeout_s))
        self.thread.start()

    def run(self, *args) -> None:
        try:
            finish_backup(*args)
        except BaseException as err:  # re-raised in the main thread by wait()
            self.error = err

    def wait(self) -> None:
        """Block until the check is done; raise what it raised (the caller's transaction then rolls back).

        The time blocked here is the check standing between the stop and the start (the DDL finished
        first): the backup's wait_seconds, a phase of its own in the report.
        """
        began = time.monotonic()
        self.thread.join()
        self.waited += time.monotonic() - began
        if self.error is not None:
            raise self.error


def migrate_host(path: str, backup_dir: str, catalog: Catalog, control: DaemonControl, settings: MigrateSettings,
                 *, check_mode: bool = False, want_diff: bool = False) -> dict:
    """Migrate one host with its daemon down for as short a time as the work allows; see the module doc."""
    try:
        result = preview_migration(path, backup_dir, catalog, control, settings, check_mode, want_diff)
    except (RiskmgrError, sqlite3.Error) as err:
        # Refused before the stop: nothing was touched, the daemon runs as it did.
        reason = sqlite_error_text(path, err, settings.busy_timeout_s) if isinstance(err, sqlite3.Error) else str(err)
        raise MigrateError(f"{reason.rstrip('.')}. The daemon was not stopped and nothing was changed.",
                           {"changed": False, "failed_phase": "plan",
                            "recovery": {"method": None, "kept": [], "errors": [], "database": "untouched",
                                         "daemon": "was not stopped"}}) from err
    if check_mode or not (result["changed"] or result["finish"]):
        return result
    target = result["to_version"]
    # From here on the version is the plan's, and the kept file's suffix names it.
    planned = replace(settings, target_version=target, keep_suffix=settings.keep_suffix or f"failed_v{target}")
    with shielded_from_hangups():
        if result["finish"]:
            return finish_migration(path, Path(backup_dir), catalog, control, result, planned)
        return run_downtime(path, Path(backup_dir), catalog, control, result, planned)


def preview_migration(path: str, backup_dir: str, catalog: Catalog, control: DaemonControl, settings: MigrateSettings,
                      check_mode: bool, want_diff: bool) -> dict:
    """Everything that can refuse while the daemon still runs: the plan, writability, space for both."""
    plan = migrate_database(path, catalog, settings.target_version, settings.options, check_mode=True,
                            want_diff=want_diff, busy_timeout_s=settings.busy_timeout_s)
    releases = settings.releases
    result = {"changed": plan["changed"], "from_version": plan["from_version"], "to_version": plan["to_version"],
              "state_before": plan["state_before"], "direction": plan["direction"], "steps": plan["steps"],
              "skipped_steps": plan["skipped_steps"], "schema_warnings": plan["schema_warnings"],
              "stop": None, "backup": None, "migration": None, "verification": None, "start": None, "smoke": None,
              "downtime_seconds": None, "failed_phase": None, "recovery": None, "finish": False,
              "pending": read_pending(path),
              "release": releases.facts(plan["to_version"]) if releases else None}
    if "diff" in plan:
        result["diff"] = plan["diff"]
    if not plan["changed"]:
        # The database is done. Its upgrade is finished when it was never accepted (the watch did not
        # pass), or when the link still names another release: the daemon must run the target's code.
        pending = result["pending"] and result["pending"].get("to_version") == plan["to_version"]
        switch = bool(result["release"] and result["release"]["switch_needed"])
        result["finish"] = bool(pending or switch)
        result["changed"] = switch
        return result
    if plan["direction"] != "up":
        raise RiskmgrError(f"{path}: riskmgr_migrate only upgrades (v{plan['from_version']} -> "
                           f"v{plan['to_version']} is a downgrade); use rollback.yml -e "
                           f"riskmgr_target_version={plan['to_version']}")
    problems = migration_write_problems(path)
    if problems:
        raise RiskmgrError(f"{path}: cannot be migrated in place: {'; '.join(problems)}")
    # The daemon's writes on the changed schema, once more before this stop: whatever changed since the
    # preflight (a trigger made meanwhile) refuses here, with the daemon still running.
    proof = prove_change(path, catalog, settings.options, plan["to_version"], settings.busy_timeout_s)
    if proof["failures"]:
        raise RiskmgrError(" | ".join(proof["failures"]))
    control.daemon_log(settings.log_path)  # a journal that cannot be read refuses here, not once the daemon is down
    if releases:
        releases.path_for(plan["to_version"])  # a release not named refuses here
    result["backup"] = backup_database(path, backup_dir, settings.retention_days, settings.max_backups,
                                       settings.busy_timeout_s, settings.free_space_margin, check_mode=True)
    if check_mode:
        result["stop"] = stop_daemon(control, settings.stop_timeout, settings.stop_force, settings.process_match,
                                     settings.log_path, check_mode=True)
    return result


def run_downtime(path: str, backup_dir: Path, catalog: Catalog, control: DaemonControl, result: dict,
                 settings: MigrateSettings) -> dict:
    """The downtime: stop, back up, migrate, verify, start, smoke; settings.target_version is the plan's."""
    target = settings.target_version
    before_version = result["from_version"]
    phase = "stop"
    try:
        # Before anything stops: a run cut off from here on leaves the upgrade pending for the next one.
        write_pending(path, before_version, target, settings.releases.linked() if settings.releases else None)
        result["stop"] = stop_daemon(control, settings.stop_timeout, settings.stop_force, settings.process_match,
                                     settings.log_path)
        phase = "backup"
        result["backup"] = backup_database(path, backup_dir, settings.retention_days, settings.max_backups,
                                           settings.busy_timeout_s, settings.free_space_margin, daemon_stopped=True,
                                           finish_later=True)
        check = BackupCheck(result["backup"], Path(path), backup_dir, settings.retention_days, settings.max_backups,
                            settings.busy_timeout_s)
        phase = "migrate"
        try:
            result["migration"] = migrate_database(path, catalog, target, settings.options,
                                                   busy_timeout_s=settings.busy_timeout_s, before_commit=check.wait)
        finally:
            check.thread.join()  # also when the migration failed first: the backup is checked either way
            result["backup"]["wait_seconds"] = round(check.waited, 4)
        if check.error is not None:
            raise check.error
        phase = "verify"
        # Only what the change wrote is checked here: the v1 b-trees were checked before the stop, and
        # again in the byte-identical backup (sqlite_touched; docs/guarantees.md, "What is checked when").
        result["verification"] = verify_database(path, catalog, target, settings.options,
                                                 manifest=result["backup"]["manifest"], integrity=settings.integrity,
                                                 row_count_mode="equal", busy_timeout_s=settings.busy_timeout_s,
                                                 touched=touched_objects(result["migration"]["steps"]))
        if not result["verification"]["ok"]:
            raise RiskmgrError(failure_message(path, result["verification"]))
        phase = "start"
        start_on_target(path, control, result, settings)
        phase = "smoke"
        smoke_test(path, result, settings)
    except BaseException as err:
        result["failed_phase"] = phase
        # A stop command that failed after the daemon exited left it down: the recovery starts it again.
        if phase == "stop" and not getattr(err, "daemon_down", False):
            not_stopped(path, before_version, result, err)
        result["recovery"] = put_host_back(path, backup_dir, result, catalog, control, before_version, settings,
                                           served=phase == "smoke")
        raise MigrateError(failure_text(path, phase, err, result["recovery"], (before_version, target)),
                           dict(result, changed=True)) from err
    result["to_version"] = target
    result["downtime_seconds"] = downtime_seconds(result["stop"], result["start"])
    return result


def finish_migration(path: str, backup_dir: Path, catalog: Catalog, control: DaemonControl, result: dict,
                   settings: MigrateSettings) -> dict:
    """A database at the target already: its daemon on the target's release, smoke-tested.

    The daemon is stopped only to switch the link (it runs another release), started when it is
    down. A failure puts the host back to where the pending upgrade started from (in place: the
    daemon served on the new version), or, with no upgrade pending, to the database as it is.
    """
    pending = result["pending"]
    back_to = pending["from_version"] if pending else result["from_version"]
    phase = "stop"
    try:
        running = pid_is_running(control.find_pid(), settings.process_match)
        if running and result["release"] and result["release"]["switch_needed"]:
            result["stop"] = stop_daemon(control, settings.stop_timeout, settings.stop_force,
                                         settings.process_match, settings.log_path)
            running = False
        phase = "start"
        if not running:
            start_on_target(path, control, result, settings)
            result["changed"] = True
        phase = "smoke"
        smoke_test(path, result, settings)
    except BaseException as err:
        result["failed_phase"] = phase
        if phase == "stop" and not getattr(err, "daemon_down", False):
            not_stopped(path, result["from_version"], result, err)
        result["recovery"] = put_host_back(path, backup_dir, result, catalog, control, back_to, settings,
                                           served=bool(pending) or phase == "smoke")
        raise MigrateError(failure_text(path, phase, err, result["recovery"], (back_to, result["to_version"])),
                           dict(result, changed=True)) from err
    if result["stop"] and result["start"]:
        result["downtime_seconds"] = downtime_seconds(result["stop"], result["start"])
    return result


def start_on_target(path: str, control: DaemonControl, result: dict, settings: MigrateSettings) -> None:
    target = settings.target_version
    result["start"] = start_daemon(control, settle=settings.settle, start_timeout=settings.start_timeout,
                                   log_path=settings.log_path,
                                   expect_log_line=schema_line(control, settings.log_path, target),
                                   process_match=settings.process_match, releases=settings.releases, version=target)


def smoke_test(path: str, result: dict, settings: MigrateSettings) -> None:
    if settings.smoke is not None:
        result["smoke"] = run_smoke(settings.smoke, settings.releases.link if settings.releases else None)


def not_stopped(path: str, version: int, result: dict, err: BaseException) -> None:
    """The stop failed: nothing was touched, and a daemon that did not stop is still running (only stop_force kills)."""
    clear_pending(path)
    result["recovery"] = {"method": None, "kept": [], "errors": [], "version": version,
                          "database": f"untouched (v{version})", "daemon": "is still running (not stopped)"}
    versions = (version, result.get("to_version"))
    raise MigrateError(f"{path}{versions_text(versions)}: the upgrade failed while stop: {str(err).rstrip('.')}. "
                       f"The daemon was not stopped; {path} was not touched. Fix the cause, then rerun "
                       f"{migrate_playbook(versions)}.",
                       dict(result, changed=False)) from err


def downtime_seconds(stop: dict, start: dict) -> float | None:
    """Stop request to the daemon serving, host clock; None when the daemon was not running to begin with."""
    if stop.get("stop_requested_at") is None or start.get("serving_at") is None:
        return None
    return round(start["serving_at"] - stop["stop_requested_at"], 3)


def put_host_back(path: str, backup_dir: Path, result: dict, catalog: Catalog, control: DaemonControl,
                  back_to: int, settings: MigrateSettings, served: bool) -> dict:
    """After a failure past the stop: the one recovery (riskmgr_recover), with this run's confirmed backup.

    Never raises: what could not be done is reported, for the operator and the playbook's rescue.
    """
    backup = result["backup"] or {}
    recover = RecoverSettings(
        path=path, backup_dir=str(backup_dir), back_to=back_to, keep_suffix=settings.keep_suffix,
        method=settings.recovery_method, options=settings.options, busy_timeout_s=settings.busy_timeout_s,
        releases=settings.releases, served=served, release_before=release_before(result),
        daemon=DaemonSettings(stop_timeout=settings.stop_timeout, settle=settings.settle,
                              start_timeout=settings.start_timeout, log_path=settings.log_path,
                              process_match=settings.process_match))
    return recover_host(recover, catalog, control, backup["backup"] if backup.get("confirmed") else None)


def release_before(result: dict) -> str | None:
    """The release the host ran before this upgrade: the pending record's, else the link's target before the task."""
    pending = result.get("pending") or {}
    return pending.get("release_before") or (result.get("release") or {}).get("linked")


def failure_text(path: str, phase: str, err: BaseException, recovery: dict, versions: tuple | None = None) -> str:
    """One line: the database and its upgrade (from -> to), the step that failed and why, where the host was put back."""
    reason = str(err) if isinstance(err, RiskmgrError) else f"{type(err).__name__}: {err}"
    doing = "smoke-testing the daemon on the new version" if phase == "smoke" else phase
    text = (f"{path}{versions_text(versions)}: the upgrade failed while {doing}: {reason.rstrip('.')}. "
            f"{recovery_text(path, recovery)}")
    return text if recovery["errors"] else f"{text} Fix the cause, then rerun {migrate_playbook(versions)}."


def versions_text(versions: tuple | None) -> str:
    """" (v3 -> v4)": the versions the run moves between (empty when unknown)."""
    if not versions or None in versions:
        return ""
    return f" (v{versions[0]} -> v{versions[1]})"


def migrate_playbook(versions: tuple | None) -> str:
    """The playbook that takes a host there again: the design card's migrate_v2.yml for v1 -> v2."""
    if not versions or None in versions or tuple(versions) == (1, 2):
        return "migrate_v2.yml"
    return f"migrate.yml -e riskmgr_target_version={versions[1]}"
