"""Verified backups of the state database, their retention, and the atomic restore of one.

A backup is one self-contained SQLite file (journal mode DELETE) taken with the online backup
API from a read-only connection, so it is consistent while the daemon writes in WAL mode and
holds the committed rows that only sit in state.db-wal. It is valid only with its manifest
(`<backup>.manifest.json`: sha256, size, schema version, row counts), written after the
backup file is final. A restore never deletes a file: the replaced database and its -wal and
-shm are kept under new names, and the backup is put in place with one rename.

Plain Python, no Ansible import: pytest calls these functions on real files, and
library/sqlite_backup.py and library/sqlite_restore.py only wire them to Ansible.
"""
from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import queue
import re
import secrets
import socket
import sqlite3
import stat
import threading
import time
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable
from urllib.parse import quote

from ansible.module_utils.sqlite_common import (
    DEFAULT_BUSY_TIMEOUT_S, HASH_CHUNK, SQLITE_HEADER, BackupError, RiskmgrError, connect_readonly,
    connect_writable, database_bytes, free_bytes, fsync_path, megabytes, require_sqlite_file, sha256_file,
    sqlite_error_text, table_row_counts)
from ansible.module_utils.sqlite_schema import current_version

MANIFEST_FORMAT = 1
MANIFEST_SUFFIX = ".manifest.json"
TOOL = "riskmgr sqlite_backup"
TIMESTAMP_FORMAT = "%Y%m%dT%H%M%S%fZ"
TIMESTAMP_RE = r"\d{8}T\d{12}Z"
DIR_MODE = 0o700
FILE_MODE = 0o600
SQLITE_SIDECARS = ("-journal", "-wal", "-shm")
KEEP_SUFFIX_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# O_NOFOLLOW: a symlink planted at one of our names must make us fail, never write through it.
EXCLUSIVE_FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
TEMP_ATTEMPTS = 5
NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK}
COPY_CHUNK = 64 * 1024 * 1024
NO_KERNEL_COPY = {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EBADF}
# Header bytes 18-19 (file format write/read version): 2 = WAL, 1 = rollback journal.
WAL_FORMAT, ROLLBACK_FORMAT = b"\x02\x02", b"\x01\x01"


# --- names, times and the listing of a backup directory ----------------------------------------

def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def new_token() -> str:
    return secrets.token_hex(6)


def format_timestamp(when: datetime) -> str:
    return when.astimezone(timezone.utc).strftime(TIMESTAMP_FORMAT)


def parse_timestamp(text: str) -> datetime:
    return datetime.strptime(text, TIMESTAMP_FORMAT).replace(tzinfo=timezone.utc)


def backup_file_name(stem: str, version: int, when: datetime) -> str:
    """state_v1_20261124T120000123456Z.db: sortable, and says which schema it holds."""
    return f"{stem}_v{version}_{format_timestamp(when)}.db"


def backup_name_pattern(stem: str, version: int | str = "<N>") -> str:
    return f"{stem}_v{version}_<UTC {TIMESTAMP_FORMAT}>.db"


def backup_name_regex(stem: str) -> re.Pattern:
    return re.compile(rf"^{re.escape(stem)}_v(\d+)_({TIMESTAMP_RE})\.db$")


def manifest_path(backup: str | os.PathLike) -> Path:
    return Path(f"{backup}{MANIFEST_SUFFIX}")


def is_regular_file(path: str | os.PathLike) -> bool:
    """True for a regular file that is not a symlink (lstat: a link is never taken for its target)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


@dataclass(frozen=True)
class BackupEntry:
    path: Path
    version: int
    created: datetime
    has_manifest: bool


def list_backups(backup_dir: str | os.PathLike, stem: str) -> list[BackupEntry]:
    """Backups of database `stem` in backup_dir, newest first; anything else there is ignored."""
    directory = Path(backup_dir)
    if not directory.is_dir():
        return []
    pattern = backup_name_regex(stem)
    entries = []
    for name in os.listdir(directory):
        match = pattern.match(name)
        if match and is_regular_file(directory / name):
            entries.append(BackupEntry(directory / name, int(match.group(1)), parse_timestamp(match.group(2)),
                                       is_regular_file(manifest_path(directory / name))))
    return sorted(entries, key=lambda entry: (entry.created, entry.path.name), reverse=True)


# --- pure decisions: free space and retention ----------------------------------------------------

def needed_bytes(database_size: int, margin: float) -> int:
    return math.ceil(database_size * margin)


def check_free_space(directory: str | os.PathLike, needed: int, free: int, what: str) -> None:
    """Refuse before writing anything when `directory`'s filesystem cannot hold `needed` bytes."""
    if free < needed:
        raise BackupError(f"{directory}: not enough free space for {what}: {needed} bytes needed, {free} free; "
                          "free space on that filesystem (or point the task at another directory) and rerun")


