#!/usr/bin/env python3
"""Stand-in for the risk manager daemon: the demo, Molecule and the fault-injection tests run it.

It is not part of the roles. It behaves like the real daemon where the migration can tell:
it holds state.db open in WAL mode, logs "Database schema version: N" at start, writes one
enforcement_log row per --interval-ms in its own committed transaction, never drops a write
because of a lock, and stops cleanly on SIGTERM.

It works on any v1 shape (tools/v1_shapes.py), not only on the reference schema. At start it
reads the real columns of enforcement_log (PRAGMA table_xinfo, names matched case-insensitively
like SQLite does) and writes each row with fresh values for the columns it knows (account_id,
rule_id, action, reason, success, timestamp, and execution_time_ms when present); every other
column gets the value of the most recent row, or, in an empty table, is left to its default or
NULL, or gets a value of its type affinity when it is NOT NULL without a default. The schema
version is MAX(version) of a schema_version table of any shape, WHERE success = 1 when it has a
success column; no such table means version 1. Faults on demand: --refuse-version N makes it
exit 3 on that schema version (to exercise automatic rollback), --ignore-sigterm makes a daemon
that will not stop.

Releases (tools/local_fleet.py): a host's releases/N/ holds a copy of this file as
bin/riskmgr_daemon.py and RELEASE ("1" or "2"); it starts through the host's `current` link. The
release is read from the directory above the program's own as started (current/bin/..), and
logged first: "riskmgr release N starting from <release directory>". Release 1 never writes
execution_time_ms (the column keeps its default), on v1 or v2. Release 2 refuses a database
older than v2 (ERROR, exit 3) and fills execution_time_ms with the time each check took (whole
ms, at least 1). Without RELEASE (run from tools/) none of this applies. A release's FAULTS file,
one fault a line (another line: exit 1 at launch): `refuse-start` (ERROR, exit 3 at start),
`error-after=S` (one ERROR line S seconds after the start, still running), `exit-after=S` (ERROR,
exit 4 after S seconds), `smoke-fails` (for its smoke test, tools/riskmgr_smoke.py).

Python 3 standard library only: the Molecule hosts run it with nothing else installed.

    riskmgr_standin.py --db state.db --pidfile riskmgr.pid --log riskmgr.log [--interval-ms 50]
                       [--refuse-version N ...] [--ignore-sigterm] [--foreground]
                       [--busy-timeout-ms 5000]

`--log -` writes the log lines to stdout instead (with --foreground only): a systemd unit's
stdout is its journal, which is where a daemon without a log file of its own is read.

Without --foreground it daemonizes (double fork, setsid, stdio to /dev/null, chdir /) and the
launching command returns 0 only once the pidfile names the daemon: a `command` service
manager's start command "returns once the daemon is launched". Exit statuses: 0 stopped
cleanly, 1 could not launch (bad arguments, already running, pidfile not writable),
2 database error, 3 refused to start (this schema version, refuse-start), 4 unexpected bug or
exit-after (see the log).
"""
from __future__ import annotations

import argparse
import datetime
import math
import os
import pathlib
import re
import signal
import sqlite3
import sys
import time

SQLITE_HEADER = b"SQLite format 3\x00"
BUSY_TIMEOUT_MS = 5000
PROGRESS_EVERY_S = 5.0
# What a stand-in's command line contains: run from tools/, or as a release's copy.
PROCESS_NAMES = ("riskmgr_standin", "bin/riskmgr_daemon.py")
STDOUT_LOG = "-"
EXIT_OK, EXIT_LAUNCH, EXIT_DB_ERROR, EXIT_REFUSED, EXIT_BUG = 0, 1, 2, 3, 4
RULES = ("MAX_DAILY_LOSS", "MAX_POSITION", "MAX_ORDER_SIZE", "TRADING_HOURS")
# The enforcement_log columns the daemon fills itself; it copies any other column.
KNOWN_COLUMNS = ("account_id", "rule_id", "action", "reason", "success", "timestamp", "execution_time_ms")
# A NOT NULL column without a default in an empty table: the daemon needs some value of its type.
AFFINITY_FILLER = {"INTEGER": 0, "REAL": 0.0, "NUMERIC": 0, "TEXT": "", "BLOB": b""}
RELEASE_FILE, FAULTS_FILE = "RELEASE", "FAULTS"
# The oldest schema version each release runs on.
MINIMUM_SCHEMA_VERSION = {1: 1, 2: 2}
FAULT_LINE = re.compile(r"(refuse-start|smoke-fails)|(error-after|exit-after)=(\d+(?:\.\d+)?)")
FAULT_TIMERS = ("error-after", "exit-after")  # =SECONDS after the start


