"""Online mode: a writer waits for one migration transaction at a time, never for several in a row.

A real writer process commits every 20 ms (SQLite's own busy handler, as the daemon's); its
longest stall is measured from the rows it wrote, against the longest transaction the migration
reports for the same run.
"""
from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing

from fixtures import MIGRATIONS
from make_state_db import build_v1_db
from sqlite_migration import WRITER_TURN_S, migrate_database, yield_to_writers
from sqlite_verification import verify_database

WRITER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], timeout=5, isolation_level=None)
open(sys.argv[2], "w").close()
while True:
    began = time.time()  # before BEGIN IMMEDIATE: a wait for the lock shows as a longer gap
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO enforcement_log (account_id, rule_id, action, reason, success, timestamp) "
                 "VALUES (1, 'R', 'CHECK', 'stall-writer', 1, ?)", (repr(began),))
    conn.execute("COMMIT")
    with open(sys.argv[2], "a") as log:
        log.write(repr(time.time()) + " ")
    time.sleep(0.02)
"""


def test_the_writers_longest_stall_is_about_one_transaction(tmp_path):
    db = build_v1_db(tmp_path / "state.db", target_mb=30)
    ready = tmp_path / "writer.ready"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(db), str(ready)])
    try:
        while not ready.exists():
            assert writer.poll() is None, "the writer process exited"
            time.sleep(0.01)
        time.sleep(0.3)
        began = time.time()
        result = migrate_database(str(db), MIGRATIONS, transactions="per_step")
        time.sleep(0.3)
        ended = time.time()
    finally:
        writer.kill()
        writer.wait()
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        stamps = [float(r[0]) for r in conn.execute("SELECT timestamp FROM enforcement_log WHERE reason = "
                                                    "'stall-writer' ORDER BY id")]
    stamps = [t for t in stamps if began - 0.1 <= t <= ended]
    stall = max(b - a for a, b in zip(stamps, stamps[1:])) - 0.02
    longest = result["longest_transaction_seconds"]
    assert result["transactions"] >= 4 and longest > 0
    # One transaction, plus the busy handler's last sleep (at most 100 ms) and a little scheduling:
    # waiting through two index builds in a row would cost about twice the longest.
    assert stall <= longest + 0.13, (stall, longest, result["steps"])
    # The writer committed between every two transactions: the next one waited for its turn. (Its own
    # clock reads after its COMMIT returns, which may be a little after the commit was seen.)
    commits = [float(line) for line in ready.read_text().split()]
    windows = result["transaction_windows"]
    starved = [(ended, began) for (_, ended), (began, _) in zip(windows, windows[1:])
               if not any(ended <= t <= began + 0.05 for t in commits)]
    assert not starved, (starved, windows)
    assert verify_database(str(db), MIGRATIONS, 2, integrity="quick")["ok"]


def test_the_turn_ends_when_another_connection_commits_or_after_its_limit(tmp_path):
    db = build_v1_db(tmp_path / "state.db", rows=50)
    with closing(sqlite3.connect(db, isolation_level=None)) as mine:
        assert WRITER_TURN_S * 0.9 <= yield_to_writers(mine) <= WRITER_TURN_S + 0.1  # nobody writes

        def commit_soon():
            time.sleep(0.03)
            with closing(sqlite3.connect(db, isolation_level=None)) as other:
                other.execute("INSERT INTO lockouts (account_id, reason, locked_at, locked_until) VALUES (99999, 'x', 'y', 'z')")
        thread = threading.Thread(target=commit_soon)
        thread.start()
        waited = yield_to_writers(mine, turn_s=2.0)
        thread.join()
    assert 0.02 <= waited < 1.0
