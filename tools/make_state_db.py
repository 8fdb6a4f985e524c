#!/usr/bin/env python3
"""Build realistic risk-manager state databases for the demo, the tests and the bench.

    make_state_db.py PATH [--rows 2000] [--target-mb N] [--journal wal|delete] [--seed 7]

The schema is files/migrations/v1/000_baseline.sql, the same file the engine recognises v1 by.
Rows are generated and inserted in batches, so a 600 MB database costs a few MB of memory.
"""
from __future__ import annotations

import argparse
import os
import random
import sqlite3
import subprocess
import sys
from contextlib import closing
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASELINE_SQL = ROOT / "files" / "migrations" / "v1" / "000_baseline.sql"
BATCH = 5000
EPOCH = datetime(2026, 1, 2, 14, 30, tzinfo=timezone.utc)
RULES = [f"RULE-{n:03d}" for n in range(1, 13)]
ACTIONS = ["CLOSE_POSITION", "CANCEL_ORDERS", "LOCKOUT", "FLATTEN", "ALERT"]
ORDER_STATES = ["PENDING", "WORKING", "FILLED", "CANCELLED", "REJECTED"]
CONTRACTS = [f"CON.F.US.{sym}.Z26" for sym in ("MNQ", "MES", "MYM", "M2K", "MGC", "MCL", "NQ", "ES", "CL", "GC")]