class StandinError(Exception):
    """Fatal for the stand-in: logged as ERROR, then the process exits with `status`."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class Log:
    """Appending, line-buffered log in the real daemon's format (UTC, milliseconds), to a file or stdout."""

    def __init__(self, path: str) -> None:
        if path == STDOUT_LOG:
            # A second, line-buffered file object on fd 1: sys.stdout is block-buffered when fd 1 is
            # not a terminal (a pipe, the journal's socket), and a line must reach the reader at once.
            self.handle = open(sys.stdout.fileno(), "w", buffering=1, encoding="utf-8", closefd=False)
        else:
            self.handle = open(path, "a", buffering=1, encoding="utf-8")

    def write(self, level: str, message: str) -> None:
        now = datetime.datetime.now(datetime.timezone.utc)
        stamp = now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
        self.handle.write(f"{stamp} {level} {message}\n")

    def close(self) -> None:
        self.handle.close()


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", required=True, help="existing state.db (never created)")
    parser.add_argument("--pidfile", required=True)
    parser.add_argument("--log", required=True, help="log file, appended to; - for stdout (with --foreground)")
    parser.add_argument("--interval-ms", type=int, default=50, help="one enforcement_log row per interval")
    parser.add_argument("--refuse-version", type=int, action="append", default=[], metavar="N",
                        help="log an ERROR and exit 3 when the schema version is N (repeatable)")
    parser.add_argument("--busy-timeout-ms", type=int, default=BUSY_TIMEOUT_MS,
                        help="SQLite busy_timeout; each retry of a locked write waits this long (tests shorten it)")
    parser.add_argument("--ignore-sigterm", action="store_true", help="a daemon that will not stop")
    parser.add_argument("--foreground", action="store_true", help="do not daemonize")
    args = parser.parse_args(argv)
    if args.interval_ms < 1:
        parser.error("--interval-ms must be at least 1")
    if args.log == STDOUT_LOG and not args.foreground:
        parser.error("--log - needs --foreground: a daemonized stand-in has no stdout")
    # The daemon chdirs to /, so every path is made absolute before that.
    for name in ("db", "pidfile", "log"):
        if not (name == "log" and args.log == STDOUT_LOG):
            setattr(args, name, os.path.abspath(getattr(args, name)))
    return args


# --- releases and their faults ---------------------------------------------------------------

class Release:
    """The release a copy of this program belongs to: RELEASE and FAULTS in the directory above its own.

    That directory is the one the program was started from, not resolved: started as
    current/bin/riskmgr_daemon.py, it is the release `current` named then, whatever the link
    names later. `number` is None for the stand-in run from tools/ (no RELEASE file there).
    """

    def __init__(self, number: int | None, directory: pathlib.Path, faults: dict) -> None:
        self.number = number
        self.location = directory.resolve()  # resolved at launch: the log names it after the link moved on
        self.faults = faults  # fault name -> True, or seconds for the timers

    @classmethod
    def of_program(cls, program: str) -> Release:
        directory = pathlib.Path(os.path.abspath(program)).parent.parent
        text = read_optional(directory / RELEASE_FILE)
        if text is None:
            return cls(None, directory, {})
        if text.strip() not in {str(number) for number in MINIMUM_SCHEMA_VERSION}:
            raise StandinError(f"{directory / RELEASE_FILE} says {text.strip()[:20]!r}; a release of the "
                               f"stand-in is one of {sorted(MINIMUM_SCHEMA_VERSION)}", EXIT_LAUNCH)
        return cls(int(text), directory, read_faults(directory / FAULTS_FILE))

    @property
    def faults_path(self) -> pathlib.Path:
        return self.location / FAULTS_FILE

    def refusal(self, version: int) -> str | None:
        """Why this release does not run on schema `version`, or None when it does."""
        if self.number is not None and version < MINIMUM_SCHEMA_VERSION[self.number]:
            return (f"release {self.number} needs schema version {MINIMUM_SCHEMA_VERSION[self.number]} or newer; "
                    f"found {version}")
        return None


