"""The catalog of schema versions, read from the migration files on the host.

files/migrations/ holds one directory per version (v1/, v2/, ...). v1/ is the baseline: it is
never applied, it tells the engine what a v1 database looks like. Every later version is a set
of numbered .sql files whose statements each create exactly one object:

    CREATE TABLE name (...)             -> object ("table", name)
    CREATE INDEX name ON table(...)     -> object ("index", name)
    CREATE VIEW name AS ...             -> object ("view", name)
    CREATE TRIGGER name ... ON table    -> object ("trigger", name)
    ALTER TABLE t ADD COLUMN c ...      -> object ("column", "t.c")

That restriction is what lets the engine compare every object with the database's real state,
apply only the statements still needed, and undo each version by its own provenance. The objects
of vN may use anything v1..vN-1 made (an index on a column v2 added, a trigger on a table v3
created). A statement the engine cannot undo (UPDATE, DELETE, INSERT, DROP, a data backfill) is
refused unless the file says `-- riskmgr: irreversible`: it then runs once (its provenance says
so), and an in-place downgrade across it is refused before any stop, pointing to the restore.
docs/versions.md has the conventions. Header comments carry metadata:

    -- description: one line for the history row
    -- riskmgr: option=track_unrealized_pnl    (file applied only when that option is on)
    -- riskmgr: irreversible                   (the file changes data: no in-place downgrade across it)
    -- riskmgr: baseline                       (reference schema, never applied)
    -- used-by: SELECT ...                     (before a CREATE INDEX: the query it serves)
"""
from __future__ import annotations

import hashlib
import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from ansible.module_utils.sqlite_common import MigrationError

MIGRATIONS_ORIGIN = "files/migrations"  # how messages name texts sent without an origin
VERSION_DIR = re.compile(r"^v(\d+)$")
CREATE_TABLE = re.compile(r"^CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?\"?(\w+)\"?\s*\(", re.I)
CREATE_INDEX = re.compile(
    r"^CREATE\s+(?:UNIQUE\s+)?INDEX\s+(?:IF\s+NOT\s+EXISTS\s+)?\"?(\w+)\"?\s+ON\s+\"?(\w+)\"?", re.I)
ADD_COLUMN = re.compile(r"^ALTER\s+TABLE\s+\"?(\w+)\"?\s+ADD\s+(?:COLUMN\s+)?\"?(\w+)\"?", re.I)
CREATE_VIEW = re.compile(r"^CREATE\s+VIEW\s+(?:IF\s+NOT\s+EXISTS\s+)?\"?(\w+)\"?", re.I)
CREATE_TRIGGER = re.compile(
    r"^CREATE\s+TRIGGER\s+(?:IF\s+NOT\s+EXISTS\s+)?\"?(\w+)\"?\b.*?\bON\s+\"?(\w+)\"?", re.I | re.S)
# What the engine cannot undo from provenance: allowed only in a file marked irreversible.
DATA_CHANGE = re.compile(r"^\s*(UPDATE|DELETE|INSERT|REPLACE|DROP|WITH|ALTER\s+TABLE\s+\S+\s+(?:RENAME|DROP))\b",
                         re.I)
IRREVERSIBLE = "irreversible"
FORBIDDEN = re.compile(r"^\s*(BEGIN|COMMIT|END|ROLLBACK|SAVEPOINT|RELEASE|PRAGMA|ATTACH|DETACH|VACUUM)\b", re.I)


@dataclass(frozen=True)
class SchemaObject:
    kind: str  # table | index | view | trigger | column | data (a statement of an irreversible file)
    name: str  # table, index, view or trigger name, "table.column", or "v4/030_x.sql#1" for data
    table: str  # the table it lives on (itself for a table)

    def __str__(self) -> str:
        return f"{self.kind} {self.name}"


@dataclass
class Statement:
    sql: str
    obj: SchemaObject
    used_by: str | None = None  # for an index: the query it was made for


@dataclass
class MigrationFile:
    version: int
    path: Path
    sha256: str
    description: str
    option: str | None
    baseline: bool
    statements: list[Statement] = field(default_factory=list)
    irreversible: bool = False  # `-- riskmgr: irreversible`: changes data, no in-place downgrade across it

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def ledger_name(self) -> str:
        """The name recorded in the history: v2/030_analytics_indexes.sql."""
        return f"v{self.version}/{self.path.name}"


