"""The daemon's code as releases side by side, and the link its service starts through.

The pattern of ansistrano and capistrano: each release is a directory already on the host
(riskmgr_release_v1_path, riskmgr_release_v2_path) and the service's start command or ExecStart
goes through one symlink (riskmgr_release_link, e.g. /opt/risk_manager/current). The release
follows the schema: the code of release N runs on schema vN, so every start names the version it
starts on and the link is switched to that version's release first, atomically (a new symlink
beside the link, then rename(2) over it: a reader sees the old target or the new one, never
none). The preflight checks, while the daemon still runs, that the link is a symlink, that both
releases exist, and that the service's user can read them.

Plain Python, no Ansible import.
"""
from __future__ import annotations

import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path

from ansible.module_utils.host_files import fsync_path
from ansible.module_utils.sqlite_common import DaemonError

MAX_ENTRIES_CHECKED = 20000  # a release tree is walked for unreadable entries up to this many
MAX_PROBLEMS_NAMED = 3


@dataclass(frozen=True)
class Releases:
    """The link and the release directory of each schema version; None from params without a link."""

    link: str
    paths: dict  # {version (int): release directory}

    @classmethod
    def from_params(cls, params: dict) -> Releases | None:
        if not params.get("release_link"):
            return None
        paths = {int(version): path for version, path in (params.get("release_paths") or {}).items() if path}
        return cls(link=params["release_link"], paths=paths)

    def path_for(self, version: int) -> str:
        try:
            return self.paths[int(version)]
        except (KeyError, TypeError, ValueError):
            raise DaemonError(f"{self.link}: no release is named for schema v{version} (riskmgr_releases, "
                              f"{{{version}: DIR}}; riskmgr_release_v{version}_path is its shorthand for 1 and 2); "
                              "set it, or leave riskmgr_release_link unset") from None

    def linked(self) -> str | None:
        """The link's target as an absolute path (a relative one is taken from the link's directory), or None."""
        try:
            target = os.readlink(self.link)
        except OSError:
            return None
        return os.path.normpath(os.path.join(os.path.dirname(self.link), target))

    def version_linked(self) -> int | None:
        """The schema version whose release the link names now, or None (no link, or another directory)."""
        target = self.linked()
        if target is None:
            return None
        for version, path in self.paths.items():
            if same_directory(target, path):
                return version
        return None

    def describe(self, version: int | None = None) -> str:
        """"release 2 (/opt/.../releases/2)" for a version, or what the link names now."""
        if version is None:
            version = self.version_linked()
            if version is None:
                return f"{self.link} -> {self.linked() or 'nothing'}"
        return f"release v{version} ({self.paths.get(version, 'unknown')})"

    def facts(self, wanted_version: int | None = None) -> dict:
        """What the link names now, for the facts and the report; switch_needed against wanted_version."""
        version = self.version_linked()
        return {"link": self.link, "linked": self.linked(), "version": version,
                "paths": {str(v): p for v, p in sorted(self.paths.items())},
                "switch_needed": wanted_version is not None and version != wanted_version}


def same_directory(first: str, second: str) -> bool:
    try:
        return os.path.samefile(first, second)
    except OSError:
        return os.path.realpath(first) == os.path.realpath(second)


def switch_release(releases: Releases, version: int, check_mode: bool = False) -> dict:
    """Point the link at the release of `version`: a new symlink beside it, then rename over it."""
    target = releases.path_for(version)
    before = releases.linked()
    result = {"changed": False, "link": releases.link, "before": before, "after": target, "version": version}
    if before is not None and same_directory(before, target):
        return result
    result["changed"] = True
    if check_mode:
        return result
    if os.path.lexists(releases.link) and not os.path.islink(releases.link):
        raise DaemonError(f"{releases.link} is not a symlink; it cannot be switched to {target}")
    if not os.path.isdir(target):
        raise DaemonError(f"{releases.link}: the release for schema v{version}, {target}, is not a directory")
    staged = f"{releases.link}.riskmgr-{os.getpid()}"
    if os.path.lexists(staged):
        os.unlink(staged)
    os.symlink(target, staged)
    try:
        os.replace(staged, releases.link)
    except OSError:
        os.unlink(staged)
        raise
    fsync_path(os.path.dirname(releases.link) or ".")
    return result


