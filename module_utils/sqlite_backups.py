"""Take a verified backup of the state database, and confirm one taken unchecked.

A backup is one self-contained SQLite file (journal mode DELETE): with the daemon running, a
snapshot through the online backup API from a read-only connection (consistent while the daemon
writes in WAL mode, and holding the committed rows that only sit in state.db-wal); with the daemon
stopped, the file itself copied under SQLite's write lock: a reflink where the filesystem has them
else a kernel or byte copy, hashed, counted and fsynced afterwards by finish_backup (beside the migration). Where it goes
and how it is named, listed and pruned is backup_store; the files themselves, host_files.

Plain Python, no Ansible import: pytest calls these functions on real files, and
library/sqlite_backup.py only wires them to Ansible.
"""
from __future__ import annotations

import errno
import math
import os
import sqlite3
import time
from contextlib import closing
from datetime import datetime
from pathlib import Path
from typing import Callable
from urllib.parse import quote

from ansible.module_utils.backup_store import (
    BackupEntry, backup_diff, backup_file_name, backup_name_pattern, build_manifest, list_backups, manifest_path,
    plan_retention, prune_backups, utc_now, validate_backup_options, write_manifest)
from ansible.module_utils.host_files import (
    DIR_MODE, FILE_MODE, copy_database_file, create_temp, fsync_path, new_token, owner_for_root, publish_exclusive,
    remove_quietly, remove_temp_database, same_file, sha256_fd, sha256_file)
from ansible.module_utils.sqlite_common import (
    DEFAULT_BUSY_TIMEOUT_S, BackupError, RiskmgrError, connect_readonly, connect_writable, database_bytes,
    file_format, free_bytes, integrity_result, megabytes, read_header, require_sqlite_file, sqlite_error_text,
    table_row_counts, wal_is_empty)
from ansible.module_utils.role_defaults import ROLE_DEFAULTS
from ansible.module_utils.sqlite_history import current_version


def needed_bytes(database_size: int, margin: float) -> int:
    return math.ceil(database_size * margin)


def check_free_space(directory: str | os.PathLike, needed: int, free: int, what: str) -> None:
    """Refuse before writing anything when `directory`'s filesystem cannot hold `needed` bytes."""
    if free < needed:
        raise BackupError(f"{directory}: not enough free space for {what}: {needed} bytes needed, {free} free; "
                          "free space on that filesystem (or point the task at another directory) and rerun")


def sqlite_uri(path: Path, mode: str) -> str:
    # nofollow=1: SQLite refuses to open the file if a symlink has been put at its name.
    return f"{path.resolve(strict=False).parent.as_uri()}/{quote(path.name)}?mode={mode}&nofollow=1"


def prepare_backup_dir(backup_dir: Path, owner: tuple[int, int] | None) -> None:
    """Create backup_dir (0700) or force an existing one to 0700; owned like the DB when root."""
    if not backup_dir.exists():
        os.makedirs(backup_dir, mode=DIR_MODE)
    os.chmod(backup_dir, DIR_MODE)
    if owner is not None:
        os.chown(backup_dir, *owner)


def snapshot_copy(source: Path, temp: Path, busy_timeout_s: float) -> tuple[str, dict[str, int]]:
    """Copy source into the (empty) temp database in one read snapshot; return its journal mode and counts.

    One backup step (pages=-1) under an explicit read transaction: the rows counted and the
    pages copied come from the same snapshot, a WAL writer is never blocked, and the wait for
    a rollback-journal writer is bounded by busy_timeout (the step alone would retry forever).
    """
    with closing(connect_readonly(source, busy_timeout_s)) as src, \
            closing(sqlite3.connect(sqlite_uri(temp, "rw"), uri=True, isolation_level=None)) as dst:
        journal_mode = src.execute("PRAGMA journal_mode").fetchone()[0]
        src.execute("BEGIN")
        try:
            source_counts = table_row_counts(src)  # the first read fixes the snapshot
            src.backup(dst, pages=-1)
        finally:
            src.execute("COMMIT")
        # The copied header says WAL when the source is; DELETE makes the backup one self-contained file.
        mode = dst.execute("PRAGMA journal_mode=DELETE").fetchone()[0]
        if mode.lower() != "delete":
            raise BackupError(f"{temp}: could not switch the copy to journal mode DELETE (still {mode})")
    return journal_mode.lower(), source_counts


