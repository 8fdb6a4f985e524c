"""tools/riskmgr_standin.py as the demo and Molecule use it: real processes on real databases,
of the reference v1 shape and of random ones (tools/v1_shapes.py); its two releases as
tools/local_fleet.py lays them out, their FAULTS, and their smoke test (tools/riskmgr_smoke.py)."""
from __future__ import annotations

import os
import re
import select
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest
from fixtures import switch_link, wait_for
from local_fleet import lay_out_releases
from make_state_db import build_v1_db
from riskmgr_standin import KNOWN_COLUMNS, PROCESS_NAMES, quote_identifier, schema_version
from v1_shapes import random_specs

ROOT = Path(__file__).resolve().parents[2]
STANDIN = ROOT / "tools" / "riskmgr_standin.py"
MIGRATIONS = ROOT / "files" / "migrations"
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (INFO|WARNING|ERROR) .+$")


def build_baseline_db(path: Path) -> Path:
    with closing(sqlite3.connect(path)) as conn:
        conn.executescript((MIGRATIONS / "v1" / "000_baseline.sql").read_text())
    return path


def mark_version(path: Path, version: int, success: int = 1) -> None:
    """What the engine leaves behind: the real v2 SQL, then a history row."""
    with closing(sqlite3.connect(path)) as conn:
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'schema_version'").fetchone():
            conn.executescript((MIGRATIONS / "v2" / "010_schema_version.sql").read_text())
            conn.executescript((MIGRATIONS / "v2" / "020_enforcement_log_execution_time.sql").read_text())
        conn.execute("INSERT INTO schema_version (version, applied_at, description, success) "
                     "VALUES (?, datetime('now'), 'test', ?)", (version, success))
        conn.commit()


def enforcement_rows(path: Path) -> tuple[int, int | None]:
    """(count, max id) through a fresh read-only connection: what really reached the disk."""
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as conn:
        return conn.execute("SELECT COUNT(*), MAX(id) FROM enforcement_log").fetchone()


def is_running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except FileNotFoundError:
        return False


class Standin:
    """Paths of one stand-in, launchers, and a teardown that SIGKILLs whatever is left."""

    def __init__(self, tmp_path: Path) -> None:
        self.program = STANDIN
        self.db = build_baseline_db(tmp_path / "state.db")
        self.pidfile = tmp_path / "riskmgr.pid"
        self.log = tmp_path / "riskmgr.log"
        self.pids: set[int] = set()
        self.popens: list[subprocess.Popen] = []

    def argv(self, *extra: str) -> list[str]:
        return [sys.executable, str(self.program), "--db", str(self.db), "--pidfile", str(self.pidfile),
                "--log", str(self.log), "--interval-ms", "20", *extra]

    def launch(self, *extra: str) -> subprocess.CompletedProcess:
        """Daemonized, as riskmgr_start_command runs it: returns once the pidfile is written."""
        done = subprocess.run(self.argv(*extra), capture_output=True, text=True, timeout=10)
        self.remember_pid()
        return done

    def foreground(self, *extra: str) -> subprocess.Popen:
        process = subprocess.Popen(self.argv("--foreground", *extra), stdin=subprocess.DEVNULL)
        self.popens.append(process)
        self.pids.add(process.pid)
        return process

    def remember_pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text())
        except (FileNotFoundError, ValueError):
            return None
        self.pids.add(pid)
        return pid

    def log_lines(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def logged(self, text: str) -> str | None:
        return next((line for line in self.log_lines() if text in line), None)

    def kill_leftovers(self) -> None:
        self.remember_pid()
        for pid in self.pids:
            cmdline = Path(f"/proc/{pid}/cmdline")
            if cmdline.exists() and any(name.encode() in cmdline.read_bytes() for name in PROCESS_NAMES):
                os.kill(pid, signal.SIGKILL)
        for process in self.popens:
            process.wait(timeout=5)


@pytest.fixture
def standin(tmp_path):
    runner = Standin(tmp_path)
    yield runner
    runner.kill_leftovers()


def test_daemon_commits_rows_continuously_and_stops_cleanly_on_sigterm(standin):
    launched = standin.launch()
    assert launched.returncode == 0, launched.stderr
    pid = int(standin.pidfile.read_text())  # written before the launcher returned
    assert is_running(pid)
    # Detached: a new session it does not lead (double fork), so it can never get a terminal back.
    assert os.getsid(pid) not in (os.getsid(0), pid)
    assert wait_for(lambda: standin.logged("INFO Database schema version: 1"))

    first = wait_for(lambda: enforcement_rows(standin.db)[0] >= 3 and enforcement_rows(standin.db)[0])
    # Rows keep arriving, each committed on its own: a fresh connection sees them one after another.
    wait_for(lambda: enforcement_rows(standin.db)[0] >= first + 3)

    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not is_running(pid), timeout=5)
    last = standin.log_lines()[-1]
    stopped = re.search(r"INFO stopped after (\d+) rows; last id (\d+)$", last)
    assert stopped, last
    assert not Path(f"{standin.db}-wal").exists()  # closed cleanly: the WAL was checkpointed away
    count, max_id = enforcement_rows(standin.db)
    assert (count, max_id) == (int(stopped.group(1)), int(stopped.group(2)))  # nothing lost, nothing extra
    assert not standin.pidfile.exists()
    assert all(LOG_LINE.match(line) for line in standin.log_lines())


