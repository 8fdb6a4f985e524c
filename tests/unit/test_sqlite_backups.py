"""sqlite_backups against real SQLite files under tmp_path: backup, retention, restore.

Evidence comes from fresh connections and the files on disk (fixtures.row_counts, sha256,
os.listdir), never from the function's own return value alone.
"""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
from contextlib import closing
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from fixtures import WRITER, row_counts, sha256
from make_state_db import commit_rows_only_to_wal
from backup_restore import restore_database
from backup_store import BackupEntry, backup_file_name, list_backups, manifest_path, plan_retention, select_backup
from host_files import create_exclusive, publish_exclusive
from host_processes import processes_holding
from sqlite_backups import backup_database, check_free_space
from sqlite_common import BackupError, RiskmgrError

NOW = datetime(2026, 11, 24, 12, 0, 0, 123456, tzinfo=timezone.utc)
TS = "20261124T120000123456Z"


def wal_rows(path: Path) -> int:
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        return conn.execute("SELECT COUNT(*) FROM enforcement_log WHERE rule_id = 'RULE-WAL'").fetchone()[0]


def quick_check(path: Path) -> str:
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        return conn.execute("PRAGMA quick_check").fetchone()[0]


def listing(directory: Path) -> dict[str, str]:
    """name -> sha256 of every entry (symlinks by target): what an operator's ls + sha256sum shows.

    A -shm file is listed by name only: it is SQLite's shared-memory index, not data, and every
    reader of a WAL database (ours, read-only, included) updates its read marks.
    """
    result = {}
    for name in sorted(os.listdir(directory)):
        path = directory / name
        if path.is_symlink():
            result[name] = "-> " + os.readlink(path)
        elif name.endswith("-shm"):
            result[name] = "shm"
        elif path.is_file():
            result[name] = sha256(path)
        else:
            result[name] = "dir"
    return result


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


# --- backup ----------------------------------------------------------------------------------------

def test_backup_of_v1_is_verified_private_and_leaves_the_live_file_alone(v1_db, tmp_path):
    live_sha = sha256(v1_db)
    backups = tmp_path / "backups"
    result = backup_database(v1_db, backups, clock=lambda: NOW)

    backup = backups / f"state_v1_{TS}.db"
    assert result["backup"] == str(backup) and result["manifest"] == str(manifest_path(backup))
    assert sorted(os.listdir(backups)) == [backup.name, manifest_path(backup).name]  # no temp file left
    manifest = json.loads(manifest_path(backup).read_text())
    assert manifest == {
        "format": 1, "backup": backup.name, "sha256": sha256(backup), "size": backup.stat().st_size,
        "schema_version": 1, "row_counts": row_counts(backup), "source_path": str(v1_db), "source_sha256": None,
        "source_journal_mode": "wal", "copy_method": None, "host": manifest["host"],
        "created_at": "2026-11-24T12:00:00.123456+00:00", "tool": "riskmgr sqlite_backup"}
    assert row_counts(backup) == row_counts(v1_db) and row_counts(backup)["orders"] == 2000
    assert quick_check(backup) == "ok"
    assert backup.read_bytes()[18:20] == b"\x01\x01"  # journal mode DELETE: one self-contained file
    assert mode_of(backups) == 0o700 and mode_of(backup) == 0o600 and mode_of(manifest_path(backup)) == 0o600
    assert sha256(v1_db) == live_sha


def test_rows_only_in_the_wal_are_in_the_backup(v1_wal_db, tmp_path):
    result = backup_database(v1_wal_db, tmp_path / "backups")
    backup = Path(result["backup"])
    assert wal_rows(backup) == 25
    assert not Path(f"{backup}-wal").exists()
    assert json.loads(manifest_path(backup).read_text())["row_counts"]["enforcement_log"] == 2025
    assert Path(f"{v1_wal_db}-wal").stat().st_size > 0  # the live WAL was not checkpointed by us


