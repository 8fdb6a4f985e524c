"""Shared plumbing for the riskmgr SQLite modules: errors, safe connections, hashing, disk.

Plain Python, no Ansible import: pytest calls these directly and the modules ship them to
hosts that have nothing but Python 3 and its sqlite3.
"""
from __future__ import annotations

import math
import os
import re
import sqlite3
import time
from contextlib import closing, contextmanager
from pathlib import Path

from ansible.module_utils.role_defaults import ROLE_DEFAULTS

SQLITE_HEADER = b"SQLite format 3\x00"
HEADER_BYTES = 20
# Header bytes 18-19 (file format write/read version): 2 = WAL, 1 = rollback journal.
WAL_FORMAT, ROLLBACK_FORMAT = b"\x02\x02", b"\x01\x01"
HASH_CHUNK = 1024 * 1024
DEFAULT_BUSY_TIMEOUT_S = float(ROLE_DEFAULTS["riskmgr_busy_timeout"])  # the role's riskmgr_busy_timeout
# Free space a schema change needs, as a share of the database file: its new index pages go to
# the -wal first, then (checkpoint) into the database. The v2 indexes measure 15-22 % of the file
# each time (1.4 MB, 10 MB and 40 MB test databases), so at most about 44 % at the peak.
SCHEMA_CHANGE_GROWTH = 0.5
# ... and the sort of the biggest new index, in SQLite's temp dir once it exceeds ~2 MB (cache_size).
INDEX_SORT_SHARE = 0.25
# Where SQLite's unix VFS puts temp files when SQLITE_TMPDIR and TMPDIR do not name a directory.
SQLITE_TEMP_DIRS = ("/var/tmp", "/usr/tmp", "/tmp")


class RiskmgrError(Exception):
    """An expected failure with operator-ready text: what is wrong, with which file, what to do.

    fail_result holds extra keys for the task result (a lock's holder, say), for playbooks
    that tolerate the failure and look closer.
    """

    fail_result: dict = {}


class MigrationError(RiskmgrError):
    """The migration cannot or did not happen; the database was left unchanged."""


class VerificationError(RiskmgrError):
    """A verification could not run (a failed check is a result, not this error)."""


class BackupError(RiskmgrError):
    """A backup or restore cannot or did not happen; no live file was touched."""


class DaemonError(RiskmgrError):
    """The daemon could not be stopped or started as asked; the text says what it was left as."""


def require_sqlite_file(path: str | os.PathLike) -> None:
    """Refuse anything that is not an existing, non-empty SQLite 3 database file.

    sqlite3.connect() silently creates a missing file and happily opens an empty one, so a
    typo in an inventory would otherwise "migrate" a brand-new empty database.
    """
    path = Path(path)
    if not path.exists():
        raise RiskmgrError(f"{path}: no such file; check riskmgr_db_path for this host")
    if not path.is_file():
        raise RiskmgrError(f"{path}: not a regular file; riskmgr_db_path must name the state.db file")
    try:
        with open(path, "rb") as handle:
            header = handle.read(len(SQLITE_HEADER))
    except OSError as err:
        raise RiskmgrError(f"{path}: cannot be read ({err.strerror}); run as the database owner (become)") from err
    if not header:
        raise RiskmgrError(f"{path}: the file is empty, not a state database; check riskmgr_db_path "
                           "or restore it from a backup")
    if header != SQLITE_HEADER:
        raise RiskmgrError(f"{path}: not a SQLite 3 database (bad file header); check riskmgr_db_path "
                           "or restore it from a backup")


def read_header(path: str | os.PathLike) -> bytes:
    """The first bytes of a database file: its magic string and file format bytes."""
    with open(path, "rb") as handle:
        return handle.read(HEADER_BYTES)


def file_format(header: bytes) -> str:
    """"wal" or "rollback" from header bytes 18-19 (file format write/read version: 2 = WAL, 1 = rollback
    journal), "not sqlite" for anything else."""
    if header[:len(SQLITE_HEADER)] != SQLITE_HEADER or len(header) < HEADER_BYTES:
        return "not sqlite"
    return {WAL_FORMAT: "wal", ROLLBACK_FORMAT: "rollback"}.get(header[18:20], "not sqlite")


def is_wal_database(path: str | os.PathLike) -> bool:
    return file_format(read_header(path)) == "wal"


