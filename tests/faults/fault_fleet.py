"""Local fleets, real ansible-playbook runs, and the end state every fault test asserts.

A fault test builds a 1-2 host fleet with tools/local_fleet.py under tmp_path (real v1
state.db files, stand-in daemons writing enforcement_log rows), takes `capture()` of each host
just before the fault, injects the fault, runs the operator's playbook and calls
`assert_end_state()`. That one helper checks what the tool promises, whatever went wrong:

  (a) the database is exactly v1 (no v2 object at all) or a verified v2, never in between;
  (b) every row committed before the fault is still there (counts, and the newest id);
  (c) the daemon runs (or, when the fault is that it cannot, it was neither started nor stopped);
  (d) no file that was in the host's data directory before the run is gone;
  (e) a failed run told the operator once, clearly: the host's final error names the host and
      the database, says what happened, and nothing in the output is a Python traceback.

The witness shares no code with the suspect: the v1 and v2 shapes are rebuilt here from the
project's SQL in an in-memory database and compared, table by table and index by index, with
what a fresh read-only connection sees on disk.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import local_fleet
from make_state_db import build_v1_db

ROOT = Path(__file__).resolve().parents[2]
MIGRATIONS = ROOT / "files" / "migrations"
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
PLAYBOOK_TIMEOUT_S = 180
TEARDOWN_STOP_S = 3.0
V2_FILES = ("005_schema_migration_objects.sql", "010_schema_version.sql", "020_enforcement_log_execution_time.sql", "030_analytics_indexes.sql")
RECAP_RE = re.compile(r"^(?P<host>\S+)\s+:\s+ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+"
                      r"unreachable=(?P<unreachable>\d+)\s+failed=(?P<failed>\d+)", re.MULTILINE)
# A failed task, or a failed item of a loop (the confirmation's and the report's items are about the item's host).
FATAL_RE = re.compile(r"^(?:fatal: \[(?P<host>[^\]]+)\]: FAILED!|failed: \[[^\]]+\] \(item=(?P<item>[^)]+)\)) "
                      r"=> ?(?P<rest>.*)$", re.MULTILINE)
VERSION_LINE = "Database schema version:"

# What every fault test shares: the fleet's first host, the confirmation without a terminal, and
# the promise a refusal before any stop makes.
HOST = "local-1"
CONFIRM = ("-e", "riskmgr_confirm=true")
UNTOUCHED = r"daemon was not stopped and nothing was changed"


# --- the fleet -----------------------------------------------------------------------------------

class Fleet:
    """A fleet made by tools/local_fleet.py under `root`, and ansible-playbook runs against it."""

    def __init__(self, root: Path, hosts: int = 1, rows: int = 2000, refuse_version: int | None = None,
                 refuse_host: str | None = None, releases: bool = False,
                 release_faults: list[str] | None = None) -> None:
        self.root = root
        self.reports = root.parent / "reports"
        # releases=False by default: the stand-in runs from tools/ as before releases; most faults and
        # their helpers (move_host_dir, the start commands they rewrite) predate the link and its
        # releases. test_release_faults.py lays them out (release_faults: local_fleet.py's --release-fault).
        self.fleet = local_fleet.create(root, hosts, rows, None, "local", "faults", refuse_version, refuse_host,
                                        False, None, releases=releases, release_faults=release_faults)
        self.hosts = self.fleet["hosts"]

    # paths and processes
    def db(self, host: str) -> Path:
        return Path(self.hosts[host]["riskmgr_db_path"])

    def backup_dir(self, host: str) -> Path:
        return Path(self.hosts[host]["riskmgr_backup_dir"])

    def lock(self, host: str) -> Path:
        return Path(f"{self.db(host)}.migrate.lock")  # riskmgr_lock_path's default

    def log(self, host: str) -> str:
        return Path(self.hosts[host]["riskmgr_log_path"]).read_text(encoding="utf-8")

    def logged_versions(self, host: str) -> list[int]:
        return [int(line.split(VERSION_LINE)[1]) for line in self.log(host).splitlines() if VERSION_LINE in line]

    def pid(self, host: str) -> int | None:
        return local_fleet.read_pid(self.hosts[host]["riskmgr_pidfile"])

    def alive(self, host: str) -> bool:
        return local_fleet.is_alive(self.pid(host))

    def stop_daemon(self, host: str) -> None:
        """SIGTERM and wait: the daemon checkpoints its WAL into state.db and closes it."""
        local_fleet.stop_daemon(host, self.hosts[host], timeout=10)
        assert not self.alive(host)

    def kill_daemon(self, host: str) -> None:
        """SIGKILL: no checkpoint, committed rows stay in state.db-wal, the pidfile stays behind."""
        pid = self.pid(host)
        os.kill(pid, signal.SIGKILL)
        assert local_fleet.wait_for_exit(pid, 10)

    def start_daemon(self, host: str) -> int:
        return local_fleet.start_daemon(host, self.hosts[host])

    def restart_daemon_with(self, host: str, *extra_args: str) -> int:
        """Stop the daemon, add arguments to its start command (inventory and fleet.json), start it."""
        self.stop_daemon(host)
        variables = self.hosts[host]
        variables["riskmgr_start_command"] = shlex.join(shlex.split(variables["riskmgr_start_command"])
                                                        + list(extra_args))
        local_fleet.write_fleet(self.root, self.fleet)
        return self.start_daemon(host)

    def wait_for_rows(self, host: str, more_than: int, timeout: float = 10.0) -> int:
        """Wait until the daemon has committed enforcement_log rows beyond id `more_than`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            newest = max_id(self.db(host))
            if newest > more_than:
                return newest
            time.sleep(0.05)
        raise AssertionError(f"{host}: the daemon wrote no row beyond id {more_than} in {timeout:g}s")

    def destroy(self) -> None:
        """Stop every daemon, SIGKILL after a few seconds (one may ignore SIGTERM on purpose)."""
        for host, variables in self.hosts.items():
            local_fleet.stop_daemon(host, variables, timeout=TEARDOWN_STOP_S)

    # runs
    def playbook_command(self, name: str, *extra: str) -> list[str]:
        # -e as JSON: a path with spaces would be split by k=v.
        return [str(ANSIBLE_PLAYBOOK), "-i", str(self.root / "inventory.yml"), name,
                "-e", json.dumps({"riskmgr_report_dir": str(self.reports)}), *extra]

    def playbook(self, name: str, *extra: str) -> PlaybookRun:
        """ansible-playbook from the repo root (its ansible.cfg), no terminal, until it ends."""
        completed = subprocess.run(self.playbook_command(name, *extra), cwd=ROOT, env=playbook_env(),
                                   stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                   timeout=PLAYBOOK_TIMEOUT_S, check=False)
        return PlaybookRun(completed.returncode, completed.stdout, completed.stderr)

    def start_playbook(self, name: str, *extra: str, tag: str = "run") -> BackgroundRun:
        """The same run in the background; its output goes to files (a pipe could fill and block it)."""
        return BackgroundRun(self.playbook_command(name, *extra), self.root.parent / tag)


