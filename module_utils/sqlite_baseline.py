"""The problems a database has before a change, so that a change is judged by what it introduced.

Field databases carry problems of their own that no migration made and none can fix: child rows whose
parent is gone (PRAGMA foreign_key_check), a foreign key into a column that is not unique ("foreign
key mismatch", which makes the whole-database foreign_key_check fail outright). The preflight reports
them; they never refuse a change. After the change (a migration, a downgrade, a restore) only what
is new counts: a (child, parent, constraint) with more violating rows than before, a mismatch that
was not there. The state before comes from the file as it was: the backup the change made first
(beside its manifest), or any copy named by the caller.

Violations are counted per (child table, parent table, constraint) rather than listed by rowid, so
a database with millions of orphans costs a count, not a list, and a downgrade that rebuilds a
table (new rowids are never made, but the comparison does not depend on it) is judged the same way.
"""
from __future__ import annotations

import os
import sqlite3

from ansible.module_utils.backup_store import MANIFEST_SUFFIX
from ansible.module_utils.sqlite_common import (
    DEFAULT_BUSY_TIMEOUT_S, VerificationError, quote_identifier, read_snapshot)
from ansible.module_utils.sqlite_shapes import fold

SHOWN = 20


def foreign_key_state(conn: sqlite3.Connection) -> dict:
    """{"violations": {"child -> parent (constraint N)": rows}, "mismatches": [SQLite's text], "examples": [...]}
    table by table, so one mismatched foreign key does not hide every other table's violations."""
    violations: dict[str, int] = {}
    mismatches, examples = [], []
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                         "AND name NOT LIKE 'sqlite_%' ORDER BY name")]
    for table in tables:
        try:
            rows = conn.execute(f"PRAGMA foreign_key_check({quote_identifier(table)})").fetchall()
        except sqlite3.OperationalError as err:
            if "foreign key mismatch" not in str(err):
                raise
            mismatches.append(str(err))
            continue
        for child, rowid, parent, fkid in rows:
            key = f"{fold(child)} -> {fold(parent)} (constraint {fkid})"
            violations[key] = violations.get(key, 0) + 1
            if len(examples) < SHOWN:
                examples.append(f"{child} rowid {rowid} -> {parent} (constraint {fkid})")
    return {"violations": violations, "mismatches": sorted(set(mismatches)), "examples": examples}


def file_foreign_key_state(path: str, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S) -> dict:
    with read_snapshot(path, busy_timeout_s) as conn:
        return foreign_key_state(conn)


def introduced(before: dict | None, now: dict) -> dict:
    """What `now` has that `before` did not: more violating rows for a key, or a new mismatch."""
    if before is None:
        return now
    old = before.get("violations", {})
    return {"violations": {k: n - old.get(k, 0) for k, n in now["violations"].items() if n > old.get(k, 0)},
            "mismatches": [m for m in now["mismatches"] if m not in before.get("mismatches", [])],
            "examples": now["examples"]}


def describe(state: dict) -> str:
    parts = [f"{n} row(s) {key}" for key, n in sorted(state["violations"].items())]
    parts += state["mismatches"]
    return "; ".join(parts)


def is_clean(state: dict) -> bool:
    return not state["violations"] and not state["mismatches"]


def preexisting_notes(state: dict) -> list[str]:
    """The preflight's report of problems that were there before any change: never a refusal."""
    notes = []
    if state["violations"]:
        notes.append(f"rows without their parent already (PRAGMA foreign_key_check): {describe(dict(state, mismatches=[]))}"
                     "; not this change's doing, they do not stop it, and verify judges only what the change adds")
    for mismatch in state["mismatches"]:
        notes.append(f"{mismatch}: a foreign key into a column that is not unique; inserts into that child table fail "
                     "while foreign keys are enforced; not this change's doing, it does not stop it")
    return notes


def state_before(baseline_from: str | None, manifest: str | None, busy_timeout_s: float) -> tuple[dict | None, str | None]:
    """(foreign key state, where it was read) of the database before the change: baseline_from, else the
    backup beside the manifest (made just before the change); (None, None) when neither is readable."""
    source = baseline_from
    if source is None and manifest and str(manifest).endswith(MANIFEST_SUFFIX):
        source = str(manifest)[:-len(MANIFEST_SUFFIX)]
    if not source or not os.path.isfile(source):
        if baseline_from:
            raise VerificationError(f"{baseline_from}: no such file; baseline_from must name the database as it was "
                                    "before the change (its backup)")
        return None, None
    try:
        return file_foreign_key_state(source, busy_timeout_s), source
    except (sqlite3.Error, OSError) as err:
        raise VerificationError(f"{source}: the state before the change cannot be read ({err}); pass baseline_from "
                                "naming a readable copy, or omit manifest") from err
