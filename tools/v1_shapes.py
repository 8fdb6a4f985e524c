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

This file is the entry point and the public API (shape_for, random_specs). The parts, beside it:
shape_values.py (what columns hold, the reference shape's data), shape_model.py (Column, Table
and the Shape classes), and the random builder: shape_draws.py (the rng and its small draws),
shape_tables.py (the tables and their columns), shape_builder.py (indexes, views, triggers, the
DDL, build()).
"""
from __future__ import annotations

import argparse
import re
import sqlite3
import sys
from contextlib import closing
from pathlib import Path
from typing import Callable

TOOLS = Path(__file__).resolve().parent
if str(TOOLS) not in sys.path:
    sys.path.insert(0, str(TOOLS))
# The parts (tools/ is not a package): what columns hold, the model, the random builder.
from shape_builder import ShapeBuilder  # noqa: E402
from shape_draws import default_features  # noqa: E402
from shape_model import ReferenceShape, Shape  # noqa: E402
from shape_values import (BASELINE_SQL, DEPENDENT_COLUMNS, NINE_TABLES, UNREALIZED_PNL_SQL,  # noqa: E402,F401
                          split_statements)


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
    from make_state_db import build_for_command_line  # the one builder (journal, size), here only for --db
    return build_for_command_line(parser, "--db ", args.db, f"shape {args.spec}", rows=args.rows, journal="delete",
                                  seed=args.seed, shape=args.spec)


if __name__ == "__main__":
    sys.exit(main())