def stamp(offset_s: float) -> str:
    return (EPOCH + timedelta(seconds=offset_s)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def batched(rows, size: int = BATCH):
    batch = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def create_v1_schema(conn: sqlite3.Connection) -> None:
    conn.executescript(BASELINE_SQL.read_text())


def fill(conn: sqlite3.Connection, rows: int, rng: random.Random, accounts: int = 50) -> None:
    """Insert about `rows` rows into each large table and a realistic few into the small ones."""
    small = max(10, accounts)
    inserts = {
        "INSERT INTO contract_cache VALUES (?,?,?,?,?,?)": (
            (c, c.split(".")[3], 0.25, 0.5, "2026-12-19", stamp(0)) for c in CONTRACTS),
        "INSERT INTO session_state VALUES (?,?,?)": (
            (f"session.{k}", str(rng.randint(0, 10**6)), stamp(k)) for k in range(small)),
        "INSERT INTO reset_schedule VALUES (?,?,?,?,?)": (
            (a, "17:00", "America/Chicago", stamp(-86400), stamp(86400)) for a in range(1, small + 1)),
        "INSERT INTO lockouts VALUES (?,?,?,?,?)": (
            (a, "daily loss limit", stamp(a * 60), stamp(a * 60 + 3600), rng.choice(RULES))
            for a in range(1, small // 5 + 2)),
        "INSERT INTO daily_pnl VALUES (?,?,?,?,?)": (
            (a, (EPOCH + timedelta(days=d)).strftime("%Y-%m-%d"), round(rng.gauss(0, 800), 2),
             rng.randint(0, 60), stamp(d * 86400)) for a in range(1, accounts + 1) for d in range(max(1, rows // accounts // 4))),
        "INSERT INTO positions (account_id, contract_id, quantity, avg_price, unrealized_pnl, opened_at, updated_at) "
        "VALUES (?,?,?,?,?,?,?)": (
            (rng.randint(1, accounts), rng.choice(CONTRACTS), rng.choice([-3, -2, -1, 1, 2, 3]),
             round(rng.uniform(4000, 21000), 2), round(rng.gauss(0, 300), 2), stamp(i), stamp(i + rng.randint(0, 900)))
            for i in range(rows)),
        "INSERT INTO orders VALUES (?,?,?,?,?,?,?,?,?,?,?)": (
            (i + 1, rng.randint(1, accounts), rng.choice(CONTRACTS), rng.randint(1, 4), rng.choice([0, 1]),
             rng.randint(1, 5), round(rng.uniform(4000, 21000), 2), None, rng.choice(ORDER_STATES), stamp(i), stamp(i + 5))
            for i in range(rows)),
        "INSERT INTO trade_history (account_id, contract_id, side, quantity, price, pnl, timestamp) VALUES (?,?,?,?,?,?,?)": (
            (rng.randint(1, accounts), rng.choice(CONTRACTS), rng.choice([0, 1]), rng.randint(1, 5),
             round(rng.uniform(4000, 21000), 2), round(rng.gauss(0, 120), 2), stamp(i * 2)) for i in range(rows)),
        "INSERT INTO enforcement_log (account_id, rule_id, action, reason, success, timestamp) VALUES (?,?,?,?,?,?)": (
            (rng.randint(1, accounts), rng.choice(RULES), rng.choice(ACTIONS),
             "breach of " + rng.choice(RULES) + " at " + stamp(i), int(rng.random() > 0.03), stamp(i * 3))
            for i in range(rows)),
    }
    for sql, rows_iter in inserts.items():
        conn.execute("BEGIN")
        for batch in batched(rows_iter):
            conn.executemany(sql, batch)
        conn.execute("COMMIT")


def build_v1_db(path: str | os.PathLike, rows: int = 2000, journal: str = "wal", seed: int = 7,
                target_mb: float | None = None) -> Path:
    """Create a v1 database at `path` (which must not exist) and return it.

    With target_mb, rows are added in rounds until the file reaches that size.
    """
    path = Path(path)
    if path.exists():
        raise FileExistsError(path)
    rng = random.Random(seed)
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute(f"PRAGMA journal_mode={'WAL' if journal == 'wal' else 'DELETE'}")
        conn.execute("PRAGMA synchronous=OFF")  # a generator, not the daemon: speed over durability
        create_v1_schema(conn)
        fill(conn, rows, rng)
        if target_mb:
            bytes_per_round = max(path.stat().st_size, 1)
            while path.stat().st_size < target_mb * 1024 * 1024:
                grow_rows = int(rows * min(8.0, (target_mb * 1024 * 1024 - path.stat().st_size) / bytes_per_round + 0.05))
                before = path.stat().st_size
                grow(conn, max(grow_rows, 1000), rng)
                bytes_per_round = max(path.stat().st_size - before, 1) / max(grow_rows, 1) * rows
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path


def grow(conn: sqlite3.Connection, rows: int, rng: random.Random) -> None:
    """Append rows to the large tables only (the small ones keep their natural size)."""
    offset = conn.execute("SELECT COALESCE(MAX(order_id), 0) FROM orders").fetchone()[0]
    conn.execute("BEGIN")
    for batch in batched(
            (rng.randint(1, 50), rng.choice(CONTRACTS), rng.choice([-1, 1]), 4000.0, 1.0, stamp(i), stamp(i + 3))
            for i in range(rows)):
        conn.executemany("INSERT INTO positions (account_id, contract_id, quantity, avg_price, unrealized_pnl, "
                         "opened_at, updated_at) VALUES (?,?,?,?,?,?,?)", batch)
    for batch in batched(
            (offset + i + 1, rng.randint(1, 50), rng.choice(CONTRACTS), 2, 1, 1, 4000.25, None,
             rng.choice(ORDER_STATES), stamp(i), stamp(i)) for i in range(rows)):
        conn.executemany("INSERT INTO orders VALUES (?,?,?,?,?,?,?,?,?,?,?)", batch)
    for batch in batched(
            (rng.randint(1, 50), rng.choice(CONTRACTS), 1, 1, 4000.5, 12.5, stamp(i)) for i in range(rows)):
        conn.executemany("INSERT INTO trade_history (account_id, contract_id, side, quantity, price, pnl, timestamp) "
                         "VALUES (?,?,?,?,?,?,?)", batch)
    for batch in batched(
            (rng.randint(1, 50), rng.choice(RULES), rng.choice(ACTIONS), "breach at " + stamp(i), 1, stamp(i))
            for i in range(rows)):
        conn.executemany("INSERT INTO enforcement_log (account_id, rule_id, action, reason, success, timestamp) "
                         "VALUES (?,?,?,?,?,?)", batch)
    conn.execute("COMMIT")


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path")
    parser.add_argument("--rows", type=int, default=2000, help="rows per large table (default 2000)")
    parser.add_argument("--target-mb", type=float, help="grow the large tables until the file is this big")
    parser.add_argument("--journal", choices=["wal", "delete"], default="wal")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    path = build_v1_db(args.path, rows=args.rows, journal=args.journal, seed=args.seed, target_mb=args.target_mb)
    print(f"{path}: v1 database, {path.stat().st_size / 1048576:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
