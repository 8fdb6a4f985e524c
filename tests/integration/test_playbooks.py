"""migrate_v2.yml and rollback_v2.yml, run for real by ansible-playbook against a local fleet.

tools/local_fleet.py makes the hosts under tmp_path (in a directory whose name has spaces):
each one a v1 state.db with a stand-in daemon writing enforcement_log rows, reached with
`ansible_connection: local`. Every assertion reads what is on disk afterwards, through fresh
read-only sqlite3 connections, sha256 and directory listings, plus the daemons' pidfiles and
logs; the playbook's output is only used for its PLAY RECAP and its messages.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import local_fleet
import pytest
from witness import every_row, master_entries, rows_kept

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
FLEET_TOOL = ROOT / "tools" / "local_fleet.py"
PLAYBOOK_TIMEOUT_S = 300
HOSTS = 2
NEW_INDEXES = ["idx_schema_version_applied", "idx_enforcement_log_success", "idx_positions_updated",
               "idx_orders_state_account"]
HISTORY_TABLES = ("schema_version", "schema_migration_files", "schema_migration_objects")
V2_OBJECTS = [*HISTORY_TABLES, *NEW_INDEXES]
RECAP_RE = re.compile(r"^(?P<host>\S+)\s+:\s+ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+"
                      r"unreachable=(?P<unreachable>\d+)\s+failed=(?P<failed>\d+)\s+skipped=(?P<skipped>\d+)",
                      re.MULTILINE)
STOPPED_RE = re.compile(r"INFO stopped after \d+ rows; last id (\d+)")
RELEASE_RE = re.compile(r"INFO riskmgr release (\d+) starting")
VERSION_LINE = "Database schema version:"


# --- the fleet and the runs ---------------------------------------------------------------------

class Fleet:
    """A local fleet made by tools/local_fleet.py, and ansible-playbook runs against it."""

    def __init__(self, root: Path, *create_args: str, hosts: int = HOSTS) -> None:
        self.root = root
        self.reports = root.parent / "reports"
        subprocess.run([sys.executable, str(FLEET_TOOL), "create", "--root", str(root), "--hosts", str(hosts),
                        "--rows", "2000", *create_args], check=True, capture_output=True, text=True)
        self.hosts = local_fleet.read_fleet(root)["hosts"]

    def destroy(self) -> None:
        subprocess.run([sys.executable, str(FLEET_TOOL), "destroy", "--root", str(self.root)], check=False,
                       capture_output=True)

    def playbook(self, name: str, *extra: str) -> subprocess.CompletedProcess:
        """ansible-playbook -i <fleet> <name> from the repo root (its ansible.cfg), with no terminal."""
        env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"}
        env.pop("ANSIBLE_CONFIG", None)
        # -e as JSON: the report directory's path has spaces, which k=v would split.
        report_dir = json.dumps({"riskmgr_report_dir": str(self.reports)})
        run = subprocess.run([str(ANSIBLE_PLAYBOOK), "-i", str(self.root / "inventory.yml"), name, "-e", report_dir,
                              *extra], cwd=ROOT, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                             timeout=PLAYBOOK_TIMEOUT_S, check=False)
        run.output = run.stdout + run.stderr
        run.recap = {m["host"]: {k: int(v) for k, v in m.groupdict().items() if k != "host"}
                     for m in RECAP_RE.finditer(run.stdout)}
        return run

    def db(self, host: str) -> Path:
        return Path(self.hosts[host]["riskmgr_db_path"])

    def pids(self) -> dict[str, int | None]:
        return {host: local_fleet.read_pid(v["riskmgr_pidfile"]) for host, v in self.hosts.items()}

    def alive(self, host: str) -> bool:
        return local_fleet.is_alive(local_fleet.read_pid(self.hosts[host]["riskmgr_pidfile"]))

    def log(self, host: str) -> str:
        return Path(self.hosts[host]["riskmgr_log_path"]).read_text(encoding="utf-8")

    def linked_release(self, host: str) -> str:
        """The release the host's link names (local_fleet.py: <host>/current -> <host>/releases/N)."""
        return Path(os.readlink(self.hosts[host]["riskmgr_release_link"])).name

    def logged_releases(self, host: str) -> list[int]:
        """The release of each start of the daemon, from its own log."""
        return [int(n) for n in RELEASE_RE.findall(self.log(host))]

    def logged_versions(self, host: str) -> list[int]:
        return [int(line.split(VERSION_LINE)[1]) for line in self.log(host).splitlines() if VERSION_LINE in line]

    def last_ids_at_stop(self, host: str) -> list[int]:
        """The last enforcement_log id the daemon committed, at each clean stop, from its own log."""
        return [int(m.group(1)) for m in STOPPED_RE.finditer(self.log(host))]

    def manifests(self, host: str) -> list[dict]:
        """The backup manifests of the host, oldest first."""
        backup_dir = Path(self.hosts[host]["riskmgr_backup_dir"])
        return [json.loads(p.read_text()) for p in sorted(backup_dir.glob("*.manifest.json"))]

    def kept(self, host: str, suffix: str) -> list[Path]:
        db = self.db(host)
        return sorted(p for p in db.parent.glob(f"{db.name}.kept-{suffix}-*") if not p.name.endswith(("-wal", "-shm")))

    def snapshot(self) -> dict:
        """sha256 of every state.db and -wal, and the listing of every host directory (-shm content
        is shared memory that readers touch, so only its name counts)."""
        files = {}
        for path in sorted(self.root.rglob("*")):
            relative = str(path.relative_to(self.root))
            if path.is_dir():
                files[relative] = "dir"
            elif path.name.endswith("-shm"):
                files[relative] = "shm"
            elif path.name.startswith("state.db") or path.suffix == ".pid":
                files[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                files[relative] = path.stat().st_size
        return files


def query(db: Path, sql: str, *params) -> list[tuple]:
    with closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=10)) as conn:
        return conn.execute(sql, params).fetchall()