def read_optional(path: pathlib.Path) -> str | None:
    """The text of a file that may be missing; any other read error is fatal at launch."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as err:
        raise StandinError(f"cannot read {path}: {err}", EXIT_LAUNCH) from None


def read_faults(path: pathlib.Path) -> dict:
    """Fault name -> True or seconds, from a FAULTS file (missing: no fault); blank lines are skipped."""
    faults: dict = {}
    for number, line in enumerate((read_optional(path) or "").splitlines(), start=1):
        found = FAULT_LINE.fullmatch(line.strip())
        if line.strip() and not found:
            raise StandinError(f"{path} line {number}: {line.strip()!r} is not a fault; one a line: refuse-start, "
                               "smoke-fails, error-after=SECONDS or exit-after=SECONDS", EXIT_LAUNCH)
        if found:
            switch, timer, seconds = found.groups()
            faults[switch or timer] = True if switch else float(seconds)
    return faults


# --- pidfile ----------------------------------------------------------------------------------

def read_pidfile(path: str) -> int | None:
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            text = handle.read().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def is_live_standin(pid: int) -> bool:
    """A live (not zombie) process whose command line names this stand-in."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            state = handle.read().rsplit(b")", 1)[1].split()[0]
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            cmdline = handle.read()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != b"Z" and any(name.encode() in cmdline for name in PROCESS_NAMES)


def refuse_if_running(pidfile: str) -> None:
    pid = read_pidfile(pidfile)
    if pid is not None and pid != os.getpid() and is_live_standin(pid):
        raise StandinError(f"already running as pid {pid} (pidfile {pidfile}); stop it first", EXIT_LAUNCH)


def write_pidfile(path: str) -> None:
    """Atomic (temp file + rename), so a reader never sees an empty or half-written pidfile."""
    temp = f"{path}.{os.getpid()}.tmp"
    with open(temp, "w", encoding="ascii") as handle:
        handle.write(f"{os.getpid()}\n")
    os.replace(temp, path)


def remove_own_pidfile(path: str) -> None:
    if read_pidfile(path) == os.getpid():
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


# --- daemonizing -----------------------------------------------------------------------------

def daemonize() -> int:
    """Double fork; returns, in the daemon, the write end of a pipe to the waiting launcher.

    The launcher blocks on the pipe until the daemon writes "ok" (pidfile in place) or an
    error text, so its exit status says whether the daemon really launched.
    """
    read_end, write_end = os.pipe()
    if os.fork() > 0:
        os.close(write_end)
        report_launch_and_exit(read_end)
    os.close(read_end)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)  # the session leader goes; the daemon can never reacquire a terminal
    os.chdir("/")
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        # Also releases the launcher's stdout/stderr pipes: a caller reading them to EOF returns.
        os.dup2(devnull, fd)
    os.close(devnull)
    return write_end


def report_launch_and_exit(read_end: int) -> None:
    chunks = []
    while True:
        chunk = os.read(read_end, 4096)
        if not chunk:
            break
        chunks.append(chunk)
    os.wait()  # reap the intermediate child
    message = b"".join(chunks).decode("utf-8", "replace")
    if message.startswith("ok"):
        sys.exit(EXIT_OK)
    sys.stderr.write(f"riskmgr_standin: {message or 'daemon exited before writing its pidfile'}\n")
    sys.exit(EXIT_LAUNCH)


def tell_launcher(pipe_fd: int | None, message: str) -> None:
    if pipe_fd is not None:
        os.write(pipe_fd, message.encode("utf-8"))
        os.close(pipe_fd)


# --- database ----------------------------------------------------------------------------------

def is_busy(err: sqlite3.Error) -> bool:
    text = str(err).lower()
    return "locked" in text or "busy" in text


def open_database(path: str, busy_timeout_ms: int) -> sqlite3.Connection:
    """Open an existing SQLite file read-write: sqlite3.connect() would create a missing one."""
    try:
        with open(path, "rb") as handle:
            header = handle.read(len(SQLITE_HEADER))
    except OSError as err:
        raise StandinError(f"cannot open database {path}: {err.strerror}", EXIT_DB_ERROR) from err
    if header != SQLITE_HEADER:
        raise StandinError(f"{path} is not a SQLite 3 database", EXIT_DB_ERROR)
    uri = pathlib.Path(path).as_uri() + "?mode=rw"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=busy_timeout_ms / 1000)
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    return conn