def test_log_lines_are_appended_in_the_daemon_format(standin):
    standin.log.write_text("previous run\n")
    process = standin.foreground()
    line = wait_for(lambda: standin.logged("Database schema version"))
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=5) == 0
    assert standin.log_lines()[0] == "previous run"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO Database schema version: 1", line)


def test_v2_database_reports_version_2_and_fills_execution_time(standin):
    mark_version(standin.db, 1)
    mark_version(standin.db, 2)
    mark_version(standin.db, 3, success=0)  # a failed attempt does not count
    process = standin.foreground()
    assert wait_for(lambda: standin.logged("INFO Database schema version: 2"))
    wait_for(lambda: enforcement_rows(standin.db)[0] >= 3)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=5) == 0
    with closing(sqlite3.connect(standin.db)) as conn:
        missing = conn.execute("SELECT COUNT(*) FROM enforcement_log WHERE execution_time_ms IS NULL").fetchone()[0]
    assert missing == 0


def test_refused_version_logs_an_error_and_exits_3(standin):
    mark_version(standin.db, 2)
    process = standin.foreground("--refuse-version", "2")
    assert process.wait(timeout=5) == 3
    lines = standin.log_lines()
    assert lines[0].endswith("INFO Database schema version: 2")
    assert " ERROR schema version 2 is not supported by this build; refusing to run" in lines[-1]
    assert enforcement_rows(standin.db)[0] == 0


def test_refused_version_after_daemonizing_still_launches_then_dies(standin):
    mark_version(standin.db, 2)
    launched = standin.launch("--refuse-version", "2")
    assert launched.returncode == 0  # the launcher only knows the daemon wrote its pidfile
    pid = int(standin.pidfile.read_text())
    wait_for(lambda: not is_running(pid), timeout=5)
    assert standin.logged("ERROR schema version 2 is not supported")
    assert standin.pidfile.exists()  # like a crashed daemon: left for the next start to replace


def test_second_start_is_refused_while_the_first_runs(standin):
    assert standin.launch().returncode == 0
    first = int(standin.pidfile.read_text())
    again = standin.launch()
    assert again.returncode == 1
    assert f"already running as pid {first}" in again.stderr
    assert int(standin.pidfile.read_text()) == first


def test_stale_pidfile_is_replaced(standin):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    standin.pidfile.write_text(dead.stdout)
    assert standin.launch().returncode == 0
    assert int(standin.pidfile.read_text()) != int(dead.stdout)


