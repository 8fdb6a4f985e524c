"""Put a verified backup back in place of the live database, keeping every file it replaces.

A restore never deletes a file: the replaced database and its -wal and -shm are kept under new
names (`state.db.<suffix>_<time>`), and the backup is put in place with one rename, so the live
name always holds a complete database.

Plain Python, no Ansible import.
"""
from __future__ import annotations

import os
import re
import sqlite3
import stat
import time
from datetime import datetime
from pathlib import Path
from typing import Callable

from ansible.module_utils.backup_store import (
    format_timestamp, manifest_path, select_backup, utc_now, verify_backup)
from ansible.module_utils.host_files import (
    FILE_MODE, copy_hashing, create_temp, fsync_path, new_token, owner_for_root, publish_exclusive,
    remove_temp_database, sha256_file)
from ansible.module_utils.host_processes import live_file_names, processes_holding
from ansible.module_utils.sqlite_common import (
    DEFAULT_BUSY_TIMEOUT_S, BackupError, RiskmgrError, database_row_counts, free_bytes, wal_is_empty)
from ansible.module_utils.sqlite_history import database_version
from ansible.module_utils.sqlite_backups import check_free_space


KEEP_SUFFIX_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


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


# Every file a restore replaces is kept beside the database under one scheme,
# <db>.kept-<reason>-v<version>-<UTC stamp> (the version of the kept file, when it could be read).
# Before it, the reason was the suffix alone (<db>.failed_v2_<stamp>, .rollback_<stamp>, .replaced_<stamp>);
# KEPT_GLOBS finds both.
KEPT_GLOBS = ("{name}.kept-*", "{name}.failed_*", "{name}.rollback_*", "{name}.replaced_*")


def kept_reason(suffix: str) -> str:
    """The reason word of a keep_suffix: failed_v2 (the earlier spelling, version included) is failed."""
    return re.sub(r"_v\d+$", "", suffix).replace("_", "-")


def kept_names(live: Path, suffix: str, when: datetime, version: int | None = None) -> dict[str, Path]:
    """Where the current files go: <db>.kept-<reason>-v<version>-<ts>, with -wal/-shm as its own sidecars."""
    tag = f"-v{version}" if isinstance(version, int) else ""
    kept = Path(f"{live}.kept-{kept_reason(suffix)}{tag}-{format_timestamp(when)}")
    return {"": kept, "-wal": Path(f"{kept}-wal"), "-shm": Path(f"{kept}-shm")}


def kept_files(live: Path) -> list[Path]:
    """The files kept beside the live database (either naming), without their -wal/-shm sidecars."""
    found = {path for pattern in KEPT_GLOBS for path in live.parent.glob(pattern.format(name=live.name))}
    return sorted(path for path in found if not path.name.endswith(("-wal", "-shm")))


def existing_live_files(live: Path) -> list[str]:
    return [suffix for suffix in ("", "-wal", "-shm") if os.path.lexists(f"{live}{suffix}")]


def readable(read: Callable, live: Path, busy_timeout_s: float):
    """What read(live) returns, or None when the live file is missing or cannot be read (a restore goes on:
    these only describe what it replaces)."""
    if not live.exists():
        return None
    try:
        return read(live, busy_timeout_s)
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
    before_counts = readable(database_row_counts, live, busy_timeout_s) if "" in present else None
    missing_rows = rows_not_in_backup(before_counts, manifest["row_counts"])
    result = {"changed": not identical, "backup": str(chosen), "manifest": str(manifest_path(chosen)),
              "sha256": digest, "schema_version": manifest["schema_version"], "rejected": rejected,
              "row_counts_before": before_counts, "rows_not_in_backup": missing_rows, "kept": [],
              "open_by": {str(pid): files for pid, files in holders.items()}}
    kept_version = readable(database_version, live, busy_timeout_s) if "" in present else None
    if want_diff and not identical:
        result["diff"] = restore_diff(live, live_sha, before_counts, manifest, kept_version)
    if identical:
        result["plan"] = []
        result["seconds"] = round(time.monotonic() - started, 4)
        return result

    if holders and not check_mode:
        check_not_open(live, holders)  # in check mode it is reported in open_by: the playbook stops the daemon first
    check_free_space(live.parent, manifest["size"], free_bytes_of(live.parent), f"a copy of {chosen}")
    names = kept_names(live, keep_suffix, clock(), kept_version)
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
        with open(backup, "rb") as handle:
            copied = copy_hashing(handle.fileno(), fd, os.fstat(handle.fileno()).st_size)
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
