"""The offline backup as a reflink (FICLONE) on a real XFS loop mount, and its fallbacks elsewhere.

On XFS with reflink=1 the copy shares the database's extents, so the downtime pays no byte copy
and no hash: the sha256, the manifest and the check run in the BackupCheck thread beside the
migration, and the commit waits for them. Where there are no reflinks (ext4, tmpfs) the copy
falls back to copy_file_range, then to a byte copy, without an error, and says which it used.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import sqlite3
import subprocess
import threading
from contextlib import closing
from pathlib import Path

import pytest
import host_files
import loop_xfs
import riskmgr_migrate
import sqlite_backups
from backup_store import manifest_path, verify_backup
from fixtures import row_counts, sha256
from make_state_db import build_v1_db
from riskmgr_migrate import MigrateError
from sqlite_backups import backup_database, finish_backup
from sqlite_verification import verify_database
from test_riskmgr_migrate import Host, version_of

REFLINK_FILESYSTEMS = {"xfs", "btrfs", "bcachefs"}


@pytest.fixture
def xfs(tmp_path):
    """A fresh XFS with reflink=1 on a loop mount in tmp_path, unmounted at the end."""
    reason = loop_xfs.unavailable_reason()
    if reason:
        pytest.skip(f"no XFS loop mount: {reason}")
    mount = loop_xfs.xfs_reflink_mount(tmp_path)
    try:
        mountpoint = mount.__enter__()
    except loop_xfs.LoopMountUnavailable as err:
        pytest.skip(f"no XFS loop mount: {err}")
    yield mountpoint
    mount.__exit__(None, None, None)


@pytest.fixture
def xfs_host(xfs):
    """A v1 host (state.db, its stand-in daemon) on the XFS mount; its daemons killed before the unmount."""
    host = Host(xfs / "host")
    yield host
    host.cleanup()


def filesystem_type(path: Path) -> str:
    return subprocess.run(["stat", "-f", "-c", "%T", str(path)], stdout=subprocess.PIPE, text=True,
                          check=True).stdout.strip()


def quick_check(db: Path) -> str:
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return conn.execute("PRAGMA quick_check").fetchone()[0]


@pytest.mark.parametrize("journal", ["wal", "delete"])
def test_a_reflink_backup_is_the_source_byte_for_byte_hashed_and_checked_beside_the_caller(xfs, journal):
    (xfs / "data").mkdir()
    db = build_v1_db(xfs / "data" / "state.db", rows=3000, journal=journal)
    source = db.read_bytes()
    result = backup_database(db, xfs / "backups", daemon_stopped=True, finish_later=True)
    backup = Path(result["backup"])
    assert result["method"] == "file copy" and result["copy_method"] == "reflink"
    assert loop_xfs.shared_extents(backup), "the backup does not share the database's extents"
    # Nothing of the hash, the manifest or the check was paid under the lock: finish_backup does them.
    assert result["sha256"] is None and not result["confirmed"] and not manifest_path(backup).exists()
    copied = backup.read_bytes()
    if journal == "wal":  # the one difference: the header says rollback journal, so the file stands alone
        assert source[18:20] == b"\x02\x02" and copied[18:20] == b"\x01\x01"
        copied = copied[:18] + source[18:20] + copied[20:]
    assert copied == source and db.read_bytes() == source  # the header rewrite did not reach the source
    finish_backup(result, db, xfs / "backups", 30, 10)
    assert result["confirmed"] and result["sha256"] == sha256(backup)
    manifest, digest = verify_backup(backup)
    assert digest == manifest["sha256"] == hashlib.sha256(backup.read_bytes()).hexdigest()
    assert manifest["copy_method"] == "reflink" and manifest["row_counts"] == row_counts(db)
    assert manifest["schema_version"] == 1 and manifest["size"] == len(source) and quick_check(backup) == "ok"


def test_without_reflinks_the_copy_falls_back_without_an_error(tmp_path, monkeypatch):
    kind = filesystem_type(tmp_path)
    if kind in REFLINK_FILESYSTEMS:
        pytest.skip(f"{tmp_path} is on {kind}, which has reflinks")
    (tmp_path / "data").mkdir()
    db = build_v1_db(tmp_path / "data" / "state.db", rows=3000)
    result = backup_database(db, tmp_path / "backups", daemon_stopped=True)
    assert result["copy_method"] == "copy_file_range" and result["confirmed"], kind
    manifest, digest = verify_backup(result["backup"])
    assert manifest["copy_method"] == "copy_file_range" and digest == result["sha256"]

    def no_kernel_copy(*args):
        raise OSError(errno.ENOSYS, "copy_file_range not implemented")
    monkeypatch.setattr(os, "copy_file_range", no_kernel_copy)
    again = backup_database(db, tmp_path / "backups2", daemon_stopped=True)
    assert again["copy_method"] == "byte copy" and again["confirmed"]
    assert verify_backup(again["backup"])[0]["copy_method"] == "byte copy"
    assert Path(again["backup"]).read_bytes() == Path(result["backup"]).read_bytes()


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="no tmpfs at /dev/shm")
def test_on_tmpfs_the_copy_falls_back_to_copy_file_range(tmp_path):
    if filesystem_type(Path("/dev/shm")) != "tmpfs":
        pytest.skip("/dev/shm is not a tmpfs here")
    work = Path("/dev/shm") / f"reflink-test-{os.getpid()}-{tmp_path.name}"
    work.mkdir()
    try:
        (work / "data").mkdir()
        db = build_v1_db(work / "data" / "state.db", rows=2000)
        result = backup_database(db, work / "backups", daemon_stopped=True)
        assert result["copy_method"] == "copy_file_range" and result["confirmed"]
        assert verify_backup(result["backup"])[1] == sha256(Path(result["backup"]))
    finally:
        subprocess.run(["rm", "-rf", str(work)], check=True)


@pytest.mark.parametrize("code", sorted(host_files.NO_REFLINK), ids=errno.errorcode.get)
def test_each_answer_of_a_filesystem_without_reflinks_falls_back(tmp_path, monkeypatch, code):
    def refuse(*args):
        raise OSError(code, os.strerror(code))
    monkeypatch.setattr(host_files.fcntl, "ioctl", refuse)
    db = build_v1_db(tmp_path / "state.db", rows=200)
    target = tmp_path / "copy.db"
    with open(db, "rb") as src, open(target, "w+b") as dst:
        how, digest = host_files.copy_database_file(src.fileno(), dst.fileno(), db.stat().st_size)
    assert how == "copy_file_range" and digest == sha256(target)


def test_any_other_error_of_the_clone_is_not_taken_for_a_missing_feature(tmp_path, monkeypatch):
    def broken(*args):
        raise OSError(errno.EIO, "Input/output error")
    monkeypatch.setattr(host_files.fcntl, "ioctl", broken)
    db = build_v1_db(tmp_path / "state.db", rows=200)
    with open(db, "rb") as src, open(tmp_path / "copy.db", "w+b") as dst, pytest.raises(OSError) as caught:
        host_files.copy_database_file(src.fileno(), dst.fileno(), db.stat().st_size)
    assert caught.value.errno == errno.EIO


# --- the offline upgrade on XFS -------------------------------------------------------------------

def test_the_upgrade_on_xfs_backs_up_with_a_reflink_and_checks_it_beside_the_migration(xfs_host, monkeypatch):
    host = xfs_host
    host.start()
    hashed_in = []

    def sha256_file(path):
        hashed_in.append(threading.current_thread().name)
        return real_sha256_file(path)
    real_sha256_file = sqlite_backups.sha256_file
    monkeypatch.setattr(sqlite_backups, "sha256_file", sha256_file)
    result = host.upgrade()
    # The reflink's sha256 was read in the thread beside the migration, not between the stop and it.
    assert hashed_in == ["backup-check"]
    backup = result["backup"]
    assert result["failed_phase"] is None and version_of(host.db) == 2 and host.logged_versions()[-1] == 2
    assert backup["copy_method"] == "reflink" and backup["confirmed"] and "confirm_seconds" in backup
    manifest, digest = verify_backup(backup["backup"])
    assert digest == backup["sha256"] and manifest["copy_method"] == "reflink" and manifest["schema_version"] == 1
    assert json.loads(Path(backup["manifest"]).read_text())["sha256"] == digest
    assert quick_check(Path(backup["backup"])) == "ok" and verify_database(str(host.db), host.catalog, 2)["ok"]


def test_a_reflink_that_fails_its_check_later_still_puts_the_host_back(xfs_host, monkeypatch):
    host = xfs_host
    host.start()
    seen = {}

    def corrupt_then_check(result, *args, **kwargs):
        # The clone was taken under the lock and published; damage it before its check runs.
        backup = Path(result["backup"])
        seen.update(copy_method=result["copy_method"], size=backup.stat().st_size)
        with open(backup, "r+b") as handle:
            page = 4096
            for offset in range(2 * page, seen["size"] - page, 3 * page):
                handle.seek(offset + 100)
                handle.write(os.urandom(page - 200))
        return finish_backup(result, *args, **kwargs)
    monkeypatch.setattr(riskmgr_migrate, "finish_backup", corrupt_then_check)
    with pytest.raises(MigrateError) as caught:
        host.upgrade()
    result = caught.value.fail_result
    assert seen["copy_method"] == "reflink" and result["failed_phase"] == "migrate", str(caught.value)
    assert "is v1, as the run left it" in str(caught.value)
    # The damaged copy never looked valid (no manifest), and the copy-on-write kept the database whole.
    assert not result["backup"]["confirmed"] and not Path(result["backup"]["manifest"]).exists()
    assert version_of(host.db) == 1 and quick_check(host.db) == "ok"
    assert host.pid() and host.logged_versions()[-1] == 1
