"""Inspect a state database and say which schema state it is in, object by object.

What v1 is: the baseline's tables (files/migrations/v1), and in them the columns that the objects
of later versions use (the key columns of their indexes). Nothing else of the baseline is a
condition: field databases differ in every other column, type, default and constraint, have
tables, indexes, views and triggers of their own, and that is reported (`baseline`), never refused.

Every object a later version would create is compared with the database by shape (sqlite_shapes):
present or compatible ones are adopted, incomplete tables get their missing columns, different
ones are refused naming both definitions.

States: v1 (this tool's engine has not touched it, and its history records no later version),
partial (a migration began: some of its objects, provenance, ledger or version rows are there),
v2 (everything the target needs is there and recorded), newer (history names a version this
project does not know), unknown (cannot be migrated; `problems` says why).
"""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from ansible.module_utils.sqlite_catalog import Catalog, SchemaObject, build_reference
from ansible.module_utils.sqlite_history import (
    HISTORY_TABLES, LEDGER_TABLE, PROVENANCE_TABLE, VERSION_TABLE, VersionInfo, current_version, read_versions)
from ansible.module_utils.sqlite_shapes import (
    COMPATIBLE, DIFFERENT, INCOMPLETE, MISSING, PRESENT, USABLE, ColumnShape, Names, compare_column,
    compare_index, compare_table, fold, index_shape, one_line, reference_sql, table_shape)

__all__ = ["COMPATIBLE", "DIFFERENT", "INCOMPLETE", "LEDGER_TABLE", "MISSING", "PRESENT", "PROVENANCE_TABLE",
           "USABLE", "VERSION_TABLE", "Inspection", "ObjectStatus", "current_version", "dependencies", "inspect",
           "read_versions"]


def table_names(conn: sqlite3.Connection) -> set[str]:
    return set(Names(conn).tables.values())


def index_names(conn: sqlite3.Connection) -> set[str]:
    return set(Names(conn).indexes.values())


@dataclass
class ObjectStatus:
    obj: SchemaObject
    version: int
    status: str  # present | compatible | incomplete | different | missing
    required: bool
    detail: str | None = None
    provenance: str | None = None  # created | adopted, as recorded by the migration that brought it
    columns_to_add: tuple = ()  # ColumnShape of an incomplete table

    def as_dict(self) -> dict:
        return {"kind": self.obj.kind, "name": self.obj.name, "version": self.version, "status": self.status,
                "required": self.required, "detail": self.detail, "provenance": self.provenance}


@dataclass
class Inspection:
    state: str
    version: int | None  # None when unknown
    target_version: int
    objects: list[ObjectStatus]
    versions: VersionInfo
    problems: list[str]
    warnings: list[str]
    baseline: dict
    foreign_history: bool = False  # schema_version rows of another numbering (foreign_history())

    @property
    def migration_needed(self) -> bool:
        """Below the target (v1, v2 with v3 the target, ...) or partial, and nothing blocks the change."""
        if self.problems or self.state in ("newer", "unknown"):
            return False
        return self.state == "partial" or (self.version is not None and self.version < self.target_version)

    def missing(self) -> list[ObjectStatus]:
        return [o for o in self.objects if o.required and o.status in (MISSING, INCOMPLETE)]


def dependencies(catalog: Catalog, reference: sqlite3.Connection,
                 up_to: int | None = None) -> dict[str, dict[str, list[str]]]:
    """{baseline table: {column: [later objects that use it]}}: what v1 must have for the versions up to `up_to`.

    An index on a baseline table needs its key columns, unless a version up to the index's own adds
    that column (v3's index on the column v3 or v2 added needs nothing of v1). Versions above `up_to`
    ask nothing: a v3 directory never makes a v2 database, or the way to v2, wrong.
    """
    up_to = catalog.newest_version if up_to is None else up_to
    baseline_tables = {s.obj.name for f in catalog.files[catalog.baseline_version] for s in f.statements
                       if s.obj.kind == "table"}
    needs: dict[str, dict[str, list[str]]] = {table: {} for table in baseline_tables}
    added: set[tuple[str, str]] = set()  # (folded table, folded column) a version adds
    for migration in catalog.all_files():
        if migration.version == catalog.baseline_version or migration.version > up_to:
            continue
        for statement in migration.statements:
            if statement.obj.kind == "column":
                table, column = statement.obj.name.split(".", 1)
                added.add((fold(table), fold(column)))
    for migration in catalog.all_files():
        if migration.version == catalog.baseline_version or migration.version > up_to:
            continue
        for statement in migration.statements:
            if statement.obj.table not in needs or statement.obj.kind != "index":
                continue
            for column in index_shape(reference, statement.obj.name).key_names():
                if column is not None and (fold(statement.obj.table), fold(column)) not in added:
                    needs[statement.obj.table].setdefault(column, []).append(str(statement.obj))
    return needs


