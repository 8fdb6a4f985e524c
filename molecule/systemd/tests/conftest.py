"""What the systemd scenario's verifiers share, and what they print when a check fails.

testinfra logs in as the login user and runs every command through sudo as root (the
inventory's ansible_become), as the playbooks do. The witnesses are systemctl, journalctl, the
sqlite3 CLI and /proc inside each machine, never the project's Python. Each verify step runs
one directory (tests/migrated, tests/rolled_back, ...), each after its own stage of the scenario.

On any failed check, the unit's status, its journal and, on the machine that has one, the
daemon's log file are added to the failure report (molecule/conftest.py, shared by every scenario):
what the daemon and systemd said is usually why.
"""
from __future__ import annotations

import json
import pathlib
import posixpath
import re

import pytest

UNIT = "risk-manager.service"
SERVICE_USER = "riskmgr"
VERSION_LINE = "Database schema version: "
STANDIN_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (INFO|WARNING|ERROR) ")
STARTED_PID = re.compile(r" INFO started pid (\d+);")
RELEASE_LINE = re.compile(r" INFO riskmgr release (\d+) starting from (\S+)$")
V2_OBJECTS = ("schema_version", "schema_migration_files", "idx_schema_version_applied",
              "idx_enforcement_log_success", "idx_positions_updated", "idx_orders_state_account")


class Machine:
    """One nspawn machine as the checks see it; every method is one or two commands over ssh."""

    def __init__(self, host) -> None:
        self.host = host
        self.vars = host.ansible.get_variables()
        self.name = self.vars["inventory_hostname"]
        self.db = self.vars["riskmgr_db_path"]
        self.backup_dir = self.vars["riskmgr_backup_dir"]
        self.log_path = self.vars["riskmgr_log_path"]
        self.release_link = self.vars["riskmgr_release_link"]
        self.release_paths = {self.vars["riskmgr_release_v1_path"]: 1, self.vars["riskmgr_release_v2_path"]: 2}

    def sql(self, query: str, db: str | None = None) -> str:
        return self.host.check_output("sqlite3 -bail %s %s", db or self.db, query)

    def version(self, db: str | None = None) -> int:
        if self.sql("SELECT COUNT(*) FROM sqlite_master WHERE name = 'schema_version'", db) == "0":
            return 1
        return int(self.sql("SELECT MAX(version) FROM schema_version WHERE success = 1", db))

    def v2_objects(self, db: str | None = None) -> list[str]:
        names = ", ".join(f"'{name}'" for name in V2_OBJECTS)
        found = self.sql(f"SELECT name FROM sqlite_master WHERE name IN ({names}) ORDER BY name", db).split()
        if self.sql("SELECT COUNT(*) FROM pragma_table_info('enforcement_log') WHERE name = 'execution_time_ms'",
                    db) != "0":
            found.append("enforcement_log.execution_time_ms")
        return found

    def count(self, table: str, db: str | None = None) -> int:
        return int(self.sql(f'SELECT COUNT(*) FROM "{table}"', db))

    def unit(self) -> dict[str, str]:
        """The unit as systemd reports it (systemctl show)."""
        out = self.host.check_output("systemctl show --property=MainPID --property=LoadState --property=ActiveState "
                                     "--property=SubState --property=NRestarts --property=Result %s", UNIT)
        return dict(line.split("=", 1) for line in out.splitlines())

    def daemon_lines(self) -> list[str]:
        """The daemon's own lines, oldest first: its log file, or without one its journal (the
        stand-in's lines there, not systemd's own about the unit)."""
        if self.log_path:
            return self.host.file(self.log_path).content_string.splitlines()
        return [line for line in self.journal().splitlines() if STANDIN_LINE.match(line)]

    def journal(self) -> str:
        """Everything the journal holds for the unit: the daemon's stdout and systemd's lines about it."""
        return self.host.check_output("journalctl --unit=%s --output=cat --no-pager --quiet", UNIT)

    def logged_versions(self) -> list[int]:
        return [int(line.split(VERSION_LINE)[1]) for line in self.daemon_lines() if VERSION_LINE in line]

    def started_pids(self) -> list[int]:
        """The pid of each daemon that got past its schema check, in order (its own "started pid" line)."""
        return [int(match.group(1)) for match in map(STARTED_PID.search, self.daemon_lines()) if match]

    def linked_release(self) -> int | str:
        """The release the link names now (1 or 2), or what else it is (its target, or "not a symlink")."""
        link = self.host.file(self.release_link)
        if not link.is_symlink:
            return "not a symlink"
        return self.release_paths.get(link.linked_to, link.linked_to)

    def logged_releases(self) -> list[int]:
        """The release each start of the daemon named, in order (its first line, "riskmgr release N starting
        from DIR"), checked against the directory it resolved its start through."""
        logged = []
        for match in map(RELEASE_LINE.search, self.daemon_lines()):
            if match:
                number, directory = int(match.group(1)), match.group(2)
                assert self.release_paths.get(directory) == number, match.group(0)
                logged.append(number)
        return logged

    def stats(self, *paths: str) -> dict[str, tuple[str, int]]:
        """owner and mode of each path (shell globs allowed, so the paths are not quoted)."""
        out = self.host.check_output("stat -c '%U %a %n' -- " + " ".join(paths))
        return {path: (user, int(mode, 8)) for user, mode, path in (line.split(" ", 2) for line in out.splitlines())}

    def backups(self) -> list[str]:
        """The backup files (not their manifests), oldest first: state_v<N>_<UTC timestamp>.db."""
        names = [name for name in self.host.file(self.backup_dir).listdir() if name.endswith(".db")]
        return [posixpath.join(self.backup_dir, name) for name in sorted(names, key=lambda n: n.rsplit("_", 1)[1])]

    def manifest(self, backup: str) -> dict:
        return json.loads(self.host.file(f"{backup}.manifest.json").content_string)

    def kept_files(self, prefix: str) -> list[str]:
        """Files the run kept beside the database, state.db.kept-<prefix>-v<N>-<time> (not their -wal/-shm)."""
        directory, name = posixpath.split(self.db)
        return sorted(posixpath.join(directory, entry) for entry in self.host.file(directory).listdir()
                      if entry.startswith(f"{name}.kept-{prefix}-") and not entry.endswith(("-wal", "-shm")))

    def reports(self) -> list[dict]:
        """This machine's run reports, oldest first. The riskmgr_report action writes them on the controller,
        where this test runs: read directly, not over ssh."""
        report_dir = pathlib.Path(self.vars["riskmgr_report_dir"])
        runs = sorted(path for path in report_dir.iterdir() if (path / f"{self.name}.json").exists())
        return [json.loads((run / f"{self.name}.json").read_text()) for run in runs]


@pytest.fixture(scope="module")
def machine(host) -> Machine:
    return Machine(host)