def retry_busy(log: Log, what: str, action, busy_timeout_s: float):
    """Run action(); on SQLITE_BUSY/locked retry forever (each try already waits busy_timeout).

    Never drops the write: a daemon that loses enforcement records during a lock is the bug
    this stand-in exists to catch. While waiting it logs a WARNING after busy_timeout, then at
    most one per PROGRESS_EVERY_S; once through after a long wait, one more saying how long.
    """
    started = time.monotonic()
    next_warning = started + busy_timeout_s
    while True:
        try:
            result = action()
        except sqlite3.OperationalError as err:
            if not is_busy(err):
                raise
            if time.monotonic() >= next_warning:
                log.write("WARNING", f"database is locked; still retrying {what} after "
                                     f"{time.monotonic() - started:.1f}s ({err})")
                next_warning = time.monotonic() + PROGRESS_EVERY_S
            time.sleep(0.05)
            continue
        waited = time.monotonic() - started
        if waited >= busy_timeout_s:
            log.write("WARNING", f"{what} waited {waited:.1f}s for the database lock; done, nothing lost")
        return result


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def type_affinity(declared_type: str) -> str:
    """SQLite's affinity of a declared column type, by its rules in order (datatype3.html, 3.1)."""
    upper = declared_type.upper()
    if "INT" in upper:
        return "INTEGER"
    if "CHAR" in upper or "CLOB" in upper or "TEXT" in upper:
        return "TEXT"
    if "BLOB" in upper or not upper.strip():
        return "BLOB"
    if "REAL" in upper or "FLOA" in upper or "DOUB" in upper:
        return "REAL"
    return "NUMERIC"


def table_named(conn: sqlite3.Connection, name: str) -> str | None:
    """The stored name of a table, matched without regard to case as SQLite matches it."""
    row = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND lower(name) = ?",
                       (name.lower(),)).fetchone()
    return row[0] if row else None


def column_names(conn: sqlite3.Connection, table: str) -> dict[str, str]:
    """Lower-case name -> stored name of each column of `table`."""
    return {row[1].lower(): row[1] for row in conn.execute(f"PRAGMA table_info({quote_identifier(table)})")}


def schema_version(conn: sqlite3.Connection) -> int:
    """MAX(version) of schema_version in whatever shape it has; no table means version 1."""
    table = table_named(conn, "schema_version")
    if table is None:
        return 1
    columns = column_names(conn, table)
    if "version" not in columns:
        raise StandinError(f"table {table} has no version column; cannot tell the schema version", EXIT_DB_ERROR)
    query = f"SELECT MAX({quote_identifier(columns['version'])}) FROM {quote_identifier(table)}"
    if "success" in columns:  # a failed attempt recorded in the history does not count
        query += f" WHERE {quote_identifier(columns['success'])} = 1"
    row = conn.execute(query).fetchone()
    return row[0] if row and row[0] is not None else 1


