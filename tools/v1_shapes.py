#!/usr/bin/env python3
"""Schema-v1 database shapes: the reference one, and random realistic ones, each from a spec.

What we really know of v1 is the nine table names and the columns v2's objects use (the
"dependent columns": enforcement_log.success and .timestamp, positions.updated_at,
orders.state and .account_id). Everything else in files/migrations/v1/000_baseline.sql is a
guess, so the migration is tested on many shapes of v1:

    shape_for("reference")     exactly 000_baseline.sql, filled as the demo and tests always were
    shape_for("random:SEED")   a random shape, the same for the same SEED (Python 3.8+, any SQLite 3.31+)

random_specs(wanted, count) finds shapes by their features, e.g.
random_specs(lambda f: f["execution_time_ms"] and f["version_table"], 3), or
random_specs(lambda f: "order_id" in f["columns"]["orders"]): features["columns"] lists the
real columns of each of the nine tables (only the dependent ones are sure to be there).

A Shape has `spec`, `statements` (the DDL in creation order: print them to replay a failure),
`features` (what the shape carries, for tests to pick and count shapes), `create(conn)`,
`fill(conn, rows, rng)` (about `rows` rows in each large table: positions, orders,
trade_history, enforcement_log; a realistic few in the others) and `grow(conn, rows, rng)`
(`rows` more rows in each large table, for --target-mb).

A random shape always has the nine tables, their names sometimes in another letter case or
quoted, and the dependent columns (also sometimes re-cased or quoted) with a plausible declared
type or none. Around them, drawn with these probabilities:

    other columns of the reference      each kept p 0.85, a random plausible type (odd ones p 0.07)
    extra columns                       0-4 per table: any type or none, odd types (STRING, NUMBER(12),
                                        MONEY...), names needing quotes ("order", "group", "Trader Name")
    NOT NULL / DEFAULT / CHECK          per column p 0.6 (reference columns) or 0.3 / 0.3 / 0.2; defaults
                                        are literals, negative numbers, CURRENT_TIMESTAMP, (expressions)
    keys of the large tables            INTEGER PRIMARY KEY AUTOINCREMENT 30-40%, INTEGER PRIMARY KEY (also
                                        NOT NULL, or as a table constraint), no key at all (a plain rowid
                                        table), BIGINT or TEXT keys, composite keys, WITHOUT ROWID 2%
    keys of the small tables            PRIMARY KEY 55%, surrogate id + UNIQUE 15%, a separate unique
                                        index 12%, no key 8%, WITHOUT ROWID 4%
    foreign keys                        p 0.3 per column that can reference a parent (accounts, contracts,
                                        session keys, rules), column- or table-level
    columns added by ALTER TABLE        p 0.3: 1-3 columns appear through ADD COLUMN after the CREATEs
    reference (v1) indexes              each p 0.7 when its columns exist; p 0.015 each another definition
                                        under the same name
    extra indexes                       0-4: plain, multi-column, DESC, COLLATE NOCASE, UNIQUE (on columns
                                        unique by construction), partial (WHERE), on an expression
    views                               on enforcement_log 0-2 (p 0.7 of at least one), on others 0-2
    triggers on enforcement_log         AFTER INSERT into an audit table p 0.4, BEFORE INSERT RAISE check
                                        p 0.25, AFTER UPDATE audit p 0.13, append-only BEFORE DELETE p 0.15;
                                        on orders an AFTER UPDATE history p 0.2
    extra tables                        accounts p 0.35, rules p 0.25, app_settings p 0.3, order notes p 0.2
    enforcement_log.execution_time_ms   p 0.3: INTEGER, INT or BIGINT; NOT NULL DEFAULT 0 p 1/3; values
                                        p 1/2; through ALTER TABLE ADD COLUMN p 1/2
    v2 analytics indexes                p 0.25: a non-empty random subset of the three, under their exact
                                        names and key columns (ASC/DESC may differ)
    schema_version of another shape     p 0.25, holding version 1: two_columns, three_columns,
                                        extra_columns, with_success, seed_like (the last two: success)
    daily_unrealized_pnl (v2 shape)     p 0.15, its indexes with it p 0.7
    text account ids                    p 0.15 ('ACC-0007' instead of 7, in every account column)
    DDL style                           lower-case keywords and types p 0.2, one-line tables p 0.25,
                                        comments inside CREATE TABLE p 0.15, IF NOT EXISTS p 0.1
    PRAGMA user_version / ANALYZE       p 0.15 each (user_version 1-7; ANALYZE after fill)

Measured over seeds 0-199 (tests/unit/test_v1_shapes.py keeps these shares in bounds), the share
of shapes that have:

    execution_time_ms 26%, a v2 analytics index 28%, a schema_version of another shape 28%,
    daily_unrealized_pnl 16%, a view on enforcement_log 66%, a trigger on it 64% (the audit
    trigger 40%), extra columns 100%, an extra table 86%, a foreign key 85%, a CHECK 100%,
    a WITHOUT ROWID table 28%, a re-cased table name 64%, columns added by ALTER TABLE 39%,
    an extra index 97%, a v1 index name on another definition 14%.

WITHOUT ROWID tables declare their key columns first: SQLite 3.40.0-3.41.0 (Debian 12 ships
3.40.1) gives a false "NULL value in t.c" from integrity_check and quick_check for a NOT NULL
column declared before the key of a WITHOUT ROWID table.

fill() satisfies every constraint of the shape: NOT NULL, CHECK, UNIQUE (unique columns and
indexes only ever cover values unique by construction) and FOREIGN KEYs (a child's values lie in
its parent's keys, and both have the same declared type), so PRAGMA foreign_key_check returns
nothing and integrity_check says ok. Values are deterministic from the rng passed in.

Contract with the stand-in daemon (tools/riskmgr_standin.py), which writes enforcement_log rows
with fresh values for the columns it knows (account_id, rule_id, action, reason, success,
timestamp, execution_time_ms) and copies every other column from the most recent row:
  - enforcement_log is always a rowid table, its only key an INTEGER PRIMARY KEY (or none);
  - no UNIQUE constraint or unique index on enforcement_log at all, so no copy can collide;
  - CHECKs on its known columns accept the daemon's values (e.g. success IN (0, 1), account_id > 0;
    never a list of rule ids or actions); CHECKs on other columns hold for any copied value;
  - no FOREIGN KEY on its known columns (the daemon's account_id 1000+ exists nowhere);
  - an unknown NOT NULL column always has a DEFAULT (the daemon leaves it out in an empty table);
  - its triggers cannot fail on such a row: audit inserts into tables without constraints that
    could refuse them, and RAISE only for values the daemon never writes (a NULL timestamp,
    success outside 0/1) or on DELETE.

Python 3 standard library only (3.8+), and only SQL that SQLite 3.31 accepts: no STRICT, no
RETURNING, no DROP COLUMN, no generated columns, no json or math functions, no iif().

    v1_shapes.py --spec random:42                        print the shape's DDL, to replay by hand
    v1_shapes.py --spec random:42 --db PATH [--rows N]   build and fill a database (see make_state_db.py)
"""
from __future__ import annotations

import argparse
import random
import re
import sqlite3
import sys
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

TOOLS = Path(__file__).resolve().parent
if str(TOOLS) not in sys.path:
    sys.path.insert(0, str(TOOLS))
# The daemon's own rules: which enforcement_log columns it fills, how SQLite reads a declared type.
from riskmgr_standin import KNOWN_COLUMNS, quote_identifier, type_affinity  # noqa: E402

ROOT = TOOLS.parent
MIGRATIONS = ROOT / "files" / "migrations"
BASELINE_SQL = MIGRATIONS / "v1" / "000_baseline.sql"
ANALYTICS_INDEXES_SQL = MIGRATIONS / "v2" / "030_analytics_indexes.sql"
UNREALIZED_PNL_SQL = MIGRATIONS / "v2" / "040_daily_unrealized_pnl.sql"

BATCH = 5000
EPOCH = datetime(2026, 1, 2, 14, 30, tzinfo=timezone.utc)
RULES = [f"RULE-{n:03d}" for n in range(1, 13)]
ACTIONS = ["CLOSE_POSITION", "CANCEL_ORDERS", "LOCKOUT", "FLATTEN", "ALERT"]
ORDER_STATES = ["PENDING", "WORKING", "FILLED", "CANCELLED", "REJECTED"]
CONTRACTS = [f"CON.F.US.{sym}.Z26" for sym in ("MNQ", "MES", "MYM", "M2K", "MGC", "MCL", "NQ", "ES", "CL", "GC")]
ACCOUNTS = 50
SESSIONS = 50
LARGE_TABLES = ("positions", "orders", "trade_history", "enforcement_log")
NINE_TABLES = ("lockouts", "daily_pnl", "contract_cache", "trade_history", "session_state", "positions", "orders",
               "enforcement_log", "reset_schedule")
DEPENDENT_COLUMNS = {"enforcement_log": ("success", "timestamp"), "positions": ("updated_at",),
                     "orders": ("state", "account_id")}


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


