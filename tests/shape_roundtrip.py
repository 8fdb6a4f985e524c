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


def catalog_flags(migrations: Path) -> tuple[set[str], dict[int, str | None]]:
    """(the reversible options of the catalog, {version: option of its irreversible file, None if always on}),
    from the `-- riskmgr:` header lines of its files (docs/versions.md)."""
    reversible, irreversible = set(), {}
    for path in sorted(Path(migrations).glob("v*/*.sql")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.startswith("-- riskmgr:"):
                continue
            flags = line.split(":", 1)[1].split()
            option = next((f.split("=", 1)[1] for f in flags if f.startswith("option=")), None)
            if "irreversible" in flags:
                irreversible[int(path.parent.name[1:])] = option
            elif option:
                reversible.add(option)
    return reversible - {o for o in irreversible.values() if o}, irreversible


def kept_rows(before: dict, after: dict) -> list[str]:
    """The tables of `after` that lack a row of `before`, compared on the columns both have: a change
    adds its columns at the end, a downgrade removes them from the end; a table the change dropped
    (its rows counted in data_dropped) is not in `after`. The engine's history is the engine's."""
    lost = []
    for table, rows in after.items():
        old = before.get(table) or []
        if table.lower() in HISTORY_TABLES + ("sqlite_sequence",) or not old or not rows:
            continue
        width = min(len(rows[0]), len(old[0]))
        if not {r[:width] for r in old} <= {r[:width] for r in rows}:
            lost.append(table)
    return lost


def version_chain(spec: str, workdir: Path, rows: int = 40, migrations: Path | None = None, moves: int = 6) -> None:
    """Up one version at a time from v1 (each version's schema text kept as it was reached), then `moves`
    random jumps up and down: each lands on that version's exact text, verified, and a rerun changes
    nothing. Rows are written at every version, as the daemon would (the shape's own large tables grown,
    and a row in each table a later version made): every row there before a move is there after it, in
    the columns and tables the target version has. The catalog's optional files are on or off for the
    walk (the seed's draw); at the end an irreversible one is turned on by a climb to the newest version,
    and a move down across it is refused with the file untouched. The walk is the seed's own, so a
    failure replays (python tests/shape_roundtrip.py --chains --seeds N)."""
    gather, _backup, migrate, verify = engine(workdir)
    migrations = migrations or versions_catalog(workdir)
    versions = sorted(int(d.name[1:]) for d in Path(migrations).iterdir() if d.is_dir() and d.name[1:].isdigit())
    reversible, irreversible = catalog_flags(migrations)
    rng, shape = random.Random(spec + ":chain"), shape_for(spec)
    options = {name: rng.random() < 0.5 for name in sorted(reversible)}
    blocking = {v for v, option in irreversible.items() if option is None}  # always applied: never crossed down
    db = build(spec, workdir / "state.db", rows)
    facts = gather(str(db), str(migrations))
    check((facts["state"], facts["problems"]) == ("v1", []), f"{spec}: facts: {facts['state']} {facts['problems']}")

    def write_rows(version: int) -> None:
        """What a daemon of this version writes: more rows in the shape's tables and in the later versions' tables."""
        with closing(sqlite3.connect(db, isolation_level=None)) as conn:
            shape.grow(conn, 3, rng)
            later = [name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                     if name not in texts_tables[versions[0]] and name.lower() not in HISTORY_TABLES
                     and not name.startswith("sqlite_")]
            for table in later:
                try:
                    conn.execute(f'INSERT INTO "{table}" DEFAULT VALUES')
                except sqlite3.Error:  # NOT NULL columns without a default: a value in each, by its declared type
                    columns = list(conn.execute(f'PRAGMA table_info("{table}")'))
                    values = [rng.randint(10 ** 6, 10 ** 9) if "INT" in (r[2] or "").upper() else
                              rng.random() * 1000 if (r[2] or "").upper() in ("REAL", "NUMERIC", "FLOAT", "DOUBLE")
                              else f"v{version}-{rng.random():.9f}" for r in columns]
                    conn.execute(f'INSERT INTO "{table}" ({", ".join(chr(34) + r[1] + chr(34) for r in columns)}) '
                                 f'VALUES ({", ".join("?" for _ in columns)})', values)

    texts_tables = {versions[0]: {name for (_type, name, _tbl, _sql) in master_entries(db) if _type == "table"}}
    texts = {versions[0]: master_entries(db)}
    write_rows(versions[0])
    for version in versions[1:]:
        migrate(str(db), migrations, target_version=version, options=options)
        texts[version] = master_entries(db)
        write_rows(version)
    here = versions[-1]
    for _ in range(moves):
        target = rng.choice([v for v in versions if v != here])
        where = f"{spec} (options {options}): v{here} -> v{target}"
        before, before_bytes = every_row(db), db.read_bytes()
        if target < here and blocking & set(range(target + 1, here + 1)):
            refused_down(migrate, db, migrations, target, options, before_bytes, where)
            continue
        done = migrate(str(db), migrations, target_version=target, options=options)
        check(done["changed"] and done["to_version"] == target, f"{where}: {done['direction']}")
        after = master_entries(db)
        check(after == texts[target], f"{where}: schema text differs: {sorted(after ^ texts[target], key=repr)[:3]}")
        lost = kept_rows(before, every_row(db))
        check(lost == [], f"{where}: rows lost in {lost}")
        verified = verify(str(db), migrations, target_version=target, options=options, integrity="quick")
        check(verified["ok"], f"verify {where}: {verified['failed_checks']}")
        again = db.read_bytes()
        check(not migrate(str(db), migrations, target_version=target, options=options)["changed"]
              and db.read_bytes() == again, f"{where}: a rerun at v{target} changed something")
        here = target
        write_rows(here)
    turned_on = [(v, o) for v, o in sorted(irreversible.items()) if o]
    if turned_on:
        version, option = turned_on[0]
        options = dict(options, **{option: True})
        migrate(str(db), migrations, target_version=versions[-1], options=options)
        target = rng.choice([v for v in versions if v < version])
        refused_down(migrate, db, migrations, target, options, db.read_bytes(),
                     f"{spec} (options {options}): v{versions[-1]} -> v{target} across the irreversible v{version}")


def refused_down(migrate, db: Path, migrations: Path, target: int, options: dict, before: bytes, where: str) -> None:
    """A downgrade across an irreversible file: refused naming it, pointing to restore, the file untouched."""
    try:
        migrate(str(db), migrations, target_version=target, options=options)
    except Exception as err:  # noqa: BLE001  (the engine's MigrationError, under any interpreter)
        check("irreversible" in str(err) and "restore" in str(err), f"{where}: refused, but not as irreversible: {err}")
    else:
        raise AssertionError(f"{where}: a downgrade across an irreversible file was not refused")
    check(db.read_bytes() == before, f"{where}: the refused downgrade changed the file")


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