def scalar(db: Path, sql: str, *params):
    return query(db, sql, *params)[0][0]


def row_counts(db: Path) -> dict[str, int]:
    tables = [r[0] for r in query(db, "SELECT name FROM sqlite_master WHERE type = 'table' "
                                      "AND name NOT LIKE 'sqlite_%'")]
    return {t: scalar(db, f'SELECT COUNT(*) FROM "{t}"') for t in tables}


def schema_version(db: Path) -> int:
    if not scalar(db, "SELECT COUNT(*) FROM sqlite_master WHERE name = 'schema_version'"):
        return 1
    return scalar(db, "SELECT MAX(version) FROM schema_version WHERE success = 1")


def v2_objects_present(db: Path) -> list[str]:
    marks = ", ".join("?" for _ in V2_OBJECTS)
    names = [r[0] for r in query(db, f"SELECT name FROM sqlite_master WHERE name IN ({marks})", *V2_OBJECTS)]
    columns = [r[0] for r in query(db, "SELECT name FROM pragma_table_info('enforcement_log')")]
    return sorted(names + [c for c in columns if c == "execution_time_ms"])


def enforcement_ids(db: Path, up_to: int) -> int:
    return scalar(db, "SELECT COUNT(*) FROM enforcement_log WHERE id <= ?", up_to)


def assert_ran(run: subprocess.CompletedProcess, hosts) -> None:
    assert run.returncode == 0, run.output[-6000:]
    assert set(run.recap) == set(hosts), run.output[-3000:]
    assert all(r["failed"] == 0 and r["unreachable"] == 0 for r in run.recap.values()), run.recap


