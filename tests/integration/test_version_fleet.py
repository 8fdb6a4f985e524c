"""migrate.yml and rollback.yml over v1..v4 (the shipped v1 and v2, the test-only v3 and v4 of
tests/versions, never shipped), run for real by ansible-playbook against a local fleet, with no
change to Python or YAML: only riskmgr_migrations_src points at the test catalog.

One fleet, ten runs, each with its assertions:
  up one version at a time (hosts staggered at v2, v3 and v4), each host's schema text recorded at
  every version it reaches; one rollback (default target) takes them 2->1, 3->2 and 4->3 at once; one
  migrate takes the mixed fleet (v1, v2 and v3) to v4, and a rerun changes nothing; a direct 4->2
  downgrade; then a restore to v3, to v2 and to v1, each the newest verified backup taken at that
  version, the replaced file kept beside it. Every downgrade lands on the exact sqlite_master text the
  host had at that version and keeps every row, those the daemon wrote during the run included.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import local_fleet
import pytest
from versions_catalog import versions_catalog
from witness import every_row, master_entries

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
FLEET_TOOL = ROOT / "tools" / "local_fleet.py"
PLAYBOOK_TIMEOUT_S = 300
HISTORY_TABLES = ("schema_version", "schema_migration_files", "schema_migration_objects", "sqlite_sequence")
RECAP_RE = re.compile(r"^(?P<host>\S+)\s+:\s+ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+"
                      r"unreachable=(?P<unreachable>\d+)\s+failed=(?P<failed>\d+)", re.MULTILINE)
STOPPED_RE = re.compile(r"INFO stopped after \d+ rows; last id (\d+)")
H1, H2, H3 = "local-1", "local-2", "local-3"


class VersionFleet:
    """Three local hosts (tools/local_fleet.py) with releases 3 and 4, and the v1..v4 test catalog."""

    def __init__(self, tmp_path: Path) -> None:
        self.root = tmp_path / "fleet with spaces"
        subprocess.run([sys.executable, str(FLEET_TOOL), "create", "--root", str(self.root), "--hosts", "3",
                        "--rows", "300"], check=True, capture_output=True, text=True)
        self.hosts = local_fleet.read_fleet(self.root)["hosts"]
        for host in self.hosts:  # releases 3 and 4: copies of release 2's code (it runs on any v2 or later)
            releases = self.db(host).parent.parent / "releases"
            for number in ("3", "4"):
                shutil.copytree(releases / "2", releases / number)
        self.settings = json.dumps({
            "riskmgr_migrations_src": str(versions_catalog(tmp_path / "catalog")), "riskmgr_confirm": True,
            "riskmgr_report_dir": str(tmp_path / "reports"), "riskmgr_canary_watch_seconds": 0,
            "riskmgr_releases": {n: "{{ riskmgr_release_v2_path | dirname }}/" + n for n in "34"}})
        self.texts: dict[str, dict[int, set]] = {h: {1: master_entries(self.db(h))} for h in self.hosts}

    def destroy(self) -> None:
        subprocess.run([sys.executable, str(FLEET_TOOL), "destroy", "--root", str(self.root)], check=False,
                       capture_output=True)

    def playbook(self, name: str, *extra: str, hosts=None) -> subprocess.CompletedProcess:
        env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"}
        env.pop("ANSIBLE_CONFIG", None)
        limit = ["-l", ",".join(hosts)] if hosts else []
        run = subprocess.run([str(ANSIBLE_PLAYBOOK), "-i", str(self.root / "inventory.yml"), name, "-e",
                              self.settings, *limit, *extra], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                             capture_output=True, text=True, timeout=PLAYBOOK_TIMEOUT_S, check=False)
        run.output = run.stdout + run.stderr
        run.recap = {m["host"]: {k: int(v) for k, v in m.groupdict().items() if k != "host"}
                     for m in RECAP_RE.finditer(run.stdout)}
        assert run.returncode == 0, run.output[-6000:]
        assert set(run.recap) == set(hosts or self.hosts), run.output[-3000:]
        assert all(r["failed"] == 0 and r["unreachable"] == 0 for r in run.recap.values()), run.recap
        return run

    def db(self, host: str) -> Path:
        return Path(self.hosts[host]["riskmgr_db_path"])

    def version(self, host: str) -> int:
        db = self.db(host)
        if not query(db, "SELECT 1 FROM sqlite_master WHERE name = 'schema_version'"):
            return 1
        return query(db, "SELECT MAX(version) FROM schema_version WHERE success = 1")[0][0]

    def alive(self, host: str) -> bool:
        return local_fleet.is_alive(local_fleet.read_pid(self.hosts[host]["riskmgr_pidfile"]))

    def linked_release(self, host: str) -> str:
        return Path(os.readlink(self.hosts[host]["riskmgr_release_link"])).name

    def last_id_at_stop(self, host: str) -> int:
        """The last enforcement_log id the daemon committed at its latest clean stop, from its own log."""
        log = Path(self.hosts[host]["riskmgr_log_path"]).read_text(encoding="utf-8")
        return int(STOPPED_RE.findall(log)[-1])

    def backups(self, host: str) -> list[dict]:
        """The backup manifests of the host, oldest first, each with its file's path."""
        backup_dir = Path(self.hosts[host]["riskmgr_backup_dir"])
        manifests = [json.loads(p.read_text()) for p in backup_dir.glob("*.manifest.json")]
        return sorted(({**m, "path": backup_dir / m["backup"]} for m in manifests), key=lambda m: m["created_at"])

    def kept(self, host: str, reason: str) -> list[Path]:
        db = self.db(host)
        return sorted(p for p in db.parent.glob(f"{db.name}.kept-{reason}-*") if not p.name.endswith(("-wal", "-shm")))

    def record(self, *hosts: str) -> None:
        """Each host's schema text at the version it is at now: what a later downgrade to it must give back."""
        for host in hosts:
            self.texts[host].setdefault(self.version(host), master_entries(self.db(host)))