def test_backup_while_a_writer_commits_is_consistent(v1_db, tmp_path):
    stop = tmp_path / "stop"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(v1_db), str(stop)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "writing"
        results = [backup_database(v1_db, tmp_path / "backups", max_backups=100) for _ in range(3)]
    finally:
        stop.touch()
    commits = int(writer.stdout.readline())
    assert writer.wait(timeout=10) == 0 and commits > 0  # the writer was never blocked into failing
    for result in results:
        backup = Path(result["backup"])
        counts = row_counts(backup)
        assert quick_check(backup) == "ok"
        assert json.loads(manifest_path(backup).read_text())["row_counts"] == counts
        # Both rows of a pair commit together: a consistent snapshot has as many of one as the other.
        assert counts["trade_history"] - 2000 == counts["enforcement_log"] - 2000
    assert row_counts(v1_db)["trade_history"] == 2000 + commits
    taken = [row_counts(Path(r["backup"]))["trade_history"] for r in results]
    assert taken == sorted(taken) and taken[-1] < 2000 + commits


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands files to another owner")
def test_as_root_backups_and_restores_are_owned_like_the_database(v1_db, tmp_path):
    os.chown(v1_db, 4321, 4322)
    result = backup_database(v1_db, tmp_path / "backups")
    for path in (tmp_path / "backups", result["backup"], result["manifest"]):
        assert (os.stat(path).st_uid, os.stat(path).st_gid) == (4321, 4322)
    restore_database(v1_db, backup=result["backup"])
    assert (os.stat(v1_db).st_uid, os.stat(v1_db).st_gid) == (4321, 4322)


def test_backups_beside_the_database_are_refused(v1_db, tmp_path):
    with pytest.raises(BackupError, match=rf"^{tmp_path}: is the database's own directory"):
        backup_database(v1_db, tmp_path)


@pytest.mark.parametrize("fixture, text", [("empty_file", "the file is empty"),
                                           ("text_file", "not a SQLite 3 database"),
                                           ("missing_db", "no such file")])
def test_not_a_database_is_refused_before_anything_is_written(fixture, text, request, tmp_path):
    db = request.getfixturevalue(fixture)
    with pytest.raises(RiskmgrError, match=f"^{db}: {text}"):
        backup_database(db, tmp_path / "backups")
    assert not (tmp_path / "backups").exists()
    assert not db.exists() if fixture == "missing_db" else True