class RowPlan:
    """How to write one enforcement_log row into the table this database really has.

    Read once at start from PRAGMA table_xinfo: the known columns present get fresh values;
    every other column is copied from the most recent row (by rowid), so whatever constraint
    the real schema puts on it stays satisfied. Left out: the rowid alias (SQLite assigns it),
    generated columns, and execution_time_ms for release 1, whose code predates it.
    """

    def __init__(self, conn: sqlite3.Connection, release: int | None = None) -> None:
        table = table_named(conn, "enforcement_log")
        if table is None:
            raise StandinError("no enforcement_log table in this database; is it a risk manager state.db?",
                               EXIT_DB_ERROR)
        try:
            conn.execute(f"SELECT rowid FROM {quote_identifier(table)} LIMIT 0")
        except sqlite3.OperationalError:
            raise StandinError(f"{table} is a WITHOUT ROWID table; the stand-in appends rows by rowid and "
                               f"needs a rowid table (see the shape contract in tools/v1_shapes.py)",
                               EXIT_DB_ERROR) from None
        columns = conn.execute(f"PRAGMA table_xinfo({quote_identifier(table)})").fetchall()
        keys = [column for column in columns if column[5]]
        rowid_alias = keys[0][1] if len(keys) == 1 and keys[0][2].upper() == "INTEGER" else None
        self.table = quote_identifier(table)
        self.release = release
        self.unknown_to_release = []  # stored names this release leaves to their default
        self.known = {}  # lower-case known name -> stored name
        self.copied = []  # stored names, in table order
        self.fillers = {}  # stored name -> value, for an empty table
        for _cid, name, declared_type, not_null, default, _pk, hidden in columns:
            if hidden or name == rowid_alias:
                continue
            if release == 1 and name.lower() == "execution_time_ms":
                self.unknown_to_release.append(name)
                continue
            if name.lower() in KNOWN_COLUMNS:
                self.known[name.lower()] = name
                continue
            self.copied.append(name)
            if not_null and default is None:
                self.fillers[name] = AFFINITY_FILLER[type_affinity(declared_type or "")]
        self.latest_row_sql = (f"SELECT {', '.join(quote_identifier(name) for name in self.copied)} "
                               f"FROM {self.table} ORDER BY rowid DESC LIMIT 1")

    @property
    def with_execution_time(self) -> bool:
        return "execution_time_ms" in self.known

    def execution_time_ms(self, number: int, began: float) -> int:
        """Release 2: how long this enforcement check took, in whole ms (at least 1). No release: a
        made-up value, as before releases existed."""
        if self.release is None:
            return number % 13
        return max(1, math.ceil((time.monotonic() - began) * 1000))

    def fresh_values(self, number: int, began: float) -> dict:
        values = {
            "account_id": 1000 + number % 7,
            "rule_id": RULES[number % len(RULES)],
            "action": "CHECK",
            "reason": f"standin heartbeat {number}",
            "success": 1,
            "timestamp": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "execution_time_ms": self.execution_time_ms(number, began),
        }
        return {self.known[key]: value for key, value in values.items() if key in self.known}

    def row(self, conn: sqlite3.Connection, number: int, began: float) -> dict:
        """Stored column name -> value for row `number`, whose check began at monotonic time `began`;
        call inside the write transaction."""
        values = self.fresh_values(number, began)
        if self.copied:
            latest = conn.execute(self.latest_row_sql).fetchone()
            values.update(zip(self.copied, latest) if latest else self.fillers)
        return values

    def describe(self) -> str:
        text = "; filling execution_time_ms" if self.with_execution_time else ""
        if self.unknown_to_release:
            text += f"; leaving {', '.join(self.unknown_to_release)} to its default (release {self.release})"
        if self.copied:
            text += f"; copying {len(self.copied)} other column(s) from the latest row"
        return text


def insert_row(conn: sqlite3.Connection, number: int, plan: RowPlan) -> int:
    """One enforcement_log row in its own committed transaction; returns its rowid."""
    began = time.monotonic()
    conn.execute("BEGIN IMMEDIATE")
    try:
        values = plan.row(conn, number, began)
        if values:
            columns = ", ".join(quote_identifier(name) for name in values)
            marks = ", ".join("?" for _ in values)
            cursor = conn.execute(f"INSERT INTO {plan.table} ({columns}) VALUES ({marks})", tuple(values.values()))
        else:
            cursor = conn.execute(f"INSERT INTO {plan.table} DEFAULT VALUES")
        conn.execute("COMMIT")
    except sqlite3.Error:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return cursor.lastrowid


# --- the daemon ------------------------------------------------------------------------------

