#!/usr/bin/env python3
"""Managed-node interpreters for the target matrix: Python 3.8-3.13 and the SQLite of old servers.

ansible-core 2.19 manages nodes with Python 3.8 to 3.13, and servers ship old SQLite libraries
(Ubuntu 20.04: 3.31.1 with Python 3.8; Debian 11 and RHEL 9: 3.34.1 with Python 3.9). This tool
makes one interpreter wrapper per target, to be used as `ansible_python_interpreter`:

    .cache/target_pythons/bin/<target>   a /bin/sh wrapper: pyenv's Python X.Y, with LD_LIBRARY_PATH
                                         set to an old libsqlite3.so.0 (or unset: the system one)
    .cache/target_pythons/sqlite-<version>/libsqlite3.so.0   built from the SQLite amalgamation

    target_pythons.py [--json] [--only TARGET ...]

Idempotent: what is cached and still right is kept (a build stamp names its source and flags).
Every wrapper is run after it is made, and must report the Python and SQLite versions of its
target. The SQLite sources come from the npm registry through `npm pack`: the package `sqlite3`
carries the amalgamation as deps/sqlite-autoconf-NNNNNNN.tar.gz, checked against the sha512
pinned below. No npm release carries 3.34.1: sqlite3@5.0.2 carries 3.34.0 (5.0.1 has 3.32.3,
5.0.3 has 3.38.2), the nearest to Debian 11's and RHEL 9's 3.34.1. The Pythons are pyenv's
(`$(pyenv root)/versions/X.Y.Z`, the newest patch release of each X.Y). Missing gcc, C headers or
npm are installed with apt-get, as scripts/bootstrap.sh does for its packages.

Python 3 standard library only. Exit status 1 with one message naming what is missing or wrong.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "target_pythons"
WRAPPERS = CACHE / "bin"
LIBRARY_NAME = "libsqlite3.so.0"
BUILD_STAMP = "BUILD.json"
COMMAND_TIMEOUT_S = 600


class SqliteSource(NamedTuple):
    version: str
    npm_package: str
    integrity: str  # npm's dist.integrity of the package tarball: a re-published tarball is refused
    amalgamation: str  # the tarball inside the package's deps/


SQLITE_SOURCES = {
    source.version: source for source in (
        SqliteSource("3.31.1", "sqlite3@4.2.0",
                     "sha512-roEOz41hxui2Q7uYnWsjMOTry6TcNUNmp8audCx18gF10P2NknwdpF+E+HKvz/F2NvPKGGBF4NGc+ZPQ+AABwg==",
                     "sqlite-autoconf-3310100"),
        SqliteSource("3.34.0", "sqlite3@5.0.2",
                     "sha512-1SdTNo+BVU211Xj1csWa8lV6KM0CtucDwRyA0VHl91wEH1Mgh7RxUpI4rVvG7OhHrzCSGaVyW5g8vKvlrk9DJA==",
                     "sqlite-autoconf-3340000"),
    )
}

# The compile options of Debian's and Ubuntu's libsqlite3 (debian/rules; PRAGMA compile_options of
# Debian 12's build), so that an old library behaves as the one on those servers. The HAVE_* lines
# are what configure would find on Linux: without HAVE_USLEEP, SQLite's busy handler sleeps in
# whole seconds, and every busy_timeout test would measure that instead of the code.
SQLITE_CFLAGS = (
    "-O1", "-shared", "-fPIC", "-DSQLITE_THREADSAFE=1",
    "-DSQLITE_ENABLE_DESERIALIZE",  # Python 3.11+ needs sqlite3_serialize; built in only from 3.36
    "-DSQLITE_SECURE_DELETE", "-DSQLITE_ENABLE_COLUMN_METADATA", "-DSQLITE_ENABLE_FTS3",
    "-DSQLITE_ENABLE_FTS3_PARENTHESIS", "-DSQLITE_ENABLE_FTS3_TOKENIZER=1", "-DSQLITE_ENABLE_FTS4",
    "-DSQLITE_ENABLE_FTS5", "-DSQLITE_ENABLE_RTREE=1", "-DSQLITE_SOUNDEX=1", "-DSQLITE_ENABLE_UNLOCK_NOTIFY",
    "-DSQLITE_OMIT_LOOKASIDE=1", "-DSQLITE_ENABLE_DBSTAT_VTAB", "-DSQLITE_ENABLE_UPDATE_DELETE_LIMIT=1",
    "-DSQLITE_ENABLE_LOAD_EXTENSION", "-DSQLITE_ENABLE_JSON1", "-DSQLITE_LIKE_DOESNT_MATCH_BLOBS",
    "-DSQLITE_USE_URI=1", "-DSQLITE_MAX_SCHEMA_RETRY=25", "-DSQLITE_ENABLE_PREUPDATE_HOOK",
    "-DSQLITE_ENABLE_SESSION", "-DSQLITE_ENABLE_STMTVTAB", "-DSQLITE_MAX_VARIABLE_NUMBER=250000",
    "-DHAVE_USLEEP=1", "-DHAVE_FDATASYNC=1", "-DHAVE_LOCALTIME_R=1", "-DHAVE_GMTIME_R=1",
    "-DHAVE_POSIX_FALLOCATE=1", "-DHAVE_STRCHRNUL=1", "-DHAVE_ISNAN=1",
    f"-Wl,-soname,{LIBRARY_NAME}",
)
SQLITE_LIBS = ("-lpthread", "-ldl", "-lm")

# Commands a cold build needs, and the Debian package that brings each.
BUILD_COMMANDS = {"gcc": "gcc", "npm": "npm"}
C_HEADERS = (Path("/usr/include/stdio.h"), "libc6-dev")


class Target(NamedTuple):
    name: str
    python: str  # X.Y
    sqlite: str | None  # a version of SQLITE_SOURCES; None: this machine's library
    like: str  # the servers it stands for

    @property
    def interpreter(self) -> Path:
        return WRAPPERS / self.name


TARGETS = (
    Target("py3.8", "3.8", None, "Python 3.8 on the system SQLite"),
    Target("py3.9", "3.9", None, "Python 3.9 on the system SQLite"),
    Target("py3.10", "3.10", None, "Python 3.10 on the system SQLite"),
    Target("py3.11", "3.11", None, "Python 3.11 on the system SQLite (Debian 12)"),
    Target("py3.12", "3.12", None, "Python 3.12 on the system SQLite"),
    Target("py3.13", "3.13", None, "Python 3.13 on the system SQLite"),
    Target("py3.8-sqlite3.31.1", "3.8", "3.31.1", "Ubuntu 20.04"),
    Target("py3.9-sqlite3.34.0", "3.9", "3.34.0", "Debian 11, RHEL 9 (3.34.1 there)"),
    Target("py3.13-sqlite3.31.1", "3.13", "3.31.1", "a new Python on an old SQLite"),
)
TARGETS_BY_NAME = {target.name: target for target in TARGETS}

PROBE = ("import json, sqlite3, sys; print(json.dumps({'executable': sys.executable, "
         "'python': '%d.%d.%d' % sys.version_info[:3], 'sqlite': sqlite3.sqlite_version, "
         "'sqlite_in_use': sqlite3.connect(':memory:').execute('SELECT sqlite_version()').fetchone()[0]}))")


class TargetError(Exception):
    """An operator-ready message: main() prints it and exits 1."""


# --- the pieces ---------------------------------------------------------------------------------

def run(argv: list[str], what: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    """Run a command; its stdout, or a TargetError naming `what` failed and the command's own words."""
    try:
        done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise TargetError(f"{what}: {shlex.join(argv)}: {err}") from None
    if done.returncode != 0:
        words = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[-5:]
        raise TargetError(f"{what}: `{shlex.join(argv)}` exited {done.returncode}: {' / '.join(words)}")
    return done.stdout