def playbook_env() -> dict[str, str]:
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"}
    env.pop("ANSIBLE_CONFIG", None)
    return env


@dataclass
class PlaybookRun:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    @property
    def recap(self) -> dict[str, dict[str, int]]:
        return {m["host"]: {k: int(v) for k, v in m.groupdict().items() if k != "host"}
                for m in RECAP_RE.finditer(self.stdout)}

    def failure_messages(self, host: str) -> list[str]:
        """The `msg` of every failed task of host, in order (ansible-core 2.19 prints them on stderr)."""
        messages = []
        for stream in (self.stdout, self.stderr):
            for match in FATAL_RE.finditer(stream):
                who = match["host"] or match["item"]
                if who == host or who.startswith(f"{host} -> "):
                    messages.append(result_msg(match["rest"], stream[match.end():]))
        return messages

    def final_error(self, host: str) -> str:
        messages = self.failure_messages(host)
        assert messages, f"{host}: the run reported no failed task\n{self.output[-4000:]}"
        return messages[-1]


def result_msg(same_line: str, following: str) -> str:
    """msg of a `fatal: [...]: FAILED! =>` result: JSON on the line, or a YAML block after it."""
    if same_line.strip().startswith("{"):
        return str(json.loads(same_line).get("msg", ""))
    import yaml  # only for result_format=yaml: the block runs until the next unindented line
    block = []
    for line in following.splitlines()[1:]:
        if line and not line[0].isspace():
            break
        block.append(line)
    return str((yaml.safe_load("\n".join(block)) or {}).get("msg", ""))


