"""sqlite_backup and sqlite_restore run through real Ansible (tests/ansible_run.py) on real files.

Each test asserts on what is on disk afterwards, read with fresh sqlite3 connections and
sha256 of the files, not only on the module's result.
"""
from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest
from ansible_run import run_module
from fixtures import MIGRATIONS, WRITER, row_counts, sha256
from make_state_db import commit_rows_only_to_wal
from sqlite_backups import backup_database
from sqlite_migration import migrate_database


HOLDER = r"""
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1])
conn.execute("SELECT COUNT(*) FROM orders").fetchone()
print("open", flush=True)
time.sleep(60)
"""


def fresh(path: Path, sql: str):
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        return conn.execute(sql).fetchone()[0]


def wal_rows(path: Path) -> int:
    return fresh(path, "SELECT COUNT(*) FROM enforcement_log WHERE rule_id = 'RULE-WAL'")


def manifest_of(backup: str | Path) -> dict:
    return json.loads(Path(f"{backup}.manifest.json").read_text())


def snapshot(directory: Path) -> dict[str, str]:
    """name -> sha256 (or kind) of every file below directory; -shm by name only (reader read marks)."""
    result = {}
    for root, dirs, files in os.walk(directory):
        for name in dirs + files:
            path = Path(root) / name
            key = str(path.relative_to(directory))
            if path.is_symlink() or path.is_dir() or name.endswith("-shm"):
                result[key] = "other"
            else:
                result[key] = sha256(path)
    return result


def mode_of(path: str | Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


# --- sqlite_backup -----------------------------------------------------------------------------------

def test_backup_module_copies_wal_only_rows_into_a_private_verified_file(v1_wal_db, tmp_path):
    backups = tmp_path / "backups"
    result = run_module("sqlite_backup", {"path": str(v1_wal_db), "backup_dir": str(backups)}, diff=True)
    assert result["changed"] and not result["failed"], result.get("msg")
    backup = Path(result["backup"])
    assert backup.name.startswith("state_v1_") and backup.suffix == ".db"
    assert wal_rows(backup) == 25 and fresh(backup, "PRAGMA quick_check") == "ok"
    manifest = manifest_of(backup)
    assert manifest["sha256"] == sha256(backup) == result["sha256"]
    assert manifest["row_counts"] == row_counts(backup) == result["row_counts"]
    assert mode_of(backups) == 0o700 and mode_of(backup) == 0o600 and mode_of(result["manifest"]) == 0o600
    assert sorted(os.listdir(backups)) == [backup.name, f"{backup.name}.manifest.json"]
    assert backup.name in result["diff"]["after"] and result["diff"]["before"] == ""


def test_backup_module_while_a_writer_commits_is_consistent(v1_db, tmp_path):
    stop = tmp_path / "stop"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(v1_db), str(stop)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "writing"
        result = run_module("sqlite_backup", {"path": str(v1_db), "backup_dir": str(tmp_path / "backups")})
    finally:
        stop.touch()
    commits = int(writer.stdout.readline())
    assert writer.wait(timeout=10) == 0 and commits > 0
    assert result["changed"] and not result["failed"], result.get("msg")
    backup = Path(result["backup"])
    counts = row_counts(backup)
    assert fresh(backup, "PRAGMA quick_check") == "ok"
    assert manifest_of(backup)["row_counts"] == counts
    assert counts["trade_history"] - 2000 == counts["enforcement_log"] - 2000  # pairs commit together
    assert 0 < counts["trade_history"] - 2000 < commits  # taken mid-stream, not before or after the writer
    assert row_counts(v1_db)["trade_history"] == 2000 + commits


def test_backup_module_check_mode_writes_nothing(v1_wal_db, tmp_path):
    before = snapshot(tmp_path)
    result = run_module("sqlite_backup", {"path": str(v1_wal_db), "backup_dir": str(tmp_path / "backups")},
                        check=True, diff=True)
    assert result["changed"] and not result["failed"], result.get("msg")
    assert snapshot(tmp_path) == before and not (tmp_path / "backups").exists()
    assert result["name_pattern"] == "state_v1_<UTC %Y%m%dT%H%M%S%fZ>.db" and result["pruned"] == []
    assert result["needed_bytes"] <= result["free_bytes"]


@pytest.mark.parametrize("fixture, text", [("empty_file", "the file is empty"),
                                           ("text_file", "not a SQLite 3 database"),
                                           ("missing_db", "no such file")])
def test_backup_module_refuses_what_is_not_a_database(fixture, text, request, tmp_path):
    db = request.getfixturevalue(fixture)
    result = run_module("sqlite_backup", {"path": str(db), "backup_dir": str(tmp_path / "backups")})
    assert result["failed"] and result["msg"].startswith(f"{db}: {text}")
    assert "\n" not in result["msg"] and not (tmp_path / "backups").exists()


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 64 KiB tmpfs: a real filesystem too small for any state database (root only)."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs", str(mount_point)],
                             capture_output=True, check=False)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here; the pure check_free_space test covers the comparison")
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=True)