@dataclass
class Catalog:
    directory: Path
    files: dict[int, list[MigrationFile]]

    @property
    def newest_version(self) -> int:
        return max(self.files)

    @property
    def baseline_version(self) -> int:
        return min(self.files)

    def files_for(self, version: int, options: dict[str, bool]) -> list[MigrationFile]:
        """The files that make up a version under the given options, in apply order."""
        return [f for f in self.files.get(version, []) if f.option is None or options.get(f.option, False)]

    def all_files(self) -> list[MigrationFile]:
        return [f for version in sorted(self.files) for f in self.files[version]]

    def find(self, ledger_name: str) -> MigrationFile | None:
        return next((f for f in self.all_files() if f.ledger_name == ledger_name), None)

    @property
    def versions(self) -> list[int]:
        return sorted(self.files)

    def below(self, version: int) -> int:
        """The version just below `version` (the baseline for the baseline): what a rollback goes to."""
        lower = [v for v in self.files if v < version]
        return max(lower) if lower else self.baseline_version


def split_statements(text: str) -> list[tuple[str, str | None]]:
    """Split SQL text into complete statements, keeping each one's `-- used-by:` annotation.

    sqlite3.complete_statement() is SQLite's own tokenizer: it is not fooled by a semicolon
    inside a string literal or a comment, which a split on ';' would be.
    """
    statements: list[tuple[str, str | None]] = []
    buffer: list[str] = []
    used_by: str | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if not buffer and stripped.lower().startswith("-- used-by:"):
            used_by = stripped.split(":", 1)[1].strip()
            continue
        if not buffer and (not stripped or stripped.startswith("--")):
            continue
        buffer.append(line)
        candidate = "\n".join(buffer)
        if sqlite3.complete_statement(candidate):
            # The line that completed the statement may hold more SQL after its ';'
            # ("CREATE INDEX ...; DROP TABLE orders;"): that would hide a second, unchecked
            # statement inside the first, so only a trailing comment may follow.
            end = next(i + 1 for i, char in enumerate(candidate)
                       if char == ";" and sqlite3.complete_statement(candidate[:i + 1]))
            rest = candidate[end:].strip()
            if rest and not rest.startswith("--"):
                raise ValueError(f"one statement per line, found more SQL after ';': {rest[:80]}")
            statements.append((candidate[:end].strip().rstrip(";").strip(), used_by))
            buffer, used_by = [], None
    if buffer:
        raise ValueError(f"unterminated statement: {' '.join(buffer)[:80]}")
    return statements


def statement_object(sql: str, data_name: str | None = None) -> SchemaObject:
    """The object a statement makes; data_name given (an irreversible file), a data change is one too."""
    if match := CREATE_TABLE.match(sql):
        return SchemaObject("table", match.group(1), match.group(1))
    if match := CREATE_INDEX.match(sql):
        return SchemaObject("index", match.group(1), match.group(2))
    if match := CREATE_VIEW.match(sql):
        return SchemaObject("view", match.group(1), match.group(1))
    if match := CREATE_TRIGGER.match(sql):
        return SchemaObject("trigger", match.group(1), match.group(2))
    if match := ADD_COLUMN.match(sql):
        return SchemaObject("column", f"{match.group(1)}.{match.group(2)}", match.group(1))
    if DATA_CHANGE.match(sql):
        if data_name is None:
            raise ValueError(f"{sql.split()[0].upper()} changes what the engine cannot undo ("
                             + " ".join(sql.split())[:80] + "); mark the file `-- riskmgr: irreversible` "
                             "(an in-place downgrade across it is then refused, only a restore goes back) "
                             "or make it a CREATE / ADD COLUMN")
        return SchemaObject("data", data_name, "")
    raise ValueError("only CREATE TABLE, INDEX, VIEW, TRIGGER and ALTER TABLE ... ADD COLUMN are allowed "
                     "(and data changes in a file marked `-- riskmgr: irreversible`), got: "
                     + " ".join(sql.split())[:80])


def header_value(text: str, key: str) -> str | None:
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.lower().startswith(f"-- {key}:"):
            return stripped.split(":", 1)[1].strip()
    return None


def load_file(version: int, path: Path, raw: bytes | None = None) -> MigrationFile:
    """One migration file, from disk or (raw given) from the text the controller sent as it is on disk."""
    raw = path.read_bytes() if raw is None else raw
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise MigrationError(f"{path}: not UTF-8 text ({err}); restore the file from the project") from err
    flags = header_value(text, "riskmgr") or ""
    option = None
    for flag in flags.split():
        if flag.startswith("option="):
            option = flag.split("=", 1)[1]
    migration = MigrationFile(
        version=version, path=path, sha256=hashlib.sha256(raw).hexdigest(),
        description=header_value(text, "description") or path.stem,
        option=option, baseline="baseline" in flags.split(), irreversible=IRREVERSIBLE in flags.split())
    try:
        for number, (sql, used_by) in enumerate(split_statements(text), 1):
            if FORBIDDEN.match(sql):
                raise ValueError("transaction control and pragmas belong to the engine, not to a migration file: "
                                 + sql.split()[0])
            data_name = f"{migration.ledger_name}#{number}" if migration.irreversible else None
            migration.statements.append(Statement(sql=sql, obj=statement_object(sql, data_name), used_by=used_by))
    except ValueError as err:
        raise MigrationError(f"{path}: {err}; fix the migration file (the database was not touched)") from err
    if not migration.statements:
        raise MigrationError(f"{path}: no SQL statement in the file; remove it or restore it from the project")
    return migration


