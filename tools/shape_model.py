"""The model of a v1 shape, for tools/v1_shapes.py: a Column and a Table of a random shape (their
DDL and their rows), and the Shape a spec names (its DDL statements, its features, create, fill
and grow), ReferenceShape (000_baseline.sql) and RandomShape (drawn by shape_builder.py)."""
from __future__ import annotations

import random
import sqlite3
from dataclasses import dataclass, field

from riskmgr_standin import quote_identifier
from shape_values import ACCOUNTS, BASELINE_SQL, KINDS, batched, fill_reference, grow_reference

# --- the model of a random shape -----------------------------------------------------------------

@dataclass
class Column:
    name: str  # as SQLite stores it
    kind: str
    sql: str  # as the DDL writes it: maybe quoted
    decl_type: str = ""
    not_null: bool = False
    not_null_first: bool = False  # "INTEGER NOT NULL PRIMARY KEY"
    primary_key: str = ""  # the column-level clause: "PRIMARY KEY" or "PRIMARY KEY AUTOINCREMENT"
    unique: bool = False  # the column-level UNIQUE clause
    default: str | None = None
    checks: list[str] = field(default_factory=list)
    collate: str = ""
    references: str = ""  # the column-level REFERENCES clause
    comment: str = ""
    key: bool = False  # in a primary or unique key: never NULL, never left out, no default
    enforced_unique: bool = False  # a constraint or index of this column alone keeps it unique: a parent key
    rowid_alias: bool = False  # SQLite assigns it: fill leaves it out
    left_out: bool = False  # fill leaves it to its default or NULL
    null_rate: float = 0.0
    added_later: bool = False  # reaches its table through ALTER TABLE ADD COLUMN
    fixed: bool = False  # part of a v2 or history object: never varied, never added later

    def definition(self, lower_types: bool) -> str:
        parts = [self.sql]
        if self.decl_type:
            parts.append(self.decl_type.lower() if lower_types else self.decl_type)
        if self.not_null and self.not_null_first:
            parts.append("NOT NULL")
        if self.primary_key:
            parts.append(self.primary_key)
        if self.not_null and not self.not_null_first:
            parts.append("NOT NULL")
        if self.unique:
            parts.append("UNIQUE")
        if self.default is not None:
            parts.append(f"DEFAULT {self.default}")
        parts += [f"CHECK ({check})" for check in self.checks]
        if self.collate:
            parts.append(f"COLLATE {self.collate}")
        if self.references:
            parts.append(self.references)
        return " ".join(parts)

    def value(self, number: int, rng: random.Random):
        if self.null_rate and rng.random() < self.null_rate:
            return None
        return KINDS[self.kind].value(number, rng)


@dataclass
class Table:
    logical: str  # the name the project knows it by
    name: str  # as SQLite stores it
    sql: str  # as the DDL writes it
    columns: list[Column] = field(default_factory=list)
    constraints: list[str] = field(default_factory=list)  # table-level, as written
    primary_key: list[Column] = field(default_factory=list)  # the columns of a table-level PRIMARY KEY
    without_rowid: bool = False
    large: bool = False  # about `rows` rows, grown by grow()
    medium: bool = False  # about rows / 4 rows (daily_pnl)
    fixed_rows: int = 0  # otherwise: this many rows, whatever `rows` is
    fixed_values: list[tuple] = field(default_factory=list)  # or exactly these rows (schema_version)
    trigger_filled: bool = False  # only triggers write it
    from_file: bool = False  # created by the statements of a migration file, not by this model

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name.lower() == name.lower()), None)

    def has(self, *names: str) -> bool:
        return all(self.column(name) is not None for name in names)

    def written_columns(self) -> list[Column]:
        return [c for c in self.columns if not c.rowid_alias and not c.left_out]

    def insert_sql(self) -> str:
        columns = self.written_columns()
        names = ", ".join(quote_identifier(c.name) for c in columns)
        return f"INSERT INTO {quote_identifier(self.name)} ({names}) VALUES ({', '.join('?' for _ in columns)})"

    def row_count(self, rows: int) -> int:
        if self.trigger_filled:
            return 0
        if self.fixed_values:
            return len(self.fixed_values)
        if self.large:
            return rows
        if self.medium:
            return ACCOUNTS * max(1, rows // ACCOUNTS // 4)
        return self.fixed_rows

    def rows_from(self, first: int, count: int, rng: random.Random):
        if self.fixed_values:
            return iter(self.fixed_values)
        columns = self.written_columns()
        return (tuple(c.value(n, rng) for c in columns) for n in range(first, first + count))


# --- shapes ----------------------------------------------------------------------------------------

class Shape:
    """A v1 schema: its DDL, what it carries, and how to fill a database of it."""

    def __init__(self, spec: str, statements: list[str], features: dict) -> None:
        self.spec = spec
        self.statements = statements
        self.features = features

    def create(self, conn: sqlite3.Connection) -> None:
        """Create every object in one transaction (conn in autocommit or legacy mode, none open)."""
        conn.execute("BEGIN")
        for statement in self.statements:
            conn.execute(statement)
        conn.execute("COMMIT")

    def script(self) -> str:
        """The DDL as one script that `sqlite3 new.db < script` replays."""
        header = f"-- v1 shape {self.spec} (tools/v1_shapes.py)\n-- features: {self.features}\n"
        return header + "".join(f"\n{statement};\n" for statement in self.statements)

    def fill(self, conn: sqlite3.Connection, rows: int, rng: random.Random) -> None:
        raise NotImplementedError

    def grow(self, conn: sqlite3.Connection, rows: int, rng: random.Random) -> None:
        raise NotImplementedError


class ReferenceShape(Shape):
    """files/migrations/v1/000_baseline.sql, with the data the demo and the tests always had."""

    def create(self, conn: sqlite3.Connection) -> None:
        # executescript(), as make_state_db always did: one transaction per statement, so the
        # file comes out byte for byte as before.
        conn.executescript(BASELINE_SQL.read_text())

    def fill(self, conn: sqlite3.Connection, rows: int, rng: random.Random) -> None:
        fill_reference(conn, rows, rng)

    def grow(self, conn: sqlite3.Connection, rows: int, rng: random.Random) -> None:
        grow_reference(conn, rows, rng)


class RandomShape(Shape):
    def __init__(self, spec: str, statements: list[str], features: dict, tables: list[Table], analyze: bool) -> None:
        super().__init__(spec, statements, features)
        self.tables = tables
        self.analyze = analyze

    def fill(self, conn: sqlite3.Connection, rows: int, rng: random.Random) -> None:
        for table in self.tables:
            self._insert(conn, table, 1, table.row_count(rows), rng)
        if self.analyze:
            conn.execute("ANALYZE")

    def grow(self, conn: sqlite3.Connection, rows: int, rng: random.Random) -> None:
        """Append `rows` rows to each large table, numbered on from the rows it already has."""
        for table in self.tables:
            if table.large:
                count = conn.execute(f"SELECT COUNT(*) FROM {quote_identifier(table.name)}").fetchone()[0]
                self._insert(conn, table, count + 1, rows, rng)

    @staticmethod
    def _insert(conn: sqlite3.Connection, table: Table, first: int, count: int, rng: random.Random) -> None:
        if count <= 0:
            return
        sql = table.insert_sql()
        conn.execute("BEGIN")
        for batch in batched(table.rows_from(first, count, rng)):
            conn.executemany(sql, batch)
        conn.execute("COMMIT")