def plan_retention(entries: list[BackupEntry], now: datetime, retention_days: int, max_backups: int,
                   protect: frozenset[Path] = frozenset()) -> list[BackupEntry]:
    """Backups to delete: older than retention_days, or beyond the newest max_backups.

    The seed's config reads "keep 30 days, at most 10": either limit prunes; 0 turns one off.

    Only backups with a manifest are considered (others are not ours to judge), the newest
    backup of each schema version is always kept (it is what a rollback to that version
    restores), and so is everything in `protect` (the backup just written).
    """
    candidates = sorted((e for e in entries if e.has_manifest), key=lambda e: (e.created, e.path.name), reverse=True)
    newest_of_version: dict[int, Path] = {}
    for entry in candidates:
        newest_of_version.setdefault(entry.version, entry.path)
    keep = set(newest_of_version.values()) | set(protect)
    cutoff = now - timedelta(days=retention_days)
    return [entry for rank, entry in enumerate(candidates)
            if entry.path not in keep
            and ((max_backups > 0 and rank >= max_backups) or (retention_days > 0 and entry.created < cutoff))]


def validate_backup_options(retention_days: int, max_backups: int, margin: float) -> None:
    if retention_days < 0 or max_backups < 0:
        raise BackupError(f"retention_days ({retention_days}) and max_backups ({max_backups}) must be 0 or more")
    if margin < 1.0:
        raise BackupError(f"free_space_margin ({margin:g}) must be at least 1.0: the copy needs the whole database")


# --- files we create: exclusive, private, never through a symlink --------------------------------

def owner_for_root(path: str | os.PathLike) -> tuple[int, int] | None:
    """(uid, gid) of path when we run as root (files are then handed to that owner), else None."""
    if os.geteuid() != 0:
        return None
    info = os.stat(path)
    return info.st_uid, info.st_gid