def split_statements(sql: str) -> list[str]:
    """The statements of a script, each as written, without the comment lines between them."""
    statements, pending = [], ""
    for line in sql.splitlines(keepends=True):
        if not pending and (not line.strip() or line.lstrip().startswith("--")):
            continue
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip().rstrip(";").rstrip())
            pending = ""
    return statements


# --- the reference shape: today's data generator ---------------------------------------------

def fill_reference(conn: sqlite3.Connection, rows: int, rng: random.Random, accounts: int = ACCOUNTS) -> None:
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


def grow_reference(conn: sqlite3.Connection, rows: int, rng: random.Random) -> None:
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


# --- what columns hold ---------------------------------------------------------------------------

INT_TYPES = ("INTEGER", "INTEGER", "INT", "BIGINT", "SMALLINT", "")
REAL_TYPES = ("REAL", "REAL", "DOUBLE", "DOUBLE PRECISION", "FLOAT", "NUMERIC", "DECIMAL(10,2)", "")
TEXT_TYPES = ("TEXT", "TEXT", "VARCHAR(64)", "NVARCHAR(10)", "CHARACTER(20)", "CLOB", "")
TIME_TYPES = ("TEXT", "TEXT", "DATETIME", "TIMESTAMP", "VARCHAR(32)", "")
BOOL_TYPES = ("BOOLEAN", "INTEGER", "INT", "TINYINT(1)", "BIT", "")
ODD_TYPES = ("STRING", "VARCHAR2(30)", "NUMBER(12)", "MONEY", "UUID", "LONGTEXT", "JSON", "DATE")
TIME_DEFAULTS = ("CURRENT_TIMESTAMP", "(datetime('now'))", "(strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
                 "'2026-01-01T00:00:00.000Z'")
TIME_CHECKS = ("length({c}) >= 10", "{c} >= '2000-01-01'")
WORDS = ("manual", "auto", "desk-a", "desk-b", "n/a", "replay", "risk", "ops", "night shift", "api")
SYMBOLS = ("MNQ", "MES", "MYM", "M2K", "MGC", "MCL", "NQ", "ES", "CL", "GC")


@dataclass(frozen=True)
class Kind:
    """What a column holds: its values (from the row number n, from 1) and declarations that fit them.

    `checks` hold for every value and every default; `numeric_checks` too, but only when the
    column has a numeric affinity (a TEXT column compares numbers as text). A `unique` kind's
    value is a function of n alone, so the rows of fill() and grow() never repeat one.
    """
    types: tuple[str, ...]
    value: Callable[[int, random.Random], object]
    checks: tuple[str, ...] = ()
    numeric_checks: tuple[str, ...] = ()
    defaults: tuple[str, ...] = ()
    unique: bool = False


def account_text(number: int) -> str:
    return f"ACC-{number:04d}"


