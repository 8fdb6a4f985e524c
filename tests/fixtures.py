"""Databases in every state the field has: real SQLite files under tmp_path.

Each fixture builds its file with tools/make_state_db.py (the baseline SQL the engine reads)
and, where a later state is needed, with the real migration files or the seed's own SQL.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest
from make_state_db import build_v1_db, commit_rows_only_to_wal
from witness import every_row, master_entries, rows_kept  # noqa: F401  (re-exported for the tests)

ROOT = Path(__file__).resolve().parents[1]
MIGRATIONS = ROOT / "files" / "migrations"
V1_ROWS = 2000

# Phase 1 of DB-SCHEMA-006 as the seed wrote it, for "an operator ran part of the manual procedure".
SEED_PHASE1_SQL = """
CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER PRIMARY KEY,
    applied_at TEXT NOT NULL,
    description TEXT NOT NULL,
    migration_script TEXT,
    rollback_script TEXT,
    execution_time_ms INTEGER,
    success BOOLEAN NOT NULL DEFAULT 1,
    error_message TEXT
);
CREATE INDEX IF NOT EXISTS idx_schema_version_applied
ON schema_version(applied_at DESC);
INSERT INTO schema_version (version, applied_at, description, success)
VALUES (1, datetime('now'), 'Baseline schema - 9 tables', 1);
INSERT INTO schema_version (version, applied_at, description, success)
VALUES (2, datetime('now'), 'Schema v2: Add schema_version table, analytics indexes, optional daily_unrealized_pnl table', 1);
"""


def sha256(path: str | os.PathLike) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def row_counts(path: str | os.PathLike) -> dict[str, int]:
    """Counted through a fresh connection: what really reached the disk."""
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        names = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
        return {n: conn.execute(f'SELECT COUNT(*) FROM "{n}"').fetchone()[0] for n in names}


def schema_objects(path: str | os.PathLike) -> set[tuple[str, str]]:
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        return {(t, n) for t, n in conn.execute(
            "SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'")}


def run_sql(path: str | os.PathLike, script: str) -> None:
    with closing(sqlite3.connect(path)) as conn:
        conn.executescript(script)


@pytest.fixture
def v1_db(tmp_path) -> Path:
    return build_v1_db(tmp_path / "state.db", rows=V1_ROWS)


@pytest.fixture
def v1_wal_db(v1_db) -> Path:
    """A v1 database whose last 25 committed rows exist only in state.db-wal."""
    commit_rows_only_to_wal(v1_db, rows=25)
    assert Path(f"{v1_db}-wal").stat().st_size > 0
    return v1_db


@pytest.fixture
def v2_db(v1_db) -> Path:
    from sqlite_migration import migrate_database
    migrate_database(str(v1_db), MIGRATIONS)
    return v1_db


@pytest.fixture
def half_way_db(v1_db) -> Path:
    """Some v2 objects already present with the intended definition, no history yet."""
    run_sql(v1_db, (MIGRATIONS / "v2" / "020_enforcement_log_execution_time.sql").read_text()
            + "CREATE INDEX idx_positions_updated ON positions(updated_at DESC);")
    return v1_db


@pytest.fixture
def seed_phase1_db(v1_db) -> Path:
    """The seed's Phase 1 run by hand: version rows say 2, but no index or column of v2 exists."""
    run_sql(v1_db, SEED_PHASE1_SQL)
    return v1_db


@pytest.fixture
def other_shape_db(v1_db) -> Path:
    """A v1 that already has a v2 index name, built on other columns."""
    run_sql(v1_db, "CREATE INDEX idx_positions_updated ON positions(account_id, updated_at);")
    return v1_db


@pytest.fixture
def newer_db(v2_db) -> Path:
    run_sql(v2_db, "INSERT INTO schema_version (version, applied_at, description, success) "
                   "VALUES (3, datetime('now'), 'Schema v3 from a later release', 1);")
    return v2_db


@pytest.fixture
def empty_file(tmp_path) -> Path:
    path = tmp_path / "state.db"
    path.write_bytes(b"")
    return path


@pytest.fixture
def text_file(tmp_path) -> Path:
    path = tmp_path / "state.db"
    path.write_text("database:\n  path: data/state.db\n")
    return path


@pytest.fixture
def missing_db(tmp_path) -> Path:
    return tmp_path / "state.db"


# A writer that commits row pairs until the test creates its stop file (argv: db, stop file).
WRITER = r"""
import os, sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=10)
n = 0
while not os.path.exists(sys.argv[2]):  # commit pairs until the test creates the stop file
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO trade_history (account_id, contract_id, side, quantity, price, pnl, timestamp) "
                 "VALUES (1, 'CON.F.US.MNQ.Z26', 0, 1, 1.0, 0.0, 'now')")
    conn.execute("INSERT INTO enforcement_log (account_id, rule_id, action, reason, success, timestamp) "
                 "VALUES (1, 'RULE-LIVE', 'ALERT', 'pair', 1, 'now')")
    conn.execute("COMMIT")
    n += 1
    if n == 1:
        print("writing", flush=True)
print(n, flush=True)
"""


LOCK_HOLDER = r"""
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
conn.execute("INSERT INTO session_state VALUES ('lock.holder', 'x', 'now')")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("ROLLBACK")
"""


@pytest.fixture
def locked_db(v1_db):
    """A v1 database whose write lock another process holds (for up to 60 s)."""
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(v1_db), "60"], stdout=subprocess.PIPE,
                              text=True)
    assert holder.stdout.readline().strip() == "locked"
    yield v1_db
    holder.kill()
    holder.wait()


@pytest.fixture
def readonly_dir_db(tmp_path):
    """A v1 database in a directory the (non-root) writer cannot write: chmod alone does not stop root."""
    directory = tmp_path / "ro"
    directory.mkdir()
    db = build_v1_db(directory / "state.db", rows=200, journal="delete")
    directory.chmod(0o555)
    yield db
    directory.chmod(0o755)


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


def copy_db(src: Path, dst: Path) -> Path:
    for suffix in ("", "-wal", "-shm"):
        if Path(f"{src}{suffix}").exists():
            shutil.copy2(f"{src}{suffix}", f"{dst}{suffix}")
    return dst


def switch_link(link: Path, target: str | os.PathLike) -> None:
    """Point a release link elsewhere as an operator (or ansistrano) does: a new symlink, renamed over the old one."""
    temporary = link.with_name(link.name + ".new")
    temporary.symlink_to(target)
    os.replace(temporary, link)