def wal_is_empty(path: str | os.PathLike) -> bool:
    """No -wal, or an empty one: the main file holds every committed row."""
    try:
        return os.path.getsize(f"{path}-wal") == 0
    except FileNotFoundError:
        return True


def connect_readonly(path: str | os.PathLike, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S) -> sqlite3.Connection:
    """Open a database for reading only, safe while the daemon writes to it; never creates it.

    A WAL database needs its -wal and -shm files even to be read, and a mode=ro connection
    that has to create them leaves them behind. When they do not exist yet (no one has the
    database open), the file is opened read-write under query_only instead: nothing can be
    written, and closing the last connection removes the files SQLite made, so a check-mode
    run leaves the directory exactly as it found it.
    """
    require_sqlite_file(path)
    path = Path(path)
    mode = "ro"
    real = Path(os.path.realpath(path))  # SQLite follows a link: its -wal and -shm are beside the real file
    if (is_wal_database(path) and not Path(f"{real}-wal").exists()
            and os.access(real, os.W_OK) and os.access(real.parent, os.W_OK)):
        mode = "rw"
    conn = sqlite3.connect(path.resolve().as_uri() + f"?mode={mode}", uri=True, timeout=busy_timeout_s,
                           isolation_level=None)
    conn.execute("PRAGMA query_only = 1")
    return conn


def connect_writable(path: str | os.PathLike, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S) -> sqlite3.Connection:
    """Open an existing database for writing, with autocommit off at the Python level.

    isolation_level=None stops Python's sqlite3 from opening and committing transactions
    behind our back (it would commit before DDL); callers issue BEGIN IMMEDIATE themselves.
    """
    require_sqlite_file(path)
    uri = Path(path).resolve().as_uri() + "?mode=rw"
    conn = sqlite3.connect(uri, uri=True, timeout=busy_timeout_s, isolation_level=None)
    return conn


@contextmanager
def rolled_back_writer(path: str | os.PathLike, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S):
    """A writable connection for work the caller always rolls back (the write proof), opened and closed so
    that the file keeps its bytes: a read-only connection stays open around it, so closing the writer is
    never the last close of a WAL database (SQLite would then checkpoint the -wal into the file and
    delete it, moving rows a killed daemon left only in the -wal)."""
    with closing(connect_readonly(path, busy_timeout_s)) as guard:
        guard.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        with closing(connect_writable(path, busy_timeout_s)) as conn:
            yield conn


def free_bytes(path: str | os.PathLike) -> int:
    """Free bytes for an unprivileged writer on the filesystem holding path (or its parent)."""
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    stats = os.statvfs(probe)
    return stats.f_bavail * stats.f_frsize


def database_bytes(path: str | os.PathLike) -> int:
    """Size of the database with its -wal file: what a consistent copy may need to hold."""
    total = 0
    for suffix in ("", "-wal"):
        try:
            total += os.path.getsize(f"{path}{suffix}")
        except FileNotFoundError:
            pass
    return total


def quote_identifier(name: str) -> str:
    """Quote a table or index name read from sqlite_master (never from operator input)."""
    return '"' + name.replace('"', '""') + '"'


INTEGRITY_PRAGMAS = {"integrity": "integrity_check", "quick": "quick_check"}
INTEGRITY_LINES = 20
# SQLite 3.40.0 to 3.41.0 (Debian 12 ships 3.40.1) report "NULL value in t.c" from integrity_check and
# quick_check for a NOT NULL column declared before the primary key of a WITHOUT ROWID table, on
# rows where it is not NULL (fixed in 3.41.1).
FALSE_NULL_REPORT = re.compile(r"^NULL value in (.+)\.([^.]+)$")
FALSE_NULL_VERSIONS = ((3, 40, 0), (3, 41, 0))


def integrity_result(conn: sqlite3.Connection, level: str) -> dict:
    """PRAGMA integrity_check or quick_check: {"level", "ok", "errors", "seconds", "notes"}.

    A report that is a known false one of the running SQLite, checked against the table itself,
    is a note, not an error (notes say what was checked).
    """
    started = time.monotonic()
    lines = [row[0] for row in conn.execute(f"PRAGMA {INTEGRITY_PRAGMAS[level]}({INTEGRITY_LINES})")]
    errors = [] if lines == ["ok"] else lines
    notes = sorted({line for line in errors if is_false_null_report(conn, line)})
    errors = [line for line in errors if line not in notes]
    return {"level": level, "ok": not errors, "errors": errors, "seconds": round(time.monotonic() - started, 3),
            "notes": [f"{line!r} is a known false report of SQLite {sqlite3.sqlite_version} for a WITHOUT ROWID table "
                      "(3.40.0 to 3.41.0); checked: no row has that column NULL" for line in notes]}


