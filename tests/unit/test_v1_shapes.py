"""tools/v1_shapes.py: many realistic v1 shapes, each valid, consistent, and what its features say.

Every shape is built into a real SQLite file and checked by SQLite itself (integrity_check,
foreign_key_check, PRAGMA table_info...); the daemon's contract is checked with the stand-in's
own row writer (RowPlan, insert_row) on every shape.
"""
from __future__ import annotations

import hashlib
import json
import random
import re
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import local_fleet
import pytest
from fixtures import wait_for
from make_state_db import build_v1_db
from riskmgr_standin import KNOWN_COLUMNS, RowPlan, insert_row, quote_identifier, schema_version, type_affinity
from v1_shapes import (BASELINE_SQL, DEPENDENT_COLUMNS, NINE_TABLES, UNREALIZED_PNL_SQL, random_specs,
                       shape_for, split_statements)

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / "tools"
SEEDS = range(200)
ROWS = 12
# What the original make_state_db.py wrote with --rows 300 --journal delete --seed 3: the rows of
# every table in rowid order, repr()'d. The reference shape must keep writing exactly these.
REFERENCE_ROWS_SHA256 = "63677e0eecc314d10a2e6f321780ab0478a2377946850c85045f81e78e0dc000"


def open_ro(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def objects(conn: sqlite3.Connection) -> list[tuple[str, str, str]]:
    return sorted(conn.execute("SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"))


def table_name(conn: sqlite3.Connection, logical: str) -> str | None:
    row = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND lower(name) = ?",
                       (logical,)).fetchone()
    return row[0] if row else None


def columns_of(conn: sqlite3.Connection, table: str) -> dict[str, tuple]:
    """lower-case name -> (cid, name, type, notnull, default, pk) of each column."""
    return {row[1].lower(): row for row in conn.execute(f"PRAGMA table_info({quote_identifier(table)})")}


def row_count(path: Path, quoted_table: str) -> int:
    with closing(open_ro(path)) as conn:
        return conn.execute(f"SELECT COUNT(*) FROM {quoted_table}").fetchone()[0]