@dataclass(frozen=True)
class ServiceIdentity:
    """Who the daemon runs as: what the readability of its releases is judged for."""

    name: str
    uid: int
    gids: frozenset

    @classmethod
    def of_process(cls, pid: int) -> ServiceIdentity | None:
        """The effective uid and groups of a running process (/proc/PID/status), or None."""
        try:
            fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                          if ":" in line)
            uid = int(fields["Uid"].split()[1])
            gids = {int(fields["Gid"].split()[1])} | {int(g) for g in fields.get("Groups", "").split()}
        except (OSError, KeyError, ValueError, IndexError):
            return None
        return cls(name=user_name(uid), uid=uid, gids=frozenset(gids))

    @classmethod
    def of_user(cls, name: str) -> ServiceIdentity | None:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            return None
        return cls(name=name, uid=entry.pw_uid, gids=frozenset(user_groups(name, entry.pw_gid)))


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def user_groups(name: str, primary_gid: int) -> list[int]:
    try:
        return os.getgrouplist(name, primary_gid)
    except (KeyError, OSError):
        return [primary_gid]


def allows(info: os.stat_result, identity: ServiceIdentity, bits: int) -> bool:
    """Whether the owner, group or other permission bits give identity `bits` (4 read, 1 search); not ACLs."""
    if identity.uid == 0:
        return True
    if info.st_uid == identity.uid:
        granted = (info.st_mode >> 6) & 7
    elif info.st_gid in identity.gids:
        granted = (info.st_mode >> 3) & 7
    else:
        granted = info.st_mode & 7
    return granted & bits == bits


def unreadable_entries(release: str, identity: ServiceIdentity) -> list[str]:
    """Paths of the release the identity cannot reach or read: its parents, its directories, its files."""
    found = []
    real = Path(os.path.realpath(release))
    for parent in reversed(real.parents):
        if not allows(parent.stat(), identity, 1):
            found.append(f"{parent} (not searchable)")
    checked = 0
    for directory, subdirectories, files in os.walk(real):
        for name in [directory] + [os.path.join(directory, entry) for entry in subdirectories + files]:
            checked += 1
            try:
                info = os.stat(name)
            except OSError:
                continue  # a dangling symlink in the release is the release's own business
            needed = 5 if stat.S_ISDIR(info.st_mode) else 4
            if not allows(info, identity, needed):
                found.append(f"{name} (not {'readable and searchable' if needed == 5 else 'readable'})")
            if len(found) >= MAX_PROBLEMS_NAMED or checked >= MAX_ENTRIES_CHECKED:
                return found
    return found


def release_problems(releases: Releases, identity: ServiceIdentity | None) -> list[str]:
    """Why a run must not switch this host's releases; each names the path and what to do. Read-only."""
    problems = []
    if not os.path.islink(releases.link):
        what = "does not exist" if not os.path.lexists(releases.link) else "is not a symlink"
        problems.append(f"riskmgr_release_link {releases.link} {what}: the service must start through a symlink "
                        "that names the running release; create it (ln -s RELEASE_DIR LINK) and point the "
                        "service's start command through it")
    elif not os.access(os.path.dirname(releases.link) or ".", os.W_OK | os.X_OK):
        problems.append(f"{os.path.dirname(releases.link)}: the run cannot create the new link beside "
                        f"{releases.link} (not writable)")
    for version in (1, 2):
        path = releases.paths.get(version)
        if not path:
            problems.append(f"riskmgr_release_v{version}_path is not set; with riskmgr_release_link both releases "
                            "must be named")
        elif not os.path.isdir(path):
            problems.append(f"riskmgr_release_v{version}_path {path} is not a directory on this host; stage the "
                            "release there before the run")
        elif identity is not None:
            unreadable = unreadable_entries(path, identity)
            if unreadable:
                problems.append(f"the service user {identity.name} cannot read the release {path}: "
                                f"{', '.join(unreadable)}; fix its ownership or modes")
    return problems
