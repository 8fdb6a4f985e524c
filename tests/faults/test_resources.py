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
import functools
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


def test_3_backup_dir_full_after_the_preflight_is_refused_without_stopping_the_daemon(tmpfs, make_fleet):
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


def test_7_read_only_directory_is_refused_in_preflight(shared_fleet, become_user):
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
    return "TASK [upgrade" in run.stdout


def test_7_database_of_another_user_is_refused_and_nothing_changes(shared_fleet, become_user):
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


def test_7_read_only_directory_with_the_lock_elsewhere_is_refused_before_the_migration_writes(shared_fleet,
                                                                                               become_user):
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


# --- security: no shell, no SQL built from variables, any path quoted ------------------------------

YAML_ROOTS = ("roles", "playbooks", "molecule")
PLAY_TASK_KEYS = ("pre_tasks", "tasks", "post_tasks", "handlers")
BLOCK_KEYS = ("block", "rescue", "always")
SHELL_MODULES = {"shell", "raw", "script", "win_shell", "expect"}  # short names, any collection
COMMAND_MODULES = {"command"}
# In a command line given as one string: what only a shell would give a meaning to, and Jinja
# (a templated string is split on whitespace after templating: a value with a space becomes two).
SHELL_METACHARACTERS = re.compile(r"[|&;<>()$`\\*?\[\]{}!~#\n]")
# Test scaffolding of the Molecule ssh scenario (it provisions sshd and users on the machine that
# runs Molecule; none of it runs on a fleet host). Each entry: (file, task name) -> why it is accepted.
ALLOWED_SHELL_TASKS = {
    ("molecule/ssh/destroy.yml", "Stop each host's stand-in daemon, by its pid file"):
        "a pid-file loop in bash; every value comes in through `environment:`, none is templated into the script",
    ("molecule/ssh/destroy.yml", "Stop each sshd this scenario started, by its pid file"):
        "as above: values through `environment:` only",
    ("molecule/ssh/create.yml", "Build one v1 state.db per host, owned by riskmgr"):
        "as above: values through `environment:` only",
    ("molecule/ssh/create.yml", "Start each host's stand-in daemon as riskmgr"):
        "command (no shell) with a templated cmd: riskmgr_start_command is a shlex-quoted command line by "
        "contract (README), split again by the command module with shlex, as riskmgr_daemon splits it",
}
MESSAGE_ARGS = {"msg", "fail_msg", "success_msg"}  # text for the operator, never SQL that runs
SQL_TEXT = re.compile(r"\b(SELECT\s.+\sFROM|INSERT\s+INTO|UPDATE\s+\S+\s+SET|DELETE\s+FROM|REPLACE\s+INTO|"
                      r"(CREATE|DROP)\s+(UNIQUE\s+)?(TABLE|INDEX|VIEW|TRIGGER)|ALTER\s+TABLE|ATTACH\s|VACUUM|"
                      r"PRAGMA\s+\w+)", re.IGNORECASE | re.DOTALL)
MIGRATIONS_FACT = "__riskmgr_migrations"
MIGRATIONS_LOOKUP = re.compile(r"^\{\{\s*lookup\('riskmgr_migrations',\s*[\w.]+\)\s*\}\}$")
JINJA_NAME = re.compile(r"^\{\{\s*([A-Za-z_]\w*)\s*\}\}$")


def yaml_files() -> list[Path]:
    files = sorted(ROOT.glob("*.yml"))
    for top in YAML_ROOTS:
        files += sorted(p for p in (ROOT / top).rglob("*") if p.suffix in (".yml", ".yaml"))
    return files


def task_lists(path: Path, data) -> list[list]:
    """The task lists of one YAML file: a playbook's plays, or a tasks/handlers file; [] for the rest
    (variables, argument specs, Molecule's own config)."""
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        return []
    if any("hosts" in item or "import_playbook" in item or "ansible.builtin.import_playbook" in item for item in data):
        return [play[key] for play in data for key in PLAY_TASK_KEYS if isinstance(play.get(key), list)]
    if {"tasks", "handlers"} & set(path.relative_to(ROOT).parts):
        return [data]
    raise AssertionError(f"{path}: a list that is neither plays nor in a tasks/handlers directory; classify it")


