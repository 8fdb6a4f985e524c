"""The tables of a random v1 shape (tools/shape_builder.py): their columns with types, defaults,
constraints and foreign keys, the nine tables and the extra ones, and the v2 objects a field
database may already hold (a schema_version of another shape, daily_unrealized_pnl)."""
from __future__ import annotations

import re

from riskmgr_standin import KNOWN_COLUMNS, type_affinity
from shape_draws import Draws
from shape_model import Column, Table
from shape_values import (ACCOUNTS, CORE_COLUMNS, DEPENDENT_COLUMNS, FREE_COLUMNS, ID, ID_NAMES, KEY_KIND_VALUES, KINDS,
                          NATURAL_KEYS, NINE_TABLES, ODD_TYPES, PARENT_KEY_KINDS, RULES, SMALL_ROWS, UNREALIZED_PNL_SQL,
                          split_statements, stamp)


class TableDraws(Draws):
    """Draws the tables of a shape, parents first, so that a child column can reference them."""

    # --- columns
    def new_column(self, name: str, kind: str, case_rate: float = 0.1, quote_rate: float = 0.08) -> Column:
        stored = self.recased(name, case_rate)
        return Column(name=stored, kind=kind, sql=self.quoted(stored, quote_rate),
                      decl_type=self.pick(KINDS[kind].types))

    def decorate(self, table: Table, column: Column, not_null_rate: float, odd_type_rate: float) -> None:
        """NOT NULL, DEFAULT, CHECK, COLLATE, NULLs and left-out values: all within the kind's values."""
        kind = KINDS[column.kind]
        unknown_on_log = table.logical == "enforcement_log" and column.name.lower() not in KNOWN_COLUMNS
        if not column.key and column.kind not in PARENT_KEY_KINDS and self.chance(odd_type_rate):
            column.decl_type = self.pick(ODD_TYPES)
        column.not_null = column.key or self.chance(not_null_rate)
        defaults = [d for d in kind.defaults if not (column.not_null and d == "NULL")]
        # Contract: the daemon leaves an unknown NOT NULL column out of a row in an empty table.
        needs_default = unknown_on_log and column.not_null
        if defaults and not column.key and (self.chance(0.3) or needs_default):
            column.default = self.pick(defaults)
        elif needs_default:
            column.not_null = False
        checks = list(kind.checks)
        if type_affinity(column.decl_type) in ("INTEGER", "REAL", "NUMERIC"):
            checks += kind.numeric_checks
        if checks and self.chance(0.2):
            column.checks.append(self.pick(checks).replace("{c}", column.sql))
            self.features["checks"] += 1
        if not column.key:
            if column.kind in ("text", "symbol", "tz") and self.chance(0.1):
                column.collate = "NOCASE"
            if not column.not_null and self.chance(0.3):
                column.null_rate = 0.1
            if (column.default is not None or not column.not_null) and self.chance(0.15):
                column.left_out = True
        if self.comments and self.chance(0.2):
            column.comment = self.pick(("set by the daemon", "legacy", "see runbook", "UTC", "added in 1.4"))

    def maybe_reference(self, table: Table, column: Column) -> None:
        """A FOREIGN KEY (p 0.3) to a parent whose keys hold every value the column gets."""
        if table.logical == "enforcement_log" and column.name.lower() in KNOWN_COLUMNS:
            return  # contract: the daemon's account_id 1000+ is in no parent
        key_kind = PARENT_KEY_KINDS.get(column.kind)
        parents = [(t, key) for t in self.tables.values() if t is not table
                   and t.row_count(0) >= KEY_KIND_VALUES.get(key_kind, 0)  # every value a child may get
                   for key in t.columns if key.kind == key_kind and key.enforced_unique]
        if not parents or not self.chance(0.3):
            return
        parent, key = self.pick(parents)
        column.decl_type = key.decl_type  # one affinity: the child's values compare equal to the parent's
        target = self.table_reference(parent)
        if self.chance(0.4):
            implicit = key.primary_key and self.chance(0.3)  # REFERENCES t: the parent's primary key
            column.references = (f"REFERENCES {target}" if implicit else f"REFERENCES {target}({key.sql})") + \
                self.pick(("", "", " ON DELETE CASCADE", " ON UPDATE NO ACTION"))
        else:
            table.constraints.append(f"FOREIGN KEY ({column.sql}) REFERENCES {target} ({key.sql})"
                                     + self.pick(("", " ON DELETE SET NULL", " DEFERRABLE INITIALLY DEFERRED")))
        self.features["foreign_keys"] += 1

    def core_columns(self, table: Table) -> list[Column]:
        """The reference's columns of one of the nine tables: the dependent and key ones always."""
        columns = []
        required = DEPENDENT_COLUMNS.get(table.logical, ()) + NATURAL_KEYS.get(table.logical, ())
        for name, kind in CORE_COLUMNS[table.logical]:
            if kind == ID or (name not in required and not self.chance(0.85)):
                continue
            if (table.logical, name) == ("positions", "updated_at") and self.chance(0.1):
                kind = "epoch_ms"
            if (table.logical, name) == ("orders", "state") and self.chance(0.15):
                kind = "state_code"
            column = self.new_column(name, self.kind_for(kind), 0.15 if name in required else 0.1,
                                     0.15 if name in required else 0.08)
            column.key = name in NATURAL_KEYS.get(table.logical, ())
            if not column.key:
                self.maybe_reference(table, column)
            self.decorate(table, column, not_null_rate=0.6,
                          odd_type_rate=0.0 if name in DEPENDENT_COLUMNS.get(table.logical, ()) else 0.07)
            columns.append(column)
        return columns

    def free_columns(self, table: Table, taken: list[Column]) -> list[Column]:
        """0-4 columns the reference does not have: any type, odd names, some unique."""
        columns: list[Column] = []
        for name, kind in self.rng.sample(FREE_COLUMNS, self.some((15, 30, 30, 15, 10))):
            if any(c.name.lower() == name.lower() for c in taken + columns):
                continue
            column = self.new_column(name, self.kind_for(kind), 0.15, 0.12)
            # Contract: nothing unique on enforcement_log, or the daemon's copied row would collide.
            if KINDS[column.kind].unique and table.logical != "enforcement_log" and self.chance(0.3):
                column.unique = column.key = column.enforced_unique = True
            self.maybe_reference(table, column)
            self.decorate(table, column, not_null_rate=0.3, odd_type_rate=0.07)
            columns.append(column)
        if table.logical in NINE_TABLES:
            self.features["extra_columns"] += len(columns)
        return columns

    # --- the nine tables
    def new_table(self, logical: str, case_rate: float = 0.0, quote_rate: float = 0.1) -> Table:
        name = self.recased(logical, case_rate)
        table = Table(logical=logical, name=name, sql=self.quoted(name, quote_rate))
        self.taken_names.append(name.lower())
        self.tables[logical] = table
        return table

    def build_small_table(self, logical: str) -> None:
        """A table of a realistic few rows around its natural key (account, contract, session key...)."""
        table = self.new_table(logical, 0.1, 0.1)
        table.fixed_rows, table.medium = SMALL_ROWS.get(logical, 0), logical == "daily_pnl"
        columns = self.core_columns(table)
        key = [c for c in columns if c.key]
        key_list = ", ".join(c.sql for c in key)
        style = self.pick_weighted({"pk": 40, "table_pk": 15, "surrogate": 15, "unique_index": 12, "none": 8,
                                    "without_rowid": 4})
        if style == "pk" and len(key) == 1:
            key[0].primary_key = "PRIMARY KEY"
        elif style in ("pk", "table_pk", "without_rowid"):
            table.constraints.append(f"PRIMARY KEY ({key_list})")
            table.primary_key, table.without_rowid = key, style == "without_rowid"
        elif style == "surrogate":
            columns.insert(0, Column(name="id", kind="serial", sql="id", decl_type="INTEGER", key=True,
                                     rowid_alias=True,
                                     primary_key=self.pick(("PRIMARY KEY", "PRIMARY KEY AUTOINCREMENT"))))
            table.constraints.append(f"UNIQUE ({key_list})")
        elif style == "unique_index":
            self.unique_index_keys.append((table, key))
        else:  # no key at all: nothing keeps the values unique, so nothing may rely on it
            for column in key:
                column.key = False
        for column in key:
            column.enforced_unique = len(key) == 1 and style != "none"
        columns += self.free_columns(table, columns)
        table.columns = self.keys_first(table, columns)
        self.table_checks(table)

    def build_large_table(self, logical: str) -> None:
        table = self.new_table(logical, 0.1, 0.1)
        table.large = True
        columns = self.core_columns(table)
        id_column = self.id_column(table, columns)
        columns = ([id_column] if id_column else []) + columns + self.free_columns(table, columns)
        if logical == "enforcement_log" and self.chance(0.3):
            columns.insert(self.rng.randint(len(columns) // 2, len(columns)), self.execution_time_column())
        table.columns = self.keys_first(table, columns)
        self.table_checks(table)

    def id_column(self, table: Table, columns: list[Column]) -> Column | None:
        styles = {"alias_autoinc": 40, "alias": 25, "alias_not_null": 10, "table_pk_alias": 10, "none": 15}
        if table.logical != "enforcement_log":  # contract: the log's only key is a rowid alias, or none
            styles.update({"bigint_pk": 10, "text_pk": 5, "composite": 10, "without_rowid": 2})
        style = self.pick_weighted(styles)
        if style == "none":
            return None  # a plain rowid table
        column = self.new_column(self.pick(ID_NAMES[table.logical]), "serial_text" if style == "text_pk" else "serial",
                                 0.0, 0.05)
        column.key = True
        if style.startswith("alias") or style == "table_pk_alias":
            column.decl_type, column.rowid_alias = "INTEGER", True
            if style == "table_pk_alias":
                table.constraints.append(f"PRIMARY KEY ({column.sql})")
            else:
                column.primary_key = "PRIMARY KEY AUTOINCREMENT" if style == "alias_autoinc" else "PRIMARY KEY"
                column.not_null = column.not_null_first = style == "alias_not_null"
            return column
        if column.decl_type == "INTEGER":
            column.decl_type = "BIGINT"  # INTEGER alone would make it a rowid alias again
        account = next((c for c in columns if c.name.lower() == "account_id"), None)
        if style in ("composite", "without_rowid") and account is not None and self.chance(0.6):
            account.key, account.null_rate, account.left_out = True, 0.0, False
            table.constraints.append(f"PRIMARY KEY ({account.sql}, {column.sql})")
            table.primary_key = [account, column]
        else:
            column.primary_key, column.enforced_unique = "PRIMARY KEY", True
        table.without_rowid = style == "without_rowid"
        return column

    def execution_time_column(self) -> Column:
        """v2's column, already there in a compatible form (INTEGER affinity), sometimes with values."""
        column = Column(name="execution_time_ms", kind="exec_ms", sql="execution_time_ms", fixed=True,
                        decl_type=self.pick(("INTEGER", "INT", "BIGINT")))
        if self.chance(1 / 3):
            column.not_null, column.default = True, "0"
        with_values = self.chance(0.5)
        if not with_values:
            column.left_out = True  # NULL, or the default 0
        column.added_later = self.chance(0.5)  # someone ran v2's ALTER TABLE by hand
        self.features.update({"execution_time_ms": True, "execution_time_ms_type": column.decl_type,
                              "execution_time_ms_not_null": column.not_null,
                              "execution_time_ms_values": with_values,
                              "execution_time_ms_added_later": column.added_later})
        return column

    def keys_first(self, table: Table, columns: list[Column]) -> list[Column]:
        """Keys first, then the other columns, sometimes in another order than the reference's.

        A WITHOUT ROWID table declares its primary key columns first, in key order: SQLite
        3.40.0-3.41.0 (Debian 12 has 3.40.1) reports a false "NULL value in t.c" from
        integrity_check and quick_check for a NOT NULL column declared before them.
        """
        head = [c for c in columns if c.rowid_alias or c.primary_key]
        if table.without_rowid:
            head += table.primary_key
        rest = [c for c in columns if c not in head]
        if self.chance(0.3):
            self.rng.shuffle(rest)
        return head + rest

    def table_checks(self, table: Table) -> None:
        """Table-level CHECKs across columns whose values make them hold."""
        later, earlier = {"lockouts": ("locked_until", "locked_at"), "positions": ("updated_at", "opened_at"),
                          "orders": ("updated_at", "created_at")}.get(table.logical, ("", ""))
        if later and table.has(later, earlier) and self.chance(0.3):
            late, early = table.column(later), table.column(earlier)
            if late.kind in ("timestamp", "until") and early.kind == "opened_at":
                for column in (late, early):
                    column.left_out = False  # a default (now) could be earlier than the other column
                table.constraints.append(f"CHECK ({late.sql} >= {early.sql})")
                self.features["checks"] += 1
        if table.logical == "enforcement_log" and self.chance(0.25):  # values the daemon writes too
            success, stamp_column = table.column("success"), table.column("timestamp")
            stamp_column.null_rate, stamp_column.left_out = 0.0, False
            table.constraints.append(self.pick((f"CHECK ({success.sql} IN (0, 1))",
                                                f"CHECK ({stamp_column.sql} IS NOT NULL)")))
            self.features["checks"] += 1

    def pick_weighted(self, weights: dict[str, int]) -> str:
        return self.rng.choices(list(weights), weights=list(weights.values()))[0]

    # --- extra tables
    def extra_table(self, logical: str, columns: list[Column], rows: int = 0) -> Table:
        table = self.new_table(logical, 0.0, 0.1)
        table.columns, table.fixed_rows = columns, rows
        self.features["extra_table_names"].append(table.name)
        return table

    def key_column(self, name: str, kind: str) -> Column:
        column = self.new_column(name, kind, 0.1, 0.05)
        column.key = column.enforced_unique = True
        column.not_null, column.primary_key = self.chance(0.5), "PRIMARY KEY"
        return column

    def build_parent_tables(self) -> None:
        """Extra tables other tables may reference: accounts, rules."""
        if self.chance(0.35):
            created = self.new_column("created_at", "timestamp", 0.1, 0.05)
            created.default = self.pick(("CURRENT_TIMESTAMP", "(datetime('now'))"))
            name = self.new_column("name", "text", 0.1, 0.05)
            name.not_null = True
            self.extra_table("accounts", [self.key_column("account_id", self.kind_for("account_key")), name,
                                          self.new_column("desk", "text", 0.1, 0.05), created], ACCOUNTS)
        if self.chance(0.25):
            severity = self.new_column("severity", "quantity", 0.1, 0.05)
            severity.decl_type = "INTEGER"
            severity.checks.append(f"{severity.sql} BETWEEN 1 AND 5")
            table = self.extra_table("rules", [self.key_column("rule_code", "rule_key"),
                                               self.new_column("description", "text", 0.1, 0.05), severity], len(RULES))
            table.without_rowid = self.chance(0.3)

    def build_side_tables(self) -> None:
        """Tables nothing v2 touches: settings, notes with a quoted name."""
        if self.chance(0.3):
            self.extra_table("app_settings", [self.key_column("name", "session_key"),
                                              self.new_column("value", "value_text", 0.1, 0.05)], 8)
        if self.chance(0.2):
            note_id = Column(name="note_id", kind="serial", sql="note_id", decl_type="INTEGER",
                             primary_key="PRIMARY KEY", rowid_alias=True, key=True)
            self.extra_table(self.pick(("order notes", "Order Notes", "order_notes")),
                             [note_id, self.new_column("order_ref", "serial_text", 0.1, 0.1),
                              self.new_column("note", "text", 0.1, 0.1),
                              self.new_column("written_at", "timestamp", 0.1, 0.1)], 20)

    def trigger_target(self, logical: str, columns: list[Column]) -> Table:
        """A table only triggers write: no constraint a trigger's row could break."""
        table = self.extra_table(logical, columns)
        table.trigger_filled = True
        for column in table.columns:
            column.fixed = True
        return table

    # --- v2 objects already there
    def build_version_table(self) -> None:
        """A schema_version of another shape than v2's, holding version 1."""
        kind = self.pick(("two_columns", "three_columns", "extra_columns", "with_success", "seed_like"))
        version_name = self.recased("version", 0.15)
        version = Column(name=version_name, kind="count", sql=self.quoted(version_name, 0.1), decl_type="INTEGER")
        success_name = self.recased("success", 0.2)
        success = Column(name=success_name, kind="bool", sql=self.quoted(success_name, 0.1), not_null=True,
                         default="1", decl_type=self.pick(("BOOLEAN", "INTEGER")))
        applied, applied_text = stamp(-86400 * 90), Column(name="applied_at", kind="timestamp", sql="applied_at",
                                                           decl_type="TEXT", not_null=kind != "two_columns")
        description = Column(name="description", kind="text", sql="description", decl_type="TEXT",
                             not_null=kind == "seed_like")
        applied_by = Column(name="applied_by", kind="text", sql="applied_by", decl_type="TEXT")
        if kind == "two_columns":
            columns, row = [version, applied_text], (1, applied)
        elif kind == "three_columns":
            version.primary_key = "PRIMARY KEY"
            columns, row = [version, applied_text, description], (1, applied, "baseline")
        elif kind == "extra_columns":
            version.not_null = version.unique = True
            applied_text.decl_type, applied_text.default, applied_text.not_null = "DATETIME", "CURRENT_TIMESTAMP", False
            surrogate = Column(name="id", kind="serial", sql="id", decl_type="INTEGER", rowid_alias=True,
                               primary_key="PRIMARY KEY AUTOINCREMENT")
            checksum = Column(name="checksum", kind="text", sql="checksum", decl_type="VARCHAR(64)")
            columns, row = [surrogate, version, applied_text, applied_by, checksum], (1, applied, "installer", "0" * 64)
        elif kind == "with_success":
            version.not_null = True
            columns, row = [version, applied_text, success], (1, applied, 1)
        else:  # seed_like: close to v2's, but not it
            version.primary_key = "PRIMARY KEY"
            success.sql, success.name = "success", "success"
            columns = [version, applied_text, description, success, applied_by]
            row = (1, applied, "Baseline schema - 9 tables", 1, "dba")
        table = self.new_table("schema_version", 0.15, 0.15)
        table.columns, table.fixed_values = columns, [row]
        for column in columns:
            column.fixed = True
        self.features["version_table"] = kind
        self.features["version_table_has_success"] = success in columns

    def unrealized_pnl_statements(self) -> list[str]:
        """daily_unrealized_pnl exactly as v2 creates it (its indexes p 0.7), with a few rows."""
        statements = split_statements(UNREALIZED_PNL_SQL.read_text())
        if not self.chance(0.7):
            statements = [s for s in statements if not s.upper().startswith("CREATE INDEX")]
        table = self.new_table("daily_unrealized_pnl")
        table.sql, table.from_file, table.fixed_rows = table.name, True, ACCOUNTS * 2
        table.columns = [Column(name="account_id", kind="account_cycle", sql="account_id", key=True),
                         Column(name="timestamp", kind="stamp_cycle", sql="timestamp", key=True),
                         Column(name="unrealized_pnl", kind="pnl", sql="unrealized_pnl"),
                         Column(name="positions_count", kind="quantity", sql="positions_count"),
                         Column(name="total_exposure", kind="price", sql="total_exposure")]
        for column in table.columns:
            column.fixed = True
        self.features["daily_unrealized_pnl"] = True
        self.features["daily_unrealized_pnl_indexes"] = [re.match(r"CREATE INDEX (\w+)", s).group(1)
                                                         for s in statements if s.startswith("CREATE INDEX")]
        return statements
