"""Resources and security: a full disk (#3), a read-only directory or a database of another user (#7),
and what the project never does (a shell, SQL built from variables, a path it cannot quote).

As in test_faults.py, each fault is injected into a real local fleet (tools/local_fleet.py) and the
operator's playbook runs for real; every end state is checked by fault_fleet.assert_end_state().
The full disks are real: small tmpfs mounts (root only), always unmounted after the test. The
read-only directory needs a user that is not root (root ignores the mode bits): a system user made
for this session, that the playbook becomes. See docs/guarantees.md, #3, #7 and "Security".
"""
from __future__ import annotations

import ast
import errno
import hashlib
import json
import os
import pwd
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import closing
from pathlib import Path

import local_fleet
import pytest
import yaml
from fault_fleet import (
    MIGRATIONS, ROOT, Fleet, assert_end_state, assert_v1_or_v2, build_big_v1, capture, query, row_counts,
    schema_state)

pytestmark = pytest.mark.slow

HOST = "local-1"
CONFIRM = ("-e", "riskmgr_confirm=true")
UNTOUCHED = r"daemon was not stopped and nothing was changed"
QUIET = ("--interval-ms", "600000")  # one row at each start: state.db keeps its bytes while it runs
PAGE = 4096
MIB = 1024 * 1024


# --- small filesystems -----------------------------------------------------------------------------

@pytest.fixture
def tmpfs():
    """mount(directory, size) -> directory: a real tmpfs of that size, unmounted after the test.

    Request it before make_fleet: fixtures are torn down in reverse, so the fleet's daemons (which
    may hold files on the mount) are stopped before the unmount.
    """
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted: list[Path] = []

    def mount(directory: Path, size: int) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(directory)],
                       check=True, capture_output=True, text=True)
        mounted.append(directory)
        return directory

    yield mount
    for directory in reversed(mounted):
        if subprocess.run(["umount", str(directory)], capture_output=True, check=False).returncode != 0:
            # Still busy (a process of a failed test holds a file there): detach it now, the
            # kernel frees it when the last file is closed.
            subprocess.run(["umount", "--lazy", str(directory)], check=True, capture_output=True)
        assert not os.path.ismount(directory)


def free_bytes(directory: Path) -> int:
    stats = os.statvfs(directory)
    return stats.f_bavail * stats.f_frsize


def fill(directory: Path, leave: int = 0) -> Path:
    """Write a filler file into directory until only `leave` bytes are free (0: until ENOSPC)."""
    filler = directory / "filler"
    chunk = bytes(MIB)
    with open(filler, "ab", buffering=0) as handle:
        while True:
            room = free_bytes(directory) - leave if leave else len(chunk)
            if room < PAGE:
                break
            try:
                handle.write(chunk[:min(len(chunk), room - room % PAGE)])
            except OSError as err:
                if err.errno != errno.ENOSPC:
                    raise
                break
    return filler


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def set_host_vars(fleet: Fleet, host: str, **variables) -> None:
    """Change a host's inventory variables (fleet.json and inventory.yml)."""
    fleet.hosts[host].update(variables)
    local_fleet.write_fleet(fleet.root, fleet.fleet)


def temp_copies(directory: Path) -> list[str]:
    """The private temp files the backup writes (`.<name>.tmp-<random>`) found in directory."""
    return sorted(p.name for p in directory.iterdir() if ".tmp-" in p.name) if directory.is_dir() else []


