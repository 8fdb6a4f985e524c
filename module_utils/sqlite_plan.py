"""What a migration would do to the database as it is now: the steps, up to a target or down to any earlier version.

Up: every statement of every file up to the target; an object that is missing is created, one that
is there in a usable form is adopted (recorded, not touched), a table that lacks columns gets them,
and the history rows the database lacks are written. Down: exactly what the provenance of the
versions above the target says they made, undone, newest first; nothing a migration adopted, and no
row, is removed with it. A version whose irreversible file ran cannot be undone in place: refused.
"""
from __future__ import annotations

import re
import sqlite3
from contextlib import closing
from dataclasses import dataclass, field

from ansible.module_utils.sqlite_catalog import Catalog
from ansible.module_utils.sqlite_common import MigrationError, quote_identifier
from ansible.module_utils.sqlite_history import (
    ADOPTED, ALTERED, CREATED, LEDGER_TABLE, PROVENANCE_TABLE, REPLACED, VERSION_TABLE, Provenance, rows_from_json)
from ansible.module_utils.sqlite_schema import INCOMPLETE, MISSING, Inspection, inspect
from ansible.module_utils.sqlite_shapes import Names, add_column_sql, fold, table_shape

ADD_COLUMN_DEFINITION = re.compile(r"\bADD\s+(?:COLUMN\s+)?", re.I)


class IrreversibleError(MigrationError):
    """An in-place downgrade across a file marked irreversible: the preflight refuses it, pointing to restore."""


@dataclass
class Step:
    file: str  # ledger name, v2/030_analytics_indexes.sql (v2 for a version row)
    object: str  # "index idx_positions_updated", "column enforcement_log.execution_time_ms", "row ..."
    sql: str  # what runs (a description for steps that only record)
    action: str  # create | adopt | skip | record | drop | rebuild | delete | restore
    provenance: str | None = None  # create/adopt: what the provenance will say (created, adopted)
    table_action: str | None = None  # a column create: how its table is recorded (altered, adopted)
    version: int = 0
    data: dict = field(default_factory=dict)  # rebuild: original_sql; delete/restore: the history row
    seconds: float | None = None

    @property
    def kind(self) -> str:
        return self.object.split(" ", 1)[0]

    @property
    def name(self) -> str:
        return self.object.split(" ", 1)[1]

    def as_dict(self) -> dict:
        result = {"file": self.file, "object": self.object, "action": self.action, "sql": self.sql}
        if self.provenance:
            result["provenance"] = self.provenance
        if self.seconds is not None:
            result["seconds"] = round(self.seconds, 4)
        return result


# --- up --------------------------------------------------------------------------------------------

def upgrade_steps(inspection: Inspection, catalog: Catalog, options: dict[str, bool]) -> list[Step]:
    status = {(o.obj, o.version): o for o in inspection.objects}
    ledger = inspection.versions.ledger
    steps = []
    for version in range(catalog.baseline_version + 1, inspection.target_version + 1):
        for migration in catalog.files_for(version, options):
            for statement in migration.statements:
                found = status[(statement.obj, version)]
                name = migration.ledger_name
                if found.status == MISSING:
                    steps.append(Step(name, str(statement.obj), statement.sql, "create", CREATED, ALTERED, version))
                    continue
                made = found.provenance
                if made is None:
                    # Made by an earlier run of this tool (its file is in the ledger, from before the
                    # provenance was kept), or found in the database: a downgrade removes only the first.
                    made = CREATED if name in ledger else ADOPTED
                    steps.append(Step(name, str(statement.obj), f"-- {statement.obj} is there: {made}, not changed",
                                      "adopt", made, version=version))
                else:
                    steps.append(Step(name, str(statement.obj), statement.sql, "skip", version=version))
                if found.status == INCOMPLETE:
                    for column in found.columns_to_add:
                        steps.append(Step(name, f"column {statement.obj.name}.{column.name}",
                                          add_column_sql(statement.obj.name, column), "create", CREATED, made,
                                          version))
    # The provenance table first: every later step records itself in it, in the same transaction.
    steps.sort(key=lambda s: s.object != f"table {PROVENANCE_TABLE}")
    return steps


def adopted_tables(inspection: Inspection, steps: list[Step]) -> set[str]:
    """Folded names of the tables the migration did not create (rows it writes there are recorded)."""
    made = {fold(o.obj.name): o.provenance for o in inspection.objects if o.obj.kind == "table"}
    made.update({fold(s.name): s.provenance for s in steps if s.kind == "table" and s.action in ("create", "adopt")})
    return {name for name, provenance in made.items() if provenance == ADOPTED}


