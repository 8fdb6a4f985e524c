"""The shape of a table, a column or an index as SQLite itself reports it, and how two shapes compare.

Shapes come from PRAGMA table_xinfo / index_list / index_xinfo, never from parsing SQL text, so
whitespace, quoting, letter case and IF NOT EXISTS in the statement that made an object do not
matter. SQLite matches identifiers case-insensitively, and so does everything here: a field
database's `Orders.State` is the `orders.state` a migration file names.

Each comparison says one of:
  present     the object is there exactly as the migration file would make it;
  compatible  it is there in a form that serves the same purpose (a column of the same type
              affinity, an index on the same table and key columns): the migration adopts it;
  incomplete  a table that lacks columns the engine can add (none of them part of its key);
  different   it is there in a form the migration cannot use: a refusal naming both definitions;
  missing     it is not there.
"""
from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass

from ansible.module_utils.sqlite_common import quote_identifier

PRESENT, COMPATIBLE, INCOMPLETE, DIFFERENT, MISSING = "present", "compatible", "incomplete", "different", "missing"
USABLE = (PRESENT, COMPATIBLE)
# A default ALTER TABLE ADD COLUMN accepts: a number, a string or blob literal, NULL, TRUE or FALSE.
CONSTANT_DEFAULT = re.compile(r"^\s*([+-]?\d+(\.\d*)?([eE][+-]?\d+)?|'([^']|'')*'|[xX]'[0-9a-fA-F]*'|NULL|TRUE|FALSE)\s*$",
                              re.I)


def type_affinity(declared: str) -> str:
    """SQLite's column affinity for a declared type (datatype3.html, section 3.1), in its order of rules."""
    upper = declared.upper()
    if "INT" in upper:
        return "INTEGER"
    if "CHAR" in upper or "CLOB" in upper or "TEXT" in upper:
        return "TEXT"
    if "BLOB" in upper or not upper.strip():
        return "BLOB"
    if "REAL" in upper or "FLOA" in upper or "DOUB" in upper:
        return "REAL"
    return "NUMERIC"


def holds_the_same_values(real: ColumnShape, wanted: ColumnShape) -> bool:
    """Whether a column of an adopted table stores what the engine writes into it unchanged.

    Same affinity; or no declared type (BLOB affinity keeps every value as written); or INTEGER and
    NUMERIC for each other (a BOOLEAN is NUMERIC: both keep integers as integers); or a DATE/TIME type
    (NUMERIC) for a timestamp the engine writes as text ('2026-11-30 12:00:00' is not a number, so it
    stays text). A REAL column would turn a version into 2.0, a TEXT one would keep '2' as text.
    """
    if real.affinity in (wanted.affinity, "BLOB"):
        return True
    if {real.affinity, wanted.affinity} == {"INTEGER", "NUMERIC"}:
        return True
    return wanted.affinity == "TEXT" and real.affinity == "NUMERIC" and re.search("DATE|TIME", real.declared) is not None


def fold(name: str) -> str:
    """How SQLite compares identifiers (ASCII case folding)."""
    return name.lower()


@dataclass(frozen=True)
class ColumnShape:
    name: str
    declared: str  # the declared type, whitespace folded, upper case
    notnull: bool
    default: str | None
    pk: int  # position in the primary key, 0 when not part of it
    hidden: int  # 0 ordinary, 2/3 generated (table_xinfo)

    @property
    def affinity(self) -> str:
        return type_affinity(self.declared)

    def definition(self) -> str:
        """The column as a column definition, for messages."""
        text = f"{self.name} {self.declared}".strip()
        if self.notnull:
            text += " NOT NULL"
        if self.default is not None:
            text += f" DEFAULT {self.default}"
        return text


@dataclass(frozen=True)
class IndexShape:
    name: str
    table: str
    unique: bool
    partial: bool
    keys: tuple  # ((column name folded, or None for an expression), descending, collation folded), ...

    def key_names(self) -> tuple:
        return tuple(column for column, _desc, _coll in self.keys)

    def definition(self) -> str:
        keys = ", ".join(f"{column or '<expression>'}{' DESC' if desc else ''}" for column, desc, _coll in self.keys)
        return (f"{'UNIQUE ' if self.unique else ''}INDEX {self.name} ON {self.table}({keys})"
                + (" WHERE ..." if self.partial else ""))


