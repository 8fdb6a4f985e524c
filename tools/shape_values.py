"""What v1 databases hold, for tools/v1_shapes.py: the paths of the migration files, the reference
shape's data generator (fill_reference, grow_reference: today's 000_baseline.sql, filled as the
demo and the tests always were), and the kinds of column a random shape draws from (KINDS: the
declared types, defaults, CHECKs and values of each) with the columns each of the nine tables
has (CORE_COLUMNS, FREE_COLUMNS). Python 3.8+ standard library only."""
from __future__ import annotations

import random
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

TOOLS = Path(__file__).resolve().parent
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