def walk_tasks(tasks: list):
    """Every task of a task list, inside block/rescue/always too (the blocks themselves are not tasks)."""
    for task in tasks:
        if any(key in task for key in BLOCK_KEYS):
            for key in BLOCK_KEYS:
                yield from walk_tasks(task.get(key) or [])
        else:
            yield task


@functools.lru_cache(maxsize=1)
def project_tasks() -> list[tuple[str, dict, str, dict]]:
    """(file, task, module, args) of every task of every playbook and task file, parsed as Ansible does."""
    from ansible.parsing.mod_args import ModuleArgsParser
    from ansible.plugins.loader import action_loader, init_plugin_loader, module_loader
    init_plugin_loader()
    module_loader.add_directory(str(ROOT / "library"))
    action_loader.add_directory(str(ROOT / "action_plugins"))
    found = []
    for path in yaml_files():
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        for tasks in task_lists(path, data):
            for task in walk_tasks(tasks):
                module, args, _delegate = ModuleArgsParser(task).parse()
                found.append((str(path.relative_to(ROOT)), task, module, args))
    return found


def shell_use(module: str, args: dict) -> str | None:
    """Why this task runs something through a shell (or a split command string), or None."""
    short = module.rsplit(".", 1)[-1]
    if short in SHELL_MODULES:
        return f"module {module}"
    if short in COMMAND_MODULES and "argv" not in args:
        line = args.get("cmd", args.get("_raw_params", ""))
        if SHELL_METACHARACTERS.search(str(line)):
            return f"{module} with a command string {line!r}: use argv"
    return None


def test_security_no_task_runs_a_shell_and_commands_take_argv_lists():
    tasks = project_tasks()
    modules = {module for _file, _task, module, _args in tasks}
    # The walk is not vacuous: it reaches tasks inside blocks and rescues of both playbooks.
    assert len(tasks) > 100 and {"riskmgr_upgrade", "sqlite_restore", "ansible.builtin.command"} <= modules, modules
    used = {(file, task.get("name")): why for file, task, module, args in tasks if (why := shell_use(module, args))}
    unexplained = {key: why for key, why in used.items() if key not in ALLOWED_SHELL_TASKS}
    assert not unexplained, f"tasks that use a shell or a command string: {unexplained}"
    stale = set(ALLOWED_SHELL_TASKS) - set(used)
    assert not stale, f"allowed but no longer there (remove them from ALLOWED_SHELL_TASKS): {stale}"
    assert all(file.startswith("molecule/") for file, _name in used), "only Molecule scaffolding may use one"


def test_security_the_shell_check_catches_every_form():
    """shell_use() on tasks as an author could write them: the check above is not blind to any form."""
    from ansible.parsing.mod_args import ModuleArgsParser
    caught = [{"shell": "echo hi"}, {"ansible.builtin.shell": {"cmd": "echo hi"}}, {"raw": "id"},
              {"ansible.builtin.script": "x.sh"}, {"action": "ansible.builtin.shell echo"},
              {"local_action": "ansible.legacy.shell echo"}, {"command": "ls | wc -l"},
              {"ansible.builtin.command": {"cmd": "rm {{ path }}"}}, {"command": "echo $HOME"}]
    fine = [{"ansible.builtin.command": {"argv": ["ls", "-l", "{{ path }}"]}}, {"command": "ssh-keygen -q -t ed25519"},
            {"ansible.builtin.command": {"argv": "{{ ['install', '-d'] + dirs }}"}}]
    for task in caught:
        assert shell_use(*ModuleArgsParser(task).parse()[:2]), task
    for task in fine:
        assert shell_use(*ModuleArgsParser(task).parse()[:2]) is None, task


