"""The migration catalog: the real files/migrations load as the engine needs them, and a file
that would hide transaction control or data changes inside a migration is refused by name."""
from __future__ import annotations

import hashlib
import shutil
from contextlib import closing
from pathlib import Path

import pytest
from sqlite_catalog import build_reference, load_catalog, split_statements
from sqlite_common import MigrationError

MIGRATIONS = Path(__file__).resolve().parents[2] / "files" / "migrations"
V1_TABLES = {"lockouts", "daily_pnl", "contract_cache", "trade_history", "session_state", "positions", "orders",
             "enforcement_log", "reset_schedule"}
V2_OBJECTS = {
    ("table", "schema_migration_objects"), ("table", "schema_version"), ("index", "idx_schema_version_applied"), ("table", "schema_migration_files"),
    ("column", "enforcement_log.execution_time_ms"), ("index", "idx_enforcement_log_success"),
    ("index", "idx_positions_updated"), ("index", "idx_orders_state_account"), ("table", "daily_unrealized_pnl"),
    ("index", "idx_daily_unrealized_pnl_date"), ("index", "idx_daily_unrealized_pnl_account_date"),
}


@pytest.fixture
def catalog_copy(tmp_path) -> Path:
    """A private copy of the real migrations, to add one bad file to."""
    return Path(shutil.copytree(MIGRATIONS, tmp_path / "migrations"))


# --- the real files -------------------------------------------------------------------------------

def test_real_catalog_has_a_flagged_baseline_and_v2():
    catalog = load_catalog(MIGRATIONS)
    assert sorted(catalog.files) == [1, 2]
    assert (catalog.baseline_version, catalog.newest_version) == (1, 2)
    [baseline] = catalog.files[1]
    assert baseline.baseline and baseline.name == "000_baseline.sql"
    assert {s.obj.name for s in baseline.statements if s.obj.kind == "table"} == V1_TABLES
    assert not any(f.baseline for f in catalog.files[2])
    assert [f.name for f in catalog.files[2]] == ["005_schema_migration_objects.sql", "010_schema_version.sql", "020_enforcement_log_execution_time.sql",
                                                   "030_analytics_indexes.sql", "040_daily_unrealized_pnl.sql"]
    assert {(s.obj.kind, s.obj.name) for f in catalog.files[2] for s in f.statements} == V2_OBJECTS


def test_real_files_carry_their_checksum_ledger_name_and_description():
    catalog = load_catalog(MIGRATIONS)
    for migration in catalog.all_files():
        assert migration.sha256 == hashlib.sha256(migration.path.read_bytes()).hexdigest()
        assert migration.ledger_name == f"v{migration.version}/{migration.path.name}"
        assert catalog.find(migration.ledger_name) is migration
        assert migration.description and migration.description != migration.path.stem
    assert catalog.find("v2/999_not_there.sql") is None


def test_only_040_is_optional_and_only_when_the_option_is_on():
    catalog = load_catalog(MIGRATIONS)
    options = {f.name: f.option for f in catalog.all_files()}
    assert options.pop("040_daily_unrealized_pnl.sql") == "track_unrealized_pnl"
    assert set(options.values()) == {None}
    default = [f.name for f in catalog.files_for(2, {})]
    assert "040_daily_unrealized_pnl.sql" not in default and len(default) == 4
    assert catalog.files_for(2, {"track_unrealized_pnl": True})[-1].name == "040_daily_unrealized_pnl.sql"


def test_every_v2_index_names_the_query_it_serves():
    catalog = load_catalog(MIGRATIONS)
    indexes = [s for f in catalog.files[2] for s in f.statements if s.obj.kind == "index"]
    assert len(indexes) == 6
    for statement in indexes:
        assert statement.used_by and statement.used_by.upper().startswith("SELECT"), statement.obj
        assert statement.obj.table in statement.used_by  # the query reads the indexed table
    # used-by belongs to the next statement only, never to a table or column
    assert all(s.used_by is None for f in catalog.files[2] for s in f.statements if s.obj.kind != "index")


def test_reference_database_is_the_real_schema_of_each_version():
    catalog = load_catalog(MIGRATIONS)
    with closing(build_reference(catalog, 1, {"track_unrealized_pnl": True})) as v1:
        tables = {r[0] for r in v1.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                           "AND name NOT LIKE 'sqlite_%'")}
        assert tables == V1_TABLES
    with closing(build_reference(catalog, 2, {})) as v2:
        columns = [r[1] for r in v2.execute("PRAGMA table_info(enforcement_log)")]
        assert columns[-1] == "execution_time_ms"
        assert v2.execute("SELECT 1 FROM sqlite_master WHERE name = 'daily_unrealized_pnl'").fetchone() is None