def ensure_build_tools() -> None:
    """gcc, the C headers and npm; installed with apt-get when missing (a cold cache only)."""
    missing = [package for command, package in BUILD_COMMANDS.items() if shutil.which(command) is None]
    if not C_HEADERS[0].exists():
        missing.append(C_HEADERS[1])
    if not missing:
        return
    if shutil.which("apt-get") is None:
        raise TargetError(f"building the old SQLite libraries needs the packages {', '.join(missing)}; "
                          "install them and rerun tools/target_pythons.py")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    print(f"target_pythons: installing Debian packages: {' '.join(missing)}", file=sys.stderr)
    run(sudo + ["apt-get", "update", "-qq"], "apt-get update")
    run(sudo + ["apt-get", "install", "-y", "-qq", *missing], f"apt-get install {' '.join(missing)}",
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def pyenv_root() -> Path:
    if os.environ.get("PYENV_ROOT"):
        return Path(os.environ["PYENV_ROOT"])
    if shutil.which("pyenv"):
        return Path(run(["pyenv", "root"], "pyenv root").strip())
    return Path.home() / ".pyenv"


def find_python(minor: str, versions: Path) -> Path:
    """The newest pyenv-installed X.Y.Z of `minor` (X.Y), as its bin/pythonX.Y."""
    found = []
    for directory in versions.glob(f"{minor}.*") if versions.is_dir() else ():
        match = re.fullmatch(rf"{re.escape(minor)}\.(\d+)", directory.name)
        binary = directory / "bin" / f"python{minor}"
        if match and os.access(binary, os.X_OK):
            found.append((int(match.group(1)), binary))
    if not found:
        raise TargetError(f"Python {minor} is not installed under {versions} (pyenv on this machine kind has "
                          f"3.8-3.13); install it with `pyenv install {minor}` where python.org is reachable, "
                          "or set PYENV_ROOT to the pyenv that has it")
    return max(found)[1]


def system_sqlite_version() -> str:
    """The version of this machine's libsqlite3, seen by this interpreter without LD_LIBRARY_PATH."""
    env = {key: value for key, value in os.environ.items() if key != "LD_LIBRARY_PATH"}
    return json.loads(run([sys.executable, "-c", PROBE], "reading the system SQLite version", env=env))["sqlite"]


def library_dir(version: str) -> Path:
    return CACHE / f"sqlite-{version}"


def build_stamp(source: SqliteSource) -> dict:
    return {"npm_package": source.npm_package, "integrity": source.integrity, "amalgamation": source.amalgamation,
            "cflags": list(SQLITE_CFLAGS), "libs": list(SQLITE_LIBS)}


def library_is_current(source: SqliteSource) -> bool:
    directory = library_dir(source.version)
    try:
        stamp = json.loads((directory / BUILD_STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return stamp == build_stamp(source) and (directory / LIBRARY_NAME).is_file()


def fetch_amalgamation(source: SqliteSource, work: Path) -> Path:
    """npm pack the package, check its integrity, extract sqlite3.c; the path of sqlite3.c."""
    packed = json.loads(run(["npm", "pack", source.npm_package, "--json", "--pack-destination", str(work)],
                            f"downloading {source.npm_package} (SQLite {source.version}) with npm", cwd=work))
    record = packed[0] if isinstance(packed, list) else packed
    if record.get("integrity") != source.integrity:
        raise TargetError(f"{source.npm_package}: npm gave a tarball with integrity {record.get('integrity')}, "
                          f"not the pinned {source.integrity}; refusing to build from it")
    inner_name = f"package/deps/{source.amalgamation}.tar.gz"
    with tarfile.open(work / record["filename"]) as package:
        try:
            inner = package.extractfile(inner_name)
        except KeyError:
            inner = None
        if inner is None:
            raise TargetError(f"{source.npm_package}: has no {inner_name}; pick the npm release that carries "
                              f"SQLite {source.version}")
        with tarfile.open(fileobj=inner) as amalgamation:
            for name in ("sqlite3.c", "sqlite3.h"):
                member = amalgamation.extractfile(f"{source.amalgamation}/{name}")
                (work / name).write_bytes(member.read())
    declared = re.search(r'#define SQLITE_VERSION\s+"([^"]+)"', (work / "sqlite3.h").read_text(encoding="utf-8"))
    if not declared or declared.group(1) != source.version:
        raise TargetError(f"{source.npm_package}: its sqlite3.h is version {declared and declared.group(1)}, "
                          f"not {source.version}")
    return work / "sqlite3.c"


def build_library(source: SqliteSource) -> Path:
    """libsqlite3.so.0 of `source`, built once; the directory to put in LD_LIBRARY_PATH."""
    directory = library_dir(source.version)
    if library_is_current(source):
        return directory
    ensure_build_tools()
    print(f"target_pythons: building SQLite {source.version} from {source.npm_package} (a minute or two)",
          file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix=f"sqlite-{source.version}-", dir=CACHE) as temp:
        work = Path(temp)
        amalgamation = fetch_amalgamation(source, work)
        run(["gcc", *SQLITE_CFLAGS, str(amalgamation), "-o", str(work / LIBRARY_NAME), *SQLITE_LIBS],
            f"compiling SQLite {source.version}")
        (work / BUILD_STAMP).write_text(json.dumps(build_stamp(source), indent=2) + "\n", encoding="utf-8")
        built = work / "lib"
        built.mkdir()
        for name in (LIBRARY_NAME, BUILD_STAMP):
            os.replace(work / name, built / name)
        # Swapped in whole: a build cut off half-way leaves the old directory or none, never a mix.
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(built, directory)
    return directory


def wrapper_text(target: Target, python: Path, libraries: Path | None) -> str:
    if libraries is None:
        # Unset, not inherited: a caller's LD_LIBRARY_PATH must not turn this into another target.
        environment = "unset LD_LIBRARY_PATH"
    else:
        environment = f"LD_LIBRARY_PATH={shlex.quote(str(libraries))}\nexport LD_LIBRARY_PATH"
    return (f"#!/bin/sh\n# {target.name}: {target.like}. Written by tools/target_pythons.py; "
            "use as ansible_python_interpreter.\n"
            f"{environment}\nexec {shlex.quote(str(python))} \"$@\"\n")


def write_wrapper(target: Target, text: str) -> Path:
    path = target.interpreter
    if path.is_file() and path.read_text(encoding="utf-8") == text and os.access(path, os.X_OK):
        return path
    WRAPPERS.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(text, encoding="utf-8")
    temp.chmod(0o755)
    os.replace(temp, path)
    return path


def check_wrapper(target: Target, expected_sqlite: str, libraries: Path | None) -> dict:
    """Run the wrapper: it must be Python X.Y with the expected SQLite, loaded and in use."""
    probe = json.loads(run([str(target.interpreter), "-c", PROBE], f"{target.name}: running {target.interpreter}"))
    python_minor = ".".join(probe["python"].split(".")[:2])
    if python_minor != target.python or {probe["sqlite"], probe["sqlite_in_use"]} != {expected_sqlite}:
        raise TargetError(f"{target.name}: {target.interpreter} runs Python {probe['python']} with SQLite "
                          f"{probe['sqlite']} (in use: {probe['sqlite_in_use']}), not Python {target.python} with "
                          f"SQLite {expected_sqlite}; remove {CACHE} and rerun tools/target_pythons.py")
    return {"target": target.name, "like": target.like, "python": probe["python"], "sqlite": probe["sqlite"],
            "interpreter": str(target.interpreter), "executable": probe["executable"],
            "libraries": str(libraries) if libraries else None}


def ensure_targets(names: list[str] | None = None) -> list[dict]:
    """Make (or keep) and check the wrapper of every target in `names` (all by default)."""
    unknown = sorted(set(names or ()) - set(TARGETS_BY_NAME))
    if unknown:
        raise TargetError(f"unknown target(s) {', '.join(unknown)}; known: {', '.join(TARGETS_BY_NAME)}")
    chosen = [t for t in TARGETS if not names or t.name in names]
    versions = pyenv_root() / "versions"
    system_sqlite = system_sqlite_version()
    CACHE.mkdir(parents=True, exist_ok=True)
    # One maker at a time (scripts/test and a developer's pytest may start together): the others
    # wait, then find the cache made and only check it.
    with open(CACHE / ".lock", "w", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        checked = []
        for target in chosen:
            python = find_python(target.python, versions)
            libraries = build_library(SQLITE_SOURCES[target.sqlite]) if target.sqlite else None
            write_wrapper(target, wrapper_text(target, python, libraries))
            checked.append(check_wrapper(target, target.sqlite or system_sqlite, libraries))
    return checked


def table(checked: list[dict]) -> str:
    columns = ("target", "python", "sqlite", "like", "interpreter")
    rows = [("target", "python", "sqlite", "stands for", "interpreter")]
    rows += [tuple(os.path.relpath(row[c], ROOT) if c == "interpreter" else row[c] for c in columns) for row in checked]
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns) - 1)]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1]
                     for row in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the targets as JSON")
    parser.add_argument("--only", nargs="+", metavar="TARGET", help="only these targets (default: all)")
    args = parser.parse_args(argv)
    try:
        checked = ensure_targets(args.only)
    except TargetError as err:
        print(f"target_pythons.py: {err}", file=sys.stderr)
        return 1
    print(json.dumps(checked, indent=2) if args.json else table(checked))
    return 0


if __name__ == "__main__":
    sys.exit(main())
