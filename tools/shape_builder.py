"""The random v1 shape builder: ShapeBuilder(seed).build() draws the tables (shape_tables.py),
then the indexes, views and triggers around them, and the DDL of the whole shape
(tools/v1_shapes.py documents what is drawn, with which probability)."""
from __future__ import annotations

import re

from riskmgr_standin import quote_identifier
from shape_draws import indexes_in, is_constant_default
from shape_model import Column, RandomShape, Table
from shape_tables import TableDraws
from shape_values import ANALYTICS_INDEXES_SQL, BASELINE_SQL, KINDS, LARGE_TABLES, NINE_TABLES


class ShapeBuilder(TableDraws):
    """Draws one random shape from a seed; every choice comes from self.rng, in a fixed order."""

    # --- indexes
    def index_sql(self, name: str, table: Table, keys: list[str], unique: bool = False, where: str = "") -> str:
        head = self.keyword("CREATE UNIQUE INDEX" if unique else "CREATE INDEX")
        written = quote_identifier(name) if self.chance(0.1) else name
        sql = f"{head} {self.if_not_exists()}{written} ON {self.table_reference(table)}({', '.join(keys)})"
        return sql + (f" WHERE {where}" if where else "")

    def reference_index_statements(self) -> list[str]:
        """v1's indexes (p 0.7 each, when their columns exist); p 0.06 another definition under the name."""
        statements = []
        for name, logical, keys in indexes_in(BASELINE_SQL):
            table = self.tables[logical]
            if not table.has(*keys) or not self.chance(0.7):
                continue
            columns = [table.column(key).sql for key in keys]
            if self.chance(0.015):
                others = [c.sql for c in table.columns if c.sql not in columns and not c.rowid_alias]
                columns = columns + [self.pick(others)] if others else [columns[0] + " DESC"]
                self.features["reference_index_variants"].append(name)
            statements.append(self.index_sql(name, table, columns))
        return statements

    def unique_index_statements(self) -> list[str]:
        statements = []
        for table, key in self.unique_index_keys:
            name = self.take_name(f"ux_{table.logical}_{'_'.join(c.name.lower() for c in key)}")
            statements.append(self.index_sql(name, table, [c.sql for c in key], unique=True))
        self.features["extra_indexes"] += len(statements)
        return statements

    def extra_index_statements(self) -> list[str]:
        statements = []
        candidates = [t for t in self.tables.values()
                      if not (t.trigger_filled or t.fixed_values or t.from_file)]
        for _ in range(self.some((10, 25, 30, 20, 15))):
            table = self.pick(candidates)
            columns = [c for c in table.columns if not c.rowid_alias]
            if columns:
                statements.append(self.extra_index(table, columns))
        if self.chance(0.15):  # the v2 index's job, already done by an index of another name
            log = self.tables["enforcement_log"]
            statements.append(self.index_sql(self.take_name("ix_enforcement_success_time"), log,
                                             [log.column("success").sql, log.column("timestamp").sql]))
        self.features["extra_indexes"] += len(statements)
        return statements

    def extra_index(self, table: Table, columns: list[Column]) -> str:
        style = self.pick_weighted({"plain": 30, "multi": 20, "unique": 15, "partial": 15, "expression": 20})
        unique_columns = [c for c in columns if KINDS[c.kind].unique and c.key]
        if style == "unique" and (table.logical == "enforcement_log" or not unique_columns):
            style = "plain"  # contract: nothing unique on enforcement_log; elsewhere only unique values
        first = self.pick(unique_columns if style == "unique" else columns)
        keys = [first.sql + self.pick(("", "", " DESC", " ASC"))]
        where = ""
        if style in ("multi", "unique") and len(columns) > 1 and self.chance(0.7):
            second = self.pick([c for c in columns if c is not first])
            keys.append(second.sql + self.pick(("", " DESC")))
        elif style == "partial":
            where = self.partial_condition(table, first)
        elif style == "expression":
            keys = [self.expression_key(first)]
        if first.kind in ("text", "symbol", "tz") and style in ("plain", "multi") and self.chance(0.2):
            keys[0] = f"{first.sql} COLLATE NOCASE"
        column_name = re.sub(r"\W", "_", first.name.lower())
        base = self.pick((f"idx_{table.logical}_{column_name}", f"IX_{table.name}_{column_name}".replace(" ", "_"),
                          f"{table.logical}_{style}_{column_name}"))
        return self.index_sql(self.take_name(base.replace(" ", "_")), table, keys, unique=style == "unique",
                              where=where)

    def partial_condition(self, table: Table, column: Column) -> str:
        state, success = table.column("state"), table.column("success")
        if state is not None and state.kind == "state" and self.chance(0.6):
            return f"{state.sql} IN ('PENDING', 'WORKING')"
        if success is not None and self.chance(0.6):
            return f"{success.sql} = 0"
        return f"{column.sql} IS NOT NULL"

    def expression_key(self, column: Column) -> str:
        if column.kind in ("timestamp", "opened_at", "until", "date", "day_cycle", "stamp_cycle"):
            return self.pick((f"date({column.sql})", f"substr({column.sql}, 1, 10)"))
        if column.kind in ("signed_qty", "pnl", "price", "quantity", "count"):
            return f"abs({column.sql})"
        return self.pick((f"lower({column.sql})", f"length({column.sql})", f"coalesce({column.sql}, '')"))

    def v2_index_statements(self) -> list[str]:
        """p 0.25: some of v2's analytics indexes, under their exact names and key columns."""
        if not self.chance(0.25):
            return []
        statements, names = [], []
        indexes = indexes_in(ANALYTICS_INDEXES_SQL)
        for name, logical, keys in self.rng.sample(indexes, self.rng.randint(1, len(indexes))):
            table = self.tables[logical]
            columns = [table.column(key).sql + self.pick(("", " ASC", " DESC")) for key in keys]
            statements.append(self.index_sql(name, table, columns))
            names.append(name)
        self.features["v2_indexes"] = sorted(names)
        return statements

    # --- views and triggers
    def view_statements(self) -> list[str]:
        log = self.tables["enforcement_log"]
        success, when = log.column("success").sql, log.column("timestamp").sql
        account = log.column("account_id")
        shown = [c.sql for c in log.columns if c.name.lower() in ("id", "log_id", "account_id", "rule_id")] + [when]
        log_views = [
            ("v_enforcement_failures", f"SELECT {', '.join(shown)} FROM {{log}} WHERE {success} = 0"),
            ("enforcement_summary", f"SELECT {success} AS ok, COUNT(*) AS n, MAX({when}) AS last_at "
                                    f"FROM {{log}} GROUP BY {success}"),
            ("Recent Enforcement", f"SELECT * FROM {{log}} ORDER BY {when} DESC LIMIT 100"),
        ]
        if account is not None:
            log_views.append(("enforcement_by_account(account, attempts)",
                              f"SELECT {account.sql}, COUNT(*) FROM {{log}} GROUP BY {account.sql}"))
        statements = [self.view_sql(name, body.format(log=self.table_reference(log)))
                      for name, body in self.sample(log_views, self.some((30, 45, 25)))]
        self.features["enforcement_log_views"] = len(statements)
        statements += [self.view_sql(name, body) for name, body in self.sample(self.other_views(),
                                                                               self.some((40, 40, 20)))]
        self.features["views"] = len(statements)
        return statements

    def other_views(self) -> list[tuple[str, str]]:
        orders, positions, pnl = self.tables["orders"], self.tables["positions"], self.tables["daily_pnl"]
        state = orders.column("state")
        open_states = "('PENDING', 'WORKING')" if state.kind == "state" else "(0, 1)"
        views = [("open_orders", f"SELECT * FROM {self.table_reference(orders)} WHERE {state.sql} IN {open_states}")]
        account = positions.column("account_id")
        if account is not None:
            views.append(("position_exposure", f"SELECT {account.sql}, COUNT(*) AS open_positions, "
                                               f"MAX({positions.column('updated_at').sql}) AS last_update "
                                               f"FROM {self.table_reference(positions)} GROUP BY {account.sql}"))
        if pnl.has("realized_pnl"):
            views.append(("daily_totals", f"SELECT p.{pnl.column('date').sql} AS day, "
                                          f"SUM(p.{pnl.column('realized_pnl').sql}) AS total "
                                          f"FROM {self.table_reference(pnl)} AS p GROUP BY 1"))
        return views

    def view_sql(self, name_and_columns: str, body: str) -> str:
        name, _, columns = name_and_columns.partition("(")
        self.taken_names.append(name.lower())
        written = self.quoted(name, 0.1) + (f"({columns}" if columns else "")
        return f"{self.keyword('CREATE VIEW')} {self.if_not_exists()}{written} AS {body}"

    def trigger_statements(self) -> list[str]:
        """Triggers on enforcement_log that no row of fill() or of the daemon can make fail."""
        log = self.tables["enforcement_log"]
        log_name = self.table_reference(log)
        success, when = log.column("success"), log.column("timestamp")
        statements, kinds = [], []
        audit = None
        if self.chance(0.45):
            audit = self.trigger_target(self.pick(("enforcement_audit", "enforcement_log_audit", "Audit Trail")), [
                Column(name="audit_id", kind="serial", sql="audit_id", decl_type="INTEGER", rowid_alias=True,
                       primary_key=self.pick(("PRIMARY KEY", "PRIMARY KEY AUTOINCREMENT"))),
                Column(name="log_rowid", kind="serial", sql="log_rowid", decl_type="INTEGER"),
                Column(name="event", kind="text", sql="event", decl_type="TEXT"),
                Column(name="success", kind="bool", sql="success", decl_type=success.decl_type),
                Column(name="noted_at", kind="timestamp", sql="noted_at", decl_type="TEXT",
                       default="CURRENT_TIMESTAMP")])
        target = audit.sql if audit is not None else ""
        # (needs the audit table, chance, kind, name, event, body), drawn in this order so a seed keeps its shape
        drawn = (
            (True, 0.9, "after_insert_audit", "trg_enforcement_log_audit", f"AFTER INSERT ON {log_name} FOR EACH ROW",
             f"INSERT INTO {target} (log_rowid, event, success) VALUES (NEW.rowid, 'insert', NEW.{success.sql});"),
            (False, 0.25, "before_insert_raise", "trg_enforcement_log_validate",
             f"BEFORE INSERT ON {log_name} FOR EACH ROW WHEN NEW.{when.sql} IS NULL "
             f"OR CAST(NEW.{success.sql} AS INTEGER) NOT IN (0, 1)",
             "SELECT RAISE(ABORT, 'enforcement_log: timestamp required, success must be 0 or 1');"),
            (True, 0.3, "after_update_audit", "trg_enforcement_log_update", f"AFTER UPDATE OF {success.sql} ON {log_name}",
             f"INSERT INTO {target} (log_rowid, event, success) VALUES (OLD.rowid, 'update', NEW.{success.sql});"),
            (False, 0.15, "before_delete_raise", "trg_enforcement_log_append_only", f"BEFORE DELETE ON {log_name}",
             "SELECT RAISE(ABORT, 'enforcement_log is append-only');"),
        )
        for needs_audit, chance, kind, name, event, body in drawn:
            if (needs_audit and audit is None) or not self.chance(chance):
                continue
            if kind == "before_insert_raise":  # every row must then have a timestamp
                when.null_rate, when.left_out = 0.0, False
            statements.append(self.trigger_sql(name, event, body))
            kinds.append(kind)
        self.features["enforcement_log_triggers"] = kinds
        if self.chance(0.2):
            statements.append(self.order_history_trigger())
        self.features["triggers"] = len(statements)
        return statements

    def order_history_trigger(self) -> str:
        orders = self.tables["orders"]
        state = orders.column("state")
        history = self.trigger_target("order_state_history", [
            Column(name="changed_at", kind="timestamp", sql="changed_at", decl_type="TEXT",
                   default="CURRENT_TIMESTAMP"),
            Column(name="old_state", kind="state", sql="old_state", decl_type=state.decl_type),
            Column(name="new_state", kind="state", sql="new_state", decl_type=state.decl_type)])
        return self.trigger_sql(
            "trg_orders_state_history", f"AFTER UPDATE OF {state.sql} ON {self.table_reference(orders)}",
            f"INSERT INTO {self.table_reference(history)} (old_state, new_state) "
            f"VALUES (OLD.{state.sql}, NEW.{state.sql});")

    def trigger_sql(self, name: str, event: str, body: str) -> str:
        self.taken_names.append(name.lower())
        return f"{self.keyword('CREATE TRIGGER')} {self.if_not_exists()}{name} {event}\nBEGIN\n    {body}\nEND"

    # --- the DDL
    def create_table_sql(self, table: Table) -> str:
        columns = [c for c in table.columns if not c.added_later]
        definitions = [c.definition(self.lower_keywords) for c in columns] + table.constraints
        comments = [c.comment for c in columns] + [""] * len(table.constraints)
        head = f"{self.keyword('CREATE TABLE')} {self.if_not_exists()}{table.sql}"
        tail = " WITHOUT ROWID" if table.without_rowid else ""
        if self.one_line_tables:
            parts = [d + (f" /* {c} */" if c else "") for d, c in zip(definitions, comments)]
            return f"{head} ({', '.join(parts)}){tail}"
        lines = [f"    {d}{',' if n < len(definitions) - 1 else ''}" + (f" -- {c}" if c else "")
                 for n, (d, c) in enumerate(zip(definitions, comments))]
        return f"{head} (\n" + "\n".join(lines) + f"\n){tail}"

    def add_column_statements(self) -> list[str]:
        """p 0.3: 1-3 columns reach their table through ALTER TABLE ADD COLUMN, as a schema's history leaves
        them (SQLite then appends them to the stored CREATE TABLE text)."""
        if self.chance(0.3):
            candidates = [(t, c) for t in self.tables.values() for c in t.columns
                          if not (c.fixed or c.key or c.primary_key or c.unique or c.references or c.added_later)
                          and is_constant_default(c.default) and not (c.not_null and c.default in (None, "NULL"))
                          and not any(c.sql in constraint for constraint in t.constraints)]
            for _table, column in self.sample(candidates, self.rng.randint(1, 3)):
                column.added_later = True
        statements = []
        for table in self.tables.values():
            for column in table.columns:
                if column.added_later:
                    statements.append(f"ALTER TABLE {self.table_reference(table)} ADD COLUMN "
                                      f"{column.definition(self.lower_keywords)}")
                    self.features["added_columns"].append(f"{table.name}.{column.name}")
        return statements

    def build(self) -> RandomShape:
        # Parents first, so that a child column can reference them.
        self.build_parent_tables()
        for logical in ("reset_schedule", "contract_cache", "session_state", "lockouts", "daily_pnl"):
            self.build_small_table(logical)
        for logical in LARGE_TABLES:
            self.build_large_table(logical)
        self.build_side_tables()
        if self.chance(0.25):
            self.build_version_table()
        from_file = self.unrealized_pnl_statements() if self.chance(0.15) else []
        triggers = self.trigger_statements()  # may add the tables they write to
        added_columns = self.add_column_statements()
        modelled = [t for t in self.tables.values() if not t.from_file]
        creation_order = self.rng.sample(modelled, len(modelled))
        indexes = (self.reference_index_statements() + self.unique_index_statements()
                   + self.extra_index_statements() + self.v2_index_statements())
        self.rng.shuffle(indexes)
        statements = ([self.create_table_sql(t) for t in creation_order] + from_file + added_columns + indexes
                      + self.view_statements() + triggers)
        if self.chance(0.15):
            self.features["user_version"] = self.rng.randint(1, 7)
            statements.append(f"PRAGMA user_version = {self.features['user_version']}")
        self.features.update({
            "analyzed": self.chance(0.15),
            "account_style": "text" if self.account_style == "account_text" else "integer",
            "renamed_tables": [t.name for t in modelled if t.logical in NINE_TABLES and t.name != t.logical],
            "quoted_tables": [t.name for t in modelled if t.sql != t.name],
            "without_rowid_tables": [t.name for t in modelled if t.without_rowid],
            "extra_tables": len(self.features["extra_table_names"]),
            "lower_case_keywords": self.lower_keywords,
            "columns": {t.logical: [c.name.lower() for c in t.columns if not c.added_later]
                        + [c.name.lower() for c in t.columns if c.added_later]  # ALTER appends them
                        for t in modelled if t.logical in NINE_TABLES},
        })
        fill_order = [t for t in self.tables.values() if not t.trigger_filled]
        return RandomShape(self.spec, statements, self.features, fill_order, self.features["analyzed"])