def query(db: Path, sql: str, *params) -> list[tuple]:
    with closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=10)) as conn:
        return conn.execute(sql, params).fetchall()


def data_rows(db: Path) -> dict[str, list[tuple]]:
    """Every row of every table but the engine's history (its rows follow the version by design)."""
    return {t: rows for t, rows in every_row(db).items() if t.lower() not in HISTORY_TABLES}


def lost_rows(before: dict[str, list[tuple]], after: dict[str, list[tuple]]) -> dict[str, int]:
    """Per table of `after`, how many rows of `before` it lacks, compared on the columns both have (a
    migration adds columns at the end, a downgrade removes those its versions added, always the last)."""
    lost = {}
    for table, rows in after.items():
        old = before.get(table, [])
        width = min(len(rows[0]), len(old[0])) if rows and old else None
        now = {r[:width] for r in rows}
        missing = [r for r in old if r[:width] not in now]
        if missing:
            lost[table] = len(missing)
    return lost


def assert_landed(fleet: VersionFleet, moves: dict[str, tuple[int, int]], before: dict[str, dict]) -> None:
    """Each host moved from -> to, with to's exact schema text as this host had it, every row kept (the ones
    the daemon wrote until its stop in this run too), the daemon running on to's release."""
    for host, (start, to) in moves.items():
        db = fleet.db(host)
        assert fleet.version(host) == to, f"{host}: v{start} -> v{to} ended at v{fleet.version(host)}"
        text = master_entries(db)
        assert text == fleet.texts[host][to], \
            f"{host}: v{start} -> v{to}: schema text differs: {sorted(text ^ fleet.texts[host][to], key=repr)[:4]}"
        assert lost_rows(before[host], data_rows(db)) == {}, f"{host}: v{start} -> v{to} lost rows"
        # The rows the daemon wrote until its stop in this run: all in the backup the downgrade took first.
        taken = fleet.backups(host)[-1]
        assert taken["schema_version"] == start, f"{host}: the newest backup is not the v{start} file"
        assert query(taken["path"], "SELECT MAX(id) FROM enforcement_log")[0][0] == fleet.last_id_at_stop(host), host
        assert lost_rows(data_rows(taken["path"]), data_rows(db)) == {}, f"{host}: v{start} -> v{to} lost rows"
        assert fleet.alive(host) and fleet.linked_release(host) == str(to), host