def test_missing_database_is_never_created(standin, tmp_path):
    standin.db = tmp_path / "typo.db"
    process = standin.foreground()
    assert process.wait(timeout=5) == 2
    assert not standin.db.exists()
    assert "ERROR cannot open database" in standin.log_lines()[-1]


def test_locked_database_delays_writes_but_loses_none(standin):
    process = standin.foreground("--busy-timeout-ms", "100")
    wait_for(lambda: enforcement_rows(standin.db)[0] >= 2)
    with closing(sqlite3.connect(standin.db, isolation_level=None)) as holder:
        holder.execute("BEGIN IMMEDIATE")  # what a migration holds
        time.sleep(0.6)
        held = enforcement_rows(standin.db)[0]
        time.sleep(0.2)
        assert enforcement_rows(standin.db)[0] == held  # nothing got through the lock
        holder.execute("ROLLBACK")
    wait_for(lambda: enforcement_rows(standin.db)[0] >= held + 2)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=5) == 0
    assert standin.logged("WARNING database is locked; still retrying insert")
    assert re.search(r"WARNING insert of row \d+ waited \d+\.\ds for the database lock; done, nothing lost",
                     "\n".join(standin.log_lines()))
    count, max_id = enforcement_rows(standin.db)
    assert count == max_id  # ids 1..N with no gap: no write was dropped


def test_database_error_it_cannot_retry_exits_2(standin):
    process = standin.foreground()
    wait_for(lambda: enforcement_rows(standin.db)[0] >= 2)
    with closing(sqlite3.connect(standin.db, timeout=5)) as conn:
        conn.execute("DROP TABLE enforcement_log")
        conn.commit()
    assert process.wait(timeout=5) == 2
    assert "ERROR database error after" in standin.log_lines()[-1]


def test_ignore_sigterm_keeps_running(standin):
    assert standin.launch("--ignore-sigterm").returncode == 0
    pid = int(standin.pidfile.read_text())
    assert wait_for(lambda: standin.logged("WARNING ignoring SIGTERM"))
    os.kill(pid, signal.SIGTERM)
    time.sleep(0.3)
    assert is_running(pid)


# --- any v1 shape (tools/v1_shapes.py) ---------------------------------------------------------

SHAPES_WANTED = {
    "execution_time_ms with values": lambda f: f["execution_time_ms"] and f["execution_time_ms_values"],
    "execution_time_ms NOT NULL DEFAULT 0, added by ALTER": lambda f: f["execution_time_ms_not_null"]
    and f["execution_time_ms_added_later"],
    "two-column schema_version": lambda f: f["version_table"] == "two_columns",
    "schema_version with success": lambda f: f["version_table"] == "with_success",
    "AFTER INSERT trigger into an audit table": lambda f: "after_insert_audit" in f["enforcement_log_triggers"],
    "BEFORE INSERT trigger that RAISEs": lambda f: "before_insert_raise" in f["enforcement_log_triggers"],
    "re-cased or quoted enforcement_log": lambda f: any(name.lower() == "enforcement_log"
                                                        for name in f["quoted_tables"] + f["renamed_tables"]),
    "text account ids": lambda f: f["account_style"] == "text",
}


def log_table(conn: sqlite3.Connection) -> str:
    return conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                        "AND lower(name) = 'enforcement_log'").fetchone()[0]


