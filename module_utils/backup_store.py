"""The backup store: names, the listing of a backup directory, manifests, the choice of a backup, retention.

A backup is `<stem>_v<version>_<UTC timestamp>.db` and is valid only with its manifest
(`<backup>.manifest.json`: sha256, size, schema version, row counts), written after the backup
file is final. Everything here reads or writes the store; taking a backup is sqlite_backups,
putting one back is backup_restore.

Plain Python, no Ansible import.
"""
from __future__ import annotations

import json
import os
import re
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

from ansible.module_utils.host_files import (
    FILE_MODE, create_temp, is_regular_file, new_token, publish_exclusive, remove_quietly, sha256_file)
from ansible.module_utils.sqlite_common import BackupError


MANIFEST_FORMAT = 1


MANIFEST_SUFFIX = ".manifest.json"


TOOL = "riskmgr sqlite_backup"


TIMESTAMP_FORMAT = "%Y%m%dT%H%M%S%fZ"


TIMESTAMP_RE = r"\d{8}T\d{12}Z"


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


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


def build_manifest(final: Path, digest: str, size: int, version: int, counts: dict[str, int], source: Path,
                   journal_mode: str, created: datetime, copy_method: str | None = None) -> dict:
    # copy_method: reflink, copy_file_range or byte copy for a file copy; None for the backup API.
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
        "copy_method": copy_method,
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
