#!/usr/bin/env python3
"""The engine's whole round trip on one generated v1 shape, and the command that replays it.

    python tests/shape_roundtrip.py --seeds 0-199 [--rows 40] [--workdir DIR] [--chains [--migrations DIR]]

For each seed: build `random:SEED` (tools/v1_shapes.py) and fill it; the engine's facts say v1
with no problem; migrate (check mode first: nothing written, and the same plan as the run); verify
(full integrity_check); every v1 row identical; a rerun changes nothing; downgrade: the exact
schema text and every row as before the migration; migrate again and verify. The witness is
tests/witness.py (plain SQL), not the engine.

Standard library only besides the project's own module_utils, imported as Ansible ships them
(ansible.module_utils.<name>): under an interpreter without ansible-core installed (a target
Python of the matrix, say 3.8 with SQLite 3.31) a stand-in `ansible` package that only points
ansible.module_utils at module_utils/ is made in the work directory. Prints one line per seed;
the exit status is the number of failed seeds (0: all passed).

--chains runs version_chain instead: the catalog v1..vN (the shipped versions and the test-only
v3 and v4 of tests/versions, or --migrations DIR, a candidate's), up one version at a time, then a
random walk of jumps up and down; every version reached has its exact schema text and every v1 row.
"""
from __future__ import annotations

import argparse
import importlib
import random
import shutil
import sqlite3
import sys
import tempfile
import traceback
from contextlib import closing
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MIGRATIONS = ROOT / "files" / "migrations"
HISTORY_TABLES = ("schema_version", "schema_migration_files", "schema_migration_objects")
sys.path[:0] = [str(ROOT / "tools"), str(ROOT / "tests")]

from v1_shapes import shape_for  # noqa: E402
from versions_catalog import versions_catalog  # noqa: E402
from witness import every_row, master_entries, rows_kept  # noqa: E402


def engine(workdir: Path):
    """(gather, backup_database, migrate_database, verify_database) from module_utils, as ansible.module_utils.*."""
    try:
        import ansible.module_utils  # noqa: F401  (ansible-core is installed: extend its package)
    except ImportError:
        shim = workdir / "ansible_shim" / "ansible" / "module_utils"
        shim.mkdir(parents=True, exist_ok=True)
        (shim.parent / "__init__.py").write_text("")
        (shim / "__init__.py").write_text("")
        sys.path.insert(0, str(shim.parent.parent))
        import ansible.module_utils  # noqa: F401
    if str(ROOT / "module_utils") not in ansible.module_utils.__path__:
        ansible.module_utils.__path__.append(str(ROOT / "module_utils"))
    facts = importlib.import_module("ansible.module_utils.sqlite_facts")
    backups = importlib.import_module("ansible.module_utils.sqlite_backups")
    migration = importlib.import_module("ansible.module_utils.sqlite_migration")
    verification = importlib.import_module("ansible.module_utils.sqlite_verification")
    def gather(path, migrations, integrity="none"):
        return facts.gather(path, migrations, facts.FactsRequest(integrity=integrity))
    return gather, backups.backup_database, migration.migrate_database, verification.verify_database


def build(spec: str, path: Path, rows: int) -> Path:
    shape = shape_for(spec)
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        shape.create(conn)
        shape.fill(conn, rows, random.Random(spec))
    return path


def check(condition: bool, what: str) -> None:
    if not condition:
        raise AssertionError(what)


def round_trip(spec: str, workdir: Path, rows: int = 40) -> None:
    """Raise AssertionError (or the engine's error) naming the step that broke; return on success."""
    gather, backup, migrate, verify = engine(workdir)
    db = build(spec, workdir / "state.db", rows)
    entries, data = master_entries(db), every_row(db)
    facts = gather(str(db), str(MIGRATIONS), integrity="integrity")
    check((facts["state"], facts["problems"]) == ("v1", []), f"facts: {facts['state']} {facts['problems']}")
    check(facts["integrity"]["ok"], f"integrity before: {facts['integrity']['errors']}")

    plan = migrate(str(db), MIGRATIONS, check_mode=True)
    check(master_entries(db) == entries and every_row(db) == data, "check mode wrote to the database")
    taken = backup(str(db), str(workdir / "backups"))
    result = migrate(str(db), MIGRATIONS)
    check([(s["object"], s["action"]) for s in result["steps"]] == [(s["object"], s["action"]) for s in plan["steps"]],
          "the run applied another plan than check mode showed")
    # as the offline upgrade does it: against the backup's manifest, every table's rows equal
    verified = verify(str(db), MIGRATIONS, integrity="integrity", manifest=taken["manifest"], row_count_mode="equal")
    check(verified["ok"], f"verify after migrate: {verified['failed_checks']}")
    migrated = every_row(db)
    # A schema_version the database had may count its rows with AUTOINCREMENT: the version row the
    # migration writes moves that counter on (the downgrade puts it back). Every other row must stay.
    sequences = [row for row in migrated.get("sqlite_sequence", []) if row[0].lower() not in HISTORY_TABLES]
    check(rows_kept({**data, "sqlite_sequence": [row for row in data.get("sqlite_sequence", [])
                                                 if row[0].lower() not in HISTORY_TABLES]},
                    {**migrated, "sqlite_sequence": sequences}) == [], f"v1 rows changed: {rows_kept(data, migrated)}")

    before_rerun = db.read_bytes()
    check(not migrate(str(db), MIGRATIONS)["changed"], "a rerun on v2 reported a change")
    check(db.read_bytes() == before_rerun, "a rerun on v2 changed the file")

    migrate(str(db), MIGRATIONS, target_version=1)
    after = master_entries(db)
    check(after == entries, f"schema after the downgrade differs: {sorted(after ^ entries, key=repr)[:4]}")
    check(every_row(db) == data, "rows after the downgrade differ")
    down = verify(str(db), MIGRATIONS, target_version=1, integrity="integrity")
    check(down["ok"], f"verify v1 after the downgrade: {down['failed_checks']}")

    check(migrate(str(db), MIGRATIONS)["changed"], "migrating again did nothing")
    again = verify(str(db), MIGRATIONS, integrity="quick")
    check(again["ok"], f"verify after migrating again: {again['failed_checks']}")