@pytest.mark.parametrize("wanted", SHAPES_WANTED, ids=list(SHAPES_WANTED))
def test_daemon_writes_into_random_shapes_and_copies_what_it_does_not_know(standin, tmp_path, wanted):
    spec, = random_specs(SHAPES_WANTED[wanted])
    standin.db = build_v1_db(tmp_path / "shaped.db", rows=40, shape=spec)
    with closing(sqlite3.connect(standin.db)) as conn:
        log = quote_identifier(log_table(conn))
        info = conn.execute(f"PRAGMA table_xinfo({log})").fetchall()
        keys = [row for row in info if row[5]]
        alias = keys[0][1] if len(keys) == 1 and keys[0][2].upper() == "INTEGER" else None
        copied = [row[1] for row in info if row[1] != alias and row[1].lower() not in KNOWN_COLUMNS]
        known = {row[1].lower(): row[1] for row in info if row[1].lower() in KNOWN_COLUMNS}
        last_id = conn.execute(f"SELECT MAX(rowid) FROM {log}").fetchone()[0]
        select = ", ".join(quote_identifier(name) for name in copied) or "1"
        last_values = conn.execute(f"SELECT {select} FROM {log} WHERE rowid = ?", (last_id,)).fetchone()

    process = standin.foreground()
    assert wait_for(lambda: standin.logged("INFO Database schema version: 1")), (spec, standin.log_lines())
    wait_for(lambda: rows_of(standin.db, log) >= 40 + 4)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=5) == 0, (spec, standin.log_lines())
    stopped = re.search(r"INFO stopped after (\d+) rows", standin.log_lines()[-1])
    assert stopped, (spec, standin.log_lines())

    with closing(sqlite3.connect(standin.db)) as conn:
        assert rows_of(standin.db, log) == 40 + int(stopped.group(1)), spec  # every write landed, none extra
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)], spec
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == [], spec
        daemon_rows = conn.execute(f"SELECT {select} FROM {log} WHERE rowid > ?", (last_id,)).fetchall()
        assert daemon_rows and all(row == last_values for row in daemon_rows), spec  # copied, constraints kept
        if "success" in known:
            assert conn.execute(f"SELECT COUNT(*) FROM {log} WHERE rowid > ? AND {quote_identifier(known['success'])} "
                                f"= 1", (last_id,)).fetchone()[0] == len(daemon_rows)
        if "reason" in known:
            reasons = conn.execute(f"SELECT {quote_identifier(known['reason'])} FROM {log} WHERE rowid > ?",
                                   (last_id,)).fetchall()
            assert all(reason.startswith("standin heartbeat ") for (reason,) in reasons), spec
        if "execution_time_ms" in known:
            assert standin.logged("filling execution_time_ms")
            assert conn.execute(f"SELECT COUNT(execution_time_ms) FROM {log} WHERE rowid > ?",
                                (last_id,)).fetchone()[0] == len(daemon_rows)
        audit = conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' AND sql LIKE '%INSERT INTO%' "
                             "AND lower(tbl_name) = 'enforcement_log'").fetchone()
        if audit:  # the trigger fired for the daemon's rows too: the audit table follows the log row for row
            target = re.search(r"INSERT INTO (.+?) \(log_rowid", conn.execute(
                "SELECT sql FROM sqlite_master WHERE name = ?", audit).fetchone()[0]).group(1)
            assert conn.execute(f"SELECT COUNT(*) FROM {target}").fetchone()[0] == rows_of(standin.db, log)


def rows_of(path: Path, quoted_table: str) -> int:
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as conn:
        return conn.execute(f"SELECT COUNT(*) FROM {quoted_table}").fetchone()[0]


@pytest.mark.parametrize("ddl, rows, version", [
    ("CREATE TABLE schema_version (version INTEGER, applied_at TEXT)", [(1, "x"), (2, "y")], 2),
    ("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL, description TEXT)",
     [(1, "x", "baseline")], 1),
    ("CREATE TABLE Schema_Version (id INTEGER PRIMARY KEY, \"Version\" INT NOT NULL, \"Success\" BOOLEAN)",
     [(1, 1, 1), (2, 2, 1), (3, 3, 0)], 2),  # a failed attempt at 3 does not count
    ("CREATE TABLE [schema_version] (version INTEGER, success INTEGER NOT NULL)", [(1, 0)], 1),  # none succeeded
    ("CREATE TABLE schema_version (version INTEGER)", [], 1),
])
def test_schema_version_is_read_from_a_table_of_any_shape(tmp_path, ddl, rows, version):
    path = tmp_path / "state.db"
    with closing(sqlite3.connect(path)) as conn:
        conn.execute(ddl)
        for row in rows:
            conn.execute(f"INSERT INTO schema_version VALUES ({', '.join('?' for _ in row)})", row)
        conn.commit()
        assert schema_version(conn) == version