def compare_object(conn: sqlite3.Connection, names: Names, reference: sqlite3.Connection,
                   obj: SchemaObject) -> tuple[str, str | None, tuple]:
    if obj.kind == "table":
        status, detail, to_add = compare_table(conn, names, reference, obj.name)
        return status, detail, tuple(to_add)
    if obj.kind == "index":
        return compare_index(conn, reference, obj.name) + ((),)
    if obj.kind in ("view", "trigger"):
        return compare_text(names, reference, obj) + ((),)
    if obj.kind == "data":
        return MISSING, None, ()  # done or not is the provenance's to say (judged in inspect)
    table, column = obj.name.split(".", 1)
    real_table = names.table(table)
    if real_table is None:
        return MISSING, f"table {table} missing", ()
    wanted: ColumnShape = table_shape(reference, table)[fold(column)]
    return compare_column(table_shape(conn, real_table).get(fold(column)), wanted) + ((),)


def compare_text(names: Names, reference: sqlite3.Connection, obj: SchemaObject) -> tuple[str, str | None]:
    """A view or trigger is its text: the same text (whitespace aside) is present, another is different."""
    real = names.sql.get((obj.kind, fold(obj.name)))
    if real is None:
        return MISSING, None
    wanted = reference_sql(reference, obj.kind, obj.name)
    if one_line(real) == one_line(wanted):
        return PRESENT, None
    return DIFFERENT, f"found `{one_line(real)}`, the migration defines `{one_line(wanted)}`"


def describe_baseline(conn: sqlite3.Connection, names: Names, catalog: Catalog,
                      reference: sqlite3.Connection) -> dict:
    """How the database's v1 part differs from the reference file: information, never a refusal."""
    known_tables, known_indexes = set(), set()
    for migration in catalog.all_files():
        for statement in migration.statements:
            if statement.obj.kind in ("table", "index"):
                (known_tables if statement.obj.kind == "table" else known_indexes).add(fold(statement.obj.name))
    tables = {}
    for migration in catalog.files[catalog.baseline_version]:
        for statement in migration.statements:
            if statement.obj.kind != "table" or names.table(statement.obj.name) is None:
                continue
            real = table_shape(conn, names.table(statement.obj.name))
            wanted = table_shape(reference, statement.obj.name)
            tables[statement.obj.name] = {
                "columns": [c.definition() for c in real.values()],
                "missing_from_reference": [c.name for key, c in wanted.items() if key not in real],
                "not_in_reference": [c.name for key, c in real.items() if key not in wanted],
                "declared_differently": [f"{real[key].definition()} (reference: {c.definition()})"
                                         for key, c in wanted.items() if key in real and
                                         (real[key].declared, real[key].notnull, real[key].default, real[key].pk)
                                         != (c.declared, c.notnull, c.default, c.pk)],
            }
    return {
        "tables": tables,
        "other_tables": sorted(name for key, name in names.tables.items() if key not in known_tables),
        "other_indexes": sorted(name for key, name in names.indexes.items() if key not in known_indexes),
        "views": sorted(name for kind, name, _tbl, _sql in names.entries if kind == "view"),
        "triggers": sorted(name for kind, name, _tbl, _sql in names.entries if kind == "trigger"),
    }