# --- fixtures -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def migrated(tmp_path_factory):
    """A fleet migrated once by migrate_v2.yml while its daemons wrote; the state before and the run.

    Shared, in file order, by the migrate, rerun and restore tests (each playbook run costs ~20 s).
    """
    fleet = Fleet(tmp_path_factory.mktemp("migrated") / "fleet with spaces")
    try:
        before = {}
        for host in fleet.hosts:
            db = fleet.db(host)
            # One statement, one snapshot: the daemon commits a row every few ms.
            (count, max_id), = query(db, "SELECT COUNT(*), MAX(id) FROM enforcement_log")
            before[host] = {"count": count, "max_id": max_id}
        pids = fleet.pids()
        run = fleet.playbook("migrate_v2.yml", "-e", "riskmgr_confirm=true")
        yield fleet, before, pids, run
    finally:
        fleet.destroy()


@pytest.fixture(scope="module")
def quiet_v1_fleet(tmp_path_factory):
    """A v1 fleet whose daemons run but write one row only, at start (one row per 10 minutes):
    then any change to a state.db or its WAL during a test was made by the playbook."""
    fleet = Fleet(tmp_path_factory.mktemp("quiet") / "fleet with spaces", "--interval-ms", "600000")
    try:
        yield fleet
    finally:
        fleet.destroy()


# --- (a) migrate while the daemons write, (b) rerun, (e) restore: one fleet, in this order -----

def test_migrate_keeps_every_row_committed_before_the_stop(migrated):
    fleet, before, pids, run = migrated
    assert_ran(run, fleet.hosts)
    for host in fleet.hosts:
        db = fleet.db(host)
        assert schema_version(db) == 2
        assert v2_objects_present(db) == sorted(V2_OBJECTS + ["execution_time_ms"])
        # Every row that existed before the run is still there...
        assert enforcement_ids(db, before[host]["max_id"]) == before[host]["count"]
        # ...and every row up to the last one the daemon committed before it was stopped (its own log).
        stopped_at = fleet.last_ids_at_stop(host)[0]
        manifest, = fleet.manifests(host)
        assert manifest["schema_version"] == 1
        assert enforcement_ids(db, stopped_at) == manifest["row_counts"]["enforcement_log"]
        assert query(db, "SELECT id FROM enforcement_log WHERE id = ?", stopped_at) == [(stopped_at,)]
        counts = row_counts(db)
        for table, count in manifest["row_counts"].items():
            assert counts[table] >= count, f"{host}: {table} has {counts[table]} rows, the backup {count}"
        # The daemon runs again, on v2 and its release 2 (the link switched), and writes the new column.
        assert fleet.alive(host) and fleet.pids()[host] != pids[host]
        assert fleet.logged_versions(host) == [1, 2]
        assert fleet.linked_release(host) == "2" and fleet.logged_releases(host) == [1, 2]
        assert scalar(db, "SELECT COUNT(*) FROM enforcement_log WHERE execution_time_ms > 0") > 0
        assert not Path(f"{db}.riskmgr-pending").exists()  # its watch passed: the upgrade is accepted


def test_migrate_writes_a_report_per_host_with_the_downtime(migrated):
    fleet, _, _, run = migrated
    assert_ran(run, fleet.hosts)
    runs = sorted(fleet.reports.iterdir())
    assert len(runs) == 1
    for host in fleet.hosts:
        report = json.loads((runs[0] / f"{host}.json").read_text())
        assert report["outcome"] == "changed" and report["mode"] == "migrate"
        assert (report["from_version"], report["to_version"]) == (1, 2)
        assert isinstance(report["downtime_seconds"], (int, float)) and 0 < report["downtime_seconds"] < 60
        assert report["backup"] and Path(report["backup"]).is_file()


def test_second_migrate_changes_nothing_and_stops_no_daemon(migrated):
    fleet = migrated[0]
    pids, manifests = fleet.pids(), {h: fleet.manifests(h) for h in fleet.hosts}
    run = fleet.playbook("migrate_v2.yml", "-e", "riskmgr_confirm=true")
    assert_ran(run, fleet.hosts)
    assert {h: r["changed"] for h, r in run.recap.items()} == {h: 0 for h in fleet.hosts}, run.recap
    assert fleet.pids() == pids
    assert all(fleet.alive(h) and fleet.logged_versions(h) == [1, 2] for h in fleet.hosts)
    assert {h: fleet.manifests(h) for h in fleet.hosts} == manifests  # no second backup