def test_daemon_logs_the_version_of_an_odd_schema_version_table(standin):
    with closing(sqlite3.connect(standin.db)) as conn:
        conn.executescript("""
            CREATE TABLE "SCHEMA_VERSION" ("Version" INTEGER NOT NULL, applied_at TEXT, "SUCCESS" INT DEFAULT 1);
            INSERT INTO schema_version VALUES (1, 'x', 1), (2, 'y', 1), (3, 'z', 0);
        """)
    process = standin.foreground()
    assert wait_for(lambda: standin.logged("INFO Database schema version: 2"))
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=5) == 0


def test_empty_log_gets_defaults_then_affinity_values_then_copies(standin, tmp_path):
    standin.db = tmp_path / "empty.db"
    with closing(sqlite3.connect(standin.db)) as conn:
        conn.execute("""CREATE TABLE Enforcement_Log (
            "Success" INTEGER NOT NULL, timestamp TEXT NOT NULL, desk TEXT NOT NULL, weight REAL NOT NULL,
            note TEXT DEFAULT 'n/a', payload, started DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP)""")
    process = standin.foreground()
    wait_for(lambda: rows_of(standin.db, "enforcement_log") >= 2)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=5) == 0
    with closing(sqlite3.connect(standin.db)) as conn:
        first, second = conn.execute("SELECT success, desk, weight, note, payload, started IS NOT NULL "
                                     "FROM enforcement_log ORDER BY rowid LIMIT 2").fetchall()
    # A rowid table with no key: the first row leaves out what has a default or may be NULL,
    # and gives a NOT NULL column without default a value of its affinity; later rows copy it.
    assert first == (1, "", 0.0, "n/a", None, 1)
    assert second == first
    assert standin.logged("copying 5 other column(s) from the latest row")


@pytest.mark.parametrize("ddl, message", [
    ("CREATE TABLE enforcement_log (id TEXT PRIMARY KEY, success INT, timestamp TEXT) WITHOUT ROWID",
     "ERROR enforcement_log is a WITHOUT ROWID table; the stand-in appends rows by rowid"),
    ("CREATE TABLE orders (id INTEGER PRIMARY KEY)",
     "ERROR no enforcement_log table in this database"),
    ("CREATE TABLE enforcement_log (id INTEGER PRIMARY KEY, success INT, timestamp TEXT);"
     "CREATE TABLE schema_version (applied_at TEXT)",
     "ERROR table schema_version has no version column; cannot tell the schema version"),
])
def test_shapes_it_cannot_write_to_end_with_one_clear_error(standin, tmp_path, ddl, message):
    standin.db = tmp_path / "odd.db"
    with closing(sqlite3.connect(standin.db)) as conn:
        conn.executescript(ddl)
    process = standin.foreground()
    assert process.wait(timeout=5) == 2
    assert message in standin.log_lines()[-1]


def test_log_to_stdout_reaches_a_pipe_line_by_line(standin):
    # Under systemd, stdout is the journal's socket: each line must leave at once, not at exit.
    argv = [arg if arg != str(standin.log) else "-" for arg in standin.argv("--foreground")]
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
    standin.popens.append(process)
    standin.pids.add(process.pid)
    # A block-buffered log would send nothing until its buffer fills or the process exits.
    assert select.select([process.stdout], [], [], 5)[0], "no log line on stdout within 5 s"
    first = process.stdout.readline()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO Database schema version: 1\n", first)
    assert is_running(process.pid) and not standin.log.exists()
    process.send_signal(signal.SIGTERM)
    rest = process.stdout.read()
    assert process.wait(timeout=5) == 0
    assert " INFO stopped after " in rest.splitlines()[-1]


