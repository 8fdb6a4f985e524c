#!/usr/bin/env python3
"""Try a candidate schema version before it ships, and print one verdict.

    python tools/try_version.py DIR [--seeds 0-19] [--old-seeds 0-1] [--targets NAME,...]

DIR is the candidate: a directory of .sql files (its number is the one after the newest in
files/migrations, or the N of its name vN), or a directory of vN/ directories added to (or
replacing) the shipped ones. Nothing is copied into files/migrations. What runs, each on real SQLite files:

  1. the catalog: every file parses, holds only what a version may hold (docs/versions.md), and a
     file that changes data says `-- riskmgr: irreversible`;
  2. random v1 shapes (tools/v1_shapes.py): up one version at a time from v1 to the candidate,
     then a random walk up and down, every version reached with its exact schema text, every v1
     row, verified, and a rerun that changes nothing (tests/shape_roundtrip.py --chains);
  3. the same walk under every target interpreter of the matrix (Python 3.8-3.13, SQLite 3.31.1
     and 3.34.0: tools/target_pythons.py), a few seeds each.

Exit status 0 when the verdict is PASS. Optional files are tried off (their option unset). A
file marked irreversible that is not optional blocks every in-place downgrade across it, so the
walk fails at the first one and says so: that is the truth about such a version (only a restore
goes back); make the file optional (option=NAME) to try the rest.
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "files" / "migrations"
VERSION_DIR = re.compile(r"^v(\d+)$")


def candidate_catalog(candidate: Path, workdir: Path) -> Path:
    """A migrations directory: the shipped versions plus the candidate as the next one (or the candidate's own)."""
    target = workdir / "migrations"
    shutil.copytree(SHIPPED, target)
    versions = [d for d in candidate.iterdir() if d.is_dir() and VERSION_DIR.match(d.name)]
    if versions:  # vN/ directories: those of the candidate replace or add to the shipped ones
        for directory in versions:
            shutil.rmtree(target / directory.name, ignore_errors=True)
            shutil.copytree(directory, target / directory.name)
        return target
    shipped = sorted(int(VERSION_DIR.match(d.name).group(1)) for d in SHIPPED.iterdir() if VERSION_DIR.match(d.name))
    named = VERSION_DIR.match(candidate.name)
    number = int(named.group(1)) if named and int(named.group(1)) > shipped[-1] else shipped[-1] + 1
    shutil.copytree(candidate, target / f"v{number}")
    return target


def check_catalog(migrations: Path) -> tuple[bool, str]:
    code = ("import sys; sys.path.insert(0, sys.argv[2]); import shape_roundtrip as s; s.engine(__import__('pathlib')."
            "Path(sys.argv[3])); from ansible.module_utils.sqlite_catalog import load_catalog; c = load_catalog(sys.argv[1]);"
            " print(' '.join(f'v{v}:{len(c.files[v])}' + ('(irreversible)' if any(f.irreversible for f in c.files[v]) "
            "else '') for v in c.versions))")
    done = subprocess.run([sys.executable, "-c", code, str(migrations), str(ROOT / "tests"), str(migrations.parent)],
                          capture_output=True, text=True, check=False)
    if done.returncode:
        return False, (done.stderr.strip().splitlines() or ["unreadable"])[-1]
    return True, "versions " + done.stdout.strip()


def walk(interpreter: str, migrations: Path, seeds: str, workdir: Path) -> tuple[bool, str]:
    done = subprocess.run([interpreter, str(ROOT / "tests" / "shape_roundtrip.py"), "--chains", "--seeds", seeds,
                           "--migrations", str(migrations), "--workdir", str(workdir)],
                          capture_output=True, text=True, timeout=1800, check=False)
    lines = done.stdout.splitlines()
    failed = [line for line in lines if line.startswith("FAILED")]
    summary = (lines[0] + ": " + lines[-1]) if lines else (done.stderr.strip().splitlines() or ["no output"])[-1]
    return done.returncode == 0 and not failed, "\n      ".join([summary] + failed[:5])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("candidate", type=Path, help="the candidate version's directory of .sql files")
    parser.add_argument("--seeds", default="0-19", help="random v1 shapes on this interpreter (default 0-19)")
    parser.add_argument("--old-seeds", default="0-1", help="random v1 shapes on each target interpreter (default 0-1)")
    parser.add_argument("--targets", help="comma-separated target names (default: every target of the matrix)")
    args = parser.parse_args(argv)
    if not args.candidate.is_dir():
        print(f"FAIL: {args.candidate} is not a directory of .sql files")
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="try-version-"))
    try:
        migrations = candidate_catalog(args.candidate.resolve(), workdir)
        results = [("catalog", *check_catalog(migrations))]
        if results[0][1]:
            results.append(("random v1 shapes, this Python", *walk(sys.executable, migrations, args.seeds,
                                                                    workdir / "here")))
            sys.path.insert(0, str(ROOT / "tools"))
            from target_pythons import TARGETS, TargetError, ensure_targets
            names = args.targets.split(",") if args.targets else [t.name for t in TARGETS]
            try:
                targets = ensure_targets(names)
            except TargetError as err:
                results.append(("target matrix", False, str(err)))
                targets = []
            for row in targets:
                results.append((f"target {row['target']}", *walk(str(row["interpreter"]), migrations, args.old_seeds,
                                                                  workdir / row["target"])))
        for name, ok, detail in results:
            print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}")
        verdict = all(ok for _name, ok, _detail in results)
        print(f"verdict: {'PASS' if verdict else 'FAIL'} ({args.candidate})")
        return 0 if verdict else 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
