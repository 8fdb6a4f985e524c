"""Inspect a state database object by object and say which schema state it is in.

Every object of every catalog version is compared with the real database by shape (columns
with type, NOT NULL, default and key position; index columns with order and collation),
not by SQL text, so whitespace or IF NOT EXISTS in the text that created it does not matter.

States: v1 (the baseline, nothing of later versions), partial (some later objects or version
rows present), v2 (everything the target needs, recorded), newer (history names a version
this project does not know), unknown (cannot be recognised; `problems` says why).
"""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

from ansible.module_utils.sqlite_catalog import Catalog, SchemaObject, build_reference
from ansible.module_utils.sqlite_common import quote_identifier

VERSION_TABLE = "schema_version"
LEDGER_TABLE = "schema_migration_files"
PRESENT, MISSING, DIFFERENT = "present", "missing", "different"


def table_names(conn: sqlite3.Connection) -> set[str]:
    return {row[0] for row in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")}


def index_names(conn: sqlite3.Connection) -> set[str]:
    return {row[0] for row in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND name NOT LIKE 'sqlite_%'")}


def normalize_type(declared: str) -> str:
    return " ".join(declared.upper().split())


def column_shapes(conn: sqlite3.Connection, table: str) -> dict[str, tuple]:
    """name -> (declared type, not null, default, primary key position) for every column."""
    return {row[1]: (normalize_type(row[2]), bool(row[3]), row[4], row[5])
            for row in conn.execute(f"PRAGMA table_xinfo({quote_identifier(table)})")}


def index_shape(conn: sqlite3.Connection, name: str) -> tuple | None:
    row = conn.execute("SELECT tbl_name FROM sqlite_master WHERE type = 'index' AND name = ?", (name,)).fetchone()
    if row is None:
        return None
    table = row[0]
    listing = {r[1]: r for r in conn.execute(f"PRAGMA index_list({quote_identifier(table)})")}
    unique, partial = (bool(listing[name][2]), bool(listing[name][4])) if name in listing else (False, False)
    keys = tuple((r[2], bool(r[3]), r[4]) for r in conn.execute(f"PRAGMA index_xinfo({quote_identifier(name)})")
                 if r[5])
    return (table, unique, partial, keys)


def describe_difference(found: object, wanted: object) -> str:
    return f"found {found!r}, expected {wanted!r}"


def compare_object(conn: sqlite3.Connection, reference: sqlite3.Connection, obj: SchemaObject,
                   strict_columns: bool = True, later_columns: frozenset[str] = frozenset()) -> tuple[str, str | None]:
    """(status, detail) of one object: present / missing / different.

    A table is compared with the reference of the version that created it. Columns a later
    version adds (later_columns, "table.column") are judged by their own objects; any other
    extra column makes the table different when strict_columns, else it is only reported.
    """
    if obj.kind == "table":
        if obj.name not in table_names(conn):
            return MISSING, None
        real, wanted = column_shapes(conn, obj.name), column_shapes(reference, obj.name)
        missing = [c for c in wanted if c not in real]
        if missing:
            return DIFFERENT, f"columns missing: {', '.join(missing)}"
        changed = [f"{c} ({describe_difference(real[c], wanted[c])})" for c in wanted if real[c] != wanted[c]]
        if changed:
            return DIFFERENT, "columns differ: " + "; ".join(changed)
        extra = [c for c in real if c not in wanted and f"{obj.name}.{c}" not in later_columns]
        if extra and strict_columns:
            return DIFFERENT, f"unexpected columns: {', '.join(extra)}"
        return PRESENT, (f"extra columns: {', '.join(extra)}" if extra else None)
    if obj.kind == "column":
        table, column = obj.name.split(".", 1)
        if table not in table_names(conn):
            return MISSING, f"table {table} missing"
        real = column_shapes(conn, table)
        if column not in real:
            return MISSING, None
        wanted = column_shapes(reference, table)[column]
        if real[column] != wanted:
            return DIFFERENT, describe_difference(real[column], wanted)
        return PRESENT, None
    found, wanted = index_shape(conn, obj.name), index_shape(reference, obj.name)
    if found is None:
        return MISSING, None
    if found != wanted:
        return DIFFERENT, describe_difference(found, wanted)
    return PRESENT, None


@dataclass
class VersionInfo:
    table: str  # missing | present | different
    version: int | None  # highest successful version recorded, None when nothing is recorded
    rows: list[dict] = field(default_factory=list)
    ledger: dict[str, str] = field(default_factory=dict)  # "v2/010_x.sql" -> sha256 recorded
    detail: str | None = None


def read_versions(conn: sqlite3.Connection, reference: sqlite3.Connection | None = None) -> VersionInfo:
    """What the database's own history says, whatever shape its version table has."""
    tables = table_names(conn)
    if VERSION_TABLE not in tables:
        return VersionInfo(table=MISSING, version=None)
    columns = column_shapes(conn, VERSION_TABLE)
    info = VersionInfo(table=PRESENT, version=None)
    if reference is not None and VERSION_TABLE in table_names(reference):
        status, detail = compare_object(conn, reference, SchemaObject("table", VERSION_TABLE, VERSION_TABLE),
                                        strict_columns=True)
        if status != PRESENT:
            info.table, info.detail = DIFFERENT, detail
    if "version" not in columns:
        info.table, info.detail = DIFFERENT, "schema_version has no version column"
        return info
    success = "success" in columns
    select = "SELECT version, " + ("success" if success else "1") + \
        (", applied_at" if "applied_at" in columns else ", NULL") + f" FROM {VERSION_TABLE} ORDER BY version"
    for version, ok, applied_at in conn.execute(select):
        info.rows.append({"version": version, "success": bool(ok), "applied_at": applied_at})
    good = [row["version"] for row in info.rows if row["success"] and isinstance(row["version"], int)]
    info.version = max(good) if good else None
    if LEDGER_TABLE in tables and {"filename", "sha256"} <= set(column_shapes(conn, LEDGER_TABLE)):
        info.ledger = {name: digest for name, digest in conn.execute(f"SELECT filename, sha256 FROM {LEDGER_TABLE}")}
    return info


def current_version(conn: sqlite3.Connection) -> int:
    """The schema version a daemon would read: recorded history, else 1 (v1 has no history)."""
    recorded = read_versions(conn).version
    return recorded if recorded is not None else 1


@dataclass
class ObjectStatus:
    obj: SchemaObject
    version: int
    status: str
    required: bool
    detail: str | None = None

    def as_dict(self) -> dict:
        return {"kind": self.obj.kind, "name": self.obj.name, "version": self.version, "status": self.status,
                "required": self.required, "detail": self.detail}


@dataclass
class Inspection:
    state: str
    version: int | None  # None when unknown
    target_version: int
    objects: list[ObjectStatus]
    versions: VersionInfo
    problems: list[str]
    warnings: list[str]

    @property
    def migration_needed(self) -> bool:
        return self.state in ("v1", "partial") and not self.problems

    def missing(self) -> list[ObjectStatus]:
        return [o for o in self.objects if o.status == MISSING and o.required and o.version > 1]


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


def inspect(conn: sqlite3.Connection, catalog: Catalog, options: dict[str, bool],
            target_version: int | None = None) -> Inspection:
    """Compare the database with every object of every catalog version up to the newest."""
    target = target_version or catalog.newest_version
    all_options = {f.option: True for f in catalog.all_files() if f.option}
    references = {version: build_reference(catalog, version, all_options) for version in catalog.files}
    later_columns = frozenset(s.obj.name for f in catalog.all_files() for s in f.statements if s.obj.kind == "column")
    try:
        versions = read_versions(conn, references[catalog.newest_version])
        objects: list[ObjectStatus] = []
        for migration in catalog.all_files():
            required = migration.version <= target and (migration.option is None or options.get(migration.option, False))
            strict = migration.version > catalog.baseline_version
            for statement in migration.statements:
                status, detail = compare_object(conn, references[migration.version], statement.obj, strict, later_columns)
                objects.append(ObjectStatus(statement.obj, migration.version, status, required, detail))
    finally:
        for reference in references.values():
            reference.close()
    return judge(objects, versions, catalog, target, options)


def judge(objects: list[ObjectStatus], versions: VersionInfo, catalog: Catalog, target: int,
          options: dict[str, bool]) -> Inspection:
    problems: list[str] = []
    warnings: list[str] = []
    baseline = catalog.baseline_version
    base_tables = [o for o in objects if o.version == baseline and o.obj.kind == "table"]
    missing_tables = [o.obj.name for o in base_tables if o.status == MISSING]
    if len(missing_tables) == len(base_tables):
        problems.append("none of the v1 risk-manager tables exist (empty or unrelated database); "
                        "check riskmgr_db_path or restore state.db from a backup")
    elif missing_tables:
        problems.append(f"v1 table(s) missing: {', '.join(missing_tables)}; this is not a complete v1 database, "
                        "restore state.db from a backup before migrating")
    for o in objects:
        if o.version == baseline and o.obj.kind == "table" and o.status == DIFFERENT:
            if o.detail and o.detail.startswith("columns missing"):
                problems.append(f"v1 table {o.obj.name}: {o.detail}; the database does not match schema v1")
            else:
                warnings.append(f"v1 table {o.obj.name}: {o.detail}")
        elif o.version == baseline and o.obj.kind == "index" and o.status != PRESENT:
            warnings.append(f"v1 index {o.obj.name} is {o.status}" + (f" ({o.detail})" if o.detail else ""))
        elif o.version > baseline and o.status == DIFFERENT:
            problems.append(f"{o.obj} exists with another definition than v{o.version} intends ({o.detail}); "
                            "rename or drop it by hand after review, then rerun")
        elif o.version > baseline and o.obj.kind == "table" and o.detail:
            warnings.append(f"{o.obj}: {o.detail}")
    if versions.table == DIFFERENT:
        problems.append(f"{VERSION_TABLE} exists in another shape ({versions.detail}); it was not created by "
                        "this tool or the seed, review it by hand")
    problems.extend(checksum_problems(catalog, versions))
    recorded = versions.version
    if recorded is not None and recorded > catalog.newest_version:
        return Inspection("newer", recorded, target, objects, versions, [
            f"database is at schema v{recorded}, newer than the newest migration (v{catalog.newest_version}); "
            "use the matching release of this tool"], warnings)
    if problems:
        return Inspection("unknown", recorded, target, objects, versions, problems, warnings)
    later = [o for o in objects if o.version > baseline]
    present_later = [o for o in later if o.status == PRESENT]
    needed = [o for o in later if o.required and o.status != PRESENT]
    target_recorded = recorded is not None and recorded >= target
    ledger_complete = all(f.ledger_name in versions.ledger
                          for v in range(baseline + 1, target + 1) for f in catalog.files_for(v, options))
    if not present_later and (recorded is None or recorded <= baseline):
        state, version = f"v{baseline}", baseline
    elif not needed and target_recorded and ledger_complete:
        state, version = f"v{target}", target
    else:
        state, version = "partial", recorded if recorded is not None else baseline
    return Inspection(state, version, target, objects, versions, problems, warnings)
