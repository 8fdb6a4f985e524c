"""An XFS filesystem with reflinks (reflink=1, RHEL's default) on a loop mount, made and removed as root.

The tests and the bench use it to run the backup where FICLONE works; where it cannot be made
(not root, no loop devices, no mkfs.xfs, a kernel without XFS) unavailable_reason() or the
LoopMountUnavailable raised says why, so the caller skips with that reason.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


class LoopMountUnavailable(RuntimeError):
    """No XFS loop mount can be made here; the message says why."""


def tool(name: str) -> str | None:
    return shutil.which(name, path=SBIN_PATH)


def unavailable_reason() -> str | None:
    """Why no XFS loop mount can be made on this machine, or None when it can be tried."""
    if os.geteuid() != 0:
        return "not root: a loop mount needs root"
    if not os.path.exists("/dev/loop-control"):
        return "no loop devices (/dev/loop-control is missing, e.g. in an unprivileged container)"
    for name in ("mkfs.xfs", "mount", "umount"):
        if tool(name) is None:
            return f"{name} not found (apt-get install xfsprogs)"
    return None


def run(*argv: str) -> None:
    done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    if done.returncode != 0:
        raise LoopMountUnavailable(f"{' '.join(argv)} failed ({done.returncode}): {done.stdout.strip()}")


@contextmanager
def xfs_reflink_mount(workdir: Path, size_mb: int = 512) -> Iterator[Path]:
    """A fresh XFS (reflink=1) of size_mb (a sparse image in workdir) mounted at workdir/xfs; removed after."""
    reason = unavailable_reason()
    if reason:
        raise LoopMountUnavailable(reason)
    image, mountpoint = Path(workdir) / "xfs.img", Path(workdir) / "xfs"
    mountpoint.mkdir(parents=True, exist_ok=True)
    with open(image, "wb") as handle:
        handle.truncate(max(size_mb, 300) * 1024 * 1024)  # mkfs.xfs refuses less than 300 MB
    try:
        run(tool("mkfs.xfs"), "-q", "-f", "-m", "reflink=1", str(image))
        run(tool("mount"), "-o", "loop", str(image), str(mountpoint))
    except BaseException:
        image.unlink()
        raise
    try:
        yield mountpoint
    finally:
        unmount(mountpoint)
        image.unlink()


def unmount(mountpoint: Path) -> None:
    """umount, lazily when something still holds the mount (a daemon the caller left running)."""
    if subprocess.run([tool("umount"), str(mountpoint)], stdout=subprocess.DEVNULL,
                      stderr=subprocess.DEVNULL, check=False).returncode != 0:
        subprocess.run([tool("umount"), "-l", str(mountpoint)], check=False)


def shared_extents(path: Path) -> bool:
    """True when filefrag -v shows an extent of path flagged shared (a reflink's, after FICLONE)."""
    filefrag = tool("filefrag")
    if filefrag is None:
        raise LoopMountUnavailable("filefrag not found (apt-get install e2fsprogs)")
    out = subprocess.run([filefrag, "-v", str(path)], stdout=subprocess.PIPE, text=True, check=True).stdout
    return any("shared" in line for line in out.splitlines())