def test_log_to_stdout_needs_the_foreground(standin):
    argv = [arg if arg != str(standin.log) else "-" for arg in standin.argv()]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    assert done.returncode == 2
    assert "--log - needs --foreground: a daemonized stand-in has no stdout" in done.stderr
    assert not standin.pidfile.exists()


# --- releases (tools/local_fleet.py lays them out) and their faults -----------------------------

RELEASE_LINE = re.compile(r"^\S+ INFO riskmgr release (\d) starting from (.+)$")
FAULT_SYNTAX = "one a line: refuse-start, smoke-fails, error-after=SECONDS or exit-after=SECONDS"


@pytest.fixture
def host(tmp_path):
    """releases/1 and releases/2 as local_fleet.py makes them, current -> releases/1; faults: host.fault(...)."""
    host_dir = tmp_path / "host"
    host_dir.mkdir()
    lay_out_releases(host_dir, [])
    return host_dir


def run_release(standin: Standin, program: Path, *faults: str) -> None:
    """Make `standin` run `program` (a release's bin/riskmgr_daemon.py), with these lines in its FAULTS."""
    standin.program = program
    if faults:
        (program.parent.parent / "FAULTS").write_text("".join(f"{fault}\n" for fault in faults))


def new_rows(db: Path, after_id: int) -> list[tuple]:
    """(id, execution_time_ms) of the rows after id `after_id`, through a fresh read-only connection."""
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as conn:
        return conn.execute("SELECT id, execution_time_ms FROM enforcement_log WHERE id > ? ORDER BY id",
                            (after_id,)).fetchall()


def test_release_1_logs_its_release_first_and_never_writes_execution_time_ms_on_v2(standin, host):
    mark_version(standin.db, 2)
    with closing(sqlite3.connect(standin.db)) as conn:  # a row written by a v2 daemon before
        conn.execute("INSERT INTO enforcement_log (account_id, rule_id, action, reason, success, timestamp, "
                     "execution_time_ms) VALUES (1, 'R', 'CHECK', 'v2', 1, 'now', 7)")
        conn.commit()
    run_release(standin, host / "current" / "bin" / "riskmgr_daemon.py")  # started through the link
    process = standin.foreground()
    wait_for(lambda: enforcement_rows(standin.db)[0] >= 4)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=5) == 0
    first, second = standin.log_lines()[:2]
    assert RELEASE_LINE.match(first).groups() == ("1", str((host / "releases" / "1").resolve()))
    assert second.endswith(" INFO Database schema version: 2")
    written = new_rows(standin.db, 1)
    assert len(written) >= 3 and all(ms is None for _, ms in written), written  # not filled, not copied


def test_release_2_refuses_a_v1_database_with_one_error_and_exit_3(standin, host):
    run_release(standin, host / "releases" / "2" / "bin" / "riskmgr_daemon.py")
    process = standin.foreground()
    assert process.wait(timeout=5) == 3
    lines = standin.log_lines()
    assert [RELEASE_LINE.match(lines[0]).group(1), lines[1].split(" ", 1)[1]] == ["2", "INFO Database schema version: 1"]
    assert lines[2].endswith(" ERROR release 2 needs schema version 2 or newer; found 1") and len(lines) == 3
    assert enforcement_rows(standin.db)[0] == 0


def test_release_2_fills_execution_time_ms_with_a_positive_duration_on_v2(standin, host):
    mark_version(standin.db, 2)
    run_release(standin, host / "releases" / "2" / "bin" / "riskmgr_daemon.py")
    process = standin.foreground()
    wait_for(lambda: enforcement_rows(standin.db)[0] >= 5)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=5) == 0
    written = new_rows(standin.db, 0)
    assert len(written) >= 5 and all(isinstance(ms, int) and 1 <= ms < 1000 for _, ms in written), written
    assert RELEASE_LINE.match(standin.log_lines()[0]).group(1) == "2"