def test_backup_module_refuses_a_filesystem_without_room(v1_db, tiny_tmpfs):
    backups = tiny_tmpfs / "backups"
    result = run_module("sqlite_backup", {"path": str(v1_db), "backup_dir": str(backups)})
    assert result["failed"]
    assert result["msg"].startswith(f"{backups}: not enough free space for a backup of {v1_db}")
    needed, free = result["msg"].split(": ")[2].split(" bytes needed, ")
    assert int(needed) > int(free.split(" free")[0])
    assert os.listdir(tiny_tmpfs) == []


# --- sqlite_restore ----------------------------------------------------------------------------------

@pytest.fixture
def backed_up(v1_db, tmp_path):
    """(live db, backup path): then 25 rows go to the live db's WAL only, after the backup.

    Setup calls the library directly (the backup module has its own tests): each ansible run costs ~1 s.
    """
    backup = backup_database(v1_db, tmp_path / "backups")["backup"]
    commit_rows_only_to_wal(v1_db, rows=25)
    return v1_db, Path(backup)


def test_restore_module_puts_the_backup_back_and_keeps_the_wal_rows(backed_up):
    live, backup = backed_up
    args = {"path": str(live), "backup": str(backup), "keep_suffix": "rollback"}
    result = run_module("sqlite_restore", args)
    assert result["changed"] and not result["failed"], result.get("msg")
    kept = Path(result["kept"][0])
    assert kept.name.startswith("state.db.kept-rollback-v1-")  # named for its own version
    assert result["kept"] == [str(kept), f"{kept}-wal", f"{kept}-shm"]
    assert sha256(live) == sha256(backup) == manifest_of(backup)["sha256"]
    assert wal_rows(live) == 0 and wal_rows(kept) == 25  # the kept file still answers with its WAL rows
    assert result["rows_not_in_backup"] == {"enforcement_log": 25}
    assert any("enforcement_log: 25 row(s) not in the backup, kept in " + str(kept) in w
               for w in result.get("warnings", []))

    again = run_module("sqlite_restore", args)
    assert not again["changed"] and not again["failed"] and again["kept"] == []
    assert sha256(live) == sha256(backup)


def test_restore_module_refuses_a_tampered_backup(backed_up):
    live, backup = backed_up
    with open(backup, "r+b") as handle:
        handle.seek(3000)
        byte = handle.read(1)
        handle.seek(3000)
        handle.write(bytes([byte[0] ^ 0x01]))
    before = snapshot(live.parent)
    result = run_module("sqlite_restore", {"path": str(live), "backup": str(backup)})
    assert result["failed"]
    assert result["msg"] == (f"{backup}: sha256 is {sha256(backup)} but its manifest records "
                             f"{manifest_of(backup)['sha256']}; the backup was changed or truncated and will not "
                             "be restored: pick another backup")
    assert snapshot(live.parent) == before


def test_restore_module_refuses_while_the_database_is_open(backed_up):
    live, backup = backed_up
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(live)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        before = snapshot(live.parent)
        result = run_module("sqlite_restore", {"path": str(live), "backup": str(backup)})
        assert result["failed"] and f"still open by pid {holder.pid}" in result["msg"]
        assert "stop the daemon first" in result["msg"]
        assert snapshot(live.parent) == before
    finally:
        holder.kill()
        holder.wait()


def test_restore_module_selects_the_newest_valid_v1_and_check_mode_writes_nothing(backed_up, tmp_path):
    live, older = backed_up
    backups = older.parent
    newer = Path(backup_database(live, backups)["backup"])
    assert wal_rows(newer) == 25
    tampered = Path(backup_database(live, backups)["backup"])
    with open(tampered, "ab") as handle:
        handle.write(b"\0")
    migrate_database(str(live), MIGRATIONS)
    v2 = Path(backup_database(live, backups)["backup"])
    assert v2.name.startswith("state_v2_")

    before = snapshot(tmp_path)
    args = {"path": str(live), "backup_dir": str(backups), "schema_version": 1}
    plan = run_module("sqlite_restore", args, check=True, diff=True)
    assert not plan["failed"], plan.get("msg")
    assert snapshot(tmp_path) == before
    assert plan["changed"] and plan["backup"] == str(newer)
    assert [r["backup"] for r in plan["rejected"]] == [str(tampered)]
    assert "sha256 is" in plan["rejected"][0]["reason"]
    assert plan["rows_not_in_backup"]["schema_version"] == row_counts(live)["schema_version"]
    assert plan["kept"][0].startswith(f"{live}.kept-replaced-") and "schema_version: 1" in plan["diff"]["after"]
    # The v2 file's own migration records are bound to be missing from a v1 backup: in the plan, never a warning.
    warned = " ".join(plan.get("warnings", []))
    assert "schema_version: " in " ".join(plan["plan"]) and "schema_version" not in warned
    assert "schema_migration_files" not in warned and "schema_migration_objects" not in warned

    result = run_module("sqlite_restore", args)
    assert result["changed"] and result["backup"] == str(newer)
    assert sha256(live) == sha256(newer) and "schema_version" not in row_counts(live)
    assert "schema_version" in row_counts(Path(result["kept"][0]))


def test_restore_module_wants_one_source_of_backup(backed_up):
    live, backup = backed_up
    result = run_module("sqlite_restore", {"path": str(live), "backup": str(backup),
                                           "backup_dir": str(backup.parent), "schema_version": 1})
    assert result["failed"] and "mutually exclusive" in result["msg"]
