"""Who runs the daemon's own commands (start, stop, smoke) and from where: riskmgr_daemon_user,
riskmgr_daemon_group and riskmgr_daemon_chdir.

A host laid out as DB-SCHEMA-006 describes runs `./scripts/start_daemon.sh` from the risk manager's
own directory, as its own user. The module runs as root (become) and drops privileges itself in the
child, between fork and exec: setgroups, setgid, setuid, in that order (once setuid has run, the
groups can no longer be changed). subprocess's user=/group=/extra_groups= would do the same but
exist only on Python 3.9+, and managed nodes can run 3.8; the gids are worked out in the parent,
so the child only makes three system calls (preexec_fn must not take locks or import).

The checks the preflight makes without running anything (may_access, path_problems) read the
mode bits the way the kernel does for that uid and its groups. ACLs and read-only mounts are not
read: a command they forbid still fails at its start, with the command, directory, user, exit
status and stderr in the message.

Plain Python, no Ansible import.
"""
from __future__ import annotations

import grp
import os
import pwd
import re
import shlex
import shutil
import stat
from dataclasses import dataclass

from ansible.module_utils.sqlite_common import DaemonError

CHDIR_VARIABLE = "riskmgr_daemon_chdir"
USER_VARIABLE = "riskmgr_daemon_user"
# Words made only of path characters with a slash, not starting with one: `./x`, `../x`, `scripts/x`, `data/state.db`.
RELATIVE_PATH = re.compile(r"(?:\.{1,2}/)*[\w.+-]+(?:/[\w.+-]*)*/?|\.{1,2}/")
NO_CHDIR = "/"  # where a command runs without riskmgr_daemon_chdir: never the controller's directory


@dataclass(frozen=True)
class Account:
    """A user the commands run as: its uid, the gid they run with, every gid it holds, its home."""

    name: str
    uid: int
    gid: int
    groups: tuple
    home: str


def lookup_account(user: str | None, group: str | None = None) -> Account | None:
    """The account of riskmgr_daemon_user (with riskmgr_daemon_group as its gid), or None when unset."""
    if not user:
        if group:
            raise DaemonError(f"riskmgr_daemon_group {group} is set without {USER_VARIABLE}; set the user too")
        return None
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise DaemonError(f"{USER_VARIABLE} {user}: no such user on this host; create it, or correct "
                          f"{USER_VARIABLE}") from None
    gid = entry.pw_gid
    if group:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise DaemonError(f"riskmgr_daemon_group {group}: no such group on this host; create it, or "
                              "correct riskmgr_daemon_group") from None
    groups = tuple(sorted(set(os.getgrouplist(entry.pw_name, gid)) | {gid}))
    return Account(name=entry.pw_name, uid=entry.pw_uid, gid=gid, groups=groups, home=entry.pw_dir)


def current_account() -> Account:
    """The account this process runs as (the commands' user when riskmgr_daemon_user is unset)."""
    uid = os.geteuid()
    try:
        entry = pwd.getpwuid(uid)
        name, home = entry.pw_name, entry.pw_dir
    except KeyError:
        name, home = str(uid), "/"
    return Account(name=name, uid=uid, gid=os.getegid(), groups=tuple(sorted(set(os.getgroups()) | {os.getegid()})),
                   home=home)


def switch_problem(account: Account | None, euid: int, egid: int) -> str | None:
    """Why this process cannot run a command as account (None: it can). Only root changes user."""
    if account is None or euid == 0:
        return None
    if account.uid != euid or account.gid != egid:
        return (f"{USER_VARIABLE} {account.name}: the task runs as uid {euid}, and only root can run the daemon's "
                "commands as another user; run the play with become (root)")
    return None


def drop_privileges(account: Account) -> None:
    """In the child, before exec: become account for good (groups, then gid, then uid)."""
    os.setgroups(list(account.groups))
    os.setgid(account.gid)
    os.setuid(account.uid)


def account_environment(account: Account, environ: dict) -> dict:
    """The environment a command gets as account: the caller's, with HOME, USER and LOGNAME its own."""
    return {**environ, "HOME": account.home, "USER": account.name, "LOGNAME": account.name}


def is_relative_path(arg: str) -> bool:
    """An argument that names a path relative to the working directory (`./x`, `scripts/x`, `../x`)."""
    return "/" in arg and not arg.startswith(("/", "-")) and RELATIVE_PATH.fullmatch(arg) is not None


def relative_problem(what: str, argv: list, chdir: str | None) -> str | None:
    """A command with a relative program or path and no riskmgr_daemon_chdir: it would depend on where the
    module happens to run. None when that is not the case."""
    if chdir:
        if not os.path.isabs(chdir):
            return f"{CHDIR_VARIABLE} {chdir} is relative; give the absolute directory the daemon's commands run from"
        return None
    relative = [arg for arg in argv if is_relative_path(str(arg))]
    if not relative:
        return None
    return (f"{what} `{' '.join(str(arg) for arg in argv)}` names the relative path {relative[0]} but "
            f"{CHDIR_VARIABLE} is not set; set {CHDIR_VARIABLE} to the directory it runs from (the risk "
            "manager's own directory), or give absolute paths")


def resolve_program(program: str, chdir: str | None, path_env: str | None) -> str | None:
    """The file exec would run for program: relative to chdir when it holds a slash, else looked up on PATH."""
    if "/" in program:
        return os.path.normpath(os.path.join(chdir or NO_CHDIR, program))
    return shutil.which(program, path=path_env)