class BackgroundRun:
    def __init__(self, command: list[str], prefix: Path) -> None:
        self.out, self.err = Path(f"{prefix}.stdout"), Path(f"{prefix}.stderr")
        with open(self.out, "w") as out, open(self.err, "w") as err:
            # Its own process group: kill() takes the controller and its workers down together,
            # as when the operator's machine dies (the daemons it starts leave the group themselves).
            self.process = subprocess.Popen(command, cwd=ROOT, env=playbook_env(), stdin=subprocess.DEVNULL,
                                            stdout=out, stderr=err, start_new_session=True)
        self.pid = self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def wait(self) -> PlaybookRun:
        returncode = self.process.wait(timeout=PLAYBOOK_TIMEOUT_S)
        return PlaybookRun(returncode, self.out.read_text(), self.err.read_text())

    def kill(self) -> None:
        """SIGKILL ansible-playbook's process group. Since ansible-core 2.19 each worker calls setsid(),
        so its forks and the modules they run are not in that group and go on (kill_tree reaches them)."""
        if self.running():
            os.killpg(self.pid, signal.SIGKILL)
            self.process.wait()


# --- reading the databases: fresh read-only connections ------------------------------------------

def connect_ro(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=10)


def query(db: Path, sql: str, *params) -> list[tuple]:
    with closing(connect_ro(db)) as conn:
        return conn.execute(sql, params).fetchall()


def scalar(db: Path, sql: str, *params):
    return query(db, sql, *params)[0][0]


def row_counts(db: Path) -> dict[str, int]:
    with closing(connect_ro(db)) as conn:
        conn.execute("BEGIN")  # one snapshot while the daemon writes
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                             "AND name NOT LIKE 'sqlite_%'")]
        return {t: conn.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in tables}


def max_id(db: Path) -> int:
    return scalar(db, "SELECT COALESCE(MAX(id), 0) FROM enforcement_log")