def inspect(conn: sqlite3.Connection, catalog: Catalog, options: dict[str, bool],
            target_version: int | None = None) -> Inspection:
    """Compare the database with every object of every catalog version up to the newest."""
    target = target_version or catalog.newest_version
    all_options = {f.option: True for f in catalog.all_files() if f.option}
    reference = build_reference(catalog, catalog.newest_version, all_options)
    # Each object is compared with the schema of its own version: v3's table has not yet the column v4
    # adds to it (that column is v4's own object).
    own = {v: build_reference(catalog, v, all_options) for v in catalog.versions[1:-1]}
    own[catalog.newest_version] = reference
    try:
        names = Names(conn)
        versions = read_versions(conn, names)
        objects: list[ObjectStatus] = []
        for migration in catalog.all_files():
            if migration.version == catalog.baseline_version:
                continue
            required = migration.version <= target and (migration.option is None or options.get(migration.option, False))
            for statement in migration.statements:
                status, detail, to_add = compare_object(conn, names, own[migration.version], statement.obj)
                made = versions.made_by(migration.version, statement.obj.kind, statement.obj.name)
                if statement.obj.kind == "data" and made:
                    status = PRESENT
                objects.append(ObjectStatus(statement.obj, migration.version, status, required, detail,
                                            made.action if made else None, to_add))
        problems = (baseline_problems(conn, names, catalog, reference, target) + history_table_problems(conn, names, reference)
                    + clash_problems(names, objects))
        baseline = describe_baseline(conn, names, catalog, reference)
    finally:
        for conn_ in own.values():
            conn_.close()
    return judge(objects, versions, catalog, target, options, problems, baseline)


def clash_problems(names: Names, objects: list[ObjectStatus]) -> list[str]:
    """A table or index a later version would create whose name another kind of object holds (a view named
    idx_orders_state_account, a view schema_version): SQLite would refuse the CREATE with the daemon down."""
    problems = []
    for o in objects:
        if o.status != MISSING or o.obj.kind not in ("table", "index") or not o.required:
            continue
        for kind, name, _table, _sql in names.entries:
            # Triggers have names of their own: SQLite lets an index or a table share a trigger's name.
            if fold(name) == fold(o.obj.name) and kind != o.obj.kind and kind != "trigger":
                problems.append(f"{o.obj} of v{o.version} cannot be created: the database has a {kind} named {name}; "
                                f"rename or drop that {kind} after review (DROP {kind.upper()} \"{name}\"), then rerun")
    return problems


def foreign_history(objects: list[ObjectStatus], versions: VersionInfo, baseline: int) -> bool:
    """A schema_version whose rows this tool did not write: versions above the baseline recorded, no ledger
    and no provenance of this tool, and no table or index of a later version but that table itself. Its
    numbers are another numbering; the state is judged by the objects."""
    if versions.traces or versions.version is None or versions.version <= baseline:
        return False
    return not any(o.status != MISSING and o.obj.kind in ("table", "index") and fold(o.obj.name) != VERSION_TABLE
                   for o in objects)


def baseline_problems(conn: sqlite3.Connection, names: Names, catalog: Catalog,
                      reference: sqlite3.Connection, target: int | None = None) -> list[str]:
    needs = dependencies(catalog, reference, target)
    missing_tables = sorted(table for table in needs if names.table(table) is None)
    if len(missing_tables) == len(needs):
        return ["none of the v1 risk-manager tables exist (empty or unrelated database); "
                "check riskmgr_db_path or restore state.db from a backup"]
    problems = []
    if missing_tables:
        problems.append(f"v1 table(s) missing: {', '.join(missing_tables)}; this is not a complete v1 database, "
                        "restore state.db from a backup before migrating")
    for table, columns in sorted(needs.items()):
        if names.table(table) is None:
            continue
        real = table_shape(conn, names.table(table))
        for column, users in sorted(columns.items()):
            if column not in real:
                problems.append(f"v{catalog.baseline_version} table {table} has no column {column}, which "
                                f"{', '.join(users)} of the migration needs; this is not the risk manager's "
                                f"v{catalog.baseline_version} schema, check riskmgr_db_path")
    return problems


def history_table_problems(conn: sqlite3.Connection, names: Names, reference: sqlite3.Connection) -> list[str]:
    """A history table found in the database must take the rows the engine writes: a column of its own
    that is NOT NULL without a default would make every insert fail."""
    problems = []
    for table in HISTORY_TABLES:
        if names.table(table) is None:
            continue
        wanted = table_shape(reference, table)
        unfillable = [c.definition() for key, c in table_shape(conn, names.table(table)).items()
                      if key not in wanted and c.notnull and c.default is None and not c.pk]
        if unfillable:
            problems.append(f"{table} has column(s) {', '.join(unfillable)} of its own, NOT NULL without a default, "
                            "which this tool cannot fill when it records a migration; give them a default or make "
                            "them nullable after review, then rerun")
    return problems