SHELL_CALLS = {"system", "popen", "getstatusoutput", "getoutput"}  # os.* and subprocess.* that take a command line


def python_shell_uses(path: Path) -> list[str]:
    """Calls in one Python file that would run a command line through a shell."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        shell = [k for k in node.keywords if k.arg == "shell" and not (isinstance(k.value, ast.Constant)
                                                                      and k.value.value is False)]
        if name in SHELL_CALLS or shell:
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)[:80]}")
    return found


def test_security_no_python_code_of_the_project_runs_a_shell():
    sources = [p for top in ("library", "module_utils", "action_plugins", "lookup_plugins", "tools")
               for p in sorted((ROOT / top).glob("*.py"))]
    assert len(sources) > 15
    assert [use for path in sources for use in python_shell_uses(path)] == []
    scratch = Path(tempfile.mkdtemp(dir=ROOT / "tests"))  # under ROOT: the paths are reported relative to it
    try:
        sample = scratch / "sample.py"
        sample.write_text("import os, subprocess\nos.system('x')\nsubprocess.run('x', shell=True)\n"
                          "subprocess.run(['x'], shell=False)\nos.popen('x')\n")
        assert len(python_shell_uses(sample)) == 3
    finally:
        shutil.rmtree(scratch)


def strings_in(value, key: str = ""):
    if isinstance(value, str):
        yield key, value
    elif isinstance(value, dict):
        for name, item in value.items():
            yield from strings_in(item, str(name))
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item, key)


def role_defaults() -> dict[str, str]:
    values = {}
    for path in ROOT.glob("roles/*/defaults/main.yml"):
        values.update({k: v for k, v in (yaml.safe_load(path.read_text()) or {}).items() if isinstance(v, str)})
    return values


def test_security_no_task_passes_sql_text_and_migrations_come_from_the_controller_lookup():
    tasks = project_tasks()
    sql = [(file, task.get("name"), key, text[:80]) for file, task, module, args in tasks
           for key, text in strings_in(args) if key not in MESSAGE_ARGS and SQL_TEXT.search(text)]
    assert not sql, f"SQL text in task arguments: {sql}"
    # The one way SQL reaches a module: `migrations`, the files of riskmgr_migrations_src read on the
    # controller by the riskmgr_migrations lookup (the ledger records their sha256). Follow each
    # value through the role defaults down to that fact, and check every place that sets the fact.
    defaults = role_defaults()
    migration_args = [(file, args["migrations"]) for file, _task, module, args in tasks if "migrations" in args]
    assert len(migration_args) >= 5, migration_args
    for file, value in migration_args:
        seen = [value]
        while (name := JINJA_NAME.match(str(seen[-1]))) and name[1] != MIGRATIONS_FACT:
            assert name[1] in defaults and len(seen) < 5, f"{file}: migrations: {' -> '.join(map(str, seen))}"
            seen.append(defaults[name[1]])
        assert name and name[1] == MIGRATIONS_FACT, f"{file}: migrations: {' -> '.join(map(str, seen))}"
    setters = [(file, args[MIGRATIONS_FACT]) for file, _task, module, args in tasks
               if module.endswith("set_fact") and MIGRATIONS_FACT in args]
    assert setters and all(MIGRATIONS_LOOKUP.match(value) for _file, value in setters), setters
    for path in [*ROOT.glob("inventory/**/*.yml"), *ROOT.glob("roles/*/defaults/*.yml"),
                 *ROOT.glob("roles/*/vars/*.yml")]:
        assert MIGRATIONS_FACT not in (yaml.safe_load(path.read_text()) or {}), f"{path}: sets {MIGRATIONS_FACT}"


OPTION_SPEC = re.compile(r"""["'](\w+)["']\s*:\s*\{\s*["']type["']""")