def writable(path: Path) -> sqlite3.Connection:
    """A connection for thousands of small commits on 200 files: durability is not what is tested,
    and a journal file created and deleted per commit would cost most of the time."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=MEMORY")
    conn.execute("PRAGMA synchronous=OFF")
    return conn


def build(path: Path, spec: str, rows: int = ROWS, seed: int = 1) -> Path:
    shape = shape_for(spec)
    with closing(writable(path)) as conn:
        shape.create(conn)
        shape.fill(conn, rows, random.Random(seed))
    return path


@pytest.fixture(scope="module")
def built_shapes(tmp_path_factory):
    """Seeds 0-199, each built and filled into its own file: {seed: (shape, path)}."""
    directory = tmp_path_factory.mktemp("shapes")
    built, failures = {}, []
    for seed in SEEDS:
        shape = shape_for(f"random:{seed}")
        try:
            built[seed] = (shape, build(directory / f"{seed}.db", shape.spec))
        except sqlite3.Error as err:
            failures.append(f"random:{seed}: {err}\n{shape.script()}")
    assert not failures, f"{len(failures)} shape(s) failed to build; the first:\n{failures[0]}"
    return built


def test_a_seed_always_gives_the_same_shape_and_the_same_rows(tmp_path):
    first, again, other = shape_for("random:7"), shape_for("random:7"), shape_for("random:8")
    assert first.statements == again.statements and first.features == again.features
    assert first.statements != other.statements
    dumps = []
    for name in ("a.db", "b.db"):
        path = build(tmp_path / name, "random:7", rows=40, seed=5)
        with closing(open_ro(path)) as conn:
            # The columns fill() writes: the others hold defaults such as CURRENT_TIMESTAMP.
            dumps.append([conn.execute(f"SELECT {', '.join(quote_identifier(c.name) for c in t.written_columns())} "
                                       f"FROM {quote_identifier(t.name)}").fetchall()
                          for t in first.tables if t.written_columns()])
    assert dumps[0] == dumps[1]
    assert sum(len(rows) for rows in dumps[0]) > 4 * 40


def test_every_shape_is_valid_sql_and_fills_without_breaking_a_constraint(built_shapes):
    problems = []
    for seed, (shape, path) in built_shapes.items():
        with closing(writable(path)) as conn:
            shape.grow(conn, 5, random.Random(seed))  # --target-mb's path, on top of fill()
            integrity = conn.execute("PRAGMA integrity_check").fetchall()
            orphans = conn.execute("PRAGMA foreign_key_check").fetchall()
            sizes = {t: conn.execute(f"SELECT COUNT(*) FROM {quote_identifier(table_name(conn, t))}").fetchone()[0]
                     for t in ("positions", "orders", "trade_history", "enforcement_log")}
        if integrity != [("ok",)] or orphans or set(sizes.values()) != {ROWS + 5}:
            problems.append(f"random:{seed}: integrity {integrity[:3]}, foreign keys {orphans[:3]}, rows {sizes}")
    assert not problems, "\n".join(problems[:10])


def test_every_shape_has_the_nine_tables_and_the_dependent_columns(built_shapes):
    problems = []
    for seed, (_shape, path) in built_shapes.items():
        with closing(open_ro(path)) as conn:
            for logical in NINE_TABLES:
                name = table_name(conn, logical)
                if name is None:
                    problems.append(f"random:{seed}: no table {logical}")
                    continue
                missing = set(DEPENDENT_COLUMNS.get(logical, ())) - set(columns_of(conn, name))
                if missing:
                    problems.append(f"random:{seed}: {name} lacks {sorted(missing)}")
    assert not problems, "\n".join(problems[:10])


def test_enforcement_log_keeps_the_daemons_contract_in_every_shape(built_shapes):
    """No unique index, a rowid table, no foreign key from a column the daemon fills, a default
    for each NOT NULL column it copies; and its real row writer works on every shape."""
    problems = []
    for seed, (_shape, path) in built_shapes.items():
        copy = path.with_suffix(".daemon.db")
        shutil.copy(path, copy)
        with closing(writable(copy)) as conn:
            log = table_name(conn, "enforcement_log")
            quoted = quote_identifier(log)
            unique = [row[1] for row in conn.execute(f"PRAGMA index_list({quoted})") if row[2]]
            foreign = [row[3] for row in conn.execute(f"PRAGMA foreign_key_list({quoted})")
                       if row[3].lower() in KNOWN_COLUMNS]
            bare_not_null = [name for name, row in columns_of(conn, log).items()
                             if row[3] and row[4] is None and name not in KNOWN_COLUMNS and not row[5]]
            before = conn.execute(f"SELECT COUNT(*) FROM {quoted}").fetchone()[0]
            plan = RowPlan(conn)  # raises for a WITHOUT ROWID table
            try:
                for number in range(1, 4):
                    insert_row(conn, number, plan)
            except sqlite3.Error as err:
                problems.append(f"random:{seed}: the daemon's row failed: {err}")
                continue
            after = conn.execute(f"SELECT COUNT(*) FROM {quoted}").fetchone()[0]
            clean = (conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
                     and not conn.execute("PRAGMA foreign_key_check").fetchall())
        if unique or foreign or bare_not_null or after != before + 3 or not clean:
            problems.append(f"random:{seed}: unique {unique}, foreign keys from {foreign}, NOT NULL without "
                            f"default {bare_not_null}, rows {before}->{after}, checks clean {clean}")
        copy.unlink()
    assert not problems, "\n".join(problems[:10])


def test_features_say_what_the_database_really_has(built_shapes):
    analytics = {"idx_enforcement_log_success": ("enforcement_log", ["success", "timestamp"]),
                 "idx_positions_updated": ("positions", ["updated_at"]),
                 "idx_orders_state_account": ("orders", ["state", "account_id"])}
    v2_pnl = {re.match(r"CREATE (?:TABLE|INDEX) (\w+)", s).group(1): s
              for s in split_statements(UNREALIZED_PNL_SQL.read_text())}
    problems = []
    for seed, (shape, path) in built_shapes.items():
        features = shape.features
        with closing(open_ro(path)) as conn:
            log = table_name(conn, "enforcement_log")
            column = columns_of(conn, log).get("execution_time_ms")
            has_execution_time = column is not None and type_affinity(column[2]) == "INTEGER"
            filled = conn.execute(f"SELECT COUNT(*) FROM {quote_identifier(log)} WHERE execution_time_ms > 0"
                                  ).fetchone()[0] if column else 0  # values, not only the default 0
            indexes = {name: (table.lower(), [(r[2] or "(expression)").lower()
                                              for r in conn.execute(f"PRAGMA index_info({quote_identifier(name)})")])
                       for name, table in conn.execute("SELECT name, tbl_name FROM sqlite_master WHERE type = 'index'")}
            version_table = table_name(conn, "schema_version")
            version = schema_version(conn)
            pnl = {name: sql for name, sql in conn.execute(
                "SELECT name, sql FROM sqlite_master WHERE tbl_name = 'daily_unrealized_pnl' AND sql IS NOT NULL")}
            counts = dict(conn.execute("SELECT type, COUNT(*) FROM sqlite_master GROUP BY type"))
            tables = [name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                                       "AND name NOT LIKE 'sqlite_%'")]
            foreign_keys = sum(len(conn.execute(f"PRAGMA foreign_key_list({quote_identifier(t)})").fetchall())
                               for t in tables)
            log_triggers = conn.execute("SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger' "
                                        "AND lower(tbl_name) = 'enforcement_log'").fetchone()[0]
            log_views = conn.execute("SELECT COUNT(*) FROM sqlite_master WHERE type = 'view' "
                                     "AND lower(sql) LIKE '%enforcement_log%'").fetchone()[0]
            columns = {logical: list(columns_of(conn, table_name(conn, logical))) for logical in NINE_TABLES}
        claims = {
            "execution_time_ms": (features["execution_time_ms"], has_execution_time),
            "execution_time_ms values": (features["execution_time_ms_values"], filled > 0),
            "v2_indexes": (features["v2_indexes"], sorted(n for n in analytics if n in indexes)),
            "v2 index definitions": (True, all(indexes[n] == analytics[n] for n in features["v2_indexes"])),
            "version_table": (features["version_table"] is not None, version_table is not None),
            "version 1": (1, version),
            "daily_unrealized_pnl": (features["daily_unrealized_pnl"], bool(pnl)),
            "daily_unrealized_pnl in its v2 shape": (True, all(v2_pnl[name] == sql for name, sql in pnl.items())),
            "views": (features["views"], counts.get("view", 0)),
            "triggers": (features["triggers"], counts.get("trigger", 0)),
            "foreign_keys": (features["foreign_keys"], foreign_keys),
            "extra_tables": (features["extra_tables"],
                             len(tables) - 9 - (version_table is not None) - bool(pnl)),
            "enforcement_log_views": (features["enforcement_log_views"], log_views),
            "enforcement_log_triggers": (len(features["enforcement_log_triggers"]), log_triggers),
            "columns": (features["columns"], columns),
        }
        wrong = {claim: (said, real) for claim, (said, real) in claims.items() if said != real}
        if wrong:
            problems.append(f"random:{seed}: feature / database: {wrong}")
    assert not problems, "\n".join(problems[:10])


def test_features_are_spread_as_documented():
    features = [shape_for(f"random:{seed}").features for seed in SEEDS]

    def share(predicate) -> float:
        return sum(1 for f in features if predicate(f)) / len(features)

    # Bounds around the measured shares in the module doc: enough of each, and v2 objects stay a minority.
    assert 0.18 <= share(lambda f: f["execution_time_ms"]) <= 0.4
    assert 0.08 <= share(lambda f: f["execution_time_ms"] and f["execution_time_ms_values"])
    assert 0.18 <= share(lambda f: f["v2_indexes"]) <= 0.4
    assert 0.18 <= share(lambda f: f["version_table"]) <= 0.4
    assert {f["version_table"] for f in features} >= {"two_columns", "three_columns", "extra_columns",
                                                       "with_success", "seed_like"}
    assert share(lambda f: f["version_table"] and not f["version_table_has_success"]) >= 0.08
    assert 0.08 <= share(lambda f: f["daily_unrealized_pnl"]) <= 0.3
    assert share(lambda f: f["enforcement_log_views"]) >= 0.5
    assert share(lambda f: f["enforcement_log_triggers"]) >= 0.5
    assert share(lambda f: "after_insert_audit" in f["enforcement_log_triggers"]) >= 0.25
    assert share(lambda f: f["extra_columns"]) >= 0.9
    assert share(lambda f: f["extra_tables"]) >= 0.6
    assert share(lambda f: f["foreign_keys"]) >= 0.5
    assert share(lambda f: f["checks"]) >= 0.8
    assert 0.1 <= share(lambda f: f["without_rowid_tables"]) <= 0.5
    assert share(lambda f: f["renamed_tables"]) >= 0.3
    assert share(lambda f: f["added_columns"]) >= 0.2
    assert share(lambda f: f["extra_indexes"]) >= 0.8
    # Shapes with none of v2's objects are still the common case the engine meets.
    assert share(lambda f: not (f["execution_time_ms"] or f["v2_indexes"] or f["version_table"]
                                or f["daily_unrealized_pnl"])) >= 0.3


def test_reference_shape_is_the_baseline_file_with_todays_rows(tmp_path):
    reference = shape_for("reference")
    with closing(sqlite3.connect(tmp_path / "replayed.db")) as conn:
        for statement in reference.statements:  # statement by statement, as a replay of the printed DDL
            conn.execute(statement)
        replayed = objects(conn)
    with closing(sqlite3.connect(tmp_path / "baseline.db")) as conn:
        conn.executescript(BASELINE_SQL.read_text())
        baseline = objects(conn)
    assert replayed == baseline and len(baseline) == 9 + 13
    assert reference.features["columns"]["enforcement_log"] == ["id", "account_id", "rule_id", "action", "reason",
                                                                 "success", "timestamp"]

    path = build_v1_db(tmp_path / "reference.db", rows=300, journal="delete", seed=3)
    digest = hashlib.sha256()
    with closing(open_ro(path)) as conn:
        assert objects(conn) == baseline
        for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                    "AND name NOT LIKE 'sqlite_%' ORDER BY name"):
            for row in conn.execute(f'SELECT * FROM "{name}" ORDER BY rowid'):
                digest.update(repr(row).encode())
    assert digest.hexdigest() == REFERENCE_ROWS_SHA256


def test_printed_ddl_replays_in_the_sqlite3_cli(tmp_path):
    """What a developer does with a failing seed: print it, feed it to sqlite3 (no shared code)."""
    printed = subprocess.run([sys.executable, TOOLS / "v1_shapes.py", "--spec", "random:42"],
                             capture_output=True, text=True, check=True).stdout
    replay = subprocess.run(["sqlite3", tmp_path / "cli.db"], input=printed, capture_output=True, text=True)
    assert replay.returncode == 0 and not replay.stderr, replay.stderr
    built = build(tmp_path / "built.db", "random:42", rows=0)
    with closing(open_ro(tmp_path / "cli.db")) as cli, closing(open_ro(built)) as ours:
        assert objects(cli) == objects(ours)
        assert cli.execute("PRAGMA user_version").fetchone() == ours.execute("PRAGMA user_version").fetchone()


def test_v1_shapes_db_option_builds_a_filled_database_and_refuses_bad_input(tmp_path):
    target = tmp_path / "state.db"
    done = subprocess.run([sys.executable, TOOLS / "v1_shapes.py", "--spec", "random:3", "--db", target,
                           "--rows", "40"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    with closing(open_ro(target)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        orders = table_name(conn, "orders")
        assert conn.execute(f"SELECT COUNT(*) FROM {quote_identifier(orders)}").fetchone()[0] == 40
    for argv, expected in ((["--spec", "random:x"], "unknown shape 'random:x'"),
                           (["--spec", "random:3", "--db", str(target)], "exists; choose a new path")):
        refused = subprocess.run([sys.executable, TOOLS / "v1_shapes.py", *argv], capture_output=True, text=True)
        assert refused.returncode == 2 and expected in refused.stderr
        assert "Traceback" not in refused.stderr


def test_make_state_db_builds_any_shape_and_grows_it_to_a_target_size(tmp_path):
    spec, = random_specs(lambda features: features["enforcement_log_triggers"])
    path = tmp_path / "state.db"
    done = subprocess.run([sys.executable, TOOLS / "make_state_db.py", path, "--shape", spec, "--rows", "200",
                           "--target-mb", "2"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"({spec})" in done.stdout
    assert path.stat().st_size >= 2 * 1024 * 1024
    with closing(open_ro(path)) as conn, closing(sqlite3.connect(":memory:")) as fresh:
        shape_for(spec).create(fresh)
        assert objects(conn) == objects(fresh)
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert not conn.execute("PRAGMA foreign_key_check").fetchall()
        log = quote_identifier(table_name(conn, "enforcement_log"))
        assert conn.execute(f"SELECT COUNT(*) FROM {log}").fetchone()[0] > 1000  # grown well past --rows

    refused = subprocess.run([sys.executable, TOOLS / "make_state_db.py", tmp_path / "other.db", "--shape",
                              "mixed:3"], capture_output=True, text=True)
    assert refused.returncode == 2 and "--shape: unknown shape 'mixed:3'" in refused.stderr
    assert not (tmp_path / "other.db").exists()


@pytest.fixture
def fleet_root(tmp_path):
    root = tmp_path / "fleet"
    yield root
    if (root / local_fleet.FLEET_FILE).exists():
        local_fleet.destroy(root)  # no daemon outlives the test


def test_local_fleet_mixed_shapes_give_each_host_its_own_shape_and_a_writing_daemon(fleet_root):
    fleet = local_fleet.create(fleet_root, 3, 60, None, "local", "demo", None, None, False, 20, shape="mixed:40")
    assert fleet["shapes"] == {"local-1": "reference", "local-2": "random:42", "local-3": "random:43"}
    assert json.loads((fleet_root / local_fleet.FLEET_FILE).read_text())["shapes"] == fleet["shapes"]
    inventory = (fleet_root / local_fleet.INVENTORY_FILE).read_text()
    assert not re.search(r"^\s+\w*shape\w*:", inventory, re.M)  # not an inventory variable (Molecule compares them)
    for host, spec in fleet["shapes"].items():
        db = Path(fleet["hosts"][host]["riskmgr_db_path"])
        with closing(sqlite3.connect(":memory:")) as fresh:
            shape_for(spec).create(fresh)
            with closing(open_ro(db)) as conn:
                assert objects(conn) == objects(fresh), host
                log = quote_identifier(table_name(conn, "enforcement_log"))
        first = row_count(db, log)
        wait_for(lambda: row_count(db, log) >= first + 3)  # this host's daemon writes into this host's shape
    report = {host["host"]: host for host in local_fleet.status(fleet_root)}
    assert {name: host["shape"] for name, host in report.items()} == fleet["shapes"]
    assert all(host["alive"] and host["version"] == 1 for host in report.values())
    lines = local_fleet.status_lines(local_fleet.status(fleet_root))
    assert any(re.search(r"^local-2: daemon pid \d+ alive; schema v1; shape random:42;", line) for line in lines)


def test_local_fleet_refuses_an_unknown_shape_before_creating_anything(fleet_root):
    with pytest.raises(local_fleet.FleetError, match=r"--shape 'mixed': use reference, random:<integer seed>"):
        local_fleet.create(fleet_root, 2, 60, None, "local", "demo", None, None, False, None, shape="mixed")
    assert not fleet_root.exists()
    cli = subprocess.run([sys.executable, TOOLS / "local_fleet.py", "create", "--root", fleet_root, "--hosts", "1",
                          "--shape", "random:"], capture_output=True, text=True)
    assert cli.returncode == 1 and cli.stderr.startswith("local_fleet.py create: --shape 'random:'")
    assert "Traceback" not in cli.stderr and not fleet_root.exists()


def test_random_specs_finds_shapes_by_their_features():
    specs = random_specs(lambda f: f["execution_time_ms"] and f["version_table"] == "with_success", count=2)
    assert len(specs) == 2
    for spec in specs:
        features = shape_for(spec).features
        assert features["execution_time_ms"] and features["version_table"] == "with_success"
    with pytest.raises(ValueError, match="only 0 of seeds 0-9 have the wanted features"):
        random_specs(lambda f: False, seeds=range(10))