def is_false_null_report(conn: sqlite3.Connection, line: str) -> bool:
    match = FALSE_NULL_REPORT.match(line)
    low, high = FALSE_NULL_VERSIONS
    if not match or not low <= sqlite3.sqlite_version_info <= high:
        return False
    table, column = match.groups()
    row = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ? COLLATE NOCASE",
                       (table,)).fetchone()
    if not row or not re.search(r"WITHOUT\s+ROWID", row[0] or "", re.I):
        return False
    declared = {r[1].lower(): bool(r[3]) for r in conn.execute(f"PRAGMA table_info({quote_identifier(table)})")}
    if not declared.get(column.lower()):
        return False
    # typeof(), not IS NULL: SQLite folds "c IS NULL" to false for a column declared NOT NULL.
    nulls = conn.execute(f"SELECT COUNT(*) FROM {quote_identifier(table)} WHERE typeof({quote_identifier(column)}) = 'null'")
    return nulls.fetchone()[0] == 0


def identifier_list(names) -> str:
    """'"a", "b"': column names for an INSERT or SELECT, each quoted like quote_identifier."""
    return ", ".join(quote_identifier(name) for name in names)


def placeholders(count: int) -> str:
    """'?, ?, ?': the parameters of a VALUES list (values always go in as parameters)."""
    return ", ".join("?" for _ in range(count))


def equality_clause(columns) -> str:
    """'"a" = ? AND "b" = ?': a WHERE clause on quoted columns, compared with parameters."""
    return " AND ".join(f"{quote_identifier(column)} = ?" for column in columns)


def sqlite_error_text(path: str | os.PathLike, err: sqlite3.Error, busy_timeout_s: float) -> str:
    """Turn a sqlite3 error into one operator line, with the usual causes spelled out."""
    text = str(err)
    if "locked" in text or "busy" in text:
        return (f"{path}: database still locked by another process after {busy_timeout_s:g}s; "
                "stop the daemon or the other writer (fuser -v on the file shows it) and rerun")
    if "readonly" in text or "read-only" in text:
        return (f"{path}: cannot write ({text}); the file and its directory must be writable by the "
                "user the task runs as (become the database owner)")
    if "not a database" in text or "malformed" in text:
        return f"{path}: {text}; the file is damaged: restore it from a backup before migrating"
    if "disk" in text and "full" in text or "SQLITE_FULL" in text:
        return disk_full_text(path, text)
    return f"{path}: {text}"


def megabytes(count: int) -> str:
    return f"{count / 1048576:.1f} MB"


def sqlite_temp_dir() -> str:
    """The directory SQLite's temp files go to (the sorts of big index builds spill there): the
    first of SQLITE_TMPDIR, TMPDIR, /var/tmp, /usr/tmp, /tmp that is a writable directory."""
    for candidate in (os.environ.get("SQLITE_TMPDIR"), os.environ.get("TMPDIR"), *SQLITE_TEMP_DIRS):
        if candidate and os.path.isdir(candidate) and os.access(candidate, os.W_OK | os.X_OK):
            return candidate
    return "."


def disk_full_text(path: str | os.PathLike, text: str) -> str:
    """SQLITE_FULL while writing the database: where space ran out, and how much a schema change needs."""
    directory, temp = Path(os.path.realpath(path)).parent, sqlite_temp_dir()
    try:
        size = os.path.getsize(path)
    except OSError:
        size = 0
    free = {where: megabytes(free_bytes(where)) for where in (directory, temp)}
    return (f"{path}: {text}: no space left in {directory} ({free[directory]} free now) or in SQLite's temp dir "
            f"{temp} ({free[temp]} free now); a schema change needs about "
            f"{megabytes(math.ceil(size * SCHEMA_CHANGE_GROWTH))} free in {directory} (database size "
            f"{megabytes(size)} x {SCHEMA_CHANGE_GROWTH:g}: the new indexes go to its -wal, then into it) and about "
            f"{megabytes(math.ceil(size * INDEX_SORT_SHARE))} in {temp} for the index sorts (SQLITE_TMPDIR moves "
            "them); free space there and rerun")