def may_access(mode: int, owner_uid: int, owner_gid: int, account: Account, want: int) -> bool:
    """Whether account may read/write/execute (want: os.R_OK | os.W_OK | os.X_OK) a file of this mode and owner,
    by its mode bits: root may do anything but execute a file no one may execute."""
    if account.uid == 0:
        return not (want & os.X_OK) or stat.S_ISDIR(mode) or bool(mode & 0o111)
    if account.uid == owner_uid:
        bits = (mode >> 6) & 0o7
    elif owner_gid in account.groups:
        bits = (mode >> 3) & 0o7
    else:
        bits = mode & 0o7
    return bits & want == want


def stat_of(path: str) -> tuple[os.stat_result | None, str | None]:
    """(os.stat(path), None), or (None, why it cannot be stat'ed)."""
    try:
        return os.stat(path), None
    except FileNotFoundError:
        return None, f"{path} does not exist"
    except OSError as err:
        return None, f"{path} cannot be read ({err.strerror})"


def path_problem(path: str, account: Account, want: int, directory: bool = False) -> str | None:
    """Why account cannot reach path and `want` it (None: it can): a directory on the way it may not
    enter, the path missing or of the wrong kind, or the mode bits of path itself."""
    parts = os.path.normpath(path).split("/")
    for depth in range(1, len(parts)):
        parent = "/".join(parts[:depth]) or "/"
        info, problem = stat_of(parent)
        if problem:
            return problem
        if not may_access(info.st_mode, info.st_uid, info.st_gid, account, os.X_OK):
            return f"{account.name} cannot enter {parent} (mode {stat.S_IMODE(info.st_mode):04o}, owner {info.st_uid}:{info.st_gid})"
    info, problem = stat_of(path)
    if problem:
        return problem
    if directory and not stat.S_ISDIR(info.st_mode):
        return f"{path} is not a directory"
    if not directory and not stat.S_ISREG(info.st_mode):
        return f"{path} is not a regular file"
    if not may_access(info.st_mode, info.st_uid, info.st_gid, account, want):
        verbs = ((os.R_OK, "read"), (os.W_OK, "write in" if directory else "write"),
                 (os.X_OK, "enter" if directory else "execute"))
        needs = " and ".join(name for bit, name in verbs if want & bit)
        return (f"{account.name} may not {needs} {path} (mode {stat.S_IMODE(info.st_mode):04o}, "
                f"owner {info.st_uid}:{info.st_gid})")
    return None


@dataclass(frozen=True)
class CommandRunner:
    """Where and as whom the daemon's own commands run: riskmgr_daemon_chdir and riskmgr_daemon_user/group."""

    chdir: str | None = None
    account: Account | None = None

    @classmethod
    def from_params(cls, params: dict) -> CommandRunner:
        return cls(chdir=params.get("daemon_chdir") or None,
                   account=lookup_account(params.get("daemon_user"), params.get("daemon_group")))

    def user_name(self) -> str:
        return (self.account or current_account()).name

    def cwd(self, fallback: str | None = None) -> str:
        return self.chdir or fallback or NO_CHDIR

    def describe(self, what: str, argv: list, fallback: str | None = None) -> str:
        """`what` `argv` (run from DIR as USER): how every message names a command."""
        return f"{what} `{shlex.join(str(arg) for arg in argv)}` (run from {self.cwd(fallback)} as {self.user_name()})"

    def refuse_relative(self, what: str, argv: list, fallback: str | None = None) -> None:
        problem = relative_problem(what, argv, self.chdir or fallback)
        if problem:
            raise DaemonError(problem)

    def launch_options(self) -> dict:
        """The keyword arguments of run_quietly() that run a command as the account: its preexec and env."""
        if self.account is None:
            return {}
        problem = switch_problem(self.account, os.geteuid(), os.getegid())
        if problem:
            raise DaemonError(problem)
        account = self.account
        if os.geteuid() != 0:
            return {"env": account_environment(account, dict(os.environ))}
        return {"preexec": lambda: drop_privileges(account), "env": account_environment(account, dict(os.environ))}

    def command_problems(self, what: str, argv: list, fallback: str | None = None) -> list[str]:
        """Why `argv` could not run (relative without a chdir, a chdir the user cannot enter, a program it cannot
        execute), found without running it; [] when none."""
        problem = relative_problem(what, argv, self.chdir or fallback)
        if problem:
            return [problem]
        account = self.account or current_account()
        if self.account is not None:
            problem = switch_problem(self.account, os.geteuid(), os.getegid())
            if problem:
                return [problem]
        cwd = self.cwd(fallback)
        problem = path_problem(cwd, account, os.X_OK, directory=True)
        if problem:
            return [f"the directory the commands run from, {cwd} ({CHDIR_VARIABLE}), is not usable: {problem}; let "
                    f"{account.name} enter it, or correct {CHDIR_VARIABLE}"]
        program = resolve_program(str(argv[0]), cwd, os.environ.get("PATH"))
        if program is None:
            return [f"{what}: its program {argv[0]} is not found on PATH; give its path in riskmgr_{what}"]
        problem = path_problem(program, account, os.X_OK)
        if problem:
            return [f"{what}: its program {argv[0]} (from {cwd}, as {account.name}) cannot run: {problem}; "
                    f"correct riskmgr_{what}, or the file's mode or owner"]
        return []

    def writable_problem(self, what: str, directory: str) -> str | None:
        """Why the user cannot create files in directory (the pid file's, the log's); None when it can."""
        account = self.account or current_account()
        problem = path_problem(directory, account, os.W_OK | os.X_OK, directory=True)
        if problem:
            return (f"{what}: the directory {directory} is not writable by {account.name}, who runs the daemon: "
                    f"{problem}; give {account.name} write access to it")
        return None
