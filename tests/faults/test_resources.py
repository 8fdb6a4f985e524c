"""Resources and security: a full disk (#3), a read-only directory or a database of another user (#7),
and database paths with quotes, shell characters or a `$` (the static security checks, no shell and
no SQL built from variables, are in tests/static/test_security.py).

As in test_faults.py, each fault is injected into a real local fleet (tools/local_fleet.py) and the
operator's playbook runs for real; every end state is checked by fault_fleet.assert_end_state().
The full disks are real: small tmpfs mounts (root only), always unmounted after the test. The
read-only directory needs a user that is not root (root ignores the mode bits): a system user made
for this session, that the playbook becomes. See docs/guarantees.md, #3, #7 and "Security".
"""
from __future__ import annotations

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
from fault_fleet import (
    CONFIRM, HOST, UNTOUCHED, MIGRATIONS, ROOT, Fleet, assert_end_state, assert_v1_or_v2, build_big_v1, capture, schema_state)

pytestmark = pytest.mark.slow

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


UNIT_TASK = "TASK [riskmgr : Stop the daemon, back up, migrate, verify and start it, in one host-side process]"


def preflight_only(run) -> None:
    """The run ended in play 1: the offline unit never ran (a task that ran shows: it changed or failed),
    no daemon was stopped."""
    assert UNIT_TASK not in run.stdout, run.stdout[-3000:]


def backup_sha_of_live_file(db: Path) -> str:
    """The sha256 a file-copy backup of db would have: the same bytes, with the header's WAL
    format bytes (18-19) set to rollback journal, as the copy makes them."""
    data = bytearray(db.read_bytes())
    data[18:20] = b"\x01\x01"
    return hashlib.sha256(data).hexdigest()


# --- #3 the disk fills up ------------------------------------------------------------------------

def test_backup_dir_too_small_is_refused_in_preflight_naming_bytes_needed_and_free(tmpfs, make_fleet):
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


def test_disk_full_during_the_backup_removes_the_partial_copy_and_restarts_the_daemon_on_v1(tmpfs, make_fleet):
    fleet = make_fleet()
    fleet.restart_daemon_with(HOST, *QUIET)
    db = fleet.db(HOST)
    mount = tmpfs(fleet.root.parent / "backup fs", 16 * MIB)  # room for the backup at the preflight
    backups = mount / "backups"
    set_host_vars(fleet, HOST, riskmgr_backup_dir=str(backups))
    before = capture(fleet, HOST)
    # Filled once the unit's temp copy exists: past its free-space check, before its first byte.
    with FillAfterStop(fleet, HOST, mount, after_temp_in=backups) as filler:
        run = fleet.playbook("migrate_v2.yml", *CONFIRM)
    filler.check()
    assert filler.free_after_fill < PAGE
    assert_end_state(fleet, before, run, db="v1", daemon="running", says=[
        r"the upgrade failed while backup", re.escape(f"no space left in {backups}"),
        r"the backup needs about [\d.]+ MB \(\d+ bytes\) free there", r"no backup was written \(removed .*\.tmp-",
        r"state\.db is v1, as the run left it", r"The daemon runs again on v1"])
    assert sha256(db) == filler.sha_at_stop  # not a byte changed (the restarted daemon's row is in -wal)
    assert os.listdir(backups) == []  # no temp copy, no backup, no manifest


def test_backup_dir_full_after_the_preflight_is_refused_without_stopping_the_daemon(tmpfs, make_fleet):
    fleet = make_fleet(hosts=2)
    second = "local-2"
    mount = tmpfs(fleet.root.parent / "backup fs 2", 16 * MIB)
    backups = mount / "backups"
    set_host_vars(fleet, second, riskmgr_backup_dir=str(backups))
    before = capture(fleet, second)
    # The canary (local-1) is upgraded alone first; when its daemon stops, play 1 is over for both
    # hosts: local-2 passed its preflight, and its backup filesystem fills up before its turn.
    with FillAfterStop(fleet, HOST, mount) as filler:
        run = fleet.playbook("migrate_v2.yml", *CONFIRM)
    filler.check()
    assert_v1_or_v2(fleet.db(HOST), "v2")
    assert_end_state(fleet, before, run, db="unchanged", daemon="running", says=[
        re.escape(f"{backups}: not enough free space for a backup of {fleet.db(second)}"),
        r"\d+ bytes needed, \d+ free"])
    assert not backups.exists()
    # The unit refused before its stop: its daemon must be the same process, never stopped.
    assert fleet.pid(second) == before.pid, f"{second}: the daemon was pid {before.pid}, is now {fleet.pid(second)}"


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