def is_sqlite(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(16) == b"SQLite format 3\x00"


def shape(conn: sqlite3.Connection) -> dict[tuple[str, str], tuple]:
    """Every table (its columns) and index (its table and key columns), as SQLite reports them."""
    objects = {}
    for kind, name, table in conn.execute("SELECT type, name, tbl_name FROM sqlite_master "
                                          "WHERE name NOT LIKE 'sqlite_%' AND type IN ('table', 'index')"):
        if kind == "table":
            columns = tuple((r[1], " ".join(r[2].upper().split()), r[3], r[4], r[5])
                            for r in conn.execute(f'PRAGMA table_info("{name}")'))
            objects[(kind, name)] = columns
        else:
            keys = tuple((r[2], r[3], r[4]) for r in conn.execute(f'PRAGMA index_xinfo("{name}")') if r[5])
            objects[(kind, name)] = (table, keys)
    return objects


def reference_shape(version: int) -> dict[tuple[str, str], tuple]:
    """The shape v1 (the baseline SQL) or v2 (plus the v2 files) has, built in memory."""
    scripts = [MIGRATIONS / "v1" / "000_baseline.sql"]
    if version == 2:
        scripts += [MIGRATIONS / "v2" / name for name in V2_FILES]
    with closing(sqlite3.connect(":memory:")) as conn:
        for script in scripts:
            conn.executescript(script.read_text())
        return shape(conn)


V1_SHAPE = reference_shape(1)
V2_SHAPE = reference_shape(2)
V1_TABLES = sorted(name for kind, name in V1_SHAPE if kind == "table")


def shape_difference(found: dict, wanted: dict) -> str:
    missing = sorted(f"{k} {n}" for k, n in wanted.keys() - found.keys())
    extra = sorted(f"{k} {n}" for k, n in found.keys() - wanted.keys())
    other = sorted(f"{k} {n}" for (k, n) in wanted.keys() & found.keys() if wanted[(k, n)] != found[(k, n)])
    return f"missing {missing}, unexpected {extra}, different {other}"


def schema_state(db: Path) -> str:
    """'v1' (exactly the baseline), 'v2' (exactly the v2 shape, recorded, integrity ok), else a description."""
    with closing(connect_ro(db)) as conn:
        found = shape(conn)
        if found == V1_SHAPE:
            return "v1"
        if found != V2_SHAPE:
            return (f"in between: against v1 {shape_difference(found, V1_SHAPE)}; "
                    f"against v2 {shape_difference(found, V2_SHAPE)}")
        versions = sorted(r[0] for r in conn.execute("SELECT version FROM schema_version WHERE success = 1"))
        files = sorted(r[0] for r in conn.execute("SELECT filename FROM schema_migration_files"))
        integrity = [r[0] for r in conn.execute("PRAGMA integrity_check")]
    wanted_files = sorted(f"v2/{name}" for name in V2_FILES)
    if versions != [1, 2] or files != wanted_files or integrity != ["ok"]:
        return f"v2 shape but not a verified v2: versions {versions}, ledger {files}, integrity {integrity[:3]}"
    return "v2"


def assert_v1_or_v2(db: Path, expected: str) -> None:
    state = schema_state(db)
    assert state == expected, f"{db}: expected {expected}, found {state}"


# --- before the fault, and the end state after it --------------------------------------------------

@dataclass
class Before:
    """What one host looked like just before the fault (the daemon may still be writing)."""

    host: str
    db: Path
    is_database: bool
    counts: dict[str, int] = field(default_factory=dict)
    max_id: int = 0
    objects: set = field(default_factory=set)
    content: bytes | None = None  # a file that is not a database: its bytes
    files: set[str] = field(default_factory=set)
    pid: int | None = None
    alive: bool = False
    log_size: int = 0


def data_files(db: Path) -> set[str]:
    """Every file under the database's directory, relative to it.

    The live database's -wal and -shm are left out: SQLite itself removes them when the last
    connection closes, after copying their rows into state.db; (b) proves those rows survived.
    """
    directory = db.parent
    skip = {f"{db.name}-wal", f"{db.name}-shm"}
    return {str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file() and p.name not in skip}


def capture(fleet: Fleet, host: str) -> Before:
    db = fleet.db(host)
    before = Before(host, db, db.is_file() and is_sqlite(db), files=data_files(db), pid=fleet.pid(host),
                    alive=fleet.alive(host),
                    log_size=Path(fleet.hosts[host]["riskmgr_log_path"]).stat().st_size)
    if before.is_database:
        with closing(connect_ro(db)) as conn:
            conn.execute("BEGIN")  # counts and max id from one snapshot
            before.objects = set(conn.execute("SELECT type, name, sql FROM sqlite_master"))
            before.max_id = conn.execute("SELECT COALESCE(MAX(id), 0) FROM enforcement_log").fetchone()[0]
            before.counts = {t: conn.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0]
                             for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                                      "AND name NOT LIKE 'sqlite_%'").fetchall()}
    elif db.exists():
        before.content = db.read_bytes()
    return before


def assert_rows_kept(db: Path, before: Before, tables: list[str] | None = None) -> None:
    """(b): every table holds at least its rows from before, and every enforcement_log id up to the
    newest one from before is still there (the daemon only ever appends)."""
    counts = row_counts(db)
    for table in tables or [t for t in before.counts if t in V1_TABLES]:
        assert counts.get(table, 0) >= before.counts[table], \
            f"{db}: {table} has {counts.get(table)} rows, {before.counts[table]} before the fault"
    kept = scalar(db, "SELECT COUNT(*) FROM enforcement_log WHERE id <= ?", before.max_id)
    assert kept == before.counts["enforcement_log"], \
        f"{db}: {kept} enforcement_log rows up to id {before.max_id}, {before.counts['enforcement_log']} before"
    assert query(db, "SELECT id FROM enforcement_log WHERE id = ?", before.max_id) == [(before.max_id,)]


def assert_daemon(fleet: Fleet, before: Before, daemon: str) -> None:
    """(c): running (any pid), untouched (the same pid, never stopped) or down (never started)."""
    host = before.host
    if daemon == "running":
        assert fleet.alive(host), f"{host}: the daemon is not running (pidfile: {fleet.pid(host)})\n{fleet.log(host)[-2000:]}"
    elif daemon == "untouched":
        assert before.alive and fleet.pid(host) == before.pid and fleet.alive(host), \
            f"{host}: the daemon was pid {before.pid}, is now {fleet.pid(host)} (alive: {fleet.alive(host)})"
    elif daemon == "down":
        assert not fleet.alive(host), f"{host}: a daemon was started ({fleet.pid(host)})"
        new_log = Path(fleet.hosts[host]["riskmgr_log_path"]).read_bytes()[before.log_size:].decode()
        assert VERSION_LINE not in new_log, f"{host}: the daemon was started during the run:\n{new_log}"
    else:
        raise ValueError(daemon)