def test_short_free_space_is_refused_naming_dir_needed_and_free(v1_wal_db, tmp_path):
    backups = tmp_path / "backups"
    needed = -(-int((v1_wal_db.stat().st_size + Path(f"{v1_wal_db}-wal").stat().st_size) * 1.1) // 1)
    with pytest.raises(BackupError, match=rf"^{backups}: not enough free space for a backup of {v1_wal_db} "
                                          rf"\(1.1 x database and -wal\): \d+ bytes needed, 4096 free; free space"):
        backup_database(v1_wal_db, backups, free_bytes_of=lambda _: 4096)
    assert not backups.exists()
    with pytest.raises(BackupError, match="not enough free space"):
        backup_database(v1_wal_db, backups, check_mode=True, free_bytes_of=lambda _: 4096)
    assert abs(backup_database(v1_wal_db, backups, check_mode=True)["needed_bytes"] - needed) <= 1


def test_free_space_check_is_a_pure_comparison(tmp_path):
    check_free_space(tmp_path, 100, 100, "x")
    with pytest.raises(BackupError, match=rf"^{tmp_path}: not enough free space for x: 101 bytes needed, 100 free"):
        check_free_space(tmp_path, 101, 100, "x")


def test_a_planted_symlink_is_never_written_through(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    (tmp_path / "link").symlink_to(outside)
    with pytest.raises(FileExistsError):
        create_exclusive(tmp_path / "link")
    own = tmp_path / "own"
    os.close(create_exclusive(own))
    with pytest.raises(BackupError, match=rf"^{tmp_path}/link: already exists \(a symlink to {outside}\); refusing"):
        publish_exclusive(own, tmp_path / "link")
    assert outside.read_text() == "precious" and own.exists()


def test_symlinks_planted_at_the_temp_and_final_names_are_not_followed(v1_db, tmp_path):
    backups, outside = tmp_path / "backups", tmp_path / "outside.db"
    backups.mkdir(mode=0o700)
    outside.write_bytes(b"not yours")
    tokens = iter(["planted", "fresh", "m1"])
    planted_temp = backups / f".state_v0_{TS}.db.tmp-planted"
    planted_temp.symlink_to(outside)
    result = backup_database(v1_db, backups, clock=lambda: NOW, token=lambda: next(tokens))
    assert quick_check(Path(result["backup"])) == "ok" and planted_temp.is_symlink()
    assert outside.read_bytes() == b"not yours"

    later = NOW + timedelta(seconds=1)
    final = backups / backup_file_name("state", 1, later)
    final.symlink_to(outside)
    before = listing(backups)
    with pytest.raises(BackupError, match=rf"^{final}: already exists \(a symlink to {outside}\); refusing .*"
                                          r"no backup was written \(removed .*\.tmp-"):
        backup_database(v1_db, backups, clock=lambda: later)
    assert listing(backups) == before  # the temp file was removed, nothing else appeared
    assert outside.read_bytes() == b"not yours"


def test_an_existing_backup_dir_is_made_private(v1_db, tmp_path):
    backups = tmp_path / "backups"
    backups.mkdir(mode=0o755)
    backups.chmod(0o755)
    backup_database(v1_db, backups)
    assert mode_of(backups) == 0o700


def test_check_mode_writes_nothing_and_predicts_the_name(v1_wal_db, tmp_path):
    live = listing(tmp_path)
    result = backup_database(v1_wal_db, tmp_path / "backups", check_mode=True, clock=lambda: NOW)
    assert listing(tmp_path) == live and not (tmp_path / "backups").exists()
    assert result["backup"] == str(tmp_path / "backups" / f"state_v1_{TS}.db")
    assert result["changed"] and result["sha256"] is None and result["pruned"] == []
    assert result["row_counts"]["enforcement_log"] == 2025


# --- retention -------------------------------------------------------------------------------------

def entry(name: str, days_old: float, version: int = 1, manifest: bool = True) -> BackupEntry:
    return BackupEntry(Path(name), version, NOW - timedelta(days=days_old), manifest)


def test_retention_prunes_by_age_or_by_count_and_keeps_the_newest_of_each_version():
    entries = [entry("new", 0), entry("mid", 10), entry("old", 40), entry("older", 50),
               entry("v2_only", 60, version=2), entry("no_manifest", 90, manifest=False)]
    assert [e.path.name for e in plan_retention(entries, NOW, 30, 10)] == ["old", "older"]  # age alone
    assert [e.path.name for e in plan_retention(entries, NOW, 365, 1)] == ["mid", "old", "older"]  # count alone
    assert [e.path.name for e in plan_retention(entries, NOW, 45, 0)] == ["older"]  # 0: no count limit
    assert plan_retention(entries, NOW, 0, 0) == []  # both limits off
    assert [e.path.name for e in plan_retention(entries, NOW, 0, 1, frozenset({Path("mid")}))] == ["old", "older"]


def fake_backup(real: Path, directory: Path, version: int, when: datetime, manifest: bool = True) -> Path:
    target = directory / backup_file_name("state", version, when)
    shutil.copy(real, target)
    if manifest:
        data = json.loads(manifest_path(real).read_text())
        data.update(backup=target.name, schema_version=version, created_at=when.isoformat())
        manifest_path(target).write_text(json.dumps(data))
    return target


def test_retention_prunes_old_backups_of_this_db_only(v1_db, tmp_path):
    backups = tmp_path / "backups"
    seed = Path(backup_database(v1_db, backups, clock=lambda: NOW - timedelta(days=400))["backup"])
    old = [fake_backup(seed, backups, 1, NOW - timedelta(days=d)) for d in (100, 90, 80)]
    v2_old = fake_backup(seed, backups, 2, NOW - timedelta(days=200))
    no_manifest = fake_backup(seed, backups, 1, NOW - timedelta(days=300), manifest=False)
    others = [backups / "notes.txt", backups / "other_v1_20200101T000000000000Z.db",
              backups / "state_v1_2020.db"]
    for path in others:
        path.write_text("not ours")
    before = listing(backups)

    check = backup_database(v1_db, backups, retention_days=365, max_backups=2, check_mode=True, clock=lambda: NOW)
    assert listing(backups) == before
    result = backup_database(v1_db, backups, retention_days=365, max_backups=2, clock=lambda: NOW)
    assert result["pruned"] == check["pruned"] == [str(p) for p in (old[1], old[0], seed)]
    remaining = set(os.listdir(backups))
    for path in [old[1], old[0], seed]:
        assert path.name not in remaining and manifest_path(path).name not in remaining
    for path in [old[2], v2_old, no_manifest, *others, Path(result["backup"])]:
        assert path.name in remaining  # within the newest 2, newest v2, not ours, new
    assert {e.path for e in list_backups(backups, "state")} == {old[2], v2_old, no_manifest, Path(result["backup"])}


# --- restore ---------------------------------------------------------------------------------------

@pytest.fixture
def backed_up(v1_db, tmp_path):
    """(live db, its backup), then 25 rows committed to the live db's WAL only: they are not in the backup."""
    result = backup_database(v1_db, tmp_path / "backups")
    commit_rows_only_to_wal(v1_db, rows=25)
    return v1_db, Path(result["backup"])


def test_restore_keeps_the_current_files_and_their_wal_rows(backed_up, tmp_path):
    live, backup = backed_up
    result = restore_database(live, backup=backup, keep_suffix="rollback", clock=lambda: NOW)

    kept = Path(f"{live}.kept-rollback-v1-{TS}")
    assert result["kept"] == [str(kept), f"{kept}-wal", f"{kept}-shm"]
    assert all(Path(p).exists() for p in result["kept"])
    assert not Path(f"{live}-wal").exists() and not Path(f"{live}-shm").exists()
    assert sha256(live) == sha256(backup) == result["sha256"]
    assert wal_rows(live) == 0 and row_counts(live) == json.loads(manifest_path(backup).read_text())["row_counts"]
    assert wal_rows(kept) == 25  # the kept file, opened with sqlite3, still has its WAL-only rows
    assert result["rows_not_in_backup"] == {"enforcement_log": 25}
    assert result["row_counts_before"]["enforcement_log"] == 2025
    assert not [n for n in os.listdir(live.parent) if ".tmp-" in n]

    again = restore_database(live, backup=backup, keep_suffix="rollback")
    assert not again["changed"] and again["kept"] == []
    assert sorted(os.listdir(live.parent)) == sorted(["backups", live.name, kept.name, f"{kept.name}-wal",
                                                      f"{kept.name}-shm"])


def test_restore_over_v2_counts_rows_of_tables_the_backup_lacks(v1_db, tmp_path):
    backup = Path(backup_database(v1_db, tmp_path / "backups")["backup"])
    from sqlite_migration import migrate_database
    from fixtures import MIGRATIONS
    migrate_database(str(v1_db), MIGRATIONS)
    result = restore_database(v1_db, backup=backup, check_mode=True)
    assert result["rows_not_in_backup"]["schema_version"] == row_counts(v1_db)["schema_version"] > 0
    assert "orders" not in result["rows_not_in_backup"]


def test_a_tampered_backup_is_never_restored(backed_up):
    live, backup = backed_up
    data = bytearray(backup.read_bytes())
    data[5000] ^= 0xFF
    backup.write_bytes(bytes(data))
    before = listing(live.parent)
    with pytest.raises(BackupError, match=rf"^{backup}: sha256 is {sha256(backup)} but its manifest records "
                                          r"[0-9a-f]{64}; the backup was changed"):
        restore_database(live, backup=backup)
    assert listing(live.parent) == before


def test_a_backup_without_manifest_is_refused(backed_up):
    live, backup = backed_up
    manifest_path(backup).unlink()
    with pytest.raises(BackupError, match=rf"^{backup}: has no manifest"):
        restore_database(live, backup=backup)


HOLDER = r"""
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1])
conn.execute("SELECT COUNT(*) FROM orders").fetchone()
print("open", flush=True)
time.sleep(60)
"""


def test_restore_refuses_while_a_process_has_the_database_open(backed_up):
    live, backup = backed_up
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(live)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        assert holder.pid in processes_holding([str(live)])
        before = listing(live.parent)
        with pytest.raises(BackupError, match=rf"^{live}: still open by pid .*{holder.pid} \(state.db.*"
                                              "stop the daemon first"):
            restore_database(live, backup=backup)
        assert listing(live.parent) == before
        assert restore_database(live, backup=backup, check_mode=True)["open_by"] == {
            str(holder.pid): [str(live), f"{live}-wal", f"{live}-shm"]}
    finally:
        holder.kill()
        holder.wait()


def test_selection_takes_the_newest_valid_backup_of_the_version(v1_db, tmp_path):
    backups = tmp_path / "backups"
    seed = Path(backup_database(v1_db, backups, clock=lambda: NOW - timedelta(days=3))["backup"])
    good = fake_backup(seed, backups, 1, NOW - timedelta(days=2))
    tampered = fake_backup(seed, backups, 1, NOW - timedelta(days=1))
    with open(tampered, "r+b") as handle:
        handle.truncate(4096)
    newest_v2 = fake_backup(seed, backups, 2, NOW)
    manifest = json.loads(manifest_path(newest_v2).read_text())
    backup, chosen, digest, rejected = select_backup(backups, "state", 1)
    assert backup == good and digest == sha256(good) and chosen["backup"] == good.name
    assert [r["backup"] for r in rejected] == [str(tampered)] and "sha256 is" in rejected[0]["reason"]
    assert manifest["schema_version"] == 2 and select_backup(backups, "state", 2)[0] == newest_v2

    live_before = listing(tmp_path)
    result = restore_database(v1_db, backup_dir=backups, schema_version=1, check_mode=True)
    assert listing(tmp_path) == live_before
    assert result["backup"] == str(good) and result["rejected"] == rejected and result["changed"]
    with pytest.raises(BackupError, match=rf"^{backups}: no valid v3 backup of state \(0 rejected\)"):
        select_backup(backups, "state", 3)


def test_restore_with_no_live_database_just_puts_the_backup_in_place(backed_up, tmp_path):
    live, backup = backed_up
    target = tmp_path / "fresh" / "state.db"
    target.parent.mkdir()
    result = restore_database(target, backup=backup)
    assert result["changed"] and result["kept"] == [] and result["row_counts_before"] is None
    assert sha256(target) == sha256(backup) and mode_of(target) == 0o600
    assert os.listdir(target.parent) == ["state.db"]


def test_restore_keeps_the_live_files_mode(backed_up):
    live, backup = backed_up
    live.chmod(0o640)
    restore_database(live, backup=backup)
    assert mode_of(live) == 0o640


def test_bad_keep_suffix_is_refused(backed_up):
    live, backup = backed_up
    with pytest.raises(BackupError, match="keep_suffix '../x' must be letters"):
        restore_database(live, backup=backup, keep_suffix="../x")


def test_a_held_write_lock_does_not_stop_a_wal_backup_and_its_rows_stay_out(locked_db, tmp_path):
    result = backup_database(locked_db, tmp_path / "backups", busy_timeout_s=1)
    with closing(sqlite3.connect(f"file:{result['backup']}?mode=ro", uri=True)) as conn:
        assert conn.execute("SELECT COUNT(*) FROM session_state WHERE key = 'lock.holder'").fetchone()[0] == 0


def test_a_rollback_journal_database_in_a_read_only_directory_is_backed_up(readonly_dir_db, tmp_path):
    result = backup_database(readonly_dir_db, tmp_path / "backups")
    assert result["source_journal_mode"] == "delete"
    assert row_counts(Path(result["backup"])) == row_counts(readonly_dir_db)