# --- statement splitting --------------------------------------------------------------------------

def test_semicolons_in_strings_and_comments_do_not_split_statements():
    text = (
        "-- header; with a semicolon\n"
        "CREATE TABLE notes (\n"
        "    body TEXT DEFAULT 'a;b',   -- inline; comment\n"
        "    tail TEXT DEFAULT 'first line;\n"
        "second line'\n"
        ");\n"
        "\n"
        "/* block; comment */ CREATE INDEX idx_notes_body ON notes(body);\n"
        "CREATE TABLE t2 (x TEXT); -- trailing; comment\n"
    )
    statements = [sql for sql, _ in split_statements(text)]
    assert len(statements) == 3
    assert statements[0].startswith("CREATE TABLE notes") and "'first line;\nsecond line'" in statements[0]
    assert statements[1] == "/* block; comment */ CREATE INDEX idx_notes_body ON notes(body)"
    assert statements[2] == "CREATE TABLE t2 (x TEXT)"


def test_used_by_annotation_attaches_to_the_next_statement():
    text = ("-- used-by: SELECT a FROM t WHERE a = ';'\n"
            "CREATE INDEX i1 ON t(a);\n"
            "CREATE INDEX i2 ON t(b);\n")
    assert split_statements(text) == [("CREATE INDEX i1 ON t(a)", "SELECT a FROM t WHERE a = ';'"),
                                      ("CREATE INDEX i2 ON t(b)", None)]


def test_unterminated_statement_is_an_error():
    with pytest.raises(ValueError, match="unterminated statement"):
        split_statements("CREATE TABLE t (a TEXT DEFAULT 'x;')\n")


# --- refusals, naming the file --------------------------------------------------------------------

@pytest.mark.parametrize("sql, reason", [
    ("BEGIN TRANSACTION;", "transaction control"),
    ("COMMIT;", "transaction control"),
    ("END;", "transaction control"),
    ("SAVEPOINT s1;", "transaction control"),
    ("PRAGMA journal_mode = DELETE;", "pragmas"),
    ("VACUUM;", "transaction control"),
    ("INSERT INTO schema_version (version, applied_at, description) VALUES (3, 'now', 'x');",
     "mark the file `-- riskmgr: irreversible`"),
    ("DROP TABLE orders;", "mark the file `-- riskmgr: irreversible`"),
    ("DELETE FROM orders;", "mark the file `-- riskmgr: irreversible`"),
    ("ALTER TABLE orders RENAME TO orders_old;", "mark the file `-- riskmgr: irreversible`"),
    ("CREATE INDEX idx_x ON orders(state); DROP TABLE orders;", "one statement per line"),
])
def test_file_with_forbidden_statement_is_refused_naming_the_file(catalog_copy, sql, reason):
    bad = catalog_copy / "v2" / "050_bad.sql"
    bad.write_text(f"-- description: bad\nCREATE TABLE fine (a TEXT);\n{sql}\n")
    with pytest.raises(MigrationError) as caught:
        load_catalog(catalog_copy)
    message = str(caught.value)
    assert message.startswith(f"{bad}: ")
    assert reason in message
    assert "fix the migration file" in message


@pytest.mark.parametrize("content", [b"", b"-- description: only comments\n-- nothing else\n"])
def test_file_without_statement_is_refused(catalog_copy, content):
    empty = catalog_copy / "v2" / "050_empty.sql"
    empty.write_bytes(content)
    with pytest.raises(MigrationError, match=f"^{empty}: no SQL statement"):
        load_catalog(catalog_copy)


def test_non_utf8_file_is_refused(catalog_copy):
    bad = catalog_copy / "v2" / "050_latin1.sql"
    bad.write_bytes("CREATE TABLE caf\xe9 (a TEXT);\n".encode("latin-1"))
    with pytest.raises(MigrationError, match=f"^{bad}: not UTF-8"):
        load_catalog(catalog_copy)


def test_missing_directory_is_refused(tmp_path):
    missing = tmp_path / "no-migrations"
    with pytest.raises(MigrationError, match=f"^{missing}: migrations directory not found; point migrations_dir"):
        load_catalog(missing)
    assert not missing.exists()


def test_directory_without_baseline_is_refused(catalog_copy):
    shutil.rmtree(catalog_copy / "v1")
    with pytest.raises(MigrationError, match=f"^{catalog_copy}: expected a baseline v1/"):
        load_catalog(catalog_copy)


def test_baseline_file_must_be_flagged(catalog_copy):
    baseline = catalog_copy / "v1" / "000_baseline.sql"
    baseline.write_text(baseline.read_text().replace("-- riskmgr: baseline\n", ""))
    with pytest.raises(MigrationError, match="expected a baseline v1/"):
        load_catalog(catalog_copy)
