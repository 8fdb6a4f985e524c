"""testinfra checks after migrate_v2.yml (converge) and its rerun (idempotence) on a fleet whose
v1 databases differ (molecule.yml: local_fleet.py --shape mixed:70).

The witness is the sqlite3 CLI, not the project's Python, and the evidence is the v1 backup the
run took with the daemon stopped: its bytes are the ones its manifest describes, and the live
database, read while the daemon keeps writing, must hold every row and every object it had.
"""
import json
import posixpath

import pytest

NEW_INDEXES = {"idx_schema_version_applied", "idx_enforcement_log_success", "idx_positions_updated",
               "idx_orders_state_account"}
VERSION_LINE = "Database schema version:"
# What makes each host's v1 database unlike the others (tools/v1_shapes.py, random:72 and random:73):
# whether enforcement_log had execution_time_ms, the columns of its schema_version (None: no such
# table), which of v2's indexes it had. A new seed in molecule.yml must keep these, or change them here.
V1_SHAPES = {
    "local-1": (False, None, set()),
    "local-2": (True, None, set()),
    "local-3": (False, ["VERSION", "applied_at", "description"], {"idx_enforcement_log_success"}),
}
# The only v1 tables whose definition v2 changes: it adds columns to them, never takes one away.
TABLES_V2_EXTENDS = {"enforcement_log", "schema_version"}
USER_OBJECTS = "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"


def quote_identifier(name):
    return '"' + name.replace('"', '""') + '"'


def quote_text(text):
    return "'" + text.replace("'", "''") + "'"


def query(host, db, sql, attach=None):
    """Rows (dicts) of one query by the sqlite3 CLI; `attach` is opened beside db as schema v1."""
    options = ["-cmd", f"ATTACH {quote_text(attach)} AS v1"] if attach else []
    out = host.check_output("sqlite3 -bail -json " + " ".join(["%s"] * (len(options) + 2)), *options, db, sql)
    return json.loads(out) if out.strip() else []


def columns(host, db, table):
    """(name, declared type, not null, default, key position) of each column, in table order."""
    rows = query(host, db, f"SELECT name, type, \"notnull\", dflt_value, pk FROM pragma_table_info({quote_text(table)})")
    return [tuple(row.values()) for row in rows]


@pytest.fixture(scope="module")
def migrated(host):
    """The host's live database and the one v1 backup the run took, with its manifest."""
    hostvars = host.ansible.get_variables()
    backup_dir = hostvars["riskmgr_backup_dir"]
    names = host.file(backup_dir).listdir()
    backups = sorted(posixpath.join(backup_dir, name) for name in names if name.endswith(".db"))
    manifests = sorted(posixpath.join(backup_dir, name) for name in names if name.endswith(".manifest.json"))
    # One migration, one backup: the idempotence run must not have taken another.
    assert len(backups) == 1 and manifests == [f"{backups[0]}.manifest.json"], (backups, manifests)
    return {"vars": hostvars, "name": hostvars["inventory_hostname"], "db": hostvars["riskmgr_db_path"],
            "backup_dir": backup_dir, "backup": backups[0],
            "manifest": json.loads(host.file(manifests[0]).content_string)}