def locked_file_copy(source: Path, fd: int, busy_timeout_s: float) -> dict | None:
    """Copy the database file itself under SQLite's write lock; None when its -wal holds rows.

    For a stopped daemon: the write lock keeps any other writer out and an empty -wal means the
    main file is the whole database, so the bytes copied are one consistent state (a hot
    rollback journal is replayed by SQLite when the lock is taken). Rows still in -wal (a daemon
    that was killed) need the backup API instead, which reads them through SQLite. sha256 is None
    after a reflink (copy_method "reflink"): finish_backup hashes it outside the lock.
    Only the copy stands in the downtime: its row counts, sha256 and fsync are left to finish_backup
    (row_counts and sha256 None), which reads them from the copy beside the migration.
    """
    with closing(connect_writable(source, busy_timeout_s)) as conn:
        conn.execute("BEGIN IMMEDIATE")
        try:
            if not wal_is_empty(source):
                return None
            journal_mode = conn.execute("PRAGMA journal_mode").fetchone()[0].lower()
            version, counts = current_version(conn), None
            with open(source, "rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                copy_method, digest = copy_database_file(handle.fileno(), fd, size, hash_later=True)
        finally:
            conn.execute("ROLLBACK")
    return {"journal_mode": journal_mode, "schema_version": version, "row_counts": counts, "sha256": digest,
            "size": size, "copy_method": copy_method}


def confirm_backup(result: dict, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S) -> None:
    """quick_check the published backup and match its version and row counts with its manifest."""
    version, counts = check_backup_file(Path(result["backup"]), busy_timeout_s)
    if result["row_counts"] is None:  # a file copy under the write lock: byte-identical, counted here
        result["row_counts"] = counts
    if version != result["schema_version"] or counts != result["row_counts"]:
        raise BackupError(f"{result['backup']}: the copy reads v{version} with row counts {counts}, its manifest says "
                          f"v{result['schema_version']} with {result['row_counts']}; do not restore it")


def check_backup_file(path: Path, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S) -> tuple[int, dict[str, int]]:
    """Header, quick_check, schema version and row counts of a finished copy; raise when it is not sound."""
    header = read_header(path)
    if file_format(header) != "rollback":
        raise BackupError(f"{path}: the copy is not a self-contained SQLite file (header {header[:16]!r}, format bytes "
                          f"18-19 = {header[18:20].hex()})")
    with closing(sqlite3.connect(sqlite_uri(path, "ro"), uri=True, timeout=busy_timeout_s,
                                 isolation_level=None)) as conn:
        checked = integrity_result(conn, "quick")
        if not checked["ok"]:
            raise BackupError(f"{path}: quick_check of the copy failed: {'; '.join(checked['errors'][:3])}")
        conn.execute("BEGIN")
        try:
            version = current_version(conn)
            counts = table_row_counts(conn)
        finally:
            conn.execute("COMMIT")
    return version, counts


def backup_database(path: str | os.PathLike, backup_dir: str | os.PathLike,
                    retention_days: int = ROLE_DEFAULTS["riskmgr_backup_retention_days"],
                    max_backups: int = ROLE_DEFAULTS["riskmgr_backup_max"], busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
                    free_space_margin: float = 1.1, check_mode: bool = False, want_diff: bool = False,
                    clock: Callable[[], datetime] = utc_now, token: Callable[[], str] = new_token,
                    free_bytes_of: Callable[[Path], int] = free_bytes, daemon_stopped: bool = False,
                    finish_later: bool = False) -> dict:
    """Write a verified backup of `path` and its manifest into backup_dir, then apply retention.

    daemon_stopped allows the file copy (see write_backup). finish_later leaves the check of
    that copy and the retention to the caller (finish_backup), which runs them while it goes on
    with the migration; nothing old is pruned before the new backup is confirmed.
    clock, token and free_bytes_of exist for tests (planted names, a full disk).
    """
    started = time.monotonic()
    source, directory = Path(path), Path(backup_dir)
    validate_backup_options(retention_days, max_backups, free_space_margin)
    require_sqlite_file(source)
    if os.path.lexists(directory) and not directory.is_dir():
        raise BackupError(f"{directory}: exists and is not a directory; point backup_dir at a directory")
    if os.path.realpath(directory) == os.path.realpath(source.parent):
        raise BackupError(f"{directory}: is the database's own directory; give backups a directory of their own "
                          "(it is forced to mode 0700)")
    needed = needed_bytes(database_bytes(source), free_space_margin)
    free = free_bytes_of(directory)
    check_free_space(directory, needed, free, f"a backup of {source} ({free_space_margin:g} x database and -wal)")
    before = list_backups(directory, source.stem)
    result = {"changed": True, "needed_bytes": needed, "free_bytes": free}
    if check_mode:
        result.update(predict_backup(source, directory, before, retention_days, max_backups, busy_timeout_s,
                                     clock(), want_diff))
    else:
        result.update(write_backup(source, directory, busy_timeout_s, clock, token, daemon_stopped, needed))
        result["seconds"] = round(time.monotonic() - started, 4)
        if finish_later:
            return result
        finish_backup(result, source, directory, retention_days, max_backups, busy_timeout_s, clock)
        if want_diff:
            result["diff"] = backup_diff(directory, before, [Path(result["backup"]).name,
                                                             Path(result["manifest"]).name], result["pruned"])
    result["seconds"] = round(time.monotonic() - started, 4)
    return result


def finish_backup(result: dict, source: Path, directory: Path, retention_days: int, max_backups: int,
                  busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S, clock: Callable[[], datetime] = utc_now) -> dict:
    """Confirm a backup published unchecked, then prune what retention no longer keeps.

    A reflink published without its sha256 and manifest (write_backup) is hashed here first, and
    its manifest written only once it passed: a backup that fails its check never looks valid.
    """
    if not result["confirmed"]:
        started = time.monotonic()
        pending = result.pop("manifest_pending", None)
        if pending is not None:
            fsync_path(result["backup"])  # durable before the migration may commit over its source
            result["sha256"] = sha256_file(result["backup"])
        confirm_backup(result, busy_timeout_s)
        if pending is not None:
            final = Path(result["backup"])
            write_manifest(final, build_manifest(final, result["sha256"], result["size"], result["schema_version"],
                                                 result["row_counts"], source, result["source_journal_mode"],
                                                 datetime.fromisoformat(pending), result["copy_method"]),
                           owner_for_root(source))
            fsync_path(directory)
        result["confirmed"] = True
        result["confirm_seconds"] = round(time.monotonic() - started, 4)
    doomed = plan_retention(list_backups(directory, source.stem), clock(), retention_days, max_backups,
                            frozenset({Path(result["backup"])}))
    result["pruned"] = prune_backups(doomed, result["backup"])
    return result


def predict_backup(source: Path, directory: Path, before: list[BackupEntry], retention_days: int,
                   max_backups: int, busy_timeout_s: float, now: datetime, want_diff: bool) -> dict:
    """What a real run would write and prune, read from the live file without writing anything."""
    try:
        with closing(connect_readonly(source, busy_timeout_s)) as conn:
            conn.execute("BEGIN")
            try:
                version, counts = current_version(conn), table_row_counts(conn)
            finally:
                conn.execute("COMMIT")
    except sqlite3.Error as err:
        raise BackupError(sqlite_error_text(source, err, busy_timeout_s)) from err
    final = directory / backup_file_name(source.stem, version, now)
    would_be = BackupEntry(final, version, now, True)
    doomed = plan_retention(before + [would_be], now, retention_days, max_backups, frozenset({final}))
    result = {"backup": str(final), "manifest": str(manifest_path(final)),
              "name_pattern": backup_name_pattern(source.stem, version), "sha256": None, "size": None,
              "copy_method": None,
              "schema_version": version, "row_counts": counts, "pruned": [str(e.path) for e in doomed]}
    if want_diff:
        result["diff"] = backup_diff(directory, before, [final.name, manifest_path(final).name], result["pruned"])
    return result


def write_backup(source: Path, directory: Path, busy_timeout_s: float, clock: Callable[[], datetime],
                 token: Callable[[], str], daemon_stopped: bool = False, needed: int | None = None) -> dict:
    """Copy, check, hash, publish and describe one backup; on any failure remove what we wrote.

    daemon_stopped: the caller stopped the daemon, so the file itself is copied under the write
    lock (a reflink, else one kernel copy) unless -wal holds rows. That copy is published unchecked
    (result["confirmed"] false) and without its sha256, row counts and manifest: the caller runs
    finish_backup() on it, in parallel with the migration, before anything relies on it; that fsyncs,
    hashes, checks and counts it, and writes the manifest once the check passed.
    Otherwise the backup API takes a snapshot that the daemon's writes do not disturb, and it is
    checked before it is published.
    needed (bytes, from the free-space check) is only quoted when the directory fills up meanwhile.
    """
    owner = owner_for_root(source)
    try:
        prepare_backup_dir(directory, owner)
    except OSError as err:
        raise BackupError(f"{directory}: cannot prepare the backup directory ({err.strerror}); "
                          "create it or run the task as root (become)") from err
    created = clock()
    # The version is only known once copied: the temp name carries a placeholder version.
    try:
        fd, temp = create_temp(directory, backup_file_name(source.stem, 0, created), FILE_MODE, owner, token)
    except OSError as err:
        raise BackupError(f"{backup_failure_text(source, err, busy_timeout_s, directory, needed)}; no backup was "
                          "written, the live database is untouched") from err
    final: Path | None = None
    published = False
    try:
        copied = locked_file_copy(source, fd, busy_timeout_s) if daemon_stopped else None
        if copied is not None:
            if not same_file(fd, temp):
                raise BackupError(f"{temp}: the temporary copy was replaced while it was written")
            journal_mode, version, counts = copied["journal_mode"], copied["schema_version"], copied["row_counts"]
            digest, size, copy_method = copied["sha256"], copied["size"], copied["copy_method"]
        else:
            copy_method = None
            journal_mode, source_counts = snapshot_copy(source, temp, busy_timeout_s)
            if not same_file(fd, temp):
                raise BackupError(f"{temp}: the temporary copy was replaced while it was written")
            os.fsync(fd)
            version, counts = check_backup_file(temp, busy_timeout_s)
            if counts != source_counts:
                raise BackupError(f"{temp}: row counts of the copy {counts} differ from the snapshot it was copied "
                                  f"from {source_counts}")
            digest, size = sha256_fd(fd)
        final = directory / backup_file_name(source.stem, version, created)
        publish_exclusive(temp, final)
        published = True
        fsync_path(directory)
        if digest is None:
            manifest = manifest_path(final)  # written by finish_backup, once the reflink is hashed and checked
        else:
            manifest = write_manifest(final, build_manifest(final, digest, size, version, counts, source, journal_mode,
                                                            created, copy_method), owner, token)
            fsync_path(directory)
    except BaseException as err:
        removed = [str(p) for p in undo_backup(temp, final if published else None)]
        if isinstance(err, (RiskmgrError, sqlite3.Error, OSError)):
            raise BackupError(f"{backup_failure_text(source, err, busy_timeout_s, directory, needed)}; no backup was "
                              f"written (removed {', '.join(removed) or 'nothing'}), the live database is untouched"
                              ) from err
        raise
    finally:
        os.close(fd)
    result = {"backup": str(final), "manifest": str(manifest), "sha256": digest, "size": size,
              "schema_version": version, "row_counts": counts, "source_journal_mode": journal_mode,
              "method": "file copy" if copied is not None else "backup API", "copy_method": copy_method,
              "confirmed": copied is None}
    if digest is None:
        result["manifest_pending"] = created.isoformat()
    return result


def undo_backup(temp: Path, final: Path | None) -> list[Path]:
    """Remove the temp copy, and a published backup whose manifest was not written: both are ours."""
    removed = [p for p in (temp, final) if p is not None and os.path.lexists(p)]
    remove_temp_database(temp)
    if final is not None:
        remove_quietly(final)  # the manifest is published last, so a failure never left one for it
    return removed


def is_disk_full(err: BaseException) -> bool:
    if isinstance(err, OSError):
        return err.errno in (errno.ENOSPC, errno.EDQUOT)
    return isinstance(err, sqlite3.Error) and "full" in str(err)


def backup_failure_text(source: Path, err: BaseException, busy_timeout_s: float, directory: Path | None = None,
                        needed: int | None = None) -> str:
    if directory is not None and is_disk_full(err):
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        need = f"about {megabytes(needed)} ({needed} bytes)" if needed else "the size of the database and its -wal"
        return (f"{source}: backup failed: no space left in {directory} ({reason}); the backup needs {need} free "
                f"there, {free_bytes(directory)} bytes free now; free space there (or point backup_dir at a larger "
                "filesystem) and rerun")
    if isinstance(err, sqlite3.Error):
        return sqlite_error_text(source, err, busy_timeout_s)
    if isinstance(err, OSError):
        name = f" {err.filename}" if err.filename else ""
        return f"{source}: backup failed writing{name} ({err.strerror or err})"
    return str(err)