KINDS: dict[str, Kind] = {
    "serial": Kind(("INTEGER", "INT", "BIGINT", "NUMERIC"), lambda n, r: n, numeric_checks=("{c} > 0",), unique=True),
    "serial_text": Kind(("TEXT", "VARCHAR(40)", ""), lambda n, r: f"REF-{n:08d}", checks=("{c} LIKE 'REF-%'",),
                        unique=True),
    "account": Kind(INT_TYPES, lambda n, r: r.randint(1, ACCOUNTS),
                    numeric_checks=("{c} > 0", "{c} BETWEEN 1 AND 1000000")),
    "account_text": Kind(("TEXT", "VARCHAR(16)", "CHAR(8)", ""), lambda n, r: account_text(r.randint(1, ACCOUNTS)),
                         checks=("length({c}) BETWEEN 1 AND 32",)),
    "account_key": Kind(INT_TYPES, lambda n, r: n, numeric_checks=("{c} > 0",), unique=True),
    "account_text_key": Kind(("TEXT", "VARCHAR(16)", ""), lambda n, r: account_text(n), unique=True),
    "account_cycle": Kind(INT_TYPES, lambda n, r: (n - 1) % ACCOUNTS + 1, numeric_checks=("{c} > 0",)),
    "account_text_cycle": Kind(("TEXT", "VARCHAR(16)", ""), lambda n, r: account_text((n - 1) % ACCOUNTS + 1)),
    "day_cycle": Kind(("TEXT", "DATE", "VARCHAR(10)", ""),
                      lambda n, r: (EPOCH + timedelta(days=(n - 1) // ACCOUNTS)).strftime("%Y-%m-%d"),
                      checks=("length({c}) = 10",)),
    "stamp_cycle": Kind(TIME_TYPES, lambda n, r: stamp((n - 1) // ACCOUNTS * 86400), checks=TIME_CHECKS),
    "contract": Kind(TEXT_TYPES, lambda n, r: r.choice(CONTRACTS), checks=("length({c}) > 3", "{c} LIKE 'CON.%'")),
    "contract_key": Kind(("TEXT", "VARCHAR(32)", ""), lambda n, r: CONTRACTS[n - 1] if n <= len(CONTRACTS)
                         else f"CON.F.US.X{n}.Z26", checks=("{c} LIKE 'CON.%'",), unique=True),
    "session_key": Kind(("TEXT", "VARCHAR(64)", ""), lambda n, r: f"session.{n}", checks=("length({c}) > 0",),
                        unique=True),
    "session_ref": Kind(("TEXT", "VARCHAR(64)", ""), lambda n, r: f"session.{r.randint(1, SESSIONS)}",
                        checks=("{c} LIKE 'session.%'",)),
    "rule": Kind(TEXT_TYPES, lambda n, r: r.choice(RULES), checks=("length({c}) > 0",)),
    "rule_key": Kind(("TEXT", "VARCHAR(16)", ""), lambda n, r: RULES[n - 1], unique=True),
    "action": Kind(TEXT_TYPES, lambda n, r: r.choice(ACTIONS),
                   checks=("{c} = upper({c})", "length({c}) BETWEEN 1 AND 64")),
    "state": Kind(("TEXT", "VARCHAR(16)", "CHAR(12)", ""), lambda n, r: r.choice(ORDER_STATES),
                  checks=("{c} IN ('PENDING', 'WORKING', 'FILLED', 'CANCELLED', 'REJECTED')",),
                  defaults=("'PENDING'",)),
    "state_code": Kind(("INTEGER", "INT", "SMALLINT", ""), lambda n, r: r.randint(0, 4),
                       numeric_checks=("{c} BETWEEN 0 AND 4",), defaults=("0",)),
    "side": Kind(INT_TYPES, lambda n, r: r.choice((0, 1)), checks=("{c} IN (0, 1)",), defaults=("0", "(0)")),
    "bool": Kind(BOOL_TYPES, lambda n, r: int(r.random() > 0.03), checks=("{c} IN (0, 1)",),
                 defaults=("1", "TRUE", "(1)")),
    "flag": Kind(BOOL_TYPES, lambda n, r: r.choice((0, 1)), checks=("{c} IN (0, 1)",),
                 defaults=("0", "1", "FALSE", "(0)")),
    "order_type": Kind(INT_TYPES, lambda n, r: r.randint(1, 4), numeric_checks=("{c} BETWEEN 1 AND 5",),
                       defaults=("1",)),
    "quantity": Kind(INT_TYPES, lambda n, r: r.randint(1, 5), numeric_checks=("{c} > 0", "{c} BETWEEN 1 AND 1000"),
                     defaults=("1", "(1)")),
    "signed_qty": Kind(INT_TYPES, lambda n, r: r.choice((-3, -2, -1, 1, 2, 3)), numeric_checks=("{c} <> 0",),
                       defaults=("-1", "1")),
    "count": Kind(INT_TYPES, lambda n, r: r.randint(0, 60), numeric_checks=("{c} >= 0",),
                  defaults=("0", "(1 + 1)", "+5")),
    "price": Kind(REAL_TYPES, lambda n, r: round(r.uniform(4000, 21000), 2), numeric_checks=("{c} > 0",),
                  defaults=("1.0", "(100.5)")),
    "pnl": Kind(REAL_TYPES, lambda n, r: round(r.gauss(0, 300), 2), numeric_checks=("abs({c}) < 1000000",),
                defaults=("0", "-0.5", "0.0", "(0.0)")),
    "ratio": Kind(REAL_TYPES, lambda n, r: round(r.random(), 4), numeric_checks=("{c} BETWEEN 0 AND 1",),
                  defaults=("0.5", "(1.0 / 4)")),
    "tick": Kind(REAL_TYPES, lambda n, r: r.choice((0.25, 0.5, 1.0, 10.0)), numeric_checks=("{c} > 0",),
                 defaults=("0.25",)),
    "timestamp": Kind(TIME_TYPES, lambda n, r: stamp(n * 2 + 1), checks=TIME_CHECKS, defaults=TIME_DEFAULTS),
    "opened_at": Kind(TIME_TYPES, lambda n, r: stamp(n * 2), checks=TIME_CHECKS, defaults=TIME_DEFAULTS),
    "until": Kind(TIME_TYPES, lambda n, r: stamp(n * 2 + 3600), checks=TIME_CHECKS),
    "epoch_ms": Kind(("INTEGER", "BIGINT", ""), lambda n, r: 1767364200000 + n * 2000, numeric_checks=("{c} > 0",),
                     defaults=("1767225600000",)),
    "date": Kind(("TEXT", "DATE", ""), lambda n, r: (EPOCH + timedelta(days=r.randint(0, 365))).strftime("%Y-%m-%d"),
                 checks=("length({c}) = 10",), defaults=("CURRENT_DATE", "'2026-12-31'")),
    "hhmm": Kind(("TEXT", "CHAR(5)", "VARCHAR(8)", ""), lambda n, r: r.choice(("16:00", "17:00", "18:00")),
                 checks=("{c} LIKE '__:__'",), defaults=("'17:00'",)),
    "tz": Kind(TEXT_TYPES, lambda n, r: r.choice(("America/Chicago", "America/New_York", "UTC", "Europe/London")),
               checks=("length({c}) > 0",), defaults=("'America/Chicago'", "'UTC'")),
    "symbol": Kind(TEXT_TYPES, lambda n, r: r.choice(SYMBOLS), checks=("length({c}) BETWEEN 1 AND 32",)),
    "text": Kind(TEXT_TYPES, lambda n, r: r.choice(WORDS), checks=("length({c}) > 0",),
                 defaults=("'n/a'", "'unknown'", "('manual')", "(lower(hex(randomblob(4))))")),
    "reason": Kind(TEXT_TYPES, lambda n, r: "breach of " + r.choice(RULES) + " at " + stamp(n * 3),
                   defaults=("NULL", "'no reason given'")),
    "value_text": Kind(TEXT_TYPES, lambda n, r: str(r.randint(0, 10**6)), checks=("length({c}) > 0",)),
    "blob": Kind(("BLOB", "BLOB", ""), lambda n, r: n.to_bytes(4, "big") + bytes(r.getrandbits(8) for _ in range(4)),
                 checks=("length({c}) <= 64",), defaults=("x'00'", "NULL")),
    "json": Kind(("TEXT", "JSON", ""), lambda n, r: '{"n": %d, "src": "%s"}' % (n % 97, r.choice(WORDS)),
                 checks=("{c} LIKE '{%}'",), defaults=("'{}'",)),
    "exec_ms": Kind(("INTEGER", "INT", "BIGINT"), lambda n, r: r.randint(0, 500), numeric_checks=("{c} >= 0",),
                    defaults=("0",)),
}

# The parent tables a column of a kind can reference, and the key kind of that parent.
PARENT_KEY_KINDS = {"account": "account_key", "account_text": "account_text_key", "contract": "contract_key",
                    "session_ref": "session_key", "rule": "rule_key"}
KEY_KIND_VALUES = {"account_key": ACCOUNTS, "account_text_key": ACCOUNTS, "contract_key": len(CONTRACTS),
                   "session_key": SESSIONS, "rule_key": len(RULES)}

# The nine tables: (column, kind) in reference order. ID marks a large table's id column, whose
# form is drawn apart (id_column); NATURAL_KEYS are what a small table is keyed by. Kinds starting
# "account" follow the shape's account style (integer or text ids).
ID = "id"
CORE_COLUMNS = {
    "lockouts": (("account_id", "account_key"), ("reason", "text"), ("locked_at", "opened_at"),
                 ("locked_until", "until"), ("rule_id", "rule")),
    "daily_pnl": (("account_id", "account_cycle"), ("date", "day_cycle"), ("realized_pnl", "pnl"),
                  ("trade_count", "count"), ("updated_at", "timestamp")),
    "contract_cache": (("contract_id", "contract_key"), ("symbol", "symbol"), ("tick_size", "tick"),
                       ("tick_value", "tick"), ("expires_at", "date"), ("cached_at", "timestamp")),
    "trade_history": (("trade_id", ID), ("account_id", "account"), ("contract_id", "contract"), ("side", "side"),
                      ("quantity", "quantity"), ("price", "price"), ("pnl", "pnl"), ("timestamp", "timestamp")),
    "session_state": (("key", "session_key"), ("value", "value_text"), ("updated_at", "timestamp")),
    "positions": (("position_id", ID), ("account_id", "account"), ("contract_id", "contract"),
                  ("quantity", "signed_qty"), ("avg_price", "price"), ("unrealized_pnl", "pnl"),
                  ("opened_at", "opened_at"), ("updated_at", "timestamp")),
    "orders": (("order_id", ID), ("account_id", "account"), ("contract_id", "contract"), ("order_type", "order_type"),
               ("side", "side"), ("quantity", "quantity"), ("limit_price", "price"), ("stop_price", "price"),
               ("state", "state"), ("created_at", "opened_at"), ("updated_at", "timestamp")),
    "enforcement_log": (("id", ID), ("account_id", "account"), ("rule_id", "rule"), ("action", "action"),
                        ("reason", "reason"), ("success", "bool"), ("timestamp", "timestamp")),
    "reset_schedule": (("account_id", "account_key"), ("reset_time", "hhmm"), ("timezone", "tz"),
                       ("last_reset_at", "opened_at"), ("next_reset_at", "until")),
}
NATURAL_KEYS = {"lockouts": ("account_id",), "daily_pnl": ("account_id", "date"), "contract_cache": ("contract_id",),
                "session_state": ("key",), "reset_schedule": ("account_id",)}
SMALL_ROWS = {"lockouts": 12, "contract_cache": len(CONTRACTS), "session_state": SESSIONS, "reset_schedule": ACCOUNTS}
ID_NAMES = {"trade_history": ("trade_id", "id", "TradeID"), "positions": ("position_id", "id", "Position ID"),
            "orders": ("order_id", "id", "OrderId"), "enforcement_log": ("id", "log_id", "ID")}
FREE_COLUMNS = (
    ("notes", "text"), ("source", "text"), ("order", "text"), ("group", "text"), ("Trader Name", "text"),
    ("desk", "text"), ("strategy", "text"), ("created_by", "text"), ("exchange", "text"), ("where", "text"),
    ("last seen", "timestamp"), ("created_at", "timestamp"), ("inserted_at", "timestamp"), ("ModifiedAt", "timestamp"),
    ("version", "count"), ("flags", "count"), ("Retry Count", "count"), ("limit", "count"), ("priority", "quantity"),
    ("weight", "ratio"), ("fee", "price"), ("commission", "pnl"), ("is_active", "bool"), ("archived", "flag"),
    ("is deleted", "flag"), ("payload", "blob"), ("checksum", "blob"), ("meta", "json"), ("details", "json"),
    ("external_ref", "serial_text"), ("Broker Ref", "serial_text"), ("contract_ref", "contract"),
    ("session_key", "session_ref"), ("check", "text"), ("select", "count"), ("epoch_ms", "epoch_ms"),
)
# Keywords SQLite does not take as a bare column name (FREE_COLUMNS uses some: they get quoted).
RESERVED = {"ORDER", "GROUP", "WHERE", "SELECT", "LIMIT", "CHECK", "DEFAULT", "TABLE", "INDEX", "FROM", "VALUES"}


# --- the model of a random shape -----------------------------------------------------------------

@dataclass
class Column:
    name: str  # as SQLite stores it
    kind: str
    sql: str  # as the DDL writes it: maybe quoted
    decl_type: str = ""
    not_null: bool = False
    not_null_first: bool = False  # "INTEGER NOT NULL PRIMARY KEY"
    primary_key: str = ""  # the column-level clause: "PRIMARY KEY" or "PRIMARY KEY AUTOINCREMENT"
    unique: bool = False  # the column-level UNIQUE clause
    default: str | None = None
    checks: list[str] = field(default_factory=list)
    collate: str = ""
    references: str = ""  # the column-level REFERENCES clause
    comment: str = ""
    key: bool = False  # in a primary or unique key: never NULL, never left out, no default
    enforced_unique: bool = False  # a constraint or index of this column alone keeps it unique: a parent key
    rowid_alias: bool = False  # SQLite assigns it: fill leaves it out
    left_out: bool = False  # fill leaves it to its default or NULL
    null_rate: float = 0.0
    added_later: bool = False  # reaches its table through ALTER TABLE ADD COLUMN
    fixed: bool = False  # part of a v2 or history object: never varied, never added later

    def definition(self, lower_types: bool) -> str:
        parts = [self.sql]
        if self.decl_type:
            parts.append(self.decl_type.lower() if lower_types else self.decl_type)
        if self.not_null and self.not_null_first:
            parts.append("NOT NULL")
        if self.primary_key:
            parts.append(self.primary_key)
        if self.not_null and not self.not_null_first:
            parts.append("NOT NULL")
        if self.unique:
            parts.append("UNIQUE")
        if self.default is not None:
            parts.append(f"DEFAULT {self.default}")
        parts += [f"CHECK ({check})" for check in self.checks]
        if self.collate:
            parts.append(f"COLLATE {self.collate}")
        if self.references:
            parts.append(self.references)
        return " ".join(parts)

    def value(self, number: int, rng: random.Random):
        if self.null_rate and rng.random() < self.null_rate:
            return None
        return KINDS[self.kind].value(number, rng)


@dataclass
class Table:
    logical: str  # the name the project knows it by
    name: str  # as SQLite stores it
    sql: str  # as the DDL writes it
    columns: list[Column] = field(default_factory=list)
    constraints: list[str] = field(default_factory=list)  # table-level, as written
    primary_key: list[Column] = field(default_factory=list)  # the columns of a table-level PRIMARY KEY
    without_rowid: bool = False
    large: bool = False  # about `rows` rows, grown by grow()
    medium: bool = False  # about rows / 4 rows (daily_pnl)
    fixed_rows: int = 0  # otherwise: this many rows, whatever `rows` is
    fixed_values: list[tuple] = field(default_factory=list)  # or exactly these rows (schema_version)
    trigger_filled: bool = False  # only triggers write it
    from_file: bool = False  # created by the statements of a migration file, not by this model

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name.lower() == name.lower()), None)

    def has(self, *names: str) -> bool:
        return all(self.column(name) is not None for name in names)

    def written_columns(self) -> list[Column]:
        return [c for c in self.columns if not c.rowid_alias and not c.left_out]

    def insert_sql(self) -> str:
        columns = self.written_columns()
        names = ", ".join(quote_identifier(c.name) for c in columns)
        return f"INSERT INTO {quote_identifier(self.name)} ({names}) VALUES ({', '.join('?' for _ in columns)})"

    def row_count(self, rows: int) -> int:
        if self.trigger_filled:
            return 0
        if self.fixed_values:
            return len(self.fixed_values)
        if self.large:
            return rows
        if self.medium:
            return ACCOUNTS * max(1, rows // ACCOUNTS // 4)
        return self.fixed_rows

    def rows_from(self, first: int, count: int, rng: random.Random):
        if self.fixed_values:
            return iter(self.fixed_values)
        columns = self.written_columns()
        return (tuple(c.value(n, rng) for c in columns) for n in range(first, first + count))


# --- shapes ----------------------------------------------------------------------------------------

class Shape:
    """A v1 schema: its DDL, what it carries, and how to fill a database of it."""

    def __init__(self, spec: str, statements: list[str], features: dict) -> None:
        self.spec = spec
        self.statements = statements
        self.features = features

    def create(self, conn: sqlite3.Connection) -> None:
        """Create every object in one transaction (conn in autocommit or legacy mode, none open)."""
        conn.execute("BEGIN")
        for statement in self.statements:
            conn.execute(statement)
        conn.execute("COMMIT")

    def script(self) -> str:
        """The DDL as one script that `sqlite3 new.db < script` replays."""
        header = f"-- v1 shape {self.spec} (tools/v1_shapes.py)\n-- features: {self.features}\n"
        return header + "".join(f"\n{statement};\n" for statement in self.statements)

    def fill(self, conn: sqlite3.Connection, rows: int, rng: random.Random) -> None:
        raise NotImplementedError

    def grow(self, conn: sqlite3.Connection, rows: int, rng: random.Random) -> None:
        raise NotImplementedError


class ReferenceShape(Shape):
    """files/migrations/v1/000_baseline.sql, with the data the demo and the tests always had."""

    def create(self, conn: sqlite3.Connection) -> None:
        # executescript(), as make_state_db always did: one transaction per statement, so the
        # file comes out byte for byte as before.
        conn.executescript(BASELINE_SQL.read_text())

    def fill(self, conn: sqlite3.Connection, rows: int, rng: random.Random) -> None:
        fill_reference(conn, rows, rng)

    def grow(self, conn: sqlite3.Connection, rows: int, rng: random.Random) -> None:
        grow_reference(conn, rows, rng)


class RandomShape(Shape):
    def __init__(self, spec: str, statements: list[str], features: dict, tables: list[Table], analyze: bool) -> None:
        super().__init__(spec, statements, features)
        self.tables = tables
        self.analyze = analyze

    def fill(self, conn: sqlite3.Connection, rows: int, rng: random.Random) -> None:
        for table in self.tables:
            self._insert(conn, table, 1, table.row_count(rows), rng)
        if self.analyze:
            conn.execute("ANALYZE")

    def grow(self, conn: sqlite3.Connection, rows: int, rng: random.Random) -> None:
        """Append `rows` rows to each large table, numbered on from the rows it already has."""
        for table in self.tables:
            if table.large:
                count = conn.execute(f"SELECT COUNT(*) FROM {quote_identifier(table.name)}").fetchone()[0]
                self._insert(conn, table, count + 1, rows, rng)

    @staticmethod
    def _insert(conn: sqlite3.Connection, table: Table, first: int, count: int, rng: random.Random) -> None:
        if count <= 0:
            return
        sql = table.insert_sql()
        conn.execute("BEGIN")
        for batch in batched(table.rows_from(first, count, rng)):
            conn.executemany(sql, batch)
        conn.execute("COMMIT")


# --- the random shape builder --------------------------------------------------------------------

def indexes_in(path: Path) -> list[tuple[str, str, list[str]]]:
    """(name, table, key columns without ASC/DESC) of each CREATE INDEX of a migration file."""
    return [(name, table, [c.split()[0] for c in columns.split(",")]) for name, table, columns in
            re.findall(r"CREATE INDEX (\w+) ON (\w+)\(([^)]*)\)", path.read_text())]


def is_bare_identifier(name: str) -> bool:
    return re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) is not None and name.upper() not in RESERVED


def is_constant_default(default: str | None) -> bool:
    """What ALTER TABLE ADD COLUMN accepts as a default: a literal, no expression."""
    return default is None or re.fullmatch(r"[-+]?[0-9.]+|'[^']*'|x'[0-9a-fA-F]*'|NULL", default) is not None


def default_features() -> dict:
    """Every key of Shape.features, as a shape without any of it has them."""
    return {
        "execution_time_ms": False, "execution_time_ms_type": None, "execution_time_ms_not_null": False,
        "execution_time_ms_values": False, "execution_time_ms_added_later": False,
        "v2_indexes": [], "version_table": None, "version_table_has_success": False,
        "daily_unrealized_pnl": False, "daily_unrealized_pnl_indexes": [],
        "account_style": "integer", "renamed_tables": [], "quoted_tables": [], "without_rowid_tables": [],
        "extra_tables": 0, "extra_table_names": [], "extra_columns": 0, "added_columns": [],
        "foreign_keys": 0, "checks": 0, "extra_indexes": 0, "reference_index_variants": [],
        "views": 0, "enforcement_log_views": 0, "triggers": 0, "enforcement_log_triggers": [],
        "user_version": 0, "analyzed": False, "lower_case_keywords": False,
        "columns": {},  # each of the nine tables: its column names, lower case, in table order
    }


class ShapeBuilder:
    """Draws one random shape from a seed; every choice comes from self.rng, in a fixed order."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.spec = f"random:{seed}"
        self.features = default_features()
        self.tables: dict[str, Table] = {}
        # Tables, indexes, views and triggers share one namespace; v1's and v2's index names are
        # taken from the start, so that no extra index gets one of them by chance.
        self.taken_names = [name.lower() for name, _, _ in
                            indexes_in(BASELINE_SQL) + indexes_in(ANALYTICS_INDEXES_SQL)
                            + indexes_in(UNREALIZED_PNL_SQL)] + ["idx_schema_version_applied"]
        self.unique_index_keys: list[tuple[Table, list[Column]]] = []
        self.account_style = "account_text" if self.chance(0.15) else "account"
        self.lower_keywords = self.chance(0.2)
        self.one_line_tables = self.chance(0.25)
        self.comments = self.chance(0.15)

    # --- small helpers
    def chance(self, probability: float) -> bool:
        return self.rng.random() < probability

    def pick(self, choices):
        return self.rng.choice(list(choices))

    def sample(self, population: list, count: int) -> list:
        return self.rng.sample(population, min(count, len(population)))

    def some(self, weights: tuple[int, ...]) -> int:
        """0, 1, 2... with these weights."""
        return self.rng.choices(range(len(weights)), weights=weights)[0]

    def keyword(self, text: str) -> str:
        return text.lower() if self.lower_keywords else text

    def if_not_exists(self) -> str:
        return "IF NOT EXISTS " if self.chance(0.1) else ""

    def quoted(self, name: str, quote_rate: float) -> str:
        """How the DDL writes a name: quoted when it must be, sometimes when it need not be."""
        if is_bare_identifier(name) and not self.chance(quote_rate):
            return name
        style = self.pick('"""[`')
        return {"[": f"[{name}]", "`": f"`{name}`"}.get(style, quote_identifier(name))

    def recased(self, name: str, rate: float) -> str:
        if not is_bare_identifier(name) or not self.chance(rate):
            return name
        return self.pick((name.title(), name.upper(), name[0].upper() + name[1:]))

    def take_name(self, base: str) -> str:
        """`base`, or base_2, base_3... whichever no other object has."""
        name, number = base, 2
        while name.lower() in self.taken_names:
            name, number = f"{base}_{number}", number + 1
        self.taken_names.append(name.lower())
        return name

    def table_reference(self, table: Table) -> str:
        """How another statement names a table: as created, or plain lower case (SQLite does not mind)."""
        return table.logical if is_bare_identifier(table.logical) and self.chance(0.3) else table.sql

    def kind_for(self, kind: str) -> str:
        if self.account_style == "account_text":
            return {"account": "account_text", "account_key": "account_text_key",
                    "account_cycle": "account_text_cycle"}.get(kind, kind)
        return kind

    # --- columns
    def new_column(self, name: str, kind: str, case_rate: float = 0.1, quote_rate: float = 0.08) -> Column:
        stored = self.recased(name, case_rate)
        return Column(name=stored, kind=kind, sql=self.quoted(stored, quote_rate),
                      decl_type=self.pick(KINDS[kind].types))

    def decorate(self, table: Table, column: Column, not_null_rate: float, odd_type_rate: float) -> None:
        """NOT NULL, DEFAULT, CHECK, COLLATE, NULLs and left-out values: all within the kind's values."""
        kind = KINDS[column.kind]
        unknown_on_log = table.logical == "enforcement_log" and column.name.lower() not in KNOWN_COLUMNS
        if not column.key and column.kind not in PARENT_KEY_KINDS and self.chance(odd_type_rate):
            column.decl_type = self.pick(ODD_TYPES)
        column.not_null = column.key or self.chance(not_null_rate)
        defaults = [d for d in kind.defaults if not (column.not_null and d == "NULL")]
        # Contract: the daemon leaves an unknown NOT NULL column out of a row in an empty table.
        needs_default = unknown_on_log and column.not_null
        if defaults and not column.key and (self.chance(0.3) or needs_default):
            column.default = self.pick(defaults)
        elif needs_default:
            column.not_null = False
        checks = list(kind.checks)
        if type_affinity(column.decl_type) in ("INTEGER", "REAL", "NUMERIC"):
            checks += kind.numeric_checks
        if checks and self.chance(0.2):
            column.checks.append(self.pick(checks).replace("{c}", column.sql))
            self.features["checks"] += 1
        if not column.key:
            if column.kind in ("text", "symbol", "tz") and self.chance(0.1):
                column.collate = "NOCASE"
            if not column.not_null and self.chance(0.3):
                column.null_rate = 0.1
            if (column.default is not None or not column.not_null) and self.chance(0.15):
                column.left_out = True
        if self.comments and self.chance(0.2):
            column.comment = self.pick(("set by the daemon", "legacy", "see runbook", "UTC", "added in 1.4"))

    def maybe_reference(self, table: Table, column: Column) -> None:
        """A FOREIGN KEY (p 0.3) to a parent whose keys hold every value the column gets."""
        if table.logical == "enforcement_log" and column.name.lower() in KNOWN_COLUMNS:
            return  # contract: the daemon's account_id 1000+ is in no parent
        key_kind = PARENT_KEY_KINDS.get(column.kind)
        parents = [(t, key) for t in self.tables.values() if t is not table
                   and t.row_count(0) >= KEY_KIND_VALUES.get(key_kind, 0)  # every value a child may get
                   for key in t.columns if key.kind == key_kind and key.enforced_unique]
        if not parents or not self.chance(0.3):
            return
        parent, key = self.pick(parents)
        column.decl_type = key.decl_type  # one affinity: the child's values compare equal to the parent's
        target = self.table_reference(parent)
        if self.chance(0.4):
            implicit = key.primary_key and self.chance(0.3)  # REFERENCES t: the parent's primary key
            column.references = (f"REFERENCES {target}" if implicit else f"REFERENCES {target}({key.sql})") + \
                self.pick(("", "", " ON DELETE CASCADE", " ON UPDATE NO ACTION"))
        else:
            table.constraints.append(f"FOREIGN KEY ({column.sql}) REFERENCES {target} ({key.sql})"
                                     + self.pick(("", " ON DELETE SET NULL", " DEFERRABLE INITIALLY DEFERRED")))
        self.features["foreign_keys"] += 1

    def core_columns(self, table: Table) -> list[Column]:
        """The reference's columns of one of the nine tables: the dependent and key ones always."""
        columns = []
        required = DEPENDENT_COLUMNS.get(table.logical, ()) + NATURAL_KEYS.get(table.logical, ())
        for name, kind in CORE_COLUMNS[table.logical]:
            if kind == ID or (name not in required and not self.chance(0.85)):
                continue
            if (table.logical, name) == ("positions", "updated_at") and self.chance(0.1):
                kind = "epoch_ms"
            if (table.logical, name) == ("orders", "state") and self.chance(0.15):
                kind = "state_code"
            column = self.new_column(name, self.kind_for(kind), 0.15 if name in required else 0.1,
                                     0.15 if name in required else 0.08)
            column.key = name in NATURAL_KEYS.get(table.logical, ())
            if not column.key:
                self.maybe_reference(table, column)
            self.decorate(table, column, not_null_rate=0.6,
                          odd_type_rate=0.0 if name in DEPENDENT_COLUMNS.get(table.logical, ()) else 0.07)
            columns.append(column)
        return columns

    def free_columns(self, table: Table, taken: list[Column]) -> list[Column]:
        """0-4 columns the reference does not have: any type, odd names, some unique."""
        columns: list[Column] = []
        for name, kind in self.rng.sample(FREE_COLUMNS, self.some((15, 30, 30, 15, 10))):
            if any(c.name.lower() == name.lower() for c in taken + columns):
                continue
            column = self.new_column(name, self.kind_for(kind), 0.15, 0.12)
            # Contract: nothing unique on enforcement_log, or the daemon's copied row would collide.
            if KINDS[column.kind].unique and table.logical != "enforcement_log" and self.chance(0.3):
                column.unique = column.key = column.enforced_unique = True
            self.maybe_reference(table, column)
            self.decorate(table, column, not_null_rate=0.3, odd_type_rate=0.07)
            columns.append(column)
        if table.logical in NINE_TABLES:
            self.features["extra_columns"] += len(columns)
        return columns

    # --- the nine tables
    def new_table(self, logical: str, case_rate: float = 0.0, quote_rate: float = 0.1) -> Table:
        name = self.recased(logical, case_rate)
        table = Table(logical=logical, name=name, sql=self.quoted(name, quote_rate))
        self.taken_names.append(name.lower())
        self.tables[logical] = table
        return table

    def build_small_table(self, logical: str) -> None:
        """A table of a realistic few rows around its natural key (account, contract, session key...)."""
        table = self.new_table(logical, 0.1, 0.1)
        table.fixed_rows, table.medium = SMALL_ROWS.get(logical, 0), logical == "daily_pnl"
        columns = self.core_columns(table)
        key = [c for c in columns if c.key]
        key_list = ", ".join(c.sql for c in key)
        style = self.pick_weighted({"pk": 40, "table_pk": 15, "surrogate": 15, "unique_index": 12, "none": 8,
                                    "without_rowid": 4})
        if style == "pk" and len(key) == 1:
            key[0].primary_key = "PRIMARY KEY"
        elif style in ("pk", "table_pk", "without_rowid"):
            table.constraints.append(f"PRIMARY KEY ({key_list})")
            table.primary_key, table.without_rowid = key, style == "without_rowid"
        elif style == "surrogate":
            columns.insert(0, Column(name="id", kind="serial", sql="id", decl_type="INTEGER", key=True,
                                     rowid_alias=True,
                                     primary_key=self.pick(("PRIMARY KEY", "PRIMARY KEY AUTOINCREMENT"))))
            table.constraints.append(f"UNIQUE ({key_list})")
        elif style == "unique_index":
            self.unique_index_keys.append((table, key))
        else:  # no key at all: nothing keeps the values unique, so nothing may rely on it
            for column in key:
                column.key = False
        for column in key:
            column.enforced_unique = len(key) == 1 and style != "none"
        columns += self.free_columns(table, columns)
        table.columns = self.keys_first(table, columns)
        self.table_checks(table)

    def build_large_table(self, logical: str) -> None:
        table = self.new_table(logical, 0.1, 0.1)
        table.large = True
        columns = self.core_columns(table)
        id_column = self.id_column(table, columns)
        columns = ([id_column] if id_column else []) + columns + self.free_columns(table, columns)
        if logical == "enforcement_log" and self.chance(0.3):
            columns.insert(self.rng.randint(len(columns) // 2, len(columns)), self.execution_time_column())
        table.columns = self.keys_first(table, columns)
        self.table_checks(table)

    def id_column(self, table: Table, columns: list[Column]) -> Column | None:
        styles = {"alias_autoinc": 40, "alias": 25, "alias_not_null": 10, "table_pk_alias": 10, "none": 15}
        if table.logical != "enforcement_log":  # contract: the log's only key is a rowid alias, or none
            styles.update({"bigint_pk": 10, "text_pk": 5, "composite": 10, "without_rowid": 2})
        style = self.pick_weighted(styles)
        if style == "none":
            return None  # a plain rowid table
        column = self.new_column(self.pick(ID_NAMES[table.logical]), "serial_text" if style == "text_pk" else "serial",
                                 0.0, 0.05)
        column.key = True
        if style.startswith("alias") or style == "table_pk_alias":
            column.decl_type, column.rowid_alias = "INTEGER", True
            if style == "table_pk_alias":
                table.constraints.append(f"PRIMARY KEY ({column.sql})")
            else:
                column.primary_key = "PRIMARY KEY AUTOINCREMENT" if style == "alias_autoinc" else "PRIMARY KEY"
                column.not_null = column.not_null_first = style == "alias_not_null"
            return column
        if column.decl_type == "INTEGER":
            column.decl_type = "BIGINT"  # INTEGER alone would make it a rowid alias again
        account = next((c for c in columns if c.name.lower() == "account_id"), None)
        if style in ("composite", "without_rowid") and account is not None and self.chance(0.6):
            account.key, account.null_rate, account.left_out = True, 0.0, False
            table.constraints.append(f"PRIMARY KEY ({account.sql}, {column.sql})")
            table.primary_key = [account, column]
        else:
            column.primary_key, column.enforced_unique = "PRIMARY KEY", True
        table.without_rowid = style == "without_rowid"
        return column

    def execution_time_column(self) -> Column:
        """v2's column, already there in a compatible form (INTEGER affinity), sometimes with values."""
        column = Column(name="execution_time_ms", kind="exec_ms", sql="execution_time_ms", fixed=True,
                        decl_type=self.pick(("INTEGER", "INT", "BIGINT")))
        if self.chance(1 / 3):
            column.not_null, column.default = True, "0"
        with_values = self.chance(0.5)
        if not with_values:
            column.left_out = True  # NULL, or the default 0
        column.added_later = self.chance(0.5)  # someone ran v2's ALTER TABLE by hand
        self.features.update({"execution_time_ms": True, "execution_time_ms_type": column.decl_type,
                              "execution_time_ms_not_null": column.not_null,
                              "execution_time_ms_values": with_values,
                              "execution_time_ms_added_later": column.added_later})
        return column

    def keys_first(self, table: Table, columns: list[Column]) -> list[Column]:
        """Keys first, then the other columns, sometimes in another order than the reference's.

        A WITHOUT ROWID table declares its primary key columns first, in key order: SQLite
        3.40.0-3.41.0 (Debian 12 has 3.40.1) reports a false "NULL value in t.c" from
        integrity_check and quick_check for a NOT NULL column declared before them.
        """
        head = [c for c in columns if c.rowid_alias or c.primary_key]
        if table.without_rowid:
            head += table.primary_key
        rest = [c for c in columns if c not in head]
        if self.chance(0.3):
            self.rng.shuffle(rest)
        return head + rest

    def table_checks(self, table: Table) -> None:
        """Table-level CHECKs across columns whose values make them hold."""
        later, earlier = {"lockouts": ("locked_until", "locked_at"), "positions": ("updated_at", "opened_at"),
                          "orders": ("updated_at", "created_at")}.get(table.logical, ("", ""))
        if later and table.has(later, earlier) and self.chance(0.3):
            late, early = table.column(later), table.column(earlier)
            if late.kind in ("timestamp", "until") and early.kind == "opened_at":
                for column in (late, early):
                    column.left_out = False  # a default (now) could be earlier than the other column
                table.constraints.append(f"CHECK ({late.sql} >= {early.sql})")
                self.features["checks"] += 1
        if table.logical == "enforcement_log" and self.chance(0.25):  # values the daemon writes too
            success, stamp_column = table.column("success"), table.column("timestamp")
            stamp_column.null_rate, stamp_column.left_out = 0.0, False
            table.constraints.append(self.pick((f"CHECK ({success.sql} IN (0, 1))",
                                                f"CHECK ({stamp_column.sql} IS NOT NULL)")))
            self.features["checks"] += 1

    def pick_weighted(self, weights: dict[str, int]) -> str:
        return self.rng.choices(list(weights), weights=list(weights.values()))[0]

    # --- extra tables
    def extra_table(self, logical: str, columns: list[Column], rows: int = 0) -> Table:
        table = self.new_table(logical, 0.0, 0.1)
        table.columns, table.fixed_rows = columns, rows
        self.features["extra_table_names"].append(table.name)
        return table

    def key_column(self, name: str, kind: str) -> Column:
        column = self.new_column(name, kind, 0.1, 0.05)
        column.key = column.enforced_unique = True
        column.not_null, column.primary_key = self.chance(0.5), "PRIMARY KEY"
        return column

    def build_parent_tables(self) -> None:
        """Extra tables other tables may reference: accounts, rules."""
        if self.chance(0.35):
            created = self.new_column("created_at", "timestamp", 0.1, 0.05)
            created.default = self.pick(("CURRENT_TIMESTAMP", "(datetime('now'))"))
            name = self.new_column("name", "text", 0.1, 0.05)
            name.not_null = True
            self.extra_table("accounts", [self.key_column("account_id", self.kind_for("account_key")), name,
                                          self.new_column("desk", "text", 0.1, 0.05), created], ACCOUNTS)
        if self.chance(0.25):
            severity = self.new_column("severity", "quantity", 0.1, 0.05)
            severity.decl_type = "INTEGER"
            severity.checks.append(f"{severity.sql} BETWEEN 1 AND 5")
            table = self.extra_table("rules", [self.key_column("rule_code", "rule_key"),
                                               self.new_column("description", "text", 0.1, 0.05), severity], len(RULES))
            table.without_rowid = self.chance(0.3)

    def build_side_tables(self) -> None:
        """Tables nothing v2 touches: settings, notes with a quoted name."""
        if self.chance(0.3):
            self.extra_table("app_settings", [self.key_column("name", "session_key"),
                                              self.new_column("value", "value_text", 0.1, 0.05)], 8)
        if self.chance(0.2):
            note_id = Column(name="note_id", kind="serial", sql="note_id", decl_type="INTEGER",
                             primary_key="PRIMARY KEY", rowid_alias=True, key=True)
            self.extra_table(self.pick(("order notes", "Order Notes", "order_notes")),
                             [note_id, self.new_column("order_ref", "serial_text", 0.1, 0.1),
                              self.new_column("note", "text", 0.1, 0.1),
                              self.new_column("written_at", "timestamp", 0.1, 0.1)], 20)

    def trigger_target(self, logical: str, columns: list[Column]) -> Table:
        """A table only triggers write: no constraint a trigger's row could break."""
        table = self.extra_table(logical, columns)
        table.trigger_filled = True
        for column in table.columns:
            column.fixed = True
        return table

    # --- v2 objects already there
    def build_version_table(self) -> None:
        """A schema_version of another shape than v2's, holding version 1."""
        kind = self.pick(("two_columns", "three_columns", "extra_columns", "with_success", "seed_like"))
        version_name = self.recased("version", 0.15)
        version = Column(name=version_name, kind="count", sql=self.quoted(version_name, 0.1), decl_type="INTEGER")
        success_name = self.recased("success", 0.2)
        success = Column(name=success_name, kind="bool", sql=self.quoted(success_name, 0.1), not_null=True,
                         default="1", decl_type=self.pick(("BOOLEAN", "INTEGER")))
        applied, applied_text = stamp(-86400 * 90), Column(name="applied_at", kind="timestamp", sql="applied_at",
                                                           decl_type="TEXT", not_null=kind != "two_columns")
        description = Column(name="description", kind="text", sql="description", decl_type="TEXT",
                             not_null=kind == "seed_like")
        applied_by = Column(name="applied_by", kind="text", sql="applied_by", decl_type="TEXT")
        if kind == "two_columns":
            columns, row = [version, applied_text], (1, applied)
        elif kind == "three_columns":
            version.primary_key = "PRIMARY KEY"
            columns, row = [version, applied_text, description], (1, applied, "baseline")
        elif kind == "extra_columns":
            version.not_null = version.unique = True
            applied_text.decl_type, applied_text.default, applied_text.not_null = "DATETIME", "CURRENT_TIMESTAMP", False
            surrogate = Column(name="id", kind="serial", sql="id", decl_type="INTEGER", rowid_alias=True,
                               primary_key="PRIMARY KEY AUTOINCREMENT")
            checksum = Column(name="checksum", kind="text", sql="checksum", decl_type="VARCHAR(64)")
            columns, row = [surrogate, version, applied_text, applied_by, checksum], (1, applied, "installer", "0" * 64)
        elif kind == "with_success":
            version.not_null = True
            columns, row = [version, applied_text, success], (1, applied, 1)
        else:  # seed_like: close to v2's, but not it
            version.primary_key = "PRIMARY KEY"
            success.sql, success.name = "success", "success"
            columns = [version, applied_text, description, success, applied_by]
            row = (1, applied, "Baseline schema - 9 tables", 1, "dba")
        table = self.new_table("schema_version", 0.15, 0.15)
        table.columns, table.fixed_values = columns, [row]
        for column in columns:
            column.fixed = True
        self.features["version_table"] = kind
        self.features["version_table_has_success"] = success in columns

    def unrealized_pnl_statements(self) -> list[str]:
        """daily_unrealized_pnl exactly as v2 creates it (its indexes p 0.7), with a few rows."""
        statements = split_statements(UNREALIZED_PNL_SQL.read_text())
        if not self.chance(0.7):
            statements = [s for s in statements if not s.upper().startswith("CREATE INDEX")]
        table = self.new_table("daily_unrealized_pnl")
        table.sql, table.from_file, table.fixed_rows = table.name, True, ACCOUNTS * 2
        table.columns = [Column(name="account_id", kind="account_cycle", sql="account_id", key=True),
                         Column(name="timestamp", kind="stamp_cycle", sql="timestamp", key=True),
                         Column(name="unrealized_pnl", kind="pnl", sql="unrealized_pnl"),
                         Column(name="positions_count", kind="quantity", sql="positions_count"),
                         Column(name="total_exposure", kind="price", sql="total_exposure")]
        for column in table.columns:
            column.fixed = True
        self.features["daily_unrealized_pnl"] = True
        self.features["daily_unrealized_pnl_indexes"] = [re.match(r"CREATE INDEX (\w+)", s).group(1)
                                                         for s in statements if s.startswith("CREATE INDEX")]
        return statements

    # --- indexes
    def index_sql(self, name: str, table: Table, keys: list[str], unique: bool = False, where: str = "") -> str:
        head = self.keyword("CREATE UNIQUE INDEX" if unique else "CREATE INDEX")
        written = quote_identifier(name) if self.chance(0.1) else name
        sql = f"{head} {self.if_not_exists()}{written} ON {self.table_reference(table)}({', '.join(keys)})"
        return sql + (f" WHERE {where}" if where else "")

    def reference_index_statements(self) -> list[str]:
        """v1's indexes (p 0.7 each, when their columns exist); p 0.06 another definition under the name."""
        statements = []
        for name, logical, keys in indexes_in(BASELINE_SQL):
            table = self.tables[logical]
            if not table.has(*keys) or not self.chance(0.7):
                continue
            columns = [table.column(key).sql for key in keys]
            if self.chance(0.015):
                others = [c.sql for c in table.columns if c.sql not in columns and not c.rowid_alias]
                columns = columns + [self.pick(others)] if others else [columns[0] + " DESC"]
                self.features["reference_index_variants"].append(name)
            statements.append(self.index_sql(name, table, columns))
        return statements

    def unique_index_statements(self) -> list[str]:
        statements = []
        for table, key in self.unique_index_keys:
            name = self.take_name(f"ux_{table.logical}_{'_'.join(c.name.lower() for c in key)}")
            statements.append(self.index_sql(name, table, [c.sql for c in key], unique=True))
        self.features["extra_indexes"] += len(statements)
        return statements

    def extra_index_statements(self) -> list[str]:
        statements = []
        candidates = [t for t in self.tables.values()
                      if not (t.trigger_filled or t.fixed_values or t.from_file)]
        for _ in range(self.some((10, 25, 30, 20, 15))):
            table = self.pick(candidates)
            columns = [c for c in table.columns if not c.rowid_alias]
            if columns:
                statements.append(self.extra_index(table, columns))
        if self.chance(0.15):  # the v2 index's job, already done by an index of another name
            log = self.tables["enforcement_log"]
            statements.append(self.index_sql(self.take_name("ix_enforcement_success_time"), log,
                                             [log.column("success").sql, log.column("timestamp").sql]))
        self.features["extra_indexes"] += len(statements)
        return statements

    def extra_index(self, table: Table, columns: list[Column]) -> str:
        style = self.pick_weighted({"plain": 30, "multi": 20, "unique": 15, "partial": 15, "expression": 20})
        unique_columns = [c for c in columns if KINDS[c.kind].unique and c.key]
        if style == "unique" and (table.logical == "enforcement_log" or not unique_columns):
            style = "plain"  # contract: nothing unique on enforcement_log; elsewhere only unique values
        first = self.pick(unique_columns if style == "unique" else columns)
        keys = [first.sql + self.pick(("", "", " DESC", " ASC"))]
        where = ""
        if style in ("multi", "unique") and len(columns) > 1 and self.chance(0.7):
            second = self.pick([c for c in columns if c is not first])
            keys.append(second.sql + self.pick(("", " DESC")))
        elif style == "partial":
            where = self.partial_condition(table, first)
        elif style == "expression":
            keys = [self.expression_key(first)]
        if first.kind in ("text", "symbol", "tz") and style in ("plain", "multi") and self.chance(0.2):
            keys[0] = f"{first.sql} COLLATE NOCASE"
        column_name = re.sub(r"\W", "_", first.name.lower())
        base = self.pick((f"idx_{table.logical}_{column_name}", f"IX_{table.name}_{column_name}".replace(" ", "_"),
                          f"{table.logical}_{style}_{column_name}"))
        return self.index_sql(self.take_name(base.replace(" ", "_")), table, keys, unique=style == "unique",
                              where=where)

    def partial_condition(self, table: Table, column: Column) -> str:
        state, success = table.column("state"), table.column("success")
        if state is not None and state.kind == "state" and self.chance(0.6):
            return f"{state.sql} IN ('PENDING', 'WORKING')"
        if success is not None and self.chance(0.6):
            return f"{success.sql} = 0"
        return f"{column.sql} IS NOT NULL"

    def expression_key(self, column: Column) -> str:
        if column.kind in ("timestamp", "opened_at", "until", "date", "day_cycle", "stamp_cycle"):
            return self.pick((f"date({column.sql})", f"substr({column.sql}, 1, 10)"))
        if column.kind in ("signed_qty", "pnl", "price", "quantity", "count"):
            return f"abs({column.sql})"
        return self.pick((f"lower({column.sql})", f"length({column.sql})", f"coalesce({column.sql}, '')"))

    def v2_index_statements(self) -> list[str]:
        """p 0.25: some of v2's analytics indexes, under their exact names and key columns."""
        if not self.chance(0.25):
            return []
        statements, names = [], []
        indexes = indexes_in(ANALYTICS_INDEXES_SQL)
        for name, logical, keys in self.rng.sample(indexes, self.rng.randint(1, len(indexes))):
            table = self.tables[logical]
            columns = [table.column(key).sql + self.pick(("", " ASC", " DESC")) for key in keys]
            statements.append(self.index_sql(name, table, columns))
            names.append(name)
        self.features["v2_indexes"] = sorted(names)
        return statements

    # --- views and triggers
    def view_statements(self) -> list[str]:
        log = self.tables["enforcement_log"]
        success, when = log.column("success").sql, log.column("timestamp").sql
        account = log.column("account_id")
        shown = [c.sql for c in log.columns if c.name.lower() in ("id", "log_id", "account_id", "rule_id")] + [when]
        log_views = [
            ("v_enforcement_failures", f"SELECT {', '.join(shown)} FROM {{log}} WHERE {success} = 0"),
            ("enforcement_summary", f"SELECT {success} AS ok, COUNT(*) AS n, MAX({when}) AS last_at "
                                    f"FROM {{log}} GROUP BY {success}"),
            ("Recent Enforcement", f"SELECT * FROM {{log}} ORDER BY {when} DESC LIMIT 100"),
        ]
        if account is not None:
            log_views.append(("enforcement_by_account(account, attempts)",
                              f"SELECT {account.sql}, COUNT(*) FROM {{log}} GROUP BY {account.sql}"))
        statements = [self.view_sql(name, body.format(log=self.table_reference(log)))
                      for name, body in self.sample(log_views, self.some((30, 45, 25)))]
        self.features["enforcement_log_views"] = len(statements)
        statements += [self.view_sql(name, body) for name, body in self.sample(self.other_views(),
                                                                               self.some((40, 40, 20)))]
        self.features["views"] = len(statements)
        return statements

    def other_views(self) -> list[tuple[str, str]]:
        orders, positions, pnl = self.tables["orders"], self.tables["positions"], self.tables["daily_pnl"]
        state = orders.column("state")
        open_states = "('PENDING', 'WORKING')" if state.kind == "state" else "(0, 1)"
        views = [("open_orders", f"SELECT * FROM {self.table_reference(orders)} WHERE {state.sql} IN {open_states}")]
        account = positions.column("account_id")
        if account is not None:
            views.append(("position_exposure", f"SELECT {account.sql}, COUNT(*) AS open_positions, "
                                               f"MAX({positions.column('updated_at').sql}) AS last_update "
                                               f"FROM {self.table_reference(positions)} GROUP BY {account.sql}"))
        if pnl.has("realized_pnl"):
            views.append(("daily_totals", f"SELECT p.{pnl.column('date').sql} AS day, "
                                          f"SUM(p.{pnl.column('realized_pnl').sql}) AS total "
                                          f"FROM {self.table_reference(pnl)} AS p GROUP BY 1"))
        return views

    def view_sql(self, name_and_columns: str, body: str) -> str:
        name, _, columns = name_and_columns.partition("(")
        self.taken_names.append(name.lower())
        written = self.quoted(name, 0.1) + (f"({columns}" if columns else "")
        return f"{self.keyword('CREATE VIEW')} {self.if_not_exists()}{written} AS {body}"

    def trigger_statements(self) -> list[str]:
        """Triggers on enforcement_log that no row of fill() or of the daemon can make fail."""
        log = self.tables["enforcement_log"]
        log_name = self.table_reference(log)
        success, when = log.column("success"), log.column("timestamp")
        statements, kinds = [], []
        audit = None
        if self.chance(0.45):
            audit = self.trigger_target(self.pick(("enforcement_audit", "enforcement_log_audit", "Audit Trail")), [
                Column(name="audit_id", kind="serial", sql="audit_id", decl_type="INTEGER", rowid_alias=True,
                       primary_key=self.pick(("PRIMARY KEY", "PRIMARY KEY AUTOINCREMENT"))),
                Column(name="log_rowid", kind="serial", sql="log_rowid", decl_type="INTEGER"),
                Column(name="event", kind="text", sql="event", decl_type="TEXT"),
                Column(name="success", kind="bool", sql="success", decl_type=success.decl_type),
                Column(name="noted_at", kind="timestamp", sql="noted_at", decl_type="TEXT",
                       default="CURRENT_TIMESTAMP")])
        if audit is not None and self.chance(0.9):
            statements.append(self.trigger_sql(
                "trg_enforcement_log_audit", f"AFTER INSERT ON {log_name} FOR EACH ROW",
                f"INSERT INTO {audit.sql} (log_rowid, event, success) "
                f"VALUES (NEW.rowid, 'insert', NEW.{success.sql});"))
            kinds.append("after_insert_audit")
        if self.chance(0.25):
            when.null_rate, when.left_out = 0.0, False
            statements.append(self.trigger_sql(
                "trg_enforcement_log_validate", f"BEFORE INSERT ON {log_name} FOR EACH ROW WHEN NEW.{when.sql} IS NULL "
                f"OR CAST(NEW.{success.sql} AS INTEGER) NOT IN (0, 1)",
                "SELECT RAISE(ABORT, 'enforcement_log: timestamp required, success must be 0 or 1');"))
            kinds.append("before_insert_raise")
        if audit is not None and self.chance(0.3):
            statements.append(self.trigger_sql(
                "trg_enforcement_log_update", f"AFTER UPDATE OF {success.sql} ON {log_name}",
                f"INSERT INTO {audit.sql} (log_rowid, event, success) "
                f"VALUES (OLD.rowid, 'update', NEW.{success.sql});"))
            kinds.append("after_update_audit")
        if self.chance(0.15):
            statements.append(self.trigger_sql("trg_enforcement_log_append_only", f"BEFORE DELETE ON {log_name}",
                                               "SELECT RAISE(ABORT, 'enforcement_log is append-only');"))
            kinds.append("before_delete_raise")
        self.features["enforcement_log_triggers"] = kinds
        if self.chance(0.2):
            statements.append(self.order_history_trigger())
        self.features["triggers"] = len(statements)
        return statements

    def order_history_trigger(self) -> str:
        orders = self.tables["orders"]
        state = orders.column("state")
        history = self.trigger_target("order_state_history", [
            Column(name="changed_at", kind="timestamp", sql="changed_at", decl_type="TEXT",
                   default="CURRENT_TIMESTAMP"),
            Column(name="old_state", kind="state", sql="old_state", decl_type=state.decl_type),
            Column(name="new_state", kind="state", sql="new_state", decl_type=state.decl_type)])
        return self.trigger_sql(
            "trg_orders_state_history", f"AFTER UPDATE OF {state.sql} ON {self.table_reference(orders)}",
            f"INSERT INTO {self.table_reference(history)} (old_state, new_state) "
            f"VALUES (OLD.{state.sql}, NEW.{state.sql});")

    def trigger_sql(self, name: str, event: str, body: str) -> str:
        self.taken_names.append(name.lower())
        return f"{self.keyword('CREATE TRIGGER')} {self.if_not_exists()}{name} {event}\nBEGIN\n    {body}\nEND"

    # --- the DDL
    def create_table_sql(self, table: Table) -> str:
        columns = [c for c in table.columns if not c.added_later]
        definitions = [c.definition(self.lower_keywords) for c in columns] + table.constraints
        comments = [c.comment for c in columns] + [""] * len(table.constraints)
        head = f"{self.keyword('CREATE TABLE')} {self.if_not_exists()}{table.sql}"
        tail = " WITHOUT ROWID" if table.without_rowid else ""
        if self.one_line_tables:
            parts = [d + (f" /* {c} */" if c else "") for d, c in zip(definitions, comments)]
            return f"{head} ({', '.join(parts)}){tail}"
        lines = [f"    {d}{',' if n < len(definitions) - 1 else ''}" + (f" -- {c}" if c else "")
                 for n, (d, c) in enumerate(zip(definitions, comments))]
        return f"{head} (\n" + "\n".join(lines) + f"\n){tail}"

    def add_column_statements(self) -> list[str]:
        """p 0.3: 1-3 columns reach their table through ALTER TABLE ADD COLUMN, as a schema's history leaves
        them (SQLite then appends them to the stored CREATE TABLE text)."""
        if self.chance(0.3):
            candidates = [(t, c) for t in self.tables.values() for c in t.columns
                          if not (c.fixed or c.key or c.primary_key or c.unique or c.references or c.added_later)
                          and is_constant_default(c.default) and not (c.not_null and c.default in (None, "NULL"))
                          and not any(c.sql in constraint for constraint in t.constraints)]
            for _table, column in self.sample(candidates, self.rng.randint(1, 3)):
                column.added_later = True
        statements = []
        for table in self.tables.values():
            for column in table.columns:
                if column.added_later:
                    statements.append(f"ALTER TABLE {self.table_reference(table)} ADD COLUMN "
                                      f"{column.definition(self.lower_keywords)}")
                    self.features["added_columns"].append(f"{table.name}.{column.name}")
        return statements

    def build(self) -> RandomShape:
        # Parents first, so that a child column can reference them.
        self.build_parent_tables()
        for logical in ("reset_schedule", "contract_cache", "session_state", "lockouts", "daily_pnl"):
            self.build_small_table(logical)
        for logical in LARGE_TABLES:
            self.build_large_table(logical)
        self.build_side_tables()
        if self.chance(0.25):
            self.build_version_table()
        from_file = self.unrealized_pnl_statements() if self.chance(0.15) else []
        triggers = self.trigger_statements()  # may add the tables they write to
        added_columns = self.add_column_statements()
        modelled = [t for t in self.tables.values() if not t.from_file]
        creation_order = self.rng.sample(modelled, len(modelled))
        indexes = (self.reference_index_statements() + self.unique_index_statements()
                   + self.extra_index_statements() + self.v2_index_statements())
        self.rng.shuffle(indexes)
        statements = ([self.create_table_sql(t) for t in creation_order] + from_file + added_columns + indexes
                      + self.view_statements() + triggers)
        if self.chance(0.15):
            self.features["user_version"] = self.rng.randint(1, 7)
            statements.append(f"PRAGMA user_version = {self.features['user_version']}")
        self.features.update({
            "analyzed": self.chance(0.15),
            "account_style": "text" if self.account_style == "account_text" else "integer",
            "renamed_tables": [t.name for t in modelled if t.logical in NINE_TABLES and t.name != t.logical],
            "quoted_tables": [t.name for t in modelled if t.sql != t.name],
            "without_rowid_tables": [t.name for t in modelled if t.without_rowid],
            "extra_tables": len(self.features["extra_table_names"]),
            "lower_case_keywords": self.lower_keywords,
            "columns": {t.logical: [c.name.lower() for c in t.columns if not c.added_later]
                        + [c.name.lower() for c in t.columns if c.added_later]  # ALTER appends them
                        for t in modelled if t.logical in NINE_TABLES},
        })
        fill_order = [t for t in self.tables.values() if not t.trigger_filled]
        return RandomShape(self.spec, statements, self.features, fill_order, self.features["analyzed"])


def shape_for(spec: str) -> Shape:
    """The shape a spec names: "reference" or "random:<int seed>"; ValueError for anything else."""
    if spec == "reference":
        features = default_features()
        with closing(sqlite3.connect(":memory:")) as conn:
            conn.executescript(BASELINE_SQL.read_text())
            features["columns"] = {table: [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
                                   for table in NINE_TABLES}
        return ReferenceShape(spec, split_statements(BASELINE_SQL.read_text()), features)
    match = re.fullmatch(r"random:(-?\d+)", spec)
    if not match:
        raise ValueError(f"unknown shape {spec!r}: use 'reference' or 'random:<integer seed>', e.g. random:42")
    return ShapeBuilder(int(match.group(1))).build()


def random_specs(wanted: Callable[[dict], object], count: int = 1, seeds: range = range(10000)) -> list[str]:
    """The first `count` random specs whose features satisfy `wanted`: how a test picks shapes
    with what it needs (found, not hard-coded, so a change to the generator cannot silently
    take the feature away from the test)."""
    found = []
    for seed in seeds:
        if wanted(shape_for(f"random:{seed}").features):
            found.append(f"random:{seed}")
            if len(found) == count:
                return found
    raise ValueError(f"only {len(found)} of seeds {seeds.start}-{seeds.stop - 1} have the wanted features")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", required=True, help="reference or random:SEED")
    parser.add_argument("--db", help="build and fill this database (must not exist) instead of printing the DDL")
    parser.add_argument("--rows", type=int, default=2000, help="rows per large table with --db (default 2000)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the data with --db (default 7)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        shape = shape_for(args.spec)
    except ValueError as err:
        parser.error(str(err))
    if not args.db:
        sys.stdout.write(shape.script())
        return 0
    from make_state_db import build_v1_db  # the one builder (journal, size), here only for --db
    try:
        path = build_v1_db(args.db, rows=args.rows, journal="delete", seed=args.seed, shape=args.spec)
    except FileExistsError:
        parser.error(f"--db {args.db}: exists; choose a new path (the database is never overwritten)")
    print(f"{path}: v1 database of shape {args.spec}, {path.stat().st_size / 1048576:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
