"""The database's own objects that depend on what a change touches: listed in the preflight, and for a
downgrade, refused before any stop when they use what the downgrade removes.

A downgrade gives a table back its recorded text of the target version and makes its indexes and
triggers again from their own text, word for word: a trigger made on v2 that names NEW.execution_time_ms
would be made again on v1 and fail every v1 insert (SQLite does not check a trigger's body when it is created), an
index on the column cannot be made again at all, a view over it is left unreadable. Each is named
here with its fix, before the daemon stops.
"""
from __future__ import annotations

import re
import sqlite3

from ansible.module_utils.sqlite_common import quote_identifier
from ansible.module_utils.sqlite_proof import mentions
from ansible.module_utils.sqlite_shapes import fold

DROP = {"trigger": "DROP TRIGGER", "view": "DROP VIEW", "index": "DROP INDEX"}
INSERT_INTO = r"INSERT\s+(?:OR\s+\w+\s+)?INTO\s+"


def index_columns(conn: sqlite3.Connection, index: str) -> set[str]:
    return {fold(r[2]) for r in conn.execute(f"PRAGMA index_xinfo({quote_identifier(index)})") if r[2] and r[5]}


def dependents(conn: sqlite3.Connection, touched: dict[str, list[str]]) -> list[dict]:
    """Every trigger, view and index naming a table the change touches: {kind, name, table, uses}, uses
    being the touched columns it names ("enforcement_log.execution_time_ms")."""
    found = []
    rows = conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master WHERE type IN ('trigger', 'view', "
                        "'index') AND sql IS NOT NULL AND name NOT LIKE 'sqlite_%' ORDER BY type, name").fetchall()
    for kind, name, table, sql in rows:
        named = [t for t in touched if fold(table) == fold(t) or (kind != "index" and mentions(sql, t))]
        if not named:
            continue
        uses = []
        for t in named:
            for column in touched[t]:
                on_it = fold(column) in index_columns(conn, name) or mentions(sql, column) if kind == "index" \
                    else mentions(sql, column)
                if on_it:
                    uses.append(f"{t}.{column}")
        found.append({"kind": kind, "name": name, "table": table, "uses": uses})
    return found


def downgrade_blockers(conn: sqlite3.Connection, steps, path: str, target: int | None = None) -> list[str]:
    """The objects made after the migration that use a column the downgrade removes, each with its fix.
    Objects that go with a table or index the downgrade drops are not in the way."""
    removed = {s.name: list(s.data.get("columns_removed", [])) for s in steps if s.action == "rebuild"}
    dropped = {fold(s.name) for s in steps if s.action == "drop"}
    found = []
    for entry in dependents(conn, {t: c for t, c in removed.items() if c}):
        if not entry["uses"] or fold(entry["name"]) in dropped or fold(entry["table"]) in dropped:
            continue
        found.append(f"{path}: {entry['kind']} {entry['name']} uses {', '.join(entry['uses'])}, which the downgrade "
                     f"removes ({why(entry['kind'], target)}); drop it first ({DROP[entry['kind']]} "
                     f"{quote_identifier(entry['name'])}; keep its text from sqlite_master if it is needed again), or "
                     "roll back with riskmgr_rollback_method=restore (the pre-migration backup: rows written since "
                     "the migration are not in it)")
    return found


def why(kind: str, target: int | None = None) -> str:
    """Why such an object blocks a downgrade to `target` (named when known)."""
    code, table = (f"v{target}", f"the v{target} table") if target is not None else ("the older", "the older table")
    return {"trigger": f"the downgrade makes it again word for word and every insert of {code} code would then fail",
            "index": f"it cannot be made again on {table}",
            "view": "it would be left unreadable"}[kind]


def upgrade_breakers(conn: sqlite3.Connection, added: dict[str, list[str]]) -> list[dict]:
    """Triggers whose text breaks once a column is added to a table: a positional insert into it
    (INSERT INTO t VALUES / INSERT INTO t SELECT), or a copy of it with SELECT * into a table named without
    its columns. Found by their text: the backstop for a table whose writes the proof could not try.
    {trigger, table (the one whose writes fire it), text}."""
    found = []
    for name, table, sql in conn.execute("SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'trigger' "
                                         "AND sql IS NOT NULL ORDER BY name").fetchall():
        for altered, columns in added.items():
            quoted = rf"(?:main\.)?[\"`\[]?{re.escape(altered)}[\"`\]]?"
            # Patterns over the trigger's text, never run as SQL.
            positional = re.search(INSERT_INTO + quoted + r"\s+(VALUES|SELECT)\b", sql, re.I)
            star = re.search(INSERT_INTO + r"\S+\s+SELECT\s+\*\s+FROM\s+" + quoted + r"(?![\w$])", sql, re.I)
            if not (positional or star):
                continue
            how = "inserts into it without naming its columns" if positional else \
                "copies it with SELECT * into a table named without its columns"
            found.append({"trigger": name, "table": table, "text": (
                f"trigger {name} {how}, so its column count follows {altered}'s and the change adds "
                f"{', '.join(columns)}: every insert into {table} would fail after it; rewrite the trigger to name "
                f"its columns, or drop it (DROP TRIGGER {quote_identifier(name)}) and recreate it after the change")})
    return found