def load_catalog(directory: str | Path) -> Catalog:
    """Read every vN/*.sql under the migrations directory (the files the hosts really get)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise MigrationError(f"{directory}: migrations directory not found; point migrations_dir at the "
                             "project's files/migrations copied to the host")
    files: dict[int, list[MigrationFile]] = {}
    for sub in sorted(directory.iterdir()):
        match = VERSION_DIR.match(sub.name)
        if not match or not sub.is_dir():
            continue
        version = int(match.group(1))
        files[version] = [load_file(version, path) for path in sorted(sub.glob("*.sql"))]
    return checked_catalog(directory, files)


MIGRATION_KEY = re.compile(r"^v(\d+)/[^/]+\.sql$")


def load_catalog_texts(texts: dict[str, str], origin: str) -> Catalog:
    """The catalog from {"v2/030_analytics_indexes.sql": text, ...} as the controller sent it.

    Nothing is staged on the host: the checksums are those of the files' bytes (UTF-8, line ends
    kept), and messages name the file under `origin`, where the operator can fix it.
    """
    directory = Path(origin)
    files: dict[int, list[MigrationFile]] = {}
    for key in sorted(texts):
        match = MIGRATION_KEY.match(key)
        if not match:
            raise MigrationError(f"{directory / key}: not a vN/NAME.sql migration file; send only the project's "
                                 "files/migrations/vN/*.sql")
        version = int(match.group(1))
        files.setdefault(version, []).append(load_file(version, directory / key, texts[key].encode("utf-8")))
    return checked_catalog(directory, files)


def checked_catalog(directory: Path, files: dict[int, list[MigrationFile]]) -> Catalog:
    if len(files) < 2 or not files[min(files)] or not all(f.baseline for f in files[min(files)]):
        raise MigrationError(f"{directory}: expected a baseline v1/ and at least one later vN/ directory of "
                             ".sql files; copy the project's files/migrations unchanged")
    return Catalog(directory=directory, files=files)


def as_catalog(migrations: Catalog | str | Path) -> Catalog:
    """A catalog already loaded (one module doing several steps reads the SQL once), or a directory."""
    return migrations if isinstance(migrations, Catalog) else load_catalog(migrations)


def catalog_from(migrations_dir: str | Path | None = None, migrations: dict[str, str] | None = None,
                 origin: str | None = None) -> Catalog:
    """The modules' one way in: the texts sent by the controller, or a directory on the host."""
    if migrations:
        return load_catalog_texts(migrations, origin or MIGRATIONS_ORIGIN)
    if migrations_dir:
        return load_catalog(migrations_dir)
    raise MigrationError("no migrations given: pass migrations (the texts of files/migrations) or migrations_dir")


def catalog_of_params(params: dict) -> Catalog | None:
    """The catalog a module's parameters name (None when they name none)."""
    if not params.get("migrations") and not params.get("migrations_dir"):
        return None
    return catalog_from(params.get("migrations_dir"), params.get("migrations"), params.get("migrations_origin"))


def build_reference(catalog: Catalog, version: int, options: dict[str, bool]) -> sqlite3.Connection:
    """An in-memory, schema-only database at `version`: the intended shape of every object.

    Only DDL goes in, so this costs kilobytes whatever the size of the real database.
    """
    conn = sqlite3.connect(":memory:", isolation_level=None)
    for number in sorted(catalog.files):
        if number > version:
            break
        for migration in catalog.files_for(number, options):
            for statement in migration.statements:
                if statement.obj.kind != "data":  # the reference holds definitions, never rows
                    conn.execute(statement.sql)
    return conn


def options_of(params: dict) -> dict[str, bool]:
    """The optional files a module's parameters turn on: `options` by name, and track_unrealized_pnl (v2's)."""
    options = {name: bool(value) for name, value in (params.get("options") or {}).items()}
    options["track_unrealized_pnl"] = bool(params.get("track_unrealized_pnl")) or options.get("track_unrealized_pnl", False)
    return options