def test_rollback_restores_the_v1_backup_and_keeps_the_v2_file(migrated):
    fleet = migrated[0]
    run = fleet.playbook("rollback_v2.yml", "-e", "riskmgr_confirm=true")
    assert_ran(run, fleet.hosts)
    for host in fleet.hosts:
        db = fleet.db(host)
        assert schema_version(db) == 1 and v2_objects_present(db) == []
        v1_manifest, = fleet.manifests(host)
        # The restored file is the v1 backup: its rows, then those the restarted daemon wrote.
        # Compared to the millisecond: the log has milliseconds, the daemon's rows microseconds.
        restarted_at = [line.split()[0] for line in fleet.log(host).splitlines() if VERSION_LINE in line][-1]
        assert scalar(db, "SELECT COUNT(*) FROM enforcement_log WHERE substr(timestamp, 1, 23) < substr(?, 1, 23)",
                      restarted_at) == v1_manifest["row_counts"]["enforcement_log"]
        # The v2 file it replaced is kept, with every row the daemon committed on v2 before the stop.
        kept, = fleet.kept(host, "rollback")
        assert schema_version(kept) == 2
        stopped_at = fleet.last_ids_at_stop(host)[-1]
        assert query(kept, "SELECT MAX(id) FROM enforcement_log") == [(stopped_at,)]
        assert scalar(kept, "SELECT COUNT(*) FROM enforcement_log") > v1_manifest["row_counts"]["enforcement_log"]
        assert fleet.alive(host) and fleet.logged_versions(host) == [1, 2, 1]
        assert fleet.linked_release(host) == "1" and fleet.logged_releases(host) == [1, 2, 1]


# --- (c) check mode and (d) no confirmation: nothing may change ------------------------------

def test_check_diff_plans_every_index_and_changes_nothing(quiet_v1_fleet):
    fleet = quiet_v1_fleet
    files, pids = fleet.snapshot(), fleet.pids()
    run = fleet.playbook("migrate_v2.yml", "--check", "--diff")
    assert_ran(run, fleet.hosts)
    for name in NEW_INDEXES + ["execution_time_ms"]:
        assert name in run.stdout, f"the plan does not name {name}"
    assert fleet.snapshot() == files
    assert fleet.pids() == pids and all(fleet.alive(h) for h in fleet.hosts)
    assert all(fleet.logged_versions(h) == [1] for h in fleet.hosts)
    assert not fleet.reports.exists()  # check mode writes no report


def test_migrate_without_confirmation_and_terminal_stops_before_any_change(quiet_v1_fleet):
    fleet = quiet_v1_fleet
    files, pids = fleet.snapshot(), fleet.pids()
    run = fleet.playbook("migrate_v2.yml")  # no -e riskmgr_confirm=true, stdin is not a terminal
    assert run.returncode != 0
    assert "Not confirmed: nothing was changed on any host" in run.output
    assert "cannot ask anyone: standard input is not a terminal" in run.output  # asked no one
    for host in fleet.hosts:  # each host named on its own line; its run lock released (the snapshot lists it)
        assert re.search(rf"{host}: .+state\.db and its daemon were left as they are\. Not confirmed", run.output)
    assert fleet.snapshot() == files
    assert fleet.pids() == pids and all(fleet.logged_versions(h) == [1] for h in fleet.hosts)


def test_rehearsal_measures_the_migration_on_a_copy_and_leaves_nothing_behind(quiet_v1_fleet):
    fleet = quiet_v1_fleet
    files, pids = fleet.snapshot(), fleet.pids()
    run = fleet.playbook("migrate_v2.yml", "-e", "riskmgr_rehearse=true")  # measured, then not confirmed
    assert run.returncode != 0 and "Not confirmed: nothing was changed on any host" in run.output
    measured = re.findall(r"expected downtime: ([0-9.]+) s of migration measured on a copy", run.stdout)
    assert len(measured) == len(fleet.hosts) and all(float(seconds) > 0 for seconds in measured)
    assert fleet.snapshot() == files  # the copy lived in the private staging directory, now removed
    assert fleet.pids() == pids and all(fleet.logged_versions(h) == [1] for h in fleet.hosts)