def test_disk_full_during_the_migration_rolls_it_back_and_restarts_the_daemon_on_v1(tmpfs, make_fleet):
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
    assert_end_state(fleet, before, run, db="v1", daemon="running", says=[
        r"the upgrade failed while migrate", r"database or disk is full",
        r"needs about [\d.]+ MB free in " + re.escape(str(data)),
        r"the transaction was rolled back", r"state\.db is v1, as the run left it", r"The daemon runs again on v1"])
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


def test_index_sorts_spilling_into_a_full_temp_dir_roll_the_migration_back_and_name_that_dir(tmpfs, tmp_path):
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
    print(f"migration error: {message}")  # shown by pytest when the test fails
    assert "\n" not in message and message.startswith(f"{db}: ")
    assert re.search(r"failed at index idx_\w+: database or disk is full", message), message
    assert re.search(re.escape(f"SQLite's temp dir {temp} (") + r"[\d.]+ MB free", message), message
    assert "the transaction was rolled back, database left unchanged" in message
    assert sha256(db) == before and schema_state(db) == "v1"
    assert os.listdir(temp) == []  # SQLite's temp files are unlinked at creation and gone with the process


# --- #7 a read-only directory, a database of another user: an unprivileged become user ------------

BECOME_USER = "riskmgr-faults"
SYSTEM_PYTHON = "/usr/bin/python3"  # the venv's interpreter lives under /root, which that user cannot enter


@pytest.fixture(scope="session")
def become_user():
    """A system user made for this session (no home, no login), removed afterwards."""
    if os.geteuid() != 0:
        pytest.skip("creating a user and becoming it needs root")
    for tool in ("useradd", "userdel", "sudo", SYSTEM_PYTHON):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is missing")
    try:
        pwd.getpwnam(BECOME_USER)  # left by a run that was killed: take it over
    except KeyError:
        subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
                        "--shell", "/usr/sbin/nologin", BECOME_USER], check=True, capture_output=True, text=True)
    try:
        yield pwd.getpwnam(BECOME_USER)
    finally:
        subprocess.run(["userdel", BECOME_USER], check=False, capture_output=True)


@pytest.fixture
def shared_fleet(become_user):
    """make() -> Fleet of one host under /tmp (tmp_path is root's only, 0700), owned by become_user, which the
    playbook becomes; its daemon is stopped (start_daemon_as) and quiet: state.db keeps its bytes while it runs."""
    base = Path(tempfile.mkdtemp(prefix="riskmgr-faults-", dir="/tmp"))
    base.chmod(0o755)
    fleets: list[Fleet] = []

    def make() -> Fleet:
        fleet = Fleet(base / f"fleet{len(fleets) + 1}")
        fleets.append(fleet)
        fleet.stop_daemon(HOST)
        argv = shlex.split(fleet.hosts[HOST]["riskmgr_start_command"])
        set_host_vars(fleet, HOST, riskmgr_start_command=shlex.join([SYSTEM_PYTHON, *argv[1:], *QUIET]),
                      ansible_python_interpreter=SYSTEM_PYTHON, ansible_become=True,
                      ansible_become_user=become_user.pw_name)
        host_dir = fleet.db(HOST).parent.parent
        for path in [host_dir, *host_dir.rglob("*")]:
            os.chown(path, become_user.pw_uid, become_user.pw_gid)
        return fleet

    yield make
    for fleet in fleets:
        fleet.destroy()
    shutil.rmtree(base, ignore_errors=True)


