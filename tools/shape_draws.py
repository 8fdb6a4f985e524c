"""The random draws a ShapeBuilder makes (tools/shape_builder.py): one rng per seed, every choice
from it in a fixed order, and the names the shape's objects take."""
from __future__ import annotations

import random
import re
from pathlib import Path

from riskmgr_standin import quote_identifier
from shape_model import Column, Table
from shape_values import ANALYTICS_INDEXES_SQL, BASELINE_SQL, RESERVED, UNREALIZED_PNL_SQL

def indexes_in(path: Path) -> list[tuple[str, str, list[str]]]:
    """(name, table, key columns without ASC/DESC) of each CREATE INDEX of a migration file."""
    return [(name, table, [c.split()[0] for c in columns.split(",")]) for name, table, columns in
            re.findall(r"CREATE INDEX (\w+) ON (\w+)\(([^)]*)\)", path.read_text())]


def is_bare_identifier(name: str) -> bool:
    return re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) is not None and name.upper() not in RESERVED


def is_constant_default(default: str | None) -> bool:
    """What ALTER TABLE ADD COLUMN accepts as a default: a literal, no expression."""
    return default is None or re.fullmatch(r"[-+]?[0-9.]+|'[^']*'|x'[0-9a-fA-F]*'|NULL", default) is not None


def default_features() -> dict:
    """Every key of Shape.features, as a shape without any of it has them."""
    return {
        "execution_time_ms": False, "execution_time_ms_type": None, "execution_time_ms_not_null": False,
        "execution_time_ms_values": False, "execution_time_ms_added_later": False,
        "v2_indexes": [], "version_table": None, "version_table_has_success": False,
        "daily_unrealized_pnl": False, "daily_unrealized_pnl_indexes": [],
        "account_style": "integer", "renamed_tables": [], "quoted_tables": [], "without_rowid_tables": [],
        "extra_tables": 0, "extra_table_names": [], "extra_columns": 0, "added_columns": [],
        "foreign_keys": 0, "checks": 0, "extra_indexes": 0, "reference_index_variants": [],
        "views": 0, "enforcement_log_views": 0, "triggers": 0, "enforcement_log_triggers": [],
        "user_version": 0, "analyzed": False, "lower_case_keywords": False,
        "columns": {},  # each of the nine tables: its column names, lower case, in table order
    }


class Draws:
    """The random state of one shape being drawn from a seed, and the small draws every part makes."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.spec = f"random:{seed}"
        self.features = default_features()
        self.tables: dict[str, Table] = {}
        # Tables, indexes, views and triggers share one namespace; v1's and v2's index names are
        # taken from the start, so that no extra index gets one of them by chance.
        self.taken_names = [name.lower() for name, _, _ in
                            indexes_in(BASELINE_SQL) + indexes_in(ANALYTICS_INDEXES_SQL)
                            + indexes_in(UNREALIZED_PNL_SQL)] + ["idx_schema_version_applied"]
        self.unique_index_keys: list[tuple[Table, list[Column]]] = []
        self.account_style = "account_text" if self.chance(0.15) else "account"
        self.lower_keywords = self.chance(0.2)
        self.one_line_tables = self.chance(0.25)
        self.comments = self.chance(0.15)

    # --- small helpers
    def chance(self, probability: float) -> bool:
        return self.rng.random() < probability

    def pick(self, choices):
        return self.rng.choice(list(choices))

    def sample(self, population: list, count: int) -> list:
        return self.rng.sample(population, min(count, len(population)))

    def some(self, weights: tuple[int, ...]) -> int:
        """0, 1, 2... with these weights."""
        return self.rng.choices(range(len(weights)), weights=weights)[0]

    def keyword(self, text: str) -> str:
        return text.lower() if self.lower_keywords else text

    def if_not_exists(self) -> str:
        return "IF NOT EXISTS " if self.chance(0.1) else ""

    def quoted(self, name: str, quote_rate: float) -> str:
        """How the DDL writes a name: quoted when it must be, sometimes when it need not be."""
        if is_bare_identifier(name) and not self.chance(quote_rate):
            return name
        style = self.pick('"""[`')
        return {"[": f"[{name}]", "`": f"`{name}`"}.get(style, quote_identifier(name))

    def recased(self, name: str, rate: float) -> str:
        if not is_bare_identifier(name) or not self.chance(rate):
            return name
        return self.pick((name.title(), name.upper(), name[0].upper() + name[1:]))

    def take_name(self, base: str) -> str:
        """`base`, or base_2, base_3... whichever no other object has."""
        name, number = base, 2
        while name.lower() in self.taken_names:
            name, number = f"{base}_{number}", number + 1
        self.taken_names.append(name.lower())
        return name

    def table_reference(self, table: Table) -> str:
        """How another statement names a table: as created, or plain lower case (SQLite does not mind)."""
        return table.logical if is_bare_identifier(table.logical) and self.chance(0.3) else table.sql

    def kind_for(self, kind: str) -> str:
        if self.account_style == "account_text":
            return {"account": "account_text", "account_key": "account_text_key",
                    "account_cycle": "account_text_cycle"}.get(kind, kind)
        return kind