def history_steps(inspection: Inspection, catalog: Catalog, options: dict[str, bool],
                  adopted: set[str] = frozenset()) -> list[Step]:
    """The version rows and file checksums the history still lacks."""
    # Rows of another numbering are not this tool's record: its own rows replace them (kept in the provenance).
    recorded = set() if inspection.foreign_history else \
        {row["version"] for row in inspection.versions.rows if row["success"]}
    steps = []
    for version in range(catalog.baseline_version, inspection.target_version + 1):
        if version not in recorded:
            steps.append(Step(f"v{version}", f"row {VERSION_TABLE}:{version}",
                              f"-- insert into {VERSION_TABLE}: version {version}", "record",
                              version=max(version, catalog.baseline_version + 1),
                              data={"version": version, "adopted": fold(VERSION_TABLE) in adopted}))
        if version == catalog.baseline_version:
            continue
        for migration in catalog.files_for(version, options):
            if migration.ledger_name not in inspection.versions.ledger:
                steps.append(Step(migration.ledger_name, f"row {LEDGER_TABLE}:{migration.ledger_name}",
                                  f"-- insert into {LEDGER_TABLE}: {migration.ledger_name} sha256 {migration.sha256}",
                                  "record", version=version,
                                  data={"file": migration.ledger_name, "adopted": fold(LEDGER_TABLE) in adopted}))
    return steps


# --- down ------------------------------------------------------------------------------------------

def downgrade_steps(conn: sqlite3.Connection, inspection: Inspection, catalog: Catalog, target: int,
                    path: str) -> list[Step]:
    """Undo what the provenance of the versions above `target` records, and only that.

    Order: the history rows written into tables the migration did not create, and the version and
    ledger rows above the target in the history tables that stay; the views and triggers created;
    the indexes created (on tables that stay); the tables whose definition changed, rebuilt from the
    text recorded by the oldest version above the target; the rows replaced, put back; the tables
    created; the provenance last.
    """
    names = Names(conn)
    made = inspection.versions.since(target) if inspection.versions.provenance_table else \
        legacy_provenance(conn, names, inspection, catalog, target, path)
    refuse_irreversible(made, inspection, catalog, target, path)
    created_tables = {fold(p.name) for p in made if p.kind == "table" and p.action == CREATED}
    rows = [p for p in made if p.kind == "row"]
    steps = [Step(f"v{p.version}", f"row {p.name}", f"-- delete the row {p.name} this migration wrote", "delete",
                  version=p.version, data=rows_from_json(p.original_rows)) for p in rows]
    adopted = {fold(p.name) for p in inspection.versions.provenance.values() if p.kind == "table" and p.action == ADOPTED}
    for table in (VERSION_TABLE, LEDGER_TABLE):
        if names.table(table) and fold(table) not in created_tables | adopted:
            steps.append(Step(f"v{target + 1}", f"rows {names.table(table)}",
                              f"-- delete from {names.table(table)} the rows of versions above {target}", "delete",
                              data={"table": names.table(table), "above": target}))
    for p in made:
        real = names_of(names, p.kind).get(fold(p.name)) if p.kind in ("view", "trigger") else None
        if real and p.action == CREATED:
            sql = f"DROP VIEW {quote_identifier(real)}" if p.kind == "view" else f"DROP TRIGGER {quote_identifier(real)}"
            steps.append(Step(p.filename or f"v{p.version}", f"{p.kind} {p.name}", sql, "drop", version=p.version))
    for p in made:
        if p.kind == "index" and p.action == CREATED and names.index(p.name) and \
                fold(index_table(conn, p.name)) not in created_tables:
            steps.append(Step(p.filename or f"v{p.version}", f"index {p.name}",
                              f"DROP INDEX {quote_identifier(names.index(p.name))}", "drop", version=p.version))
    oldest: dict[str, Provenance] = {}  # since() lists the newest first: the last one seen is the oldest
    for p in made:
        if p.kind == "table" and p.original_sql and fold(p.name) not in created_tables and names.table(p.name):
            oldest[fold(p.name)] = p
    for p in oldest.values():
        real = names.table(p.name)
        steps.append(Step(f"v{p.version}", f"table {real}", p.original_sql, "rebuild", version=p.version,
                          data={"original_sql": p.original_sql,
                                "columns_removed": columns_removed(conn, real, p.original_sql)}))
    steps += [Step(f"v{p.version}", f"row {p.name}", f"-- put back the row(s) {p.name} the migration replaced", "restore",
                   version=p.version, data=rows_from_json(p.original_rows)) for p in rows if p.action == REPLACED]
    own = None
    for p in made:
        if p.kind != "table" or p.action != CREATED or not names.table(p.name):
            continue
        if fold(p.name) == fold(PROVENANCE_TABLE):
            own = p
            continue
        steps.append(Step(p.filename or f"v{p.version}", f"table {names.table(p.name)}",
                          f"DROP TABLE {quote_identifier(names.table(p.name))}", "drop", version=p.version))
    if own is not None:
        steps.append(Step(own.filename or f"v{own.version}", f"table {names.table(PROVENANCE_TABLE)}",
                          f"DROP TABLE {quote_identifier(names.table(PROVENANCE_TABLE))}", "drop", version=own.version))
    elif names.table(PROVENANCE_TABLE):
        steps.append(Step(f"v{target + 1}", f"rows {PROVENANCE_TABLE}",
                          f"-- delete from {PROVENANCE_TABLE} the rows of versions above {target}", "delete",
                          data={"provenance_above": target}))
    return steps


