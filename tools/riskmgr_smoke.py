#!/usr/bin/env python3
"""Smoke test of a running stand-in daemon (tools/riskmgr_standin.py), shipped in each of its releases.

tools/local_fleet.py copies this file into every release of a host as scripts/smoke_tests.py;
the upgrade runs it through the host's link once the daemon is healthy (riskmgr_smoke_command):

    <python> <host>/current/scripts/smoke_tests.py --db DB --pidfile PIDFILE [--timeout S]

It passes (exit 0, one line on stdout: "smoke test passed: release 2, schema v2, N new rows in
S s") when the daemon named by the pidfile runs, the database opens read-only at a schema
version this release runs on (release 2: 2 or newer), and enforcement_log gains at least one row
within --timeout seconds (default 10; the daemon writes one per interval), rows that carry
execution_time_ms when the release is 2. Otherwise it exits 1 with one line on stderr saying
what failed; `smoke-fails` in the release's FAULTS file makes it fail on purpose.

Its release, its FAULTS and the schema version rule are read with the daemon code of the same
release, as the daemon reads them: bin/riskmgr_daemon.py in the directory above its own, taken
as started (current/scripts/.. is the release the link names); run from tools/, the stand-in
beside it, and no release. Python 3.8+ standard library only, like the daemon.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sqlite3
import sys
import time
from contextlib import closing
from pathlib import Path

DEFAULT_TIMEOUT_S = 10.0
POLL_S = 0.1
EXIT_PASSED, EXIT_FAILED = 0, 1
USAGE = "smoke_tests.py --db PATH --pidfile PATH [--timeout SECONDS]"


class SmokeFailure(Exception):
    """What failed, in one line for the operator; the test exits 1."""


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str):
        raise SmokeFailure(f"bad arguments: {message} (usage: {USAGE})")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = OneLineParser(prog="smoke_tests.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", required=True, help="the daemon's state.db (opened read-only)")
    parser.add_argument("--pidfile", required=True, help="the daemon's pidfile")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                        help=f"seconds to wait for a new enforcement_log row (default {DEFAULT_TIMEOUT_S:g})")
    args = parser.parse_args(argv)
    if not args.timeout > 0:
        parser.error("--timeout must be more than 0 seconds")
    return args


def load_daemon_code(program: str):
    """The daemon code of this copy's release, as a module: one reading of RELEASE, FAULTS and the schema."""
    here = Path(os.path.abspath(program)).parent
    for candidate in (here.parent / "bin" / "riskmgr_daemon.py", here / "riskmgr_standin.py"):
        if candidate.is_file():
            spec = importlib.util.spec_from_file_location("riskmgr_release_daemon", str(candidate))
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module
    raise SmokeFailure(f"no daemon code beside {program} (looked for {here.parent / 'bin' / 'riskmgr_daemon.py'} "
                       f"and {here / 'riskmgr_standin.py'}); is this a copy made by tools/local_fleet.py?")


def running_daemon(daemon, pidfile: str) -> int:
    pid = daemon.read_pidfile(pidfile)
    if pid is None:
        raise SmokeFailure(f"the daemon is not running: {pidfile} is missing or holds no pid")
    if not daemon.is_live_standin(pid):
        raise SmokeFailure(f"the daemon is not running: {pidfile} names pid {pid}, which is not a running riskmgr daemon")
    return pid


def open_read_only(db: str) -> sqlite3.Connection:
    if not os.path.isfile(db):  # checked first: the message names the file, not SQLite's "unable to open"
        raise SmokeFailure(f"{db}: no such database file")
    return sqlite3.connect(Path(db).absolute().as_uri() + "?mode=ro", uri=True, timeout=5, isolation_level=None)


def wait_for_new_rows(daemon, conn: sqlite3.Connection, table: str, pid: int, timeout: float) -> tuple[int, int, float]:
    """(rowid before, rows added, seconds waited) once enforcement_log gained a row."""
    quoted = daemon.quote_identifier(table)
    before = conn.execute(f"SELECT COALESCE(MAX(rowid), 0) FROM {quoted}").fetchone()[0]
    began = time.monotonic()
    while True:
        added = conn.execute(f"SELECT COUNT(*) FROM {quoted} WHERE rowid > ?", (before,)).fetchone()[0]
        waited = time.monotonic() - began
        if added:
            return before, added, waited
        if not daemon.is_live_standin(pid):
            raise SmokeFailure(f"the daemon (pid {pid}) exited during the smoke test, after {waited:.1f} s")
        if waited >= timeout:
            raise SmokeFailure(f"{table} gained no row in {timeout:g} s; the daemon (pid {pid}) runs but does not write")
        time.sleep(POLL_S)


def rows_without_execution_time(daemon, conn: sqlite3.Connection, table: str, after_rowid: int) -> int:
    column = daemon.column_names(conn, table).get("execution_time_ms")
    if column is None:
        raise SmokeFailure(f"{table} has no execution_time_ms column")
    return conn.execute(f"SELECT COUNT(*) FROM {daemon.quote_identifier(table)} WHERE rowid > ? "
                        f"AND COALESCE({daemon.quote_identifier(column)}, 0) <= 0", (after_rowid,)).fetchone()[0]


def smoke(args: argparse.Namespace, program: str) -> str:
    daemon = load_daemon_code(program)
    try:
        return run_checks(daemon, args, program)
    except daemon.StandinError as err:  # a bad RELEASE or FAULTS file, a schema_version without a version
        raise SmokeFailure(str(err)) from None


def run_checks(daemon, args: argparse.Namespace, program: str) -> str:
    release = daemon.Release.of_program(program)
    if "smoke-fails" in release.faults:
        raise SmokeFailure(f"injected fault (smoke-fails in {release.faults_path})")
    pid = running_daemon(daemon, args.pidfile)
    with closing(open_read_only(args.db)) as conn:
        version = daemon.schema_version(conn)
        refusal = release.refusal(version)
        if refusal:
            raise SmokeFailure(f"{args.db}: {refusal}")
        table = daemon.table_named(conn, "enforcement_log")
        if table is None:
            raise SmokeFailure(f"{args.db}: no enforcement_log table")
        before, added, waited = wait_for_new_rows(daemon, conn, table, pid, args.timeout)
        if release.number == 2:
            missing = rows_without_execution_time(daemon, conn, table, before)
            if missing:
                raise SmokeFailure(f"{args.db}: {missing} new rows without execution_time_ms; is the daemon (pid {pid}) "
                                   "release 2? (restarted since the link changed?)")
    if not daemon.is_live_standin(pid):
        raise SmokeFailure(f"the daemon (pid {pid}) exited during the smoke test")
    name = "no release (run from tools/)" if release.number is None else f"release {release.number}"
    return f"smoke test passed: {name}, schema v{version}, {added} new rows in {waited:.1f} s"


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        print(smoke(args, sys.argv[0]))
    except SmokeFailure as err:
        sys.stderr.write(f"smoke test failed: {err}\n")
        return EXIT_FAILED
    except sqlite3.Error as err:
        sys.stderr.write(f"smoke test failed: database error: {err}\n")
        return EXIT_FAILED
    except Exception as err:  # a bug: still one line, no traceback
        sys.stderr.write(f"smoke test failed: unexpected {type(err).__name__}: {err}\n")
        return EXIT_FAILED
    return EXIT_PASSED


if __name__ == "__main__":
    sys.exit(main())