def test_fault_error_after_logs_one_error_after_the_delay_and_keeps_writing(standin, host):
    mark_version(standin.db, 2)
    run_release(standin, host / "releases" / "2" / "bin" / "riskmgr_daemon.py", "error-after=1")
    assert standin.launch().returncode == 0
    pid = standin.remember_pid()
    started = time.monotonic()
    error = wait_for(lambda: standin.logged(" ERROR "), timeout=5)
    assert 0.8 <= time.monotonic() - started < 2.5
    assert f"ERROR injected fault: error-after=1 in {host / 'releases' / '2' / 'FAULTS'}; still running" in error
    rows = enforcement_rows(standin.db)[0]
    wait_for(lambda: enforcement_rows(standin.db)[0] >= rows + 3)  # still serving
    assert is_running(pid) and [line for line in standin.log_lines() if " ERROR " in line] == [error]


def test_fault_exit_after_ends_the_daemon_with_status_4(standin, host):
    mark_version(standin.db, 2)
    run_release(standin, host / "releases" / "2" / "bin" / "riskmgr_daemon.py", "exit-after=1")
    started = time.monotonic()
    process = standin.foreground()
    assert process.wait(timeout=5) == 4
    assert time.monotonic() - started >= 1
    assert " ERROR injected fault: exit-after=1 in " in standin.log_lines()[-1]
    assert standin.log_lines()[-1].endswith("; exiting with status 4")
    assert enforcement_rows(standin.db)[0] > 0  # it served until then


def test_fault_refuse_start_exits_3_before_reading_any_schema(standin, host):
    mark_version(standin.db, 2)
    run_release(standin, host / "releases" / "2" / "bin" / "riskmgr_daemon.py", "refuse-start")
    process = standin.foreground()
    assert process.wait(timeout=5) == 3
    release, refused = standin.log_lines()
    assert RELEASE_LINE.match(release).group(1) == "2"
    assert refused.endswith(f" ERROR injected fault: refuse-start in {host / 'releases' / '2' / 'FAULTS'}; "
                            "refusing to start")


@pytest.mark.parametrize("file, text, message", [
    ("FAULTS", "smoke-fails\nerror-after=soon\n", "FAULTS line 2: 'error-after=soon' is not a fault; " + FAULT_SYNTAX),
    ("FAULTS", "\ncrash\n", "FAULTS line 2: 'crash' is not a fault; " + FAULT_SYNTAX),
    ("RELEASE", "3\n", "RELEASE says '3'; a release of the stand-in is one of [1, 2]"),
])
def test_a_bad_release_or_faults_file_stops_the_launch_with_one_line(standin, host, file, text, message):
    (host / "releases" / "2" / file).write_text(text)
    run_release(standin, host / "releases" / "2" / "bin" / "riskmgr_daemon.py")
    launched = standin.launch()
    assert launched.returncode == 1
    assert launched.stderr == f"riskmgr_standin: {host / 'releases' / '2' / message}\n"
    assert not standin.pidfile.exists() and not standin.log.exists()


# --- the smoke test of a release (tools/riskmgr_smoke.py as releases/N/scripts/smoke_tests.py) ---

def smoke(standin: Standin, script: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(script), "--db", str(standin.db), "--pidfile", str(standin.pidfile),
                           *extra], capture_output=True, text=True, timeout=30)


def test_smoke_passes_on_a_healthy_release_2_and_fails_in_one_line_once_it_stopped(standin, host):
    mark_version(standin.db, 2)
    run_release(standin, host / "releases" / "2" / "bin" / "riskmgr_daemon.py")
    assert standin.launch().returncode == 0
    script = host / "releases" / "2" / "scripts" / "smoke_tests.py"
    passed = smoke(standin, script)
    assert passed.returncode == 0 and passed.stderr == ""
    assert re.fullmatch(r"smoke test passed: release 2, schema v2, \d+ new rows in \d+\.\d s\n", passed.stdout)

    pid = standin.remember_pid()
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not is_running(pid), timeout=5)
    failed = smoke(standin, script)
    assert failed.returncode == 1 and failed.stdout == ""
    assert failed.stderr == f"smoke test failed: the daemon is not running: {standin.pidfile} is missing or holds no pid\n"