# --- (e) downgrade ------------------------------------------------------------------------------

def test_downgrade_keeps_every_row_written_after_the_migration(tmp_path):
    fleet = Fleet(tmp_path / "fleet with spaces")
    try:
        assert_ran(fleet.playbook("migrate_v2.yml", "-e", "riskmgr_confirm=true"), fleet.hosts)
        run = fleet.playbook("rollback_v2.yml", "-e", "riskmgr_confirm=true", "-e", "riskmgr_rollback_method=downgrade")
        assert_ran(run, fleet.hosts)
        for host in fleet.hosts:
            db = fleet.db(host)
            assert schema_version(db) == 1 and v2_objects_present(db) == []
            migrate_stop, downgrade_stop = fleet.last_ids_at_stop(host)
            v1_backup, v2_backup = fleet.manifests(host)
            assert (v1_backup["schema_version"], v2_backup["schema_version"]) == (1, 2)
            # Rows the daemon wrote on v2, between the two stops, are all still there.
            written_on_v2 = scalar(db, "SELECT COUNT(*) FROM enforcement_log WHERE id > ? AND id <= ?",
                                   migrate_stop, downgrade_stop)
            assert written_on_v2 > 0
            assert enforcement_ids(db, downgrade_stop) == v2_backup["row_counts"]["enforcement_log"]
            counts = row_counts(db)
            for table, count in v2_backup["row_counts"].items():
                if table not in HISTORY_TABLES:
                    assert counts[table] >= count, f"{host}: {table} has {counts[table]} rows, v2 had {count}"
            assert fleet.alive(host) and fleet.logged_versions(host) == [1, 2, 1]
            assert fleet.linked_release(host) == "1" and fleet.logged_releases(host) == [1, 2, 1]
            assert fleet.kept(host, "rollback") == []  # in place: no file replaced
    finally:
        fleet.destroy()


# --- riskmgr_migration_mode: online -------------------------------------------------------------

def test_online_mode_migrates_while_the_daemon_writes_and_restarts_it_once(tmp_path):
    fleet = Fleet(tmp_path / "online fleet", "--interval-ms", "20")
    try:
        host = next(iter(fleet.hosts))
        db = fleet.db(host)
        before_max = scalar(db, "SELECT MAX(id) FROM enforcement_log")
        before_count = enforcement_ids(db, before_max)
        pids = fleet.pids()
        run = fleet.playbook("migrate_v2.yml", "-e", "riskmgr_confirm=true", "-e", "riskmgr_migration_mode=online")
        assert_ran(run, fleet.hosts)
        for name in fleet.hosts:
            path = fleet.db(name)
            assert schema_version(path) == 2 and v2_objects_present(path) == sorted(V2_OBJECTS + ["execution_time_ms"])
            # One restart: one stop, the daemon back as a new process on v2, no write ever failed or waited long.
            assert fleet.logged_versions(name) == [1, 2] and len(fleet.last_ids_at_stop(name)) == 1
            assert fleet.linked_release(name) == "2" and fleet.logged_releases(name) == [1, 2]
            assert fleet.alive(name) and fleet.pids()[name] != pids[name]
            assert " ERROR " not in fleet.log(name) and "waited" not in fleet.log(name)
            manifest, = fleet.manifests(name)  # taken while the daemon ran, with its own row counts
            assert manifest["schema_version"] == 1
        assert enforcement_ids(db, before_max) == before_count
        # The daemon kept writing while the backup and the migration ran: rows between the backup's
        # snapshot and the restart are in the live database, and the ids have no gap.
        stopped_at = fleet.last_ids_at_stop(host)[0]
        assert stopped_at > manifest_max_id(fleet, host) >= before_max
        assert enforcement_ids(db, stopped_at) == stopped_at - scalar(db, "SELECT MIN(id) FROM enforcement_log") + 1
        report = json.loads(next(fleet.reports.glob(f"*/{host}.json")).read_text())
        assert report["migration_mode"] == "online" and report["backup_method"] == "backup API"
        assert 0 < report["downtime_seconds"] < 5 and report["longest_migration_lock_seconds"] is not None
        again = fleet.playbook("migrate_v2.yml", "-e", "riskmgr_confirm=true", "-e", "riskmgr_migration_mode=online")
        assert_ran(again, fleet.hosts)
        assert all(r["changed"] == 0 for r in again.recap.values()), again.recap
    finally:
        fleet.destroy()