def test_security_no_module_option_takes_sql():
    # The argument specs as the modules declare them (library/ and the shared specs in module_utils/).
    options = {name for path in [*ROOT.glob("library/*.py"), *ROOT.glob("module_utils/*.py")]
               for name in OPTION_SPEC.findall(path.read_text())}
    assert {"path", "migrations", "backup_dir", "target_version"} <= options, options
    assert not {o for o in options if re.search(r"sql|query|statement|script|pragma", o)}, options


# Module-level constants that name a table: fixed strings, never input.
CONSTANT_IDENTIFIERS = {"VERSION_TABLE", "LEDGER_TABLE", "PROVENANCE_TABLE"}
# sqlite_common helpers whose text is only quote_identifier() names, "?" placeholders, "=", "," and AND.
IDENTIFIER_HELPERS = {"quote_identifier", "identifier_list", "equality_clause", "placeholders"}
SQL_START = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|REPLACE|CREATE|DROP|ALTER|PRAGMA|EXPLAIN|ATTACH|WITH)\b")
SQL_RUNNERS = {"execute", "executemany", "executescript"}
# Every SQL text in module_utils/ that is not a literal, and is not an f-string whose only
# interpolations are identifiers through quote_identifier() or the table constants above.
# (file, function, source of the SQL expression) -> where its text comes from.
ALLOWED_DYNAMIC_SQL = {
    ("sqlite_common.py", "integrity_result", "f'PRAGMA {INTEGRITY_PRAGMAS[level]}({INTEGRITY_LINES})'"):
        "PRAGMA name from the fixed dict INTEGRITY_PRAGMAS (level is one of the module's choices, a KeyError "
        "otherwise), the row limit a constant int",
    ("sqlite_migration.py", "planned_schema", "sql"):
        "CREATE statements read from the database's own sqlite_master, replayed into an in-memory scratch "
        "database to show the schema after the change; the real database is not touched",
    ("sqlite_migration.py", "apply_step", "step.sql"):
        "a statement of the migration files (read on the controller by the riskmgr_migrations lookup, split one "
        "object per statement and checksummed in the ledger), an ADD COLUMN made by sqlite_shapes.add_column_sql "
        "from those files' column definitions (quote_identifier), or a DROP built with quote_identifier",
    ("sqlite_migration.py", "write_transaction", "f'PRAGMA {pragma} = {int(value)}'"):
        "a pragma name from the constant REBUILD_PRAGMAS, its previous value read back as an int",
    ("sqlite_migration.py", "rebuild_settings", "f'PRAGMA {pragma}'"):
        "a pragma name from the constant REBUILD_PRAGMAS",
    ("sqlite_migration.py", "rebuild_settings", "f'PRAGMA {pragma} = {value}'"):
        "a pragma name and its int value from the constant REBUILD_PRAGMAS",
    ("sqlite_plan.py", "columns_removed", "original_sql"):
        "a table's own sqlite_master text, recorded in the provenance by the migration that changed it, "
        "run in an in-memory scratch database to read its columns",
    ("sqlite_rebuild.py", "rebuild_table", "original_sql"):
        "a table's own sqlite_master text from before the migration changed it (recorded in the provenance "
        "in the migration's transaction): the table made again exactly as it was",
    ("sqlite_rebuild.py", "rebuild_table", "sql"):
        "the table's own indexes and triggers, their sqlite_master text read just before the rebuild",
    ("sqlite_catalog.py", "build_reference", "statement.sql"):
        "the migration files' statements, into an in-memory schema-only reference database",
    ("sqlite_history.py", "read_versions", "select"):
        "assembled only from string literals (which columns the table has) and VERSION_TABLE",
    ("sqlite_history.py", "read_versions",
     "f'SELECT version, {success}, {applied} FROM {VERSION_TABLE} ORDER BY version'"):
        "success and applied are the literal column names or literals ('1', 'NULL'), chosen by what the table has",
    ("sqlite_verification.py", "check_sample_queries", "f'SELECT COUNT(*) FROM {table} failed: {err}'"):
        "an error message; the query it reports quotes the table with quote_identifier",
    ("sqlite_verification.py", "query_plan", "f'EXPLAIN QUERY PLAN {query}'"):
        "the `-- used-by:` query of a migration file (controller), or that query with INDEXED BY and the "
        "index's quoted name inserted; EXPLAIN QUERY PLAN plans it without running it, and sqlite3 refuses "
        "a second statement",
}