def test_smoke_fails_on_purpose_with_the_smoke_fails_fault(standin, host):
    mark_version(standin.db, 2)
    run_release(standin, host / "releases" / "2" / "bin" / "riskmgr_daemon.py", "smoke-fails")
    assert standin.launch().returncode == 0  # the daemon itself is healthy
    failed = smoke(standin, host / "releases" / "2" / "scripts" / "smoke_tests.py")
    assert failed.returncode == 1
    assert failed.stderr == f"smoke test failed: injected fault (smoke-fails in {host / 'releases' / '2' / 'FAULTS'})\n"
    # Release 1 has no FAULTS of its own: its smoke test of the same daemon passes.
    assert smoke(standin, host / "releases" / "1" / "scripts" / "smoke_tests.py").returncode == 0


def test_smoke_reads_its_release_through_the_link_and_refuses_a_schema_it_does_not_run_on(standin, host):
    run_release(standin, host / "releases" / "1" / "bin" / "riskmgr_daemon.py")
    assert standin.launch().returncode == 0  # release 1 on v1
    through_link = smoke(standin, host / "current" / "scripts" / "smoke_tests.py")
    assert through_link.returncode == 0 and "release 1, schema v1" in through_link.stdout
    switch_link(host / "current", host / "releases" / "2")  # the link now names release 2: v1 is not for it
    refused = smoke(standin, host / "current" / "scripts" / "smoke_tests.py")
    assert refused.returncode == 1
    assert refused.stderr == f"smoke test failed: {standin.db}: release 2 needs schema version 2 or newer; found 1\n"


def test_smoke_of_release_2_fails_while_the_release_1_daemon_still_runs_on_v2(standin, host):
    mark_version(standin.db, 2)
    run_release(standin, host / "current" / "bin" / "riskmgr_daemon.py")
    assert standin.launch().returncode == 0  # release 1, on v2
    switch_link(host / "current", host / "releases" / "2")  # the link moved on, the daemon was not restarted
    failed = smoke(standin, host / "current" / "scripts" / "smoke_tests.py")
    assert failed.returncode == 1
    assert re.fullmatch(rf"smoke test failed: {re.escape(str(standin.db))}: \d+ new rows without execution_time_ms; "
                        rf"is the daemon \(pid {standin.remember_pid()}\) release 2\? \(restarted since the link "
                        rf"changed\?\)\n", failed.stderr), failed.stderr


def test_smoke_fails_when_the_daemon_runs_but_writes_no_row(standin, host):
    run_release(standin, host / "releases" / "1" / "bin" / "riskmgr_daemon.py")
    assert standin.launch("--interval-ms", "600000").returncode == 0  # one row at start, then none for 10 minutes
    wait_for(lambda: enforcement_rows(standin.db)[0] == 1)
    failed = smoke(standin, host / "releases" / "1" / "scripts" / "smoke_tests.py", "--timeout", "0.5")
    assert failed.returncode == 1
    assert failed.stderr == (f"smoke test failed: enforcement_log gained no row in 0.5 s; the daemon "
                             f"(pid {standin.remember_pid()}) runs but does not write\n")


@pytest.mark.parametrize("args, message", [
    (["--db", "/nonexistent/state.db", "--pidfile", "/nonexistent/riskmgr.pid"],
     "the daemon is not running: /nonexistent/riskmgr.pid is missing or holds no pid"),
    (["--db", "x.db"], "bad arguments: the following arguments are required: --pidfile "
                       "(usage: smoke_tests.py --db PATH --pidfile PATH [--timeout SECONDS])"),
])
def test_smoke_of_tools_copy_reports_bad_input_in_one_line(args, message):
    failed = subprocess.run([sys.executable, str(ROOT / "tools" / "riskmgr_smoke.py"), *args],
                            capture_output=True, text=True, timeout=30)
    assert (failed.returncode, failed.stdout, failed.stderr) == (1, "", f"smoke test failed: {message}\n")
