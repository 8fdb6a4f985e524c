#!/usr/bin/env python3
"""Build realistic risk-manager state databases for the demo, the tests and the bench.

    make_state_db.py PATH [--rows 2000] [--target-mb N] [--journal wal|delete] [--seed 7]
                          [--shape reference|random:SEED]

The shape (tools/v1_shapes.py) is the schema and its data generator: `reference` (the default)
is files/migrations/v1/000_baseline.sql, the same file the engine recognises v1 by; `random:SEED`
is one of the many realistic v1 shapes the field may have. --seed seeds the rows, --shape the
schema. Rows are generated and inserted in batches, so a 600 MB database costs a few MB of memory.
"""
from __future__ import annotations

import argparse
import os
import random
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from v1_shapes import shape_for  # noqa: E402  (a sibling tool, found through sys.path)


def build_v1_db(path: str | os.PathLike, rows: int = 2000, journal: str = "wal", seed: int = 7,
                target_mb: float | None = None, shape: str = "reference") -> Path:
    """Create a v1 database of `shape` at `path` (which must not exist) and return it.

    With target_mb, rows are added in rounds until the file reaches that size.
    """
    path = Path(path)
    if path.exists():
        raise FileExistsError(path)
    v1_shape = shape_for(shape)
    rng = random.Random(seed)
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute(f"PRAGMA journal_mode={'WAL' if journal == 'wal' else 'DELETE'}")
        conn.execute("PRAGMA synchronous=OFF")  # a generator, not the daemon: speed over durability
        v1_shape.create(conn)
        v1_shape.fill(conn, rows, rng)
        if target_mb:
            bytes_per_round = max(path.stat().st_size, 1)
            while path.stat().st_size < target_mb * 1024 * 1024:
                grow_rows = int(rows * min(8.0, (target_mb * 1024 * 1024 - path.stat().st_size) / bytes_per_round + 0.05))
                before = path.stat().st_size
                v1_shape.grow(conn, max(grow_rows, 1000), rng)
                bytes_per_round = max(path.stat().st_size - before, 1) / max(grow_rows, 1) * rows
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path


WAL_WRITER = r"""
import os, sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA wal_autocheckpoint=0")
for n in range(int(sys.argv[2])):
    conn.execute("INSERT INTO enforcement_log (account_id, rule_id, action, reason, success, timestamp) "
                 "VALUES (7, 'RULE-WAL', 'ALERT', 'committed only to the wal', 1, '2026-11-24T12:00:00.000Z')")
os._exit(0)  # no close(): closing the last connection would checkpoint the WAL into state.db
"""


def commit_rows_only_to_wal(path: str | os.PathLike, rows: int = 25) -> None:
    """Commit rows that exist only in state.db-wal, as a daemon killed before a checkpoint leaves them."""
    subprocess.run([sys.executable, "-c", WAL_WRITER, str(path), str(rows)], check=True)


def build_for_command_line(parser: argparse.ArgumentParser, named: str, path: str, what: str, **build) -> int:
    """build_v1_db for a command (this one, tools/v1_shapes.py --db): a path that exists is a usage error,
    named as the command line names it, and is never overwritten; then one line says what was built."""
    try:
        built = build_v1_db(path, **build)
    except FileExistsError:
        parser.error(f"{named}{path}: exists; choose a new path (an existing database is never overwritten)")
    print(f"{built}: v1 database ({what}), {built.stat().st_size / 1048576:.1f} MB")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path")
    parser.add_argument("--rows", type=int, default=2000, help="rows per large table (default 2000)")
    parser.add_argument("--target-mb", type=float, help="grow the large tables until the file is this big")
    parser.add_argument("--journal", choices=["wal", "delete"], default="wal")
    parser.add_argument("--seed", type=int, default=7, help="seed of the rows (default 7)")
    parser.add_argument("--shape", default="reference",
                        help="schema: reference (default, 000_baseline.sql) or random:SEED (tools/v1_shapes.py)")
    args = parser.parse_args()
    try:
        shape_for(args.shape)
    except ValueError as err:
        parser.error(f"--shape: {err}")
    return build_for_command_line(parser, "", args.path, args.shape, rows=args.rows, journal=args.journal,
                                  seed=args.seed, target_mb=args.target_mb, shape=args.shape)


if __name__ == "__main__":
    sys.exit(main())