class FillAfterStop:
    """Fills a filesystem during the downtime: once the daemon has stopped, before the tool writes.

    The daemon closes its database (and checkpoints it) just before it removes its pidfile; from
    that moment this thread holds the database's write lock (BEGIN IMMEDIATE), which the unit needs
    for its backup copy, so the order is fixed whatever the timing: the unit's free-space check
    passes, then this fills `fill_dir` (until ENOSPC, or until `leave` bytes are free), then the
    lock is released and the unit writes into a full filesystem. With `after_temp_in`, the fill
    waits until the unit's temporary backup file exists there (its free-space check is behind it).
    """

    def __init__(self, fleet: Fleet, host: str, fill_dir: Path, leave: int = 0,
                 after_temp_in: Path | None = None, timeout: float = 90) -> None:
        self.db = fleet.db(host)
        self.pidfile = Path(fleet.hosts[host]["riskmgr_pidfile"])
        self.fill_dir, self.leave, self.after_temp_in = fill_dir, leave, after_temp_in
        self.deadline = time.monotonic() + timeout
        self.cancelled = threading.Event()
        self.error: BaseException | None = None
        self.sha_at_stop: str | None = None
        self.filled_at: float | None = None
        self.free_after_fill: int | None = None
        self.thread = threading.Thread(target=self.run, name="fill-after-stop", daemon=True)

    def __enter__(self) -> FillAfterStop:
        assert self.pidfile.exists(), f"{self.pidfile}: the daemon must run when the filler starts"
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.cancelled.set()
        self.thread.join(timeout=30)

    def wait_until(self, condition) -> bool:
        while not condition():
            if self.cancelled.is_set() or time.monotonic() > self.deadline:
                return False
            time.sleep(0.0005)
        return True

    def run(self) -> None:
        try:
            if not self.wait_until(lambda: not self.pidfile.exists()):
                return
            # timeout=0: if the unit holds the lock already, the race is lost and reported, not waited out.
            with closing(sqlite3.connect(self.db, timeout=0, isolation_level=None)) as conn:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    self.sha_at_stop = sha256(self.db)
                    if self.after_temp_in is None or self.wait_until(lambda: temp_copies(self.after_temp_in)):
                        fill(self.fill_dir, self.leave)
                        self.free_after_fill = free_bytes(self.fill_dir)
                        self.filled_at = time.monotonic()
                finally:
                    conn.execute("ROLLBACK")
        except BaseException as err:  # reported by check() in the test's thread
            self.error = err

    def check(self) -> None:
        assert self.error is None, f"the filler failed (it must hold the lock before the unit): {self.error!r}"
        assert self.filled_at is not None, "the filler never filled: the daemon was not stopped"


def preflight_only(run) -> None:
    """The run ended in play 1: the offline unit (role upgrade) never ran, no daemon was stopped."""
    assert "TASK [upgrade" not in run.stdout, run.stdout[-3000:]


def backup_sha_of_live_file(db: Path) -> str:
    """The sha256 a file-copy backup of db would have: the same bytes, with the header's WAL
    format bytes (18-19) set to rollback journal, as the copy makes them."""
    data = bytearray(db.read_bytes())
    data[18:20] = b"\x01\x01"
    return hashlib.sha256(data).hexdigest()


# --- #3 the disk fills up ------------------------------------------------------------------------

def test_3_backup_dir_too_small_is_refused_in_preflight_naming_bytes_needed_and_free(tmpfs, make_fleet):
    fleet = make_fleet()
    small = tmpfs(fleet.root.parent / "small fs", 64 * 1024)
    backups = small / "backups"
    set_host_vars(fleet, HOST, riskmgr_backup_dir=str(backups))
    db = fleet.db(HOST)
    before = capture(fleet, HOST)
    run = fleet.playbook("migrate_v2.yml", *CONFIRM)
    assert_end_state(fleet, before, run, db="unchanged", daemon="untouched", says=[
        re.escape(f"{backups} has {64 * 1024} bytes free"), re.escape(f"the backup of {db} needs ") + r"\d+",
        r"free space there or set riskmgr_backup_dir to a larger filesystem", UNTOUCHED])
    needed = int(re.search(r"needs (\d+)", run.final_error(HOST))[1])
    assert needed >= db.stat().st_size > 64 * 1024
    preflight_only(run)
    assert os.listdir(small) == []  # not even the backup directory was made


def test_3_disk_full_during_the_backup_removes_the_partial_copy_and_restarts_the_daemon_on_v1(tmpfs, make_fleet):
    fleet = make_fleet()
    fleet.restart_daemon_with(HOST, *QUIET)
    db = fleet.db(HOST)
    mount = tmpfs(fleet.root.parent / "backup fs", 16 * MIB)  # room for the backup at the preflight
    backups = mount / "backups"
    set_host_vars(fleet, HOST, riskmgr_backup_dir=str(backups))
    before = capture(fleet, HOST)
    with FillAfterStop(fleet, HOST, mount, after_temp_in=backups) as filler:
        run = fleet.playbook("migrate_v2.yml", *CONFIRM)
    filler.check()
    assert filler.free_after_fill < PAGE
    assert_end_state(fleet, before, run, db="v1", daemon="running", says=[
        r"the upgrade failed while backup", re.escape(f"no space left in {backups}"),
        r"the backup needs about [\d.]+ MB \(\d+ bytes\) free there", r"no backup was written \(removed .*\.tmp-",
        r"The database is unchanged v1", r"The daemon runs again on v1"])
    assert sha256(db) == filler.sha_at_stop  # not a byte changed (the restarted daemon's row is in -wal)
    assert os.listdir(backups) == []  # no temp copy, no backup, no manifest