def checksum_problems(catalog: Catalog, versions: VersionInfo) -> list[str]:
    """A file recorded as applied must still be byte-for-byte the file the engine would apply."""
    problems = []
    for name, recorded in sorted(versions.ledger.items()):
        migration = catalog.find(name)
        if migration is None:
            problems.append(f"migration file {name} is recorded as applied but is not in {catalog.directory}; "
                            "restore it from the project (never delete an applied migration)")
        elif migration.sha256 != recorded:
            problems.append(f"migration file {migration.path} changed after it was applied: recorded sha256 "
                            f"{recorded}, file now {migration.sha256}; restore the original file "
                            "(a change needs a new version, not an edit)")
    return problems


def judge(objects: list[ObjectStatus], versions: VersionInfo, catalog: Catalog, target: int,
          options: dict[str, bool], problems: list[str], baseline: dict) -> Inspection:
    problems = list(problems)
    warnings: list[str] = []
    for o in objects:
        if o.status == DIFFERENT and (o.required or o.provenance):
            problems.append(f"{o.obj} exists with another definition than v{o.version} intends, one it cannot adopt "
                            f"({o.detail}); rename or drop it by hand after review, then rerun")
        elif o.status == DIFFERENT:
            warnings.append(f"{o.obj} exists in another form than v{o.version} defines ({o.detail}); it is not "
                            "part of this target and is left alone")
    problems.extend(checksum_problems(catalog, versions))
    recorded = versions.version
    foreign = foreign_history(objects, versions, catalog.baseline_version)
    if foreign:
        found = ", ".join(str(row["version"]) for row in versions.rows)
        if recorded > catalog.newest_version:
            problems.append(f"{VERSION_TABLE} holds rows this tool did not write (versions {found}; no migration "
                            f"ledger, no object of v{catalog.baseline_version + 1}): by its objects this is a "
                            f"v{catalog.baseline_version} database with another application's numbering. The daemon "
                            f"reads MAX(version) there, so its version {recorded} would hide v{target}: rename that "
                            f"table after review (ALTER TABLE {VERSION_TABLE} RENAME TO app_{VERSION_TABLE}), then rerun")
        else:
            warnings.append(f"{VERSION_TABLE} holds rows this tool did not write (versions {found}; no migration "
                            f"ledger, no object of v{catalog.baseline_version + 1}): judged by its objects this is "
                            f"v{catalog.baseline_version}; the rows are kept, a version row the migration writes over "
                            "one of them is kept in its provenance and put back by a downgrade")
    if recorded is not None and recorded > catalog.newest_version and not foreign:
        return Inspection("newer", recorded, target, objects, versions, [
            f"database is at schema v{recorded}, newer than the newest migration (v{catalog.newest_version}); "
            "use the matching release of this tool"], warnings, baseline)
    if problems:
        return Inspection("unknown", recorded, target, objects, versions, problems, warnings, baseline)
    if foreign:
        return Inspection("unknown" if problems else f"v{catalog.baseline_version}", catalog.baseline_version, target,
                          objects, versions, problems, warnings, baseline, foreign_history=True)
    state, version = schema_state(objects, versions, catalog, options)
    return Inspection(state, version, target, objects, versions, problems, warnings, baseline)


def schema_state(objects: list[ObjectStatus], versions: VersionInfo, catalog: Catalog,
                 options: dict[str, bool]) -> tuple[str, int]:
    """(state, version), whatever the target: the newest version that is complete here (every object of
    it and of the versions before it there in a usable form and recorded, its version row and its
    files in the ledger), else v1 when this tool has left no trace, else partial."""
    baseline, recorded = catalog.baseline_version, versions.version
    status = {(o.obj, o.version): o for o in objects}
    for version in sorted((v for v in catalog.files if v > baseline), reverse=True):
        files = [f for v in range(baseline + 1, version + 1) for f in catalog.files_for(v, options)]
        done = all(status[(s.obj, f.version)].status in USABLE and status[(s.obj, f.version)].provenance
                   for f in files for s in f.statements)
        if done and recorded is not None and recorded >= version and all(f.ledger_name in versions.ledger
                                                                         for f in files):
            # A later version begun (its objects recorded, not its version row): a run cut short.
            begun = any(p.version > version for p in versions.provenance.values())
            return ("partial" if begun else f"v{version}"), version
    if not versions.traces and (recorded is None or recorded <= baseline):
        return f"v{baseline}", baseline
    return "partial", recorded if recorded is not None else baseline