def start_daemon_as(fleet: Fleet, host: str, user: pwd.struct_passwd | None) -> int:
    """Start the host's daemon as `user` (None: root), as its service manager would."""
    ids = {} if user is None else {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    launched = subprocess.run(shlex.split(fleet.hosts[host]["riskmgr_start_command"]), cwd="/",
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30, check=False,
                              **ids)
    assert launched.returncode == 0 and fleet.alive(host), launched.stderr
    pid, db = fleet.pid(host), fleet.db(host)
    # It has the database open in WAL mode once it logs its start: its -wal and -shm exist from then on.
    deadline = time.monotonic() + 15
    while f"started pid {pid};" not in fleet.log(host) or not Path(f"{db}-shm").exists():
        assert fleet.alive(host) and time.monotonic() < deadline, fleet.log(host)[-2000:]
        time.sleep(0.02)
    return pid


def test_read_only_directory_is_refused_in_preflight(shared_fleet, become_user):
    fleet = shared_fleet()
    db = fleet.db(HOST)
    start_daemon_as(fleet, HOST, become_user)  # it owns the database and has its -wal and -shm open
    db.parent.chmod(0o555)
    try:
        before, unchanged = capture(fleet, HOST), sha256(db)
        run = fleet.playbook("migrate_v2.yml", *CONFIRM)
        assert sha256(db) == unchanged
        assert_end_state(fleet, before, run, db="unchanged", daemon="untouched", says=[
            re.escape(f"cannot create the run lock in {db.parent} (Permission denied)"),
            re.escape(f"{db.parent} must be writable by the task's user (become the database's owner)"), UNTOUCHED])
        preflight_only(run)
        assert not fleet.backup_dir(HOST).exists()
    finally:
        db.parent.chmod(0o755)


def refused_by_the_unit(run) -> bool:
    """True when the refusal came from the offline unit in play 2 (the preflight let the host through)."""
    return UNIT_TASK in run.stdout


def test_database_of_another_user_is_refused_and_nothing_changes(shared_fleet, become_user):
    fleet = shared_fleet()
    db = fleet.db(HOST)
    os.chown(db, 0, 0)  # root's database, in a directory the become user may write to...
    start_daemon_as(fleet, HOST, None)  # ...run by root's daemon
    before, unchanged = capture(fleet, HOST), sha256(db)
    run = fleet.playbook("migrate_v2.yml", *CONFIRM)
    assert not refused_by_the_unit(run), "the preflight let the host through"
    assert_end_state(fleet, before, run, db="unchanged", daemon="untouched", says=[
        re.escape(f"{db} is not writable by this user"), r"become", UNTOUCHED])
    assert sha256(db) == unchanged and db.stat().st_uid == 0
    assert not fleet.backup_dir(HOST).exists() and not fleet.lock(HOST).exists()


def test_read_only_directory_with_the_lock_elsewhere_is_refused_before_the_migration_writes(shared_fleet, become_user):
    # riskmgr_lock_path outside the database's directory: the lock no longer proves that directory writable.
    fleet = shared_fleet()
    db = fleet.db(HOST)
    set_host_vars(fleet, HOST, riskmgr_lock_path=str(db.parent.parent / "run" / "state.db.migrate.lock"),
                  riskmgr_backup_dir=str(db.parent.parent / "backups"))
    start_daemon_as(fleet, HOST, become_user)
    db.parent.chmod(0o555)
    try:
        before = capture(fleet, HOST)
        run = fleet.playbook("migrate_v2.yml", *CONFIRM)
        assert not refused_by_the_unit(run), "the preflight let the host through"
        assert_end_state(fleet, before, run, db="v1", daemon="untouched", says=[
            re.escape(f"directory {db.parent} is not writable by this user"), r"become", UNTOUCHED])
    finally:
        db.parent.chmod(0o755)


# --- security: any database path is quoted end to end ---------------------------------------------

QUOTED = "fleet 'single' \"double\" `id` ;x"


def test_security_a_database_path_with_quotes_and_shell_characters_migrates_end_to_end(tmp_path):
    # Spaces alone are covered by tests/integration/test_playbooks.py ("fleet with spaces").
    fleet = Fleet(tmp_path / QUOTED)
    try:
        db = fleet.db(HOST)
        assert QUOTED in str(db)
        before = capture(fleet, HOST)
        run = fleet.playbook("migrate_v2.yml", *CONFIRM)
        assert_end_state(fleet, before, run, db="v2", daemon="running")
        backup, = fleet.backup_dir(HOST).glob("state_v1_*.db")
        assert_v1_or_v2(backup, "v1")
        assert fleet.logged_versions(HOST) == [1, 2]
    finally:
        fleet.destroy()


def move_host_dir(fleet: Fleet, host: str, name: str) -> None:
    """Rename the host's directory (daemon stopped meanwhile); its paths and start command follow."""
    fleet.stop_daemon(host)
    old = fleet.db(host).parent.parent
    new = old.with_name(name)
    old.rename(new)
    variables = fleet.hosts[host]
    argv = [arg.replace(str(old), str(new)) for arg in shlex.split(variables["riskmgr_start_command"])]
    for key in ("riskmgr_db_path", "riskmgr_backup_dir", "riskmgr_pidfile", "riskmgr_log_path"):
        variables[key] = variables[key].replace(str(old), str(new))
    set_host_vars(fleet, host, riskmgr_start_command=shlex.join(argv))
    fleet.start_daemon(host)


def test_security_a_dollar_in_the_database_path_is_expanded_by_ansible_and_refused_before_any_change(make_fleet):
    # Every path option of the modules is `type: path`, which AnsibleModule expands ($VAR, ~): a
    # literal "$" cannot be in riskmgr_db_path. The expanded path does not exist: refused, untouched.
    fleet = make_fleet()
    move_host_dir(fleet, HOST, "host $HOME")
    db = fleet.db(HOST)
    before = capture(fleet, HOST)
    run = fleet.playbook("migrate_v2.yml", *CONFIRM)
    expanded = str(db).replace("$HOME", os.environ["HOME"])
    assert_end_state(fleet, before, run, db="unchanged", daemon="untouched", says=[
        re.escape(f"{db}: {expanded}: no such file; check riskmgr_db_path"), UNTOUCHED])