def move_data_dir_to_tmpfs(fleet: Fleet, host: str, tmpfs, size: int) -> Path:
    """Put the host's data directory (state.db) on a tmpfs of `size` bytes, at the same path."""
    fleet.stop_daemon(host)
    data = fleet.db(host).parent
    on_disk = data.with_name("data on disk")
    data.rename(on_disk)
    data.mkdir(mode=0o755)
    tmpfs(data, size)
    for path in on_disk.iterdir():
        shutil.copy2(path, data / path.name)
    shutil.rmtree(on_disk)
    fleet.start_daemon(host)
    return data


def test_3_disk_full_during_the_migration_rolls_it_back_and_restarts_the_daemon_on_v1(tmpfs, make_fleet):
    fleet = make_fleet()
    fleet.restart_daemon_with(HOST, *QUIET)
    db = fleet.db(HOST)
    # The backups go elsewhere (they succeed); the database's own filesystem has room at the
    # preflight, and is filled during the downtime to 96 KiB free: the -shm (32 KiB) and the
    # daemon's next rows fit, the new indexes (about 200 KiB here) do not.
    data = move_data_dir_to_tmpfs(fleet, HOST, tmpfs, db.stat().st_size + 2 * MIB)
    backups = data.parent / "backups"
    set_host_vars(fleet, HOST, riskmgr_backup_dir=str(backups))
    before = capture(fleet, HOST)
    with FillAfterStop(fleet, HOST, data, leave=96 * 1024) as filler:
        run = fleet.playbook("migrate_v2.yml", *CONFIRM)
    filler.check()
    before.files.add("filler")  # (d) compares the data directory: the filler is ours
    assert_end_state(fleet, before, run, db="v1", daemon="running", says=[
        r"the upgrade failed while migrate", r"database or disk is full",
        re.escape(f"needs about ") + r"[\d.]+ MB free in " + re.escape(str(data)),
        r"the transaction was rolled back", r"The database is unchanged v1", r"The daemon runs again on v1"])
    # Byte for byte what the backup took right after the stop: the transaction left nothing behind.
    assert sha256(db) == filler.sha_at_stop
    manifest, = [json.loads(p.read_text()) for p in backups.glob("*.manifest.json")]
    assert manifest["sha256"] == backup_sha_of_live_file(db)


ENGINE = r"""
import json, sys
import ansible.module_utils
ansible.module_utils.__path__.append(sys.argv[1])
from ansible.module_utils.sqlite_common import RiskmgrError
from ansible.module_utils.sqlite_migration import migrate_database
try:
    migrate_database(sys.argv[2], sys.argv[3])
    print(json.dumps({"ok": True}))
except RiskmgrError as err:
    print(json.dumps({"ok": False, "msg": str(err)}))
"""


def test_3_index_sorts_spilling_into_a_full_temp_dir_roll_the_migration_back_and_name_that_dir(tmpfs, tmp_path):
    # CREATE INDEX sorts its keys in memory up to about 2 MB (cache_size), then in temp files in
    # SQLite's temp dir: SQLITE_TMPDIR, else TMPDIR, else /var/tmp, /usr/tmp, /tmp. Not the
    # database's filesystem: a small /tmp fails a big migration on a disk with room to spare.
    db = build_big_v1(tmp_path / "state.db", doublings=4)  # 32k rows in each large table, ~10 MB
    temp = tmpfs(tmp_path / "small tmp", 64 * 1024)
    before = sha256(db)
    env = dict(os.environ, SQLITE_TMPDIR=str(temp))
    done = subprocess.run([sys.executable, "-c", ENGINE, str(ROOT / "module_utils"), str(db), str(MIGRATIONS)],
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert not result["ok"], "the migration fitted in 64 KiB of temp space: no sort spilled"
    message = result["msg"]
    print(message)
    assert "\n" not in message and message.startswith(f"{db}: ")
    assert re.search(r"failed at index idx_\w+: database or disk is full", message), message
    assert re.search(re.escape(f"SQLite's temp dir {temp} (") + r"[\d.]+ MB free", message), message
    assert "the transaction was rolled back, database left unchanged" in message
    assert sha256(db) == before and schema_state(db) == "v1"
    assert os.listdir(temp) == []  # SQLite's temp files are unlinked at creation and gone with the process