def test_the_v1_database_had_the_shape_this_scenario_is_about(host, migrated):
    backup = migrated["backup"]
    had_execution_time = [name for name, *_ in columns(host, backup, "enforcement_log")].count("execution_time_ms") == 1
    version_columns = [name for name, *_ in columns(host, backup, "schema_version")] or None
    v2_indexes = {row["name"] for row in query(host, backup, "SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert (had_execution_time, version_columns, v2_indexes & NEW_INDEXES) == V1_SHAPES[migrated["name"]]


def test_the_daemon_reads_version_2_and_runs_on_it(host, migrated, releases):
    # The daemon's own read: MAX(version) WHERE success = 1. A schema_version of another shape
    # (local-3's has no success column in v1) must answer it too.
    assert query(host, migrated["db"], "SELECT MAX(version) AS version FROM schema_version WHERE success = 1") == \
        [{"version": 2}]
    pid = int(host.file(migrated["vars"]["riskmgr_pidfile"]).content_string.strip())
    process = host.process.get(pid=pid)
    assert releases["daemon"] in process.args and process.stat[0] != "Z" and releases["linked"] == "2"
    log = host.file(migrated["vars"]["riskmgr_log_path"]).content_string
    versions = [line.split(VERSION_LINE)[1].strip() for line in log.splitlines() if VERSION_LINE in line]
    # Started on v1 by create, on v2 by converge; the idempotence run stopped nothing.
    assert versions == ["1", "2"], versions


def test_the_backup_is_the_v1_file_its_manifest_describes(host, migrated):
    backup, manifest = migrated["backup"], migrated["manifest"]
    assert manifest["schema_version"] == 1
    assert host.check_output("sha256sum %s", backup).split()[0] == manifest["sha256"]
    tables = {row["name"] for row in query(host, backup, USER_OBJECTS) if row["type"] == "table"}
    assert set(manifest["row_counts"]) == tables
    counted = {table: query(host, backup, f"SELECT COUNT(*) AS n FROM {quote_identifier(table)}")[0]["n"]
               for table in tables}
    assert counted == manifest["row_counts"]
    assert host.file(migrated["backup_dir"]).mode == 0o700
    assert host.file(backup).mode == 0o600 and host.file(f"{backup}.manifest.json").mode == 0o600


def test_every_v1_row_is_still_there_unchanged(host, migrated):
    """Each row of each v1 table of the backup, in the columns it had, is in the live database
    (EXCEPT finds none missing); the daemon and the triggers only ever add rows."""
    backup, row_counts = migrated["backup"], migrated["manifest"]["row_counts"]
    checks = []
    for table in sorted(row_counts):
        listed = ", ".join(quote_identifier(name) for name, *_ in columns(host, backup, table))
        quoted = quote_identifier(table)
        checks.append(f"SELECT {quote_text(table)} AS tbl, "
                      f"(SELECT COUNT(*) FROM (SELECT {listed} FROM v1.{quoted} EXCEPT SELECT {listed} FROM main.{quoted}))"
                      f" AS missing, (SELECT COUNT(*) FROM main.{quoted}) AS now")
    found = query(host, migrated["db"], " UNION ALL ".join(checks), attach=backup)
    assert len(found) == len(row_counts) > 8
    lost = [row for row in found if row["missing"] or row["now"] < row_counts[row["tbl"]]]
    assert lost == [], f"v1 rows missing or changed (backup counts {row_counts}): {lost}"


def test_every_object_the_database_had_is_still_there(host, migrated):
    before = {(row["type"], row["name"]): row["sql"] for row in query(host, migrated["backup"], USER_OBJECTS)}
    after = {(row["type"], row["name"]): row["sql"] for row in query(host, migrated["db"], USER_OBJECTS)}
    assert [key for key in before if key not in after] == []
    # Views, triggers and indexes keep their exact text (an index of v2's that was there is adopted
    # as it is, not made again); a table's text changes only where v2 added columns to it.
    changed = sorted(name for (kind, name), sql in before.items() if after[kind, name] != sql)
    assert {name.lower() for name in changed} <= TABLES_V2_EXTENDS, changed
    had_execution_time = V1_SHAPES[migrated["name"]][0]
    assert ("enforcement_log" in changed) != had_execution_time, changed
    for table in changed:
        old = columns(host, migrated["backup"], table)
        assert columns(host, migrated["db"], table)[:len(old)] == old, table


def test_v2_is_there_and_the_daemon_writes_its_column(host, migrated):
    db = migrated["db"]
    indexes = {row["name"] for row in query(host, db, "SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert NEW_INDEXES <= indexes, f"missing: {NEW_INDEXES - indexes}"
    # Rows after the backup's last one were written by the daemon started on v2: it fills the column.
    since_backup = query(host, db, "SELECT COUNT(*) AS rows_written, COUNT(execution_time_ms) AS with_time "
                                   "FROM main.enforcement_log WHERE rowid > (SELECT MAX(rowid) FROM v1.enforcement_log)",
                         attach=migrated["backup"])[0]
    assert since_backup["rows_written"] > 0 and since_backup["with_time"] == since_backup["rows_written"], since_backup


def test_reports_say_changed_then_unchanged(host, migrated):
    report_dir = migrated["vars"]["riskmgr_report_dir"]
    runs = sorted(host.file(report_dir).listdir())  # run ids start with a UTC timestamp
    reports = [json.loads(host.file(f"{report_dir}/{run}/{migrated['name']}.json").content_string) for run in runs]
    assert [(r["outcome"], r["from_version"], r["to_version"]) for r in reports] == [("changed", 1, 2),
                                                                                    ("unchanged", 2, 2)], reports