def assert_error(run: PlaybookRun, host: str, db: Path, says: list[str]) -> str:
    """(e): the run failed; the host's final message names the host and the database and says `says`."""
    assert run.returncode != 0, f"the run succeeded:\n{run.output[-3000:]}"
    # Not the bare word: the watch's default regex, quoted in its messages, contains it.
    assert "Traceback (most recent call last)" not in run.output and "MODULE FAILURE" not in run.output, \
        run.output[-6000:]
    final = run.final_error(host)
    print(f"final error of {host}: {final}")  # shown by pytest when a test fails (and with -s)
    assert final.startswith(f"{host}: "), f"the final error does not name {host} first: {final}"
    assert str(db) in final, f"the final error does not name {db}: {final}"
    for text in says:
        assert re.search(text, final), f"the final error does not say {text!r}: {final}"
    return final


def assert_end_state(fleet: Fleet, before: Before, run: PlaybookRun, *, db: str, daemon: str,
                     says: list[str] | None = None, rows_in: Path | None = None) -> None:
    """(a)-(e) for one host. db: 'v1', 'v2' or 'unchanged'; daemon: 'running', 'untouched' or 'down';
    says: None when the run must succeed, else what the host's final error must say (regexes);
    rows_in: where the rows from before must be, when the tool kept them in another file."""
    host, path = before.host, before.db
    if says is None:
        assert run.returncode == 0, run.output[-6000:]
        assert run.recap.get(host, {}).get("failed") == 0, run.recap
    else:
        assert_error(run, host, path, says)
    # (a)
    if db == "unchanged":
        if before.is_database:
            now = set(query(path, "SELECT type, name, sql FROM sqlite_master"))
            assert now == before.objects, f"{path}: schema changed: {now ^ before.objects}"
        elif before.content is not None:
            assert path.read_bytes() == before.content, f"{path}: the file changed"
        else:
            assert not os.path.lexists(path), f"{path}: did not exist before the run and was created"
    else:
        assert_v1_or_v2(path, db)
    # (b)
    if before.is_database:
        assert_rows_kept(rows_in or path, before)
    # (c)
    assert_daemon(fleet, before, daemon)
    # (d)
    gone = sorted(before.files - data_files(path))
    assert not gone, f"{host}: files gone from {path.parent}: {gone}"
    assert not fleet.lock(host).exists(), f"{fleet.lock(host)}: the run left its lock behind"


# --- setting a host up in a given state (the daemon is stopped meanwhile) -------------------------

def migrate_with_engine(db: Path) -> None:
    """The v2 a real run leaves, made directly by the engine (setup, not what is under test)."""
    from sqlite_migration import migrate_database
    migrate_database(str(db), MIGRATIONS)


def backup_with_module_utils(db: Path, backup_dir: Path) -> dict:
    from sqlite_backups import backup_database
    return backup_database(str(db), str(backup_dir))


def build_big_v1(path: Path, doublings: int) -> Path:
    """A v1 database whose two largest tables hold 2000 * 2**doublings rows each, in seconds:
    rows are doubled by SQL inside SQLite, not generated one by one in Python."""
    build_v1_db(path, rows=2000)
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("BEGIN")
        for _ in range(doublings):
            conn.execute("INSERT INTO enforcement_log (account_id, rule_id, action, reason, success, timestamp) "
                         "SELECT account_id, rule_id, action, reason, success, timestamp FROM enforcement_log")
            conn.execute("INSERT INTO positions (account_id, contract_id, quantity, avg_price, unrealized_pnl, "
                         "opened_at, updated_at) SELECT account_id, contract_id, quantity, avg_price, "
                         "unrealized_pnl, opened_at, updated_at FROM positions")
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path


# --- interrupted runs (tests/faults/test_interrupts.py) -----------------------------------------
#
# Since ansible-core 2.19 every worker fork calls setsid(): a module runs in its worker's own
# process group, not in ansible-playbook's. BackgroundRun.kill() (killpg of ansible-playbook's
# group) therefore kills the controller process only; a module already running goes on. To kill
# the module too, kill_tree() the processes descendants() found before the controller died.

CALLBACK_PLUGINS = Path(__file__).resolve().parent / "callback_plugins"
INTERRUPT_CALLBACK = "riskmgr_interrupt"  # tests/faults/callback_plugins/riskmgr_interrupt.py
RUN_END = "(end of the run)"  # riskmgr_interrupt's name for the point after the last task