def safe_interpolation(node: ast.expr) -> bool:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in IDENTIFIER_HELPERS:
        return True
    return isinstance(node, ast.Name) and node.id in CONSTANT_IDENTIFIERS


def sql_expressions(path: Path):
    """(function, expression source, why it needs a look) for each SQL text of one module that is not plainly safe."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []

    def visit(node: ast.AST, function: str) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            function = node.name
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in SQL_RUNNERS \
                and node.args and not isinstance(node.args[0], (ast.Constant, ast.JoinedStr)):
            found.append((function, ast.unparse(node.args[0]), "runs SQL that is not a literal"))
        if isinstance(node, ast.JoinedStr):
            literal = "".join(v.value for v in node.values if isinstance(v, ast.Constant))
            values = [v.value for v in node.values if isinstance(v, ast.FormattedValue)]
            if SQL_START.match(literal) and not all(safe_interpolation(v) for v in values):
                found.append((function, ast.unparse(node), "an f-string of SQL with a value in it"))
            return  # its parts are not SQL on their own
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod) and isinstance(node.left, ast.Constant) \
                and isinstance(node.left.value, str) and SQL_START.match(node.left.value):
            found.append((function, ast.unparse(node), "SQL built with %"))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format" \
                and isinstance(node.func.value, ast.Constant) and SQL_START.match(str(node.func.value.value)):
            found.append((function, ast.unparse(node), "SQL built with .format()"))
        for child in ast.iter_child_nodes(node):
            visit(child, function)

    visit(tree, "<module>")
    return found


def test_security_no_sql_is_built_from_variables_except_the_listed_safe_cases():
    found = {(path.name, function, source): why
             for path in sorted((ROOT / "module_utils").glob("*.py")) + sorted((ROOT / "library").glob("*.py"))
             for function, source, why in sql_expressions(path)}
    unexplained = {key: why for key, why in found.items() if key not in ALLOWED_DYNAMIC_SQL}
    assert not unexplained, f"SQL built from values, not in ALLOWED_DYNAMIC_SQL: {unexplained}"
    stale = set(ALLOWED_DYNAMIC_SQL) - set(found)
    assert not stale, f"listed in ALLOWED_DYNAMIC_SQL but no longer in the code: {stale}"
    # The identifiers that are interpolated are quoted the way SQLite quotes them.
    from sqlite_common import quote_identifier
    with closing(sqlite3.connect(":memory:")) as conn:
        name = 'odd "name"; DROP TABLE x; --'
        conn.execute(f"CREATE TABLE {quote_identifier(name)} (a)")
        assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master")] == [name]


def test_security_the_sql_check_catches_values_in_sql():
    code = ('def f(conn, table, value):\n'
            '    conn.execute(f"SELECT * FROM {table}")\n'
            '    conn.execute("DELETE FROM t WHERE a = %s" % value)\n'
            '    conn.execute("UPDATE t SET a = {}".format(value))\n'
            '    sql = "SELECT 1"\n'
            '    conn.execute(sql)\n'
            '    conn.execute(f"SELECT COUNT(*) FROM {quote_identifier(table)}")\n'
            '    conn.execute("SELECT a FROM t WHERE b = ?", (value,))\n')
    scratch = Path(tempfile.mkdtemp())
    try:
        (scratch / "sample.py").write_text(code)
        whys = [why for _function, _source, why in sql_expressions(scratch / "sample.py")]
    finally:
        shutil.rmtree(scratch)
    assert sorted(whys) == sorted(["an f-string of SQL with a value in it", "SQL built with %",
                                   "SQL built with .format()", "runs SQL that is not a literal",
                                   "runs SQL that is not a literal", "runs SQL that is not a literal"]), whys


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