def create_exclusive(path: Path, mode: int = FILE_MODE, owner: tuple[int, int] | None = None) -> int:
    """Create `path` that must not exist (not even as a symlink); return its open fd."""
    fd = os.open(path, EXCLUSIVE_FLAGS, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have narrowed or (for a 0644 DB) the mode asked for
        if owner is not None:
            os.fchown(fd, *owner)
    except BaseException:
        os.close(fd)
        os.unlink(path)
        raise
    return fd


def create_temp(directory: Path, final_name: str, mode: int = FILE_MODE, owner: tuple[int, int] | None = None,
                token: Callable[[], str] = new_token) -> tuple[int, Path]:
    """A new private file `.<final>.tmp-<random>` in directory (same filesystem as the final name)."""
    for _attempt in range(TEMP_ATTEMPTS):
        temp = directory / f".{final_name}.tmp-{token()}"
        try:
            return create_exclusive(temp, mode, owner), temp
        except FileExistsError:
            continue  # something sits at that name (maybe a planted symlink): never reuse it
    raise BackupError(f"{directory}: could not create a temporary file for {final_name} after {TEMP_ATTEMPTS} "
                      "attempts (names already taken); check the directory for planted files")


def publish_exclusive(temp: Path, final: Path) -> None:
    """Give temp its final name, never replacing anything already there (file or symlink)."""
    try:
        os.link(temp, final, follow_symlinks=False)  # link(2) fails with EEXIST and never follows final
    except FileExistsError as err:
        raise BackupError(f"{final}: already exists ({describe_existing(final)}); refusing to replace it: "
                          "move it out of the way and rerun") from err
    except OSError as err:
        if err.errno not in NO_HARD_LINKS:
            raise
        if os.path.lexists(final):  # no hard links on this filesystem: check, then rename
            raise BackupError(f"{final}: already exists ({describe_existing(final)}); refusing to replace it: "
                              "move it out of the way and rerun") from err
        os.rename(temp, final)
        return
    os.unlink(temp)


def describe_existing(path: Path) -> str:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return "gone again"
    if stat.S_ISLNK(mode):
        return f"a symlink to {os.readlink(path)}"
    return "a directory" if stat.S_ISDIR(mode) else "a file"


def remove_quietly(path: Path) -> bool:
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False


def remove_temp_database(temp: Path) -> None:
    """Remove our temp file and any journal SQLite made beside it (the random name is ours alone)."""
    for suffix in ("",) + SQLITE_SIDECARS:
        remove_quietly(Path(f"{temp}{suffix}"))


def sha256_fd(fd: int) -> tuple[str, int]:
    """sha256 and size of an open file, streamed: never the whole file in memory."""
    digest, offset = hashlib.sha256(), 0
    while True:
        chunk = os.pread(fd, HASH_CHUNK, offset)
        if not chunk:
            return digest.hexdigest(), offset
        digest.update(chunk)
        offset += len(chunk)


def same_file(fd: int, path: Path) -> bool:
    """True when path still names the inode we hold open (nobody swapped it for something else)."""
    try:
        held, named = os.fstat(fd), os.lstat(path)
    except FileNotFoundError:
        return False
    return stat.S_ISREG(named.st_mode) and (held.st_dev, held.st_ino) == (named.st_dev, named.st_ino)


def sqlite_uri(path: Path, mode: str) -> str:
    # nofollow=1: SQLite refuses to open the file if a symlink has been put at its name.
    return f"{path.resolve(strict=False).parent.as_uri()}/{quote(path.name)}?mode={mode}&nofollow=1"


# --- the backup ------------------------------------------------------------------------------------

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


def copy_range(src_fd: int, dst_fd: int, offset: int, length: int) -> None:
    """length bytes at offset from src to dst: in the kernel where it can, else through a buffer."""
    done = 0
    while done < length:
        try:
            copied = os.copy_file_range(src_fd, dst_fd, length - done, offset + done, offset + done)
        except OSError as err:
            if err.errno not in NO_KERNEL_COPY:
                raise
            data = os.pread(src_fd, min(HASH_CHUNK * 8, length - done), offset + done)
            copied = os.pwrite(dst_fd, data, offset + done) if data else 0
        if copied == 0:
            raise BackupError(f"the database shrank while it was copied (at byte {offset + done}); "
                              "something else writes to it")
        done += copied


def copy_hashing(src_fd: int, dst_fd: int, size: int) -> str:
    """Copy size bytes and return the sha256 of what landed in dst, hashed while the copy goes on.

    The kernel copies chunk n+1 while a second thread hashes chunk n back from dst (both release
    the GIL), so the copy and its checksum cost about one pass. A WAL-format header becomes a
    rollback-journal one, as PRAGMA journal_mode=DELETE would make it: the backup is one
    self-contained file whatever mode the live database is in.
    """
    digest = hashlib.sha256()
    pending: queue.Queue = queue.Queue(maxsize=4)
    failure: list[BaseException] = []

    def hash_chunks() -> None:
        while (item := pending.get()) is not None:
            if failure:
                continue
            offset, length = item
            try:
                while length:
                    data = os.pread(dst_fd, min(HASH_CHUNK * 8, length), offset)
                    if not data:
                        raise BackupError("the copy is shorter than what was written to it")
                    digest.update(data)
                    offset, length = offset + len(data), length - len(data)
            except BaseException as err:  # reported by the copying thread
                failure.append(err)

    hasher = threading.Thread(target=hash_chunks, name="backup-sha256", daemon=True)
    hasher.start()
    try:
        for offset in range(0, size, COPY_CHUNK):
            length = min(COPY_CHUNK, size - offset)
            copy_range(src_fd, dst_fd, offset, length)
            if offset == 0:
                header_format = os.pread(dst_fd, 2, 18)
                if header_format == WAL_FORMAT:
                    os.pwrite(dst_fd, ROLLBACK_FORMAT, 18)
                elif header_format != ROLLBACK_FORMAT:
                    raise BackupError(f"unknown file format bytes {header_format.hex()} in the database header")
            pending.put((offset, length))
            if failure:
                break
    finally:
        pending.put(None)
        hasher.join()
    if failure:
        raise failure[0]
    return digest.hexdigest()


def locked_file_copy(source: Path, fd: int, busy_timeout_s: float) -> dict | None:
    """Copy the database file itself under SQLite's write lock; None when its -wal holds rows.

    For a stopped daemon: the write lock keeps any other writer out and an empty -wal means the
    main file is the whole database, so the bytes copied are one consistent state (a hot
    rollback journal is replayed by SQLite when the lock is taken). Rows still in -wal (a daemon
    that was killed) need the backup API instead, which reads them through SQLite.
    """
    with closing(connect_writable(source, busy_timeout_s)) as conn:
        conn.execute("BEGIN IMMEDIATE")
        try:
            if not wal_is_empty(source):
                return None
            journal_mode = conn.execute("PRAGMA journal_mode").fetchone()[0].lower()
            version, counts = current_version(conn), table_row_counts(conn)
            with open(source, "rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                digest = copy_hashing(handle.fileno(), fd, size)
        finally:
            conn.execute("ROLLBACK")
    return {"journal_mode": journal_mode, "schema_version": version, "row_counts": counts, "sha256": digest,
            "size": size}


def confirm_backup(result: dict, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S) -> None:
    """quick_check the published backup and match its version and row counts with its manifest."""
    version, counts = check_backup_file(Path(result["backup"]), busy_timeout_s)
    if version != result["schema_version"] or counts != result["row_counts"]:
        raise BackupError(f"{result['backup']}: the copy reads v{version} with row counts {counts}, its manifest says "
                          f"v{result['schema_version']} with {result['row_counts']}; do not restore it")


def check_backup_file(path: Path, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S) -> tuple[int, dict[str, int]]:
    """Header, quick_check, schema version and row counts of a finished copy; raise when it is not sound."""
    with open(path, "rb") as handle:
        header = handle.read(20)
    if header[:16] != SQLITE_HEADER:
        raise BackupError(f"{path}: the copy has no SQLite header")
    if header[18:20] != b"\x01\x01":
        raise BackupError(f"{path}: the copy is still in WAL format (header bytes 18-19 = {header[18:20].hex()})")
    with closing(sqlite3.connect(sqlite_uri(path, "ro"), uri=True, timeout=busy_timeout_s,
                                 isolation_level=None)) as conn:
        problems = [row[0] for row in conn.execute("PRAGMA quick_check")]
        if problems != ["ok"]:
            raise BackupError(f"{path}: quick_check of the copy failed: {'; '.join(problems[:3])}")
        conn.execute("BEGIN")
        try:
            version = current_version(conn)
            counts = table_row_counts(conn)
        finally:
            conn.execute("COMMIT")
    return version, counts


def build_manifest(final: Path, digest: str, size: int, version: int, counts: dict[str, int], source: Path,
                   journal_mode: str, created: datetime) -> dict:
    return {
        "format": MANIFEST_FORMAT,
        "backup": final.name,
        "sha256": digest,
        "size": size,
        "schema_version": version,
        "row_counts": counts,
        "source_path": str(source),
        "source_sha256": None,  # not computed: the live file may change while it is read
        "source_journal_mode": journal_mode,
        "host": socket.gethostname(),
        "created_at": created.isoformat(),
        "tool": TOOL,
    }


def write_manifest(final: Path, manifest: dict, owner: tuple[int, int] | None,
                   token: Callable[[], str] = new_token) -> Path:
    """<final>.manifest.json through a private temp file, fsynced, published without replacing anything."""
    target = manifest_path(final)
    fd, temp = create_temp(final.parent, target.name, FILE_MODE, owner, token)
    try:
        data = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
        written = 0
        while written < len(data):
            written += os.write(fd, data[written:])
        os.fsync(fd)
        os.close(fd)
        fd = -1
        publish_exclusive(temp, target)
    finally:
        if fd >= 0:
            os.close(fd)
        remove_quietly(temp)
    return target


def prune_backups(entries: list[BackupEntry], written: str) -> list[str]:
    """Delete each backup, then its manifest; only regular files the listing matched."""
    pruned = []
    for entry in entries:
        try:
            if is_regular_file(entry.path):
                os.unlink(entry.path)
            if is_regular_file(manifest_path(entry.path)):
                os.unlink(manifest_path(entry.path))
        except OSError as err:
            raise BackupError(f"{entry.path}: could not prune it ({err.strerror}); the new backup {written} is "
                              "written and verified, remove old backups by hand or fix the permissions") from err
        pruned.append(str(entry.path))
    return pruned


def listing_text(backup_dir: Path, names: list[str]) -> str:
    return "".join(f"{backup_dir}/{name}\n" for name in sorted(names))


def backup_diff(backup_dir: Path, before: list[BackupEntry], added: list[str], pruned: list[str]) -> dict:
    names_before = [e.path.name for e in before] + [manifest_path(e.path).name for e in before if e.has_manifest]
    gone = {Path(p).name for p in pruned} | {manifest_path(p).name for p in pruned}
    names_after = [n for n in names_before if n not in gone] + added
    return {"before": listing_text(backup_dir, names_before), "after": listing_text(backup_dir, names_after),
            "before_header": f"{backup_dir} (backups)", "after_header": f"{backup_dir} (backups)"}


# The argument_spec entries of the modules that write a backup (sqlite_backup, riskmgr_upgrade).
BACKUP_SPEC = {
    "path": {"type": "path", "required": True},
    "backup_dir": {"type": "path", "required": True},
    "retention_days": {"type": "int", "default": 30},
    "max_backups": {"type": "int", "default": 10},
    "free_space_margin": {"type": "float", "default": 1.1},
}


def backup_database(path: str | os.PathLike, backup_dir: str | os.PathLike, retention_days: int = 30,
                    max_backups: int = 10, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
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
    """Confirm a backup published unchecked, then prune what retention no longer keeps."""
    if not result["confirmed"]:
        started = time.monotonic()
        confirm_backup(result, busy_timeout_s)
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
              "schema_version": version, "row_counts": counts, "pruned": [str(e.path) for e in doomed]}
    if want_diff:
        result["diff"] = backup_diff(directory, before, [final.name, manifest_path(final).name], result["pruned"])
    return result


def write_backup(source: Path, directory: Path, busy_timeout_s: float, clock: Callable[[], datetime],
                 token: Callable[[], str], daemon_stopped: bool = False, needed: int | None = None) -> dict:
    """Copy, check, hash, publish and describe one backup; on any failure remove what we wrote.

    daemon_stopped: the caller stopped the daemon, so the file itself is copied under the write
    lock (one kernel copy, hashed on the way) unless -wal holds rows. That copy is published
    unchecked (result["confirmed"] false): the caller runs confirm_backup() on it, in parallel
    with the migration, before anything relies on it. Otherwise the backup API takes a
    snapshot that the daemon's writes do not disturb, and it is checked before it is published.
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
            os.fsync(fd)
            journal_mode, version, counts = copied["journal_mode"], copied["schema_version"], copied["row_counts"]
            digest, size = copied["sha256"], copied["size"]
        else:
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
        manifest = write_manifest(final, build_manifest(final, digest, size, version, counts, source, journal_mode,
                                                        created), owner, token)
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
    return {"backup": str(final), "manifest": str(manifest), "sha256": digest, "size": size,
            "schema_version": version, "row_counts": counts, "source_journal_mode": journal_mode,
            "method": "file copy" if copied is not None else "backup API", "confirmed": copied is None}


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


# --- the restore ---------------------------------------------------------------------------------

def read_manifest(backup: Path) -> dict:
    """The manifest of a backup, checked for shape; a backup without one is never valid."""
    target = manifest_path(backup)
    if not is_regular_file(target):
        raise BackupError(f"{backup}: has no manifest {target.name}; a backup without a manifest is not a verified "
                          "backup, pick another one")
    try:
        manifest = json.loads(target.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise BackupError(f"{target}: unreadable manifest ({err}); pick another backup") from err
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise BackupError(f"{target}: not a format {MANIFEST_FORMAT} manifest; pick another backup")
    for key, kind in (("backup", str), ("sha256", str), ("size", int), ("schema_version", int), ("row_counts", dict)):
        if not isinstance(manifest.get(key), kind):
            raise BackupError(f"{target}: manifest field {key} is missing or not a {kind.__name__}; "
                              "pick another backup")
    if manifest["backup"] != backup.name:
        raise BackupError(f"{target}: the manifest describes {manifest['backup']}, not {backup.name}; "
                          "pick another backup")
    return manifest


def verify_backup(backup: str | os.PathLike) -> tuple[dict, str]:
    """(manifest, sha256) of a backup whose bytes are still exactly what its manifest recorded."""
    backup = Path(backup)
    if not is_regular_file(backup):
        raise BackupError(f"{backup}: no such backup file (or not a regular file); check the backup path")
    manifest = read_manifest(backup)
    digest = sha256_file(backup)
    if digest != manifest["sha256"]:
        raise BackupError(f"{backup}: sha256 is {digest} but its manifest records {manifest['sha256']}; the backup "
                          "was changed or truncated and will not be restored: pick another backup")
    return manifest, digest


def select_backup(backup_dir: str | os.PathLike, stem: str, schema_version: int) -> tuple[Path, dict, str, list[dict]]:
    """The newest backup of `stem` at schema_version whose file still matches its manifest.

    Returns (backup, manifest, sha256, rejected); rejected lists the newer candidates that failed.
    """
    rejected = []
    for entry in list_backups(backup_dir, stem):
        if entry.version != schema_version:
            continue
        try:
            manifest, digest = verify_backup(entry.path)
            if manifest["schema_version"] != schema_version:
                raise BackupError(f"{entry.path}: the name says v{schema_version} but the manifest says "
                                  f"v{manifest['schema_version']}")
        except BackupError as err:
            rejected.append({"backup": str(entry.path), "reason": str(err)})
            continue
        return entry.path, manifest, digest, rejected
    detail = "; ".join(f"{r['reason']}" for r in rejected)
    raise BackupError(f"{backup_dir}: no valid v{schema_version} backup of {stem} "
                      f"({len(rejected)} rejected{': ' + detail if detail else ''}); "
                      "restore a named backup with the backup option")


def processes_holding(paths: list[str], proc: str = "/proc") -> dict[int, list[str]]:
    """{pid: [paths]} of the processes with one of `paths` open (their /proc/PID/fd links).

    Processes of other users are only visible to root: run the task with become.
    """
    wanted = set(paths)
    holders: dict[int, list[str]] = {}
    me = os.getpid()
    for entry in os.listdir(proc):
        if not entry.isdigit() or int(entry) == me:
            continue
        fd_dir = f"{proc}/{entry}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"{fd_dir}/{fd}")
            except OSError:
                continue
            if target in wanted:
                holders.setdefault(int(entry), [])
                if target not in holders[int(entry)]:
                    holders[int(entry)].append(target)
    return holders


def live_file_names(live: Path) -> list[str]:
    real = Path(os.path.realpath(live.parent)) / live.name
    return [f"{real}{suffix}" for suffix in ("", "-wal", "-shm")]


def check_not_open(live: Path, holders: dict[int, list[str]] | None = None) -> None:
    holders = processes_holding(live_file_names(live)) if holders is None else holders
    if holders:
        pids = ", ".join(f"{pid} ({', '.join(Path(p).name for p in files)})" for pid, files in sorted(holders.items()))
        raise BackupError(f"{live}: still open by pid {pids}; stop the daemon first (and any other process using "
                          "the database), then rerun")


def validate_keep_suffix(suffix: str) -> None:
    if not KEEP_SUFFIX_RE.match(suffix):
        raise BackupError(f"keep_suffix {suffix!r} must be letters, digits, '.', '_' or '-' (no '/'), "
                          "at most 64 characters")


def kept_names(live: Path, suffix: str, when: datetime) -> dict[str, Path]:
    """Where the current files go: state.db.<suffix>_<ts>, with -wal/-shm kept as its own sidecars."""
    kept = Path(f"{live}.{suffix}_{format_timestamp(when)}")
    return {"": kept, "-wal": Path(f"{kept}-wal"), "-shm": Path(f"{kept}-shm")}


def existing_live_files(live: Path) -> list[str]:
    return [suffix for suffix in ("", "-wal", "-shm") if os.path.lexists(f"{live}{suffix}")]


def wal_is_empty(live: Path) -> bool:
    try:
        return os.path.getsize(f"{live}-wal") == 0
    except FileNotFoundError:
        return True


def live_row_counts(live: Path, busy_timeout_s: float) -> dict[str, int] | None:
    if not live.exists():
        return None
    try:
        with closing(connect_readonly(live, busy_timeout_s)) as conn:
            conn.execute("BEGIN")
            try:
                return table_row_counts(conn)
            finally:
                conn.execute("COMMIT")
    except (RiskmgrError, sqlite3.Error, OSError):
        return None


def rows_not_in_backup(before: dict[str, int] | None, backup_counts: dict[str, int]) -> dict[str, int]:
    """{table: rows the live DB has beyond the backup}, for every table where that is more than 0."""
    if not before:
        return {}
    return {table: count - backup_counts.get(table, 0) for table, count in sorted(before.items())
            if count > backup_counts.get(table, 0)}


def restore_plan_lines(live: Path, backup: Path, kept: list[str], missing_rows: dict[str, int]) -> list[str]:
    kept_db = kept[0] if kept and not kept[0].endswith(("-wal", "-shm")) else None
    lines = []
    if kept:
        lines.append(f"keep the current files as {', '.join(kept)}")
    lines.append(f"put {backup} in place as {live} (one rename)")
    for table, count in missing_rows.items():
        lines.append(f"{table}: {count} row(s) not in the backup, kept in {kept_db or 'the kept files'}")
    return lines


def restore_diff(live: Path, before_sha: str | None, before_counts: dict[str, int] | None, manifest: dict,
                 before_version: int | None) -> dict:
    def text(sha: str | None, version: int | None, counts: dict[str, int] | None) -> str:
        lines = [f"sha256: {sha}", f"schema_version: {version}"]
        lines += [f"{table}: {count}" for table, count in sorted((counts or {}).items())]
        return "\n".join(lines) + "\n"
    return {"before": text(before_sha, before_version, before_counts),
            "after": text(manifest["sha256"], manifest["schema_version"], manifest["row_counts"]),
            "before_header": str(live), "after_header": f"{live} (from {manifest['backup']})"}


def live_version(live: Path, busy_timeout_s: float) -> int | None:
    try:
        with closing(connect_readonly(live, busy_timeout_s)) as conn:
            return current_version(conn)
    except (RiskmgrError, sqlite3.Error, OSError):
        return None


def restore_database(path: str | os.PathLike, backup: str | os.PathLike | None = None,
                     backup_dir: str | os.PathLike | None = None, schema_version: int | None = None,
                     keep_suffix: str = "replaced", busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
                     check_mode: bool = False, want_diff: bool = False,
                     clock: Callable[[], datetime] = utc_now, token: Callable[[], str] = new_token,
                     free_bytes_of: Callable[[Path], int] = free_bytes) -> dict:
    """Put a verified backup in place of the live database, keeping every current file."""
    started = time.monotonic()
    live = Path(path)
    validate_keep_suffix(keep_suffix)
    if (backup is None) == (backup_dir is None or schema_version is None):
        raise BackupError("give either backup, or backup_dir together with schema_version")
    if os.path.islink(live):
        raise BackupError(f"{live}: is a symlink; give the real path of the database ({os.path.realpath(live)})")
    if not live.parent.is_dir():
        raise BackupError(f"{live.parent}: no such directory; check the database path")
    rejected: list[dict] = []
    if backup is not None:
        chosen = Path(backup)
        manifest, digest = verify_backup(chosen)
    else:
        chosen, manifest, digest, rejected = select_backup(backup_dir, live.stem, schema_version)
    if os.path.lexists(live) and os.path.samefile(chosen, live):
        raise BackupError(f"{chosen}: is the live database itself; give a backup file")

    holders = processes_holding(live_file_names(live))
    present = existing_live_files(live)
    live_sha = sha256_file(live) if "" in present else None
    identical = live_sha == digest and wal_is_empty(live)
    before_counts = live_row_counts(live, busy_timeout_s) if "" in present else None
    missing_rows = rows_not_in_backup(before_counts, manifest["row_counts"])
    result = {"changed": not identical, "backup": str(chosen), "manifest": str(manifest_path(chosen)),
              "sha256": digest, "schema_version": manifest["schema_version"], "rejected": rejected,
              "row_counts_before": before_counts, "rows_not_in_backup": missing_rows, "kept": [],
              "open_by": {str(pid): files for pid, files in holders.items()}}
    if want_diff and not identical:
        result["diff"] = restore_diff(live, live_sha, before_counts, manifest,
                                      live_version(live, busy_timeout_s) if "" in present else None)
    if identical:
        result["plan"] = []
        result["seconds"] = round(time.monotonic() - started, 4)
        return result

    if holders and not check_mode:
        check_not_open(live, holders)  # in check mode it is reported in open_by: the playbook stops the daemon first
    check_free_space(live.parent, manifest["size"], free_bytes_of(live.parent), f"a copy of {chosen}")
    names = kept_names(live, keep_suffix, clock())
    for suffix in present:
        if os.path.lexists(names[suffix]):
            raise BackupError(f"{names[suffix]}: already exists; refusing to overwrite a kept file, rerun in a moment")
    result["kept"] = [str(names[suffix]) for suffix in present]
    result["plan"] = restore_plan_lines(live, chosen, result["kept"], missing_rows)
    if not check_mode:
        put_back(live, chosen, digest, present, names, token)
    result["seconds"] = round(time.monotonic() - started, 4)
    return result


def put_back(live: Path, backup: Path, digest: str, present: list[str], names: dict[str, Path],
             token: Callable[[], str]) -> None:
    """Copy the backup beside the live file, keep the current files, rename the copy into place.

    The live name always holds a complete database: the old one until the final rename, the
    backup after it. A failure before that rename moves the kept -wal/-shm back, so the old
    database still sees its WAL rows.
    """
    directory = live.parent
    if "" in present:
        info = os.stat(live)
        mode, owner = stat.S_IMODE(info.st_mode), ((info.st_uid, info.st_gid) if os.geteuid() == 0 else None)
    else:
        mode, owner = FILE_MODE, owner_for_root(directory)
    fd, temp = create_temp(directory, live.name, mode, owner, token)
    moved: list[tuple[Path, Path]] = []
    linked: Path | None = None
    try:
        copied = copy_into(backup, fd)
        if copied != digest:
            raise BackupError(f"{backup}: changed while being copied (sha256 {copied}, manifest {digest}); "
                              "nothing was replaced")
        os.fsync(fd)
        if "" in present:
            os.link(live, names[""], follow_symlinks=False)  # the current file stays, under a second name
            linked = names[""]
        for suffix in ("-wal", "-shm"):
            if suffix in present:
                publish_exclusive(Path(f"{live}{suffix}"), names[suffix])
                moved.append((Path(f"{live}{suffix}"), names[suffix]))
        os.rename(temp, live)  # atomic: readers see the old file or the backup, never a mix
    except BaseException as err:
        for original, kept in reversed(moved):
            os.rename(kept, original)
        if linked is not None:
            os.unlink(linked)  # only the extra name we added; the file itself is still the live one
        remove_temp_database(temp)
        if isinstance(err, OSError):
            where = f" on {err.filename}" if err.filename else ""
            raise BackupError(f"{live}: restore failed ({err.strerror or err}{where}); removed the temporary copy "
                              f"{temp}, the live database and its -wal are as they were; fix the cause and rerun") from err
        raise
    finally:
        os.close(fd)
    fsync_path(directory)


def copy_into(source: Path, fd: int) -> str:
    """Stream source into fd; return the sha256 of what was written."""
    digest = hashlib.sha256()
    with open(source, "rb") as handle:
        for chunk in iter(lambda: handle.read(HASH_CHUNK), b""):
            digest.update(chunk)
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view):]
    return digest.hexdigest()