def names_of(names: Names, kind: str) -> dict[str, str]:
    return {fold(name): name for k, name, _tbl, _sql in names.entries if k == kind}


def refuse_irreversible(made: list[Provenance], inspection: Inspection, catalog: Catalog, target: int,
                        path: str) -> None:
    """A data change (an irreversible file) above the target cannot be undone from provenance: refused
    before anything is written, naming the file and the way back that exists (the backup at the target)."""
    ran = sorted({p.filename or p.name.split("#", 1)[0] for p in made if p.kind == "data"})
    if ran:
        raise IrreversibleError(
            f"{path}: refused, an in-place downgrade from v{inspection.version} to v{target} would cross "
            f"{', '.join(ran)}, marked irreversible (it changed data the engine cannot put back); restore the "
            f"backup taken at v{target} instead (riskmgr_rollback_method=restore); nothing was changed")


def index_table(conn: sqlite3.Connection, index: str) -> str:
    row = conn.execute("SELECT tbl_name FROM sqlite_master WHERE type = 'index' AND name = ? COLLATE NOCASE",
                       (index,)).fetchone()
    return row[0] if row else ""


def columns_removed(conn: sqlite3.Connection, table: str, original_sql: str) -> list[str]:
    """The columns the table has now that its recorded original definition does not have."""
    with closing(sqlite3.connect(":memory:")) as scratch:
        scratch.execute(original_sql)
        original = table_shape(scratch, table)
    return [c.name for key, c in table_shape(conn, table).items() if key not in original]


def legacy_provenance(conn: sqlite3.Connection, names: Names, inspection: Inspection, catalog: Catalog,
                      target: int, path: str) -> list[Provenance]:
    """For a database an earlier release of this tool migrated, before it kept provenance: the objects of
    the files its ledger records were made by that release. The original text of a table it added a
    column to is its text without that column's definition, which ALTER TABLE ADD COLUMN inserted as
    ", <definition>" after the last column."""
    made: list[Provenance] = []
    status = {(o.obj.kind, fold(o.obj.name)): o.status for o in inspection.objects}
    for migration in catalog.all_files():
        if migration.version <= target or migration.ledger_name not in inspection.versions.ledger:
            continue
        for statement in migration.statements:
            obj = statement.obj
            if status.get((obj.kind, fold(obj.name)), MISSING) == MISSING:
                continue
            made.append(Provenance(migration.version, obj.kind, obj.name, CREATED, migration.ledger_name, None, None))
            if obj.kind == "column":
                current = names.table_sql(obj.table) or ""
                added = ", " + ADD_COLUMN_DEFINITION.split(statement.sql, 1)[-1].strip().rstrip(";").strip()
                if current.count(added) != 1:
                    raise MigrationError(f"{path}: no record of table {obj.table}'s definition before v{migration.version} "
                                         f"added {obj.name}; restore the pre-migration backup instead "
                                         "(riskmgr_rollback_method=restore)")
                made.append(Provenance(migration.version, "table", obj.table, ALTERED, None,
                                       current.replace(added, "", 1), None))
    return made


# --- both ------------------------------------------------------------------------------------------

def check_can_run(inspection: Inspection, path: str) -> None:
    if inspection.state in ("newer", "unknown"):
        raise MigrationError(f"{path}: refused, database state is {inspection.state}: "
                             + " | ".join(inspection.problems) + "; nothing was changed")


def plan(conn: sqlite3.Connection, catalog: Catalog, options: dict[str, bool], target: int,
         path: str) -> tuple[Inspection, list[Step], str]:
    """(inspection, steps, direction) for the database as it is now on this connection: up to `target`,
    or down to it from any later version."""
    inspection = inspect(conn, catalog, options, target)
    check_can_run(inspection, path)
    begun_above = inspection.state == "partial" and any(p.version > target
                                                        for p in inspection.versions.provenance.values())
    if (inspection.version is not None and inspection.version > target) or begun_above:
        return inspection, downgrade_steps(conn, inspection, catalog, target, path), "down"
    if target == catalog.baseline_version:
        if inspection.state == f"v{catalog.baseline_version}":
            return inspection, [], "none"
        # partial: what a run began above the baseline is undone by its provenance
        return inspection, downgrade_steps(conn, inspection, catalog, target, path), "down"
    steps = upgrade_steps(inspection, catalog, options)
    return inspection, steps + history_steps(inspection, catalog, options, adopted_tables(inspection, steps)), "up"


def data_dropped(conn: sqlite3.Connection, steps: list[Step]) -> dict[str, int]:
    """What a downgrade discards: rows of dropped tables, non-null values of removed columns."""
    lost = {}
    for step in steps:
        if step.action == "drop" and step.kind == "table":
            lost[step.name] = conn.execute(f"SELECT COUNT(*) FROM {quote_identifier(step.name)}").fetchone()[0]
        elif step.action == "rebuild":
            for column in step.data["columns_removed"]:
                lost[f"{step.name}.{column}"] = conn.execute(
                    f"SELECT COUNT({quote_identifier(column)}) FROM {quote_identifier(step.name)}").fetchone()[0]
    return lost