def test_mixed_fleet_up_and_every_way_down_through_the_playbooks(tmp_path):
    fleet = VersionFleet(tmp_path)
    try:
        # Up one version at a time, staggered: H1 at v2, H2 at v3, H3 at v4; each text recorded as reached.
        fleet.playbook("migrate.yml", "-e", "riskmgr_target_version=2")
        fleet.record(H1, H2, H3)
        fleet.playbook("migrate.yml", "-e", "riskmgr_target_version=3", hosts=[H2, H3])
        fleet.record(H2, H3)
        fleet.playbook("migrate.yml", hosts=[H3])
        fleet.record(H3)
        assert {h: fleet.version(h) for h in fleet.hosts} == {H1: 2, H2: 3, H3: 4}
        # The same reference v1 on every host: each version's text is the same on every host that reached it.
        assert fleet.texts[H1][2] == fleet.texts[H2][2] == fleet.texts[H3][2] and fleet.texts[H2][3] == fleet.texts[H3][3]

        # One rollback, each host to the version just below its own, in place: 2->1, 3->2 and 4->3.
        before = {h: data_rows(fleet.db(h)) for h in fleet.hosts}
        down = fleet.playbook("rollback.yml", "-e", "riskmgr_rollback_method=downgrade")
        assert_landed(fleet, {H1: (2, 1), H2: (3, 2), H3: (4, 3)}, before)
        # The plan shown names each host's own move, and nothing of the versions it does not touch.
        plan = {h: next(line for line in down.stdout.splitlines() if line.startswith(f"{h}: ")) for h in fleet.hosts}
        for host, (start, to) in {H1: (2, 1), H2: (3, 2), H3: (4, 3)}.items():
            assert f"is v{start} -> v{to} by downgrade" in plan[host], plan[host]
        assert not re.search(r"v[12](?!\d)", plan[H3]), plan[H3]

        # The mixed fleet (v1, v2, v3) to the newest version in one run; a rerun changes nothing.
        before = {h: data_rows(fleet.db(h)) for h in fleet.hosts}
        up = fleet.playbook("migrate.yml")
        for host, start in ((H1, 1), (H2, 2), (H3, 3)):
            assert fleet.version(host) == 4 and master_entries(fleet.db(host)) == fleet.texts[H3][4], host
            assert lost_rows(before[host], data_rows(fleet.db(host))) == {}, host
            assert fleet.alive(host) and fleet.linked_release(host) == "4", host
            assert re.search(rf"^{host}: .* is v{start} .*-> v4: ", up.stdout, re.M), up.stdout[-3000:]
        fleet.record(H1, H2)
        again = fleet.playbook("migrate.yml")
        assert {h: r["changed"] for h, r in again.recap.items()} == {h: 0 for h in fleet.hosts}, again.output[-3000:]

        # Straight from v4 to v2 in place, on one host.
        before = {H1: data_rows(fleet.db(H1))}
        fleet.playbook("rollback.yml", "-e", "riskmgr_rollback_method=downgrade", "-e", "riskmgr_target_version=2",
                       hosts=[H1])
        assert_landed(fleet, {H1: (4, 2)}, before)

        # Restore to v3, v2, then v1: each time the newest verified backup taken at that version, the file
        # it replaced kept beside it with every row it had.
        for target, hosts in ((3, [H2, H3]), (2, [H2, H3]), (1, [H1, H2, H3])):  # H1 is at v2 already
            chosen = {h: [m for m in fleet.backups(h) if m["schema_version"] == target][-1] for h in hosts}
            before = {h: data_rows(fleet.db(h)) for h in hosts}
            kept_before = {h: fleet.kept(h, "rollback") for h in hosts}
            fleet.playbook("rollback.yml", "-e", f"riskmgr_target_version={target}", hosts=hosts)
            for host in hosts:
                db, backup = fleet.db(host), chosen[host]["path"]
                assert fleet.version(host) == target and master_entries(db) == fleet.texts[host][target], \
                    (host, target)
                assert master_entries(backup) == fleet.texts[host][target], (host, target)
                # The newest backup at the target, not an older one: every row of it is live, exactly.
                assert lost_rows(data_rows(backup), data_rows(db)) == {}, (host, target, backup.name)
                kept = [p for p in fleet.kept(host, "rollback") if p not in kept_before[host]]
                assert len(kept) == 1, (host, target, kept)
                assert lost_rows(before[host], data_rows(kept[0])) == {}, (host, target, kept[0].name)
                assert fleet.alive(host) and fleet.linked_release(host) == str(target), (host, target)
    finally:
        fleet.destroy()