def manifest_max_id(fleet: Fleet, host: str) -> int:
    """The highest enforcement_log id in the host's (only) backup."""
    backup = Path(fleet.hosts[host]["riskmgr_backup_dir"]) / fleet.manifests(host)[0]["backup"]
    return scalar(backup, "SELECT MAX(id) FROM enforcement_log")


def test_online_mode_is_refused_for_a_database_not_in_wal_mode(tmp_path):
    fleet = Fleet(tmp_path / "rollback journal fleet")
    try:
        subprocess.run([sys.executable, str(FLEET_TOOL), "stop", "--root", str(fleet.root)], check=True,
                       capture_output=True)
        for host in fleet.hosts:
            with closing(sqlite3.connect(fleet.db(host), isolation_level=None)) as conn:
                assert conn.execute("PRAGMA journal_mode=DELETE").fetchone()[0] == "delete"
        before = fleet.snapshot()
        run = fleet.playbook("migrate_v2.yml", "-e", "riskmgr_confirm=true", "-e", "riskmgr_migration_mode=online")
        assert run.returncode != 0
        assert re.search(r"riskmgr_migration_mode=online needs .*state\.db in WAL mode", run.output), run.output[-3000:]
        assert "journal mode delete" in run.output and "Traceback" not in run.output
        assert fleet.snapshot() == before
    finally:
        fleet.destroy()


# --- v1 databases unlike the reference ----------------------------------------------------------

V1_TABLE_NAMES = ("lockouts", "daily_pnl", "contract_cache", "trade_history", "session_state", "positions", "orders",
                  "enforcement_log", "reset_schedule")
# mixed:4 = host 1 the reference schema; host 2 random:6 (execution_time_ms already there, all three
# v2 indexes); host 3 random:7 (a two-column schema_version holding 1, idx_positions_updated).
MIXED_SHAPES = "mixed:4"