class Daemon:
    def __init__(self, args: argparse.Namespace, log: Log, release: Release) -> None:
        self.args = args
        self.log = log
        self.release = release
        started = time.monotonic()
        # Timed faults still to fire, soonest first: (monotonic time, fault name).
        self.timed_faults = sorted((started + release.faults[name], name) for name in FAULT_TIMERS
                                   if name in release.faults)
        self.stop_requested = False
        self.rows = 0
        self.last_id: int | None = None
        self.plan: RowPlan | None = None

    def retry_busy(self, what: str, action):
        return retry_busy(self.log, what, action, self.args.busy_timeout_ms / 1000)

    def request_stop(self, signum: int, _frame) -> None:
        # Only a flag: the transaction in progress finishes, the loop ends at the next check.
        self.stop_requested = True

    def install_signals(self) -> None:
        if self.args.ignore_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            self.log.write("WARNING", "ignoring SIGTERM (--ignore-sigterm); only SIGKILL stops this process")
        else:
            signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)

    def start(self) -> sqlite3.Connection:
        if self.release.number is not None:
            self.log.write("INFO", f"riskmgr release {self.release.number} starting from {self.release.location}")
        if "refuse-start" in self.release.faults:
            raise StandinError(f"injected fault: refuse-start in {self.release.faults_path}; refusing to start",
                               EXIT_REFUSED)
        conn = open_database(self.args.db, self.args.busy_timeout_ms)
        mode = self.retry_busy("setting WAL mode", lambda: conn.execute("PRAGMA journal_mode=WAL").fetchone()[0])
        version = self.retry_busy("reading the schema version", lambda: schema_version(conn))
        self.log.write("INFO", f"Database schema version: {version}")
        if version in self.args.refuse_version:
            conn.close()
            raise StandinError(f"schema version {version} is not supported by this build; refusing to run",
                               EXIT_REFUSED)
        refusal = self.release.refusal(version)
        if refusal:
            conn.close()
            raise StandinError(refusal, EXIT_REFUSED)
        self.plan = self.retry_busy("reading the columns of enforcement_log",
                                    lambda: RowPlan(conn, self.release.number))
        self.log.write("INFO", f"started pid {os.getpid()}; journal_mode={mode}; one enforcement_log row "
                               f"every {self.args.interval_ms} ms" + self.plan.describe())
        return conn

    def run(self, conn: sqlite3.Connection) -> None:
        interval = self.args.interval_ms / 1000
        next_progress = time.monotonic() + PROGRESS_EVERY_S
        while not self.stop_requested:
            number = self.rows + 1
            self.last_id = self.retry_busy(f"insert of row {number}",
                                           lambda: insert_row(conn, number, self.plan))
            self.rows = number
            if time.monotonic() >= next_progress:
                self.log.write("INFO", f"progress: {self.rows} rows written; last id {self.last_id}")
                next_progress = time.monotonic() + PROGRESS_EVERY_S
            self.sleep(interval)

    def sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stop_requested:
            self.fire_due_faults()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.1))

    def fire_due_faults(self) -> None:
        """The FAULTS timers whose time has come: error-after logs once, exit-after ends the daemon."""
        while self.timed_faults and self.timed_faults[0][0] <= time.monotonic():
            name = self.timed_faults.pop(0)[1]
            what = f"injected fault: {name}={self.release.faults[name]:g} in {self.release.faults_path}"
            if name == "exit-after":
                raise StandinError(f"{what}; exiting with status {EXIT_BUG}", EXIT_BUG)
            self.log.write("ERROR", f"{what}; still running")


def serve(args: argparse.Namespace, log: Log, launcher_pipe: int | None, release: Release) -> int:
    daemon = Daemon(args, log, release)
    daemon.install_signals()
    try:
        refuse_if_running(args.pidfile)
        write_pidfile(args.pidfile)
    except (StandinError, OSError) as err:
        message = str(err) if isinstance(err, StandinError) else f"cannot write pidfile {args.pidfile}: {err}"
        log.write("ERROR", message)
        tell_launcher(launcher_pipe, message)
        return EXIT_LAUNCH
    tell_launcher(launcher_pipe, "ok")
    # From here on a failure leaves the pidfile behind, like a crashed daemon: the next start
    # sees that the pid is gone and overwrites it.
    try:
        conn = daemon.start()
        daemon.run(conn)
    except StandinError as err:
        log.write("ERROR", str(err))
        return err.status
    except sqlite3.Error as err:
        log.write("ERROR", f"database error after {daemon.rows} rows (last id {daemon.last_id}): {err}; exiting")
        return EXIT_DB_ERROR
    except Exception as err:  # a bug here must still reach the log: stderr is /dev/null
        log.write("ERROR", f"unexpected {type(err).__name__}: {err}; exiting")
        return EXIT_BUG
    conn.close()  # the last connection to close checkpoints the WAL
    log.write("INFO", f"stopped after {daemon.rows} rows; last id {daemon.last_id}")
    remove_own_pidfile(args.pidfile)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        release = Release.of_program(sys.argv[0])  # before the daemon's chdir: the path may be relative
        refuse_if_running(args.pidfile)  # checked here too, so the launcher's exit status says it
        log = Log(args.log)
    except (StandinError, OSError) as err:
        sys.stderr.write(f"riskmgr_standin: {err}\n")
        return EXIT_LAUNCH
    launcher_pipe = None if args.foreground else daemonize()
    try:
        return serve(args, log, launcher_pipe, release)
    finally:
        log.close()


if __name__ == "__main__":
    sys.exit(main())