class Names:
    """The database's object names, looked up the way SQLite resolves them (case-insensitively)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        rows = conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
                            ).fetchall()
        self.tables = {fold(name): name for kind, name, _tbl, _sql in rows if kind == "table"}
        self.indexes = {fold(name): name for kind, name, _tbl, _sql in rows if kind == "index"}
        self.sql = {(kind, fold(name)): sql for kind, name, _tbl, sql in rows}
        self.entries = rows

    def table(self, name: str) -> str | None:
        return self.tables.get(fold(name))

    def index(self, name: str) -> str | None:
        return self.indexes.get(fold(name))

    def table_sql(self, name: str) -> str | None:
        return self.sql.get(("table", fold(name)))


def normalize_type(declared: str) -> str:
    return " ".join(declared.upper().split())


def table_shape(conn: sqlite3.Connection, table: str) -> dict[str, ColumnShape]:
    """folded column name -> ColumnShape, in column order; empty when there is no such table."""
    return {fold(row[1]): ColumnShape(row[1], normalize_type(row[2] or ""), bool(row[3]), row[4], row[5], row[6])
            for row in conn.execute(f"PRAGMA table_xinfo({quote_identifier(table)})")}


def index_shape(conn: sqlite3.Connection, name: str) -> IndexShape | None:
    row = conn.execute("SELECT name, tbl_name FROM sqlite_master WHERE type = 'index' AND name = ? COLLATE NOCASE",
                       (name,)).fetchone()
    if row is None:
        return None
    real_name, table = row
    listing = {fold(r[1]): r for r in conn.execute(f"PRAGMA index_list({quote_identifier(table)})")}
    entry = listing.get(fold(real_name))
    unique, partial = (bool(entry[2]), bool(entry[4])) if entry else (False, False)
    keys = tuple((fold(r[2]) if r[2] is not None else None, bool(r[3]), fold(r[4] or "binary"))
                 for r in conn.execute(f"PRAGMA index_xinfo({quote_identifier(real_name)})") if r[5])
    return IndexShape(real_name, table, unique, partial, keys)


def one_line(sql: str | None) -> str:
    return " ".join((sql or "").split())


# --- comparisons: (status, detail) ----------------------------------------------------------------

def compare_column(real: ColumnShape | None, wanted: ColumnShape) -> tuple[str, str | None]:
    if real is None:
        return MISSING, None
    if real.affinity != wanted.affinity:
        return DIFFERENT, (f"found `{real.definition()}` ({real.affinity} affinity), the migration defines "
                           f"`{wanted.definition()}` ({wanted.affinity} affinity)")
    if (real.declared, real.notnull, real.default) == (wanted.declared, wanted.notnull, wanted.default):
        return PRESENT, None
    return COMPATIBLE, f"found `{real.definition()}`, same {wanted.affinity} affinity as `{wanted.definition()}`"


def compare_table(conn: sqlite3.Connection, names: Names, reference: sqlite3.Connection,
                  table: str) -> tuple[str, str | None, list[ColumnShape]]:
    """(status, detail, columns the engine would add) of a table a migration file creates."""
    real_name = names.table(table)
    if real_name is None:
        return MISSING, None, []
    real, wanted = table_shape(conn, real_name), table_shape(reference, table)
    clashes, missing = [], []
    for key, column in wanted.items():
        if key not in real:
            missing.append(column)
        elif not holds_the_same_values(real[key], column):
            clashes.append(f"{column.name} is {real[key].declared or 'untyped'} ({real[key].affinity}), "
                           f"wanted {column.declared} ({column.affinity})")
    key_missing = [c.name for c in missing if c.pk]
    if clashes or key_missing:
        reasons = clashes + [f"lacks primary-key column(s) {', '.join(key_missing)}"] if key_missing else clashes
        return DIFFERENT, (f"{'; '.join(reasons)}: found `{one_line(names.table_sql(table))}`, the migration "
                           f"defines `{one_line(reference_sql(reference, 'table', table))}`"), []
    if missing:
        return INCOMPLETE, f"lacks column(s) {', '.join(c.definition() for c in missing)}, which will be added", missing
    exact = [(c.name.lower(), c.declared, c.notnull, c.default, c.pk) for c in real.values()] == \
        [(c.name.lower(), c.declared, c.notnull, c.default, c.pk) for c in wanted.values()]
    if exact:
        return PRESENT, None, []
    extra = [c.name for key, c in real.items() if key not in wanted]
    detail = f"adopted as it is: `{one_line(names.table_sql(table))}`"
    if extra:
        detail += f" (its own columns {', '.join(extra)} are kept)"
    return COMPATIBLE, detail, []


def compare_index(conn: sqlite3.Connection, reference: sqlite3.Connection, name: str) -> tuple[str, str | None]:
    real, wanted = index_shape(conn, name), index_shape(reference, name)
    if real is None:
        return MISSING, None
    same_place = fold(real.table) == fold(wanted.table) and real.key_names() == wanted.key_names()
    if not same_place or real.partial or None in real.key_names():
        why = "a partial index" if same_place and real.partial else "other table or key columns"
        return DIFFERENT, f"{why}: found `{real.definition()}`, the migration defines `{wanted.definition()}`"
    if (real.unique, real.keys) == (wanted.unique, wanted.keys):
        return PRESENT, None
    return COMPATIBLE, f"found `{real.definition()}`, same table and key columns as `{wanted.definition()}`"


def reference_sql(reference: sqlite3.Connection, kind: str, name: str) -> str | None:
    row = reference.execute("SELECT sql FROM sqlite_master WHERE type = ? AND name = ? COLLATE NOCASE",
                            (kind, name)).fetchone()
    return row[0] if row else None


def add_column_sql(table: str, column: ColumnShape) -> str:
    """ALTER TABLE ... ADD COLUMN for a column the engine adds to an adopted table.

    SQLite only adds a NOT NULL column that has a constant default (not CURRENT_TIMESTAMP, not an
    expression); without one the column is added nullable: the rows the table already holds get
    NULL ("not recorded"), every row the engine writes fills it.
    """
    text = f"ALTER TABLE {quote_identifier(table)} ADD COLUMN {quote_identifier(column.name)}"
    if column.declared:
        text += f" {column.declared}"
    if column.default is not None and CONSTANT_DEFAULT.match(column.default):
        text += (" NOT NULL" if column.notnull else "") + f" DEFAULT {column.default}"
    return text