def sqldiff_of_v1_tables(backup: Path, live: Path) -> dict[str, list[str]]:
    """sqldiff (Debian sqlite3-tools, not this project's code) of each v1 table: backup -> live."""
    names = {name.lower(): name for (name,) in query(live, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    diffs = {}
    for table in V1_TABLE_NAMES:
        done = subprocess.run(["sqldiff", "--table", names[table], str(backup), str(live)], capture_output=True,
                              text=True, timeout=60, check=True)
        diffs[table] = done.stdout.splitlines()
    return diffs


def test_a_fleet_of_unlike_v1_shapes_migrates_keeps_every_v1_row_and_downgrades_to_its_exact_schema(tmp_path):
    fleet = Fleet(tmp_path / "fleet with spaces", "--shape", MIXED_SHAPES, hosts=3)
    try:
        before = {host: (master_entries(fleet.db(host)), every_row(fleet.db(host))) for host in fleet.hosts}
        assert scalar(fleet.db("local-2"), "SELECT COUNT(*) FROM pragma_table_info('enforcement_log') "
                                           "WHERE name = 'execution_time_ms'") == 1
        assert [r[1] for r in query(fleet.db("local-3"), "PRAGMA table_info(schema_version)")] == \
            ["version", "applied_at"]

        run = fleet.playbook("migrate_v2.yml", "-e", "riskmgr_confirm=true")
        assert_ran(run, fleet.hosts)
        for host in fleet.hosts:
            db = fleet.db(host)
            assert scalar(db, "SELECT MAX(version) FROM schema_version WHERE success = 1") == 2  # the daemon's read
            assert fleet.logged_versions(host) == [1, 2] and fleet.alive(host)
            assert rows_kept(before[host][1], every_row(db), [t for t in before[host][1] if t != "sqlite_sequence"]) \
                == [], host
            # No v1 row changed or went: sqldiff finds only v2's column and indexes, and the rows the
            # daemon wrote since its stop.
            backup = Path(fleet.hosts[host]["riskmgr_backup_dir"]) / fleet.manifests(host)[0]["backup"]
            for table, lines in sqldiff_of_v1_tables(backup, db).items():
                changed = [line for line in lines if not line.startswith("INSERT INTO")
                           and not re.match(r"ALTER TABLE \S+ ADD COLUMN execution_time_ms\b", line)
                           and not re.match(r"CREATE INDEX (idx_enforcement_log_success|idx_positions_updated|"
                                            r"idx_orders_state_account) ", line)]
                assert changed == [], f"{host} {table}: {changed[:3]}"
                assert not [line for line in lines if line.startswith(("UPDATE", "DELETE"))]
        adopted = fleet.reports / sorted(os.listdir(fleet.reports))[0]
        report = json.loads((adopted / "local-3.json").read_text())
        assert report["outcome"] == "changed"

        rerun = fleet.playbook("migrate_v2.yml", "-e", "riskmgr_confirm=true")
        assert_ran(rerun, fleet.hosts)
        assert all(r["changed"] == 0 for r in rerun.recap.values()), rerun.recap

        down = fleet.playbook("rollback_v2.yml", "-e", "riskmgr_confirm=true", "-e", "riskmgr_rollback_method=downgrade")
        assert_ran(down, fleet.hosts)
        for host in fleet.hosts:
            db = fleet.db(host)
            entries, rows = before[host]
            assert master_entries(db) == entries, f"{host}: {sorted(master_entries(db) ^ entries, key=repr)[:4]}"
            # every v1 row (the daemons' own writes move the AUTOINCREMENT counters on meanwhile)
            assert rows_kept(rows, every_row(db), [t for t in rows if t != "sqlite_sequence"]) == [], host
            assert fleet.logged_versions(host) == [1, 2, 1] and fleet.alive(host)
        # What the v1 database of host 2 and host 3 had of v2 is still there, with its data.
        assert scalar(fleet.db("local-2"), "SELECT COUNT(*) FROM pragma_table_info('enforcement_log') "
                                           "WHERE name = 'execution_time_ms'") == 1
        assert [r[1] for r in query(fleet.db("local-3"), "PRAGMA table_info(schema_version)")] == \
            ["version", "applied_at"]
        assert query(fleet.db("local-3"), "SELECT version FROM schema_version") == [(1,)]
    finally:
        fleet.destroy()


# --- migrate.yml and rollback.yml: any version ---------------------------------------------------

def test_the_same_playbooks_take_a_fleet_to_a_v4_of_the_tests_and_back_one_version_at_a_time(tmp_path):
    import shutil
    from versions_catalog import versions_catalog
    fleet = Fleet(tmp_path / "fleet with spaces")
    try:
        for host in fleet.hosts:  # releases 3 and 4: copies of release 2's code (it runs on any v2 or later)
            releases = fleet.db(host).parent.parent / "releases"
            for number in ("3", "4"):
                shutil.copytree(releases / "2", releases / number)
        catalog = versions_catalog(tmp_path / "catalog")
        settings = json.dumps({"riskmgr_migrations_src": str(catalog), "riskmgr_confirm": True,
                               "riskmgr_releases": {n: "{{ riskmgr_release_v2_path | dirname }}/" + n for n in "34"}})
        v1_text = {h: master_entries(fleet.db(h)) for h in fleet.hosts}
        assert_ran(fleet.playbook("migrate.yml", "-e", settings), fleet.hosts)
        assert all(schema_version(fleet.db(h)) == 4 and fleet.linked_release(h) == "4" for h in fleet.hosts)
        again = fleet.playbook("migrate.yml", "-e", settings)
        assert {h: r["changed"] for h, r in again.recap.items()} == {h: 0 for h in fleet.hosts}, again.output[-3000:]
        for below in (3, 2):
            run = fleet.playbook("rollback.yml", "-e", settings, "-e", "riskmgr_rollback_method=downgrade")
            assert_ran(run, fleet.hosts)
            assert all(schema_version(fleet.db(h)) == below and fleet.alive(h) for h in fleet.hosts), below
        run = fleet.playbook("rollback.yml", "-e", settings, "-e", "riskmgr_rollback_method=downgrade")
        assert_ran(run, fleet.hosts)
        assert all(master_entries(fleet.db(h)) == v1_text[h] and fleet.linked_release(h) == "1" for h in fleet.hosts)
    finally:
        fleet.destroy()


# --- the task budget (#20) -------------------------------------------------------------------------

# Tasks per host as the PLAY RECAP counts them: ok (changed ones included) are run, skipped apart. They
# hold for every host, the first one too (it runs the run_once tasks: the confirmation, the batch's
# report). The budget is 8 run and 2 skipped, 2 and 8; these are what the playbooks do now, so
# that a task added anywhere is seen. The hosts after the first run one task fewer (the confirmation):
# on a rerun that changes nothing, one task each.
UPGRADED_RUN, UPGRADED_SKIPPED = 5, 1
UNCHANGED_TASKS, UNCHANGED_TASKS_AFTER_FIRST = 2, 1
ROLLBACK_TASKS = 8


def assert_budget(run: subprocess.CompletedProcess, hosts, what: str, most_run: int, most_skipped: int | None = None,
                  most_tasks: int | None = None, only: list | None = None) -> None:
    assert_ran(run, hosts)
    for host, counts in run.recap.items():
        if only is not None and host not in only:
            continue
        if most_skipped is not None:
            assert counts["ok"] <= most_run and counts["skipped"] <= most_skipped, (what, host, counts)
        if most_tasks is not None:
            assert counts["ok"] + counts["skipped"] <= most_tasks, (what, host, counts)


def test_every_host_stays_in_its_task_budget(tmp_path):
    fleet = Fleet(tmp_path / "fleet")
    fast = ("-e", "riskmgr_confirm=true", "-e", "riskmgr_canary_watch_seconds=1", "-e", "riskmgr_watch_seconds=1")
    try:
        for migrate, rollback, method in (("migrate_v2.yml", "rollback_v2.yml", "restore"),
                                          ("migrate.yml", "rollback.yml", "downgrade")):
            upgraded = fleet.playbook(migrate, *fast)
            assert_budget(upgraded, fleet.hosts, migrate, UPGRADED_RUN, most_skipped=UPGRADED_SKIPPED)
            assert all(r["changed"] > 0 for r in upgraded.recap.values()) and all(
                schema_version(fleet.db(h)) == 2 for h in fleet.hosts), upgraded.recap
            rerun = fleet.playbook(migrate, *fast)
            assert_budget(rerun, fleet.hosts, f"{migrate} again", UNCHANGED_TASKS, most_tasks=UNCHANGED_TASKS)
            assert_budget(rerun, fleet.hosts, f"{migrate} again", UNCHANGED_TASKS_AFTER_FIRST,
                          most_tasks=UNCHANGED_TASKS_AFTER_FIRST, only=list(fleet.hosts)[1:])
            assert all(r["changed"] == 0 for r in rerun.recap.values()), rerun.recap
            back = fleet.playbook(rollback, *fast, "-e", f"riskmgr_rollback_method={method}")
            assert_budget(back, fleet.hosts, f"{rollback} by {method}", ROLLBACK_TASKS, most_tasks=ROLLBACK_TASKS)
            assert all(schema_version(fleet.db(h)) == 1 and fleet.alive(h) for h in fleet.hosts), back.recap
    finally:
        fleet.destroy()