def version_chain(spec: str, workdir: Path, rows: int = 40, migrations: Path | None = None, moves: int = 6) -> None:
    """Up one version at a time from v1 (each version's schema text kept as it was reached), then `moves`
    random jumps up and down: each lands on that version's exact text, every v1 row, verified; a rerun
    changes nothing. The walk is the seed's own, so a failure replays."""
    gather, _backup, migrate, verify = engine(workdir)
    migrations = migrations or versions_catalog(workdir)
    versions = sorted(int(d.name[1:]) for d in Path(migrations).iterdir() if d.is_dir() and d.name[1:].isdigit())
    db = build(spec, workdir / "state.db", rows)
    data = every_row(db)
    facts = gather(str(db), str(migrations))
    check((facts["state"], facts["problems"]) == ("v1", []), f"facts: {facts['state']} {facts['problems']}")
    texts = {versions[0]: master_entries(db)}
    for version in versions[1:]:
        migrate(str(db), migrations, target_version=version)
        texts[version] = master_entries(db)
    rng, here = random.Random(spec + ":chain"), versions[-1]
    for _ in range(moves):
        target = rng.choice([v for v in versions if v != here])
        done = migrate(str(db), migrations, target_version=target)
        check(done["changed"] and done["to_version"] == target, f"v{here} -> v{target}: {done['direction']}")
        after = master_entries(db)
        check(after == texts[target], f"v{here} -> v{target}: schema text differs: {sorted(after ^ texts[target], key=repr)[:3]}")
        now = every_row(db)
        # The AUTOINCREMENT counter of a schema_version the database had follows its version rows.
        own = {**data, "sqlite_sequence": [r for r in data.get("sqlite_sequence", []) if r[0].lower() not in HISTORY_TABLES]}
        now["sqlite_sequence"] = [r for r in now.get("sqlite_sequence", []) if r[0].lower() not in HISTORY_TABLES]
        check(rows_kept(own, now, [t for t in own if t.lower() not in HISTORY_TABLES]) == [],
              f"v{here} -> v{target}: v1 rows changed: {rows_kept(own, now, [t for t in own if t.lower() not in HISTORY_TABLES])}")
        verified = verify(str(db), migrations, target_version=target, integrity="quick")
        check(verified["ok"], f"verify v{target} after v{here} -> v{target}: {verified['failed_checks']}")
        before = db.read_bytes()
        check(not migrate(str(db), migrations, target_version=target)["changed"] and db.read_bytes() == before,
              f"a rerun at v{target} changed something")
        here = target


def run(seeds: list[int], rows: int, workdir: Path, chains: bool = False, migrations: Path | None = None) -> list[str]:
    """One line per seed; the failed ones say why and how to replay."""
    failures = []
    for seed in seeds:
        spec = f"random:{seed}"
        scratch = Path(tempfile.mkdtemp(prefix=f"shape-{seed}-", dir=workdir))
        try:
            if chains:
                version_chain(spec, scratch, rows, migrations)
            else:
                round_trip(spec, scratch, rows)
            print(f"ok {spec}", flush=True)
        except Exception as err:  # noqa: BLE001  (every failure is reported with its seed)
            last = traceback.extract_tb(err.__traceback__)[-1]
            line = (f"FAILED {spec}: {type(err).__name__}: {err} (at {Path(last.filename).name}:{last.lineno}); "
                    f"replay: python tools/v1_shapes.py --spec {spec}, or python tests/shape_roundtrip.py "
                    f"--seeds {seed}{' --chains' if chains else ''}")
            print(line, flush=True)
            failures.append(line)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return failures


def seed_list(text: str) -> list[int]:
    seeds = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        seeds += list(range(int(first), int(last or first) + 1))
    return seeds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", required=True, type=seed_list, help="e.g. 0-199 or 3,17,40-49")
    parser.add_argument("--rows", type=int, default=40, help="rows per large table")
    parser.add_argument("--workdir", type=Path, help="where the databases go (default: a new temp dir)")
    parser.add_argument("--chains", action="store_true", help="random walks up and down the versions instead")
    parser.add_argument("--migrations", type=Path, help="with --chains: the catalog (default: v1-v2 and tests/versions)")
    args = parser.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="shape-roundtrip-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"python {sys.version.split()[0]}, sqlite {sqlite3.sqlite_version}", flush=True)
    failures = run(args.seeds, args.rows, workdir, args.chains, args.migrations)
    print(f"{len(args.seeds) - len(failures)} of {len(args.seeds)} shapes passed", flush=True)
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    return min(len(failures), 100)


if __name__ == "__main__":
    sys.exit(main())