def migration_write_problems(path: str | os.PathLike) -> list[str]:
    """Why migrating the database in place would fail for this user on this host, known before any stop.

    The directory must be writable (SQLite creates its -wal/-journal there), the database and its
    sidecars too, and the database's filesystem and SQLite's temp dir need room for the new indexes.
    """
    # SQLite resolves a symbolic link and writes its -wal/-journal beside the real file: check that place.
    given, path = Path(path), Path(os.path.realpath(path))
    directory, problems = path.parent, []
    if given != path:
        problems_of_link = f" ({given} is a link to {path})"
    else:
        problems_of_link = ""
    if not os.access(directory, os.W_OK | os.X_OK):
        problems.append(f"directory {directory}{problems_of_link} is not writable by this user (SQLite creates its "
                        "-wal/-journal there): run as the database's owner (become), or point riskmgr_db_path at a "
                        "writable place")
    for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        if name.exists() and not os.access(name, os.W_OK):
            problems.append(f"{name} is not writable by this user: run as the database's owner (become)")
    size = os.path.getsize(path) if path.exists() else 0
    needed, temp = math.ceil(size * SCHEMA_CHANGE_GROWTH), sqlite_temp_dir()
    if directory.is_dir() and free_bytes(directory) < needed:
        problems.append(f"{directory} has {megabytes(free_bytes(directory))} free, the schema change needs about "
                        f"{megabytes(needed)} there (database size x {SCHEMA_CHANGE_GROWTH:g}): free space there")
    sort_needed = math.ceil(size * INDEX_SORT_SHARE)
    if os.path.realpath(temp) != os.path.realpath(directory) and free_bytes(temp) < sort_needed:
        problems.append(f"SQLite's temp dir {temp} has {megabytes(free_bytes(temp))} free, the index sorts need "
                        f"about {megabytes(sort_needed)}: free space there or set SQLITE_TMPDIR")
    return problems


def table_row_counts(conn: sqlite3.Connection, errors: dict[str, str] | None = None) -> dict[str, int]:
    """Row count of every ordinary table (the caller's transaction makes them agree with each other).

    With an errors dict, a table that cannot be counted (a damaged page) is recorded there with its
    error and left out, instead of failing the whole count.
    """
    names = [row[0] for row in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
    counts = {}
    for name in names:
        try:
            counts[name] = conn.execute(f"SELECT COUNT(*) FROM {quote_identifier(name)}").fetchone()[0]
        except sqlite3.Error as err:
            if errors is None:
                raise
            errors[name] = str(err)
    return counts


def has_autoincrement(conn: sqlite3.Connection, table: str) -> bool:
    row = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ? COLLATE NOCASE",
                       (table,)).fetchone()
    return bool(row and row[0] and "AUTOINCREMENT" in row[0].upper())


def autoincrement_sequence(conn: sqlite3.Connection, table: str) -> int | None:
    """The AUTOINCREMENT high-water mark of table (sqlite_sequence), None when it has none yet."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_sequence'").fetchone() is None:
        return None
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = ? COLLATE NOCASE", (table,)).fetchone()
    return row[0] if row else None


def set_autoincrement_sequence(conn: sqlite3.Connection, table: str, value: int | None) -> None:
    """Put an AUTOINCREMENT table's high-water mark back to what autoincrement_sequence read (after a DROP
    TABLE forgot it, a copy set it to the highest id, or a row the migration wrote moved it on)."""
    if value is None:
        conn.execute("DELETE FROM sqlite_sequence WHERE name = ? COLLATE NOCASE", (table,))
    elif conn.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = ? COLLATE NOCASE", (value, table)).rowcount == 0:
        conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", (table, value))


@contextmanager
def read_snapshot(path: str | os.PathLike, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S):
    """A read-only connection inside one read transaction, so that every query of the block sees the same
    state while the daemon commits; the transaction is ended (it wrote nothing) and the connection closed."""
    with closing(connect_readonly(path, busy_timeout_s)) as conn:
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            if conn.in_transaction:  # an error SQLite rolled back itself leaves none to end
                conn.execute("ROLLBACK")


def database_row_counts(path: str | os.PathLike, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S) -> dict[str, int]:
    """table_row_counts of a database file, in one read snapshot."""
    with read_snapshot(path, busy_timeout_s) as conn:
        return table_row_counts(conn)