def interrupt_env(*, record: Path | None = None, kill_at: str | None = None, occurrence: int = 1) -> dict[str, str]:
    """The environment of one run with the test-only callback riskmgr_interrupt: record every task
    that starts (in `record`), or SIGKILL ansible-playbook when task `kill_at` starts for the
    `occurrence`-th time (RUN_END: once the last task is done, before the recap)."""
    env = {"ANSIBLE_CALLBACK_PLUGINS": str(CALLBACK_PLUGINS), "ANSIBLE_CALLBACKS_ENABLED": INTERRUPT_CALLBACK}
    if record is not None:
        env["RISKMGR_RECORD_TASKS"] = str(record)
    if kill_at is not None:
        env["RISKMGR_KILL_AT_TASK"] = kill_at
        env["RISKMGR_KILL_AT_OCCURRENCE"] = str(occurrence)
    return env


def recorded_tasks(record: Path) -> list[str]:
    """The task names riskmgr_interrupt recorded, in the order they started."""
    return [line.split("\t", 1)[1] for line in record.read_text(encoding="utf-8").splitlines()]


class EnvRun(BackgroundRun):
    """A BackgroundRun whose environment has extra variables (a callback plugin, ANSIBLE_PIPELINING)."""

    def __init__(self, command: list[str], prefix: Path, env: dict[str, str]) -> None:  # noqa: super not called
        self.out, self.err = Path(f"{prefix}.stdout"), Path(f"{prefix}.stderr")
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.process = subprocess.Popen(command, cwd=ROOT, env={**playbook_env(), **env},
                                            stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                            start_new_session=True)
        self.pid = self.process.pid


def start_playbook_with_env(fleet: Fleet, name: str, *extra: str, env: dict[str, str], tag: str) -> EnvRun:
    return EnvRun(fleet.playbook_command(name, *extra), fleet.root.parent / tag, env)


def playbook_with_env(fleet: Fleet, name: str, *extra: str, env: dict[str, str], tag: str) -> PlaybookRun:
    """Fleet.playbook() with extra environment variables; output through files, not pipes (an ssh
    ControlPersist master or a straggler of a killed run could hold a pipe open)."""
    return start_playbook_with_env(fleet, name, *extra, env=env, tag=tag).wait()


def process_table() -> dict[int, tuple[int, str, bytes]]:
    """pid -> (parent pid, command name, command line) of every process, from /proc."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_bytes()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue  # gone meanwhile
        head, _, tail = stat.rpartition(b")")
        fields = tail.split()
        if fields[0] in (b"Z", b"X"):
            continue  # a zombie is not running (PID 1 reaps orphans only every 1-2 s here)
        table[int(entry.name)] = (int(fields[1]), head.split(b"(", 1)[1].decode(errors="replace"), cmdline)
    return table


def descendants(pid: int) -> list[int]:
    """Every live process below pid (children, their children, ...), whatever its session."""
    table = process_table()
    children: dict[int, list[int]] = {}
    for child, (parent, _, _) in table.items():
        children.setdefault(parent, []).append(child)
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def running(pid: int) -> bool:
    return pid in process_table()


def kill_tree(pids: list[int], signum: int = signal.SIGKILL) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


def wait_until(condition, timeout: float, what: str, interval: float = 0.05):
    """Poll condition() until it returns something true; fail naming `what` after timeout s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not within {timeout:g}s")
        time.sleep(interval)


def freeze_and_kill(root: int, first: list[int] | tuple[int, ...] = ()) -> list[int]:
    """SIGKILL root and every process below it, with nothing escaping: SIGSTOP `first` (the
    process that must not get any further), root and each descendant, scanning again until no new
    one appears (a frozen process spawns nothing), then SIGKILL them all. The pids killed."""
    frozen: list[int] = []

    def freeze(pids) -> None:
        for pid in pids:
            if pid not in frozen:
                try:
                    os.kill(pid, signal.SIGSTOP)
                    frozen.append(pid)
                except ProcessLookupError:
                    pass

    freeze([*first, root])
    while True:
        new = [pid for top in [root, *first] for pid in descendants(top) if pid not in frozen]
        if not new:
            break
        freeze(new)
    kill_tree(frozen)
    return frozen
