"""Files this tool creates on a host: exclusively, privately, never through a symlink; copied and hashed.

Every file the modules write beside the database or in the backup directory is made here: a new
private temp name (O_CREAT|O_EXCL|O_NOFOLLOW, mode 0600, handed to the database's owner when run
as root), published under its final name without ever replacing anything, and removed again on
failure. A database file is copied as cheaply as its filesystem allows: a reflink (FICLONE: the
copy shares the source's extents, whatever the size) where it has them, else copy_file_range, else a
byte copy; a reflink is hashed later by its caller, the other two on the way or, for a database the
caller copies with its daemon stopped (hash_later), later too.

Plain Python, no Ansible import.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import queue
import secrets
import stat
import sys
import threading
from pathlib import Path
from typing import Callable

from ansible.module_utils.sqlite_common import HASH_CHUNK, ROLLBACK_FORMAT, HEADER_BYTES, BackupError, file_format


DIR_MODE = 0o700


FILE_MODE = 0o600


SQLITE_SIDECARS = ("-journal", "-wal", "-shm")


# O_NOFOLLOW: a symlink planted at one of our names must make us fail, never write through it.
EXCLUSIVE_FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


TEMP_ATTEMPTS = 5


NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK}


COPY_CHUNK = 64 * 1024 * 1024


NO_KERNEL_COPY = {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EBADF}


# Linux's _IOW(0x94, 9, int): make the destination share every extent of the source (btrfs, XFS
# with reflink=1, bcachefs, overlayfs over those).
FICLONE = 0x40049409


# What a filesystem (or kernel) without reflinks answers: the copy falls back, never fails on these.
NO_REFLINK = {errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOTTY, errno.EXDEV, errno.EINVAL, errno.ENOSYS}


REFLINK, KERNEL_COPY, BYTE_COPY = "reflink", "copy_file_range", "byte copy"




def new_token() -> str:
    return secrets.token_hex(6)


def is_regular_file(path: str | os.PathLike) -> bool:
    """True for a regular file that is not a symlink (lstat: a link is never taken for its target)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def owner_for_root(path: str | os.PathLike) -> tuple[int, int] | None:
    """(uid, gid) of path when we run as root (files are then handed to that owner), else None."""
    if os.geteuid() != 0:
        return None
    info = os.stat(path)
    return info.st_uid, info.st_gid


def create_exclusive(path: Path, mode: int = FILE_MODE, owner: tuple[int, int] | None = None) -> int:
    """Create `path` that must not exist (not even as a symlink); return its open fd."""
    fd = os.open(path, EXCLUSIVE_FLAGS, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have narrowed or (for a 0644 DB) the mode asked for
        if owner is not None:
            os.fchown(fd, *owner)
    except BaseException:
        os.close(fd)
        os.unlink(path)
        raise
    return fd


def create_temp(directory: Path, final_name: str, mode: int = FILE_MODE, owner: tuple[int, int] | None = None,
                token: Callable[[], str] = new_token) -> tuple[int, Path]:
    """A new private file `.<final>.tmp-<random>` in directory (same filesystem as the final name)."""
    for _attempt in range(TEMP_ATTEMPTS):
        temp = directory / f".{final_name}.tmp-{token()}"
        try:
            return create_exclusive(temp, mode, owner), temp
        except FileExistsError:
            continue  # something sits at that name (maybe a planted symlink): never reuse it
    raise BackupError(f"{directory}: could not create a temporary file for {final_name} after {TEMP_ATTEMPTS} "
                      "attempts (names already taken); check the directory for planted files")


def publish_exclusive(temp: Path, final: Path) -> None:
    """Give temp its final name, never replacing anything already there (file or symlink)."""
    try:
        os.link(temp, final, follow_symlinks=False)  # link(2) fails with EEXIST and never follows final
    except FileExistsError as err:
        raise BackupError(f"{final}: already exists ({describe_existing(final)}); refusing to replace it: "
                          "move it out of the way and rerun") from err
    except OSError as err:
        if err.errno not in NO_HARD_LINKS:
            raise
        if os.path.lexists(final):  # no hard links on this filesystem: check, then rename
            raise BackupError(f"{final}: already exists ({describe_existing(final)}); refusing to replace it: "
                              "move it out of the way and rerun") from err
        os.rename(temp, final)
        return
    os.unlink(temp)


def describe_existing(path: Path) -> str:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return "gone again"
    if stat.S_ISLNK(mode):
        return f"a symlink to {os.readlink(path)}"
    return "a directory" if stat.S_ISDIR(mode) else "a file"


def remove_quietly(path: Path) -> bool:
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False


def remove_temp_database(temp: Path) -> None:
    """Remove our temp file and any journal SQLite made beside it (the random name is ours alone)."""
    for suffix in ("",) + SQLITE_SIDECARS:
        remove_quietly(Path(f"{temp}{suffix}"))


def sha256_fd(fd: int) -> tuple[str, int]:
    """sha256 and size of an open file, streamed: never the whole file in memory."""
    digest, offset = hashlib.sha256(), 0
    while True:
        chunk = os.pread(fd, HASH_CHUNK, offset)
        if not chunk:
            return digest.hexdigest(), offset
        digest.update(chunk)
        offset += len(chunk)


def same_file(fd: int, path: Path) -> bool:
    """True when path still names the inode we hold open (nobody swapped it for something else)."""
    try:
        held, named = os.fstat(fd), os.lstat(path)
    except FileNotFoundError:
        return False
    return stat.S_ISREG(named.st_mode) and (held.st_dev, held.st_ino) == (named.st_dev, named.st_ino)


def clone_file(src_fd: int, dst_fd: int) -> bool:
    """Make dst (empty) a reflink of src; False where the filesystem or platform has no reflinks."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        fcntl.ioctl(dst_fd, FICLONE, src_fd)
    except OSError as err:
        if err.errno not in NO_REFLINK:
            raise
        return False
    return True


def copy_range(src_fd: int, dst_fd: int, offset: int, length: int) -> str:
    """length bytes at offset from src to dst: in the kernel where it can, else through a buffer.

    Returns how: KERNEL_COPY, or BYTE_COPY once the kernel refused (then for the rest of the range).
    """
    done, how = 0, KERNEL_COPY
    while done < length:
        copied = -1
        if how == KERNEL_COPY:
            try:
                copied = os.copy_file_range(src_fd, dst_fd, length - done, offset + done, offset + done)
            except OSError as err:
                if err.errno not in NO_KERNEL_COPY:
                    raise
                how = BYTE_COPY
        if how == BYTE_COPY:
            data = os.pread(src_fd, min(HASH_CHUNK * 8, length - done), offset + done)
            copied = os.pwrite(dst_fd, data, offset + done) if data else 0
        if copied == 0:
            raise BackupError(f"the database shrank while it was copied (at byte {offset + done}); "
                              "something else writes to it")
        done += copied
    return how


def rollback_header(dst_fd: int) -> None:
    """A WAL-format header becomes a rollback-journal one, as PRAGMA journal_mode=DELETE would make it."""
    header = os.pread(dst_fd, HEADER_BYTES, 0)
    if file_format(header) == "wal":
        os.pwrite(dst_fd, ROLLBACK_FORMAT, 18)
    elif file_format(header) != "rollback":
        raise BackupError(f"unknown file format bytes {header[18:20].hex()} in the database header")


def copy_database_file(src_fd: int, dst_fd: int, size: int, hash_later: bool = False) -> tuple[str, str | None]:
    """Copy a SQLite file of size bytes as one self-contained file; (how, sha256 or None).

    A reflink costs the same whatever the size, so its sha256 is left to the caller (None), who
    reads it back outside the downtime; a copy_file_range or byte copy is hashed on the way (see
    copy_hashing), unless hash_later: then it is copied alone and hashed by the caller too, beside
    the migration (the hash reads the copy back either way). The header ends in rollback-journal format.
    """
    if clone_file(src_fd, dst_fd):
        if os.fstat(dst_fd).st_size != size:
            raise BackupError(f"the reflink holds {os.fstat(dst_fd).st_size} bytes, the database {size}; "
                              "something else writes to it")
        rollback_header(dst_fd)  # copy-on-write: the source's block stays as it was
        return REFLINK, None
    methods: list[str] = []
    if hash_later:
        digest = None
        for offset in range(0, size, COPY_CHUNK):
            methods.append(copy_range(src_fd, dst_fd, offset, min(COPY_CHUNK, size - offset)))
        if size:
            rollback_header(dst_fd)
    else:
        digest = copy_hashing(src_fd, dst_fd, size, methods)
    return (BYTE_COPY if BYTE_COPY in methods else KERNEL_COPY), digest


def copy_hashing(src_fd: int, dst_fd: int, size: int, methods: list[str] | None = None) -> str:
    """Copy size bytes and return the sha256 of what landed in dst, hashed while the copy goes on.

    The kernel copies chunk n+1 while a second thread hashes chunk n back from dst (both release
    the GIL), so the copy and its checksum cost about one pass. A WAL-format header becomes a
    rollback-journal one, as PRAGMA journal_mode=DELETE would make it: the backup is one
    self-contained file whatever mode the live database is in. methods, when given, gets how each
    chunk was copied (copy_range).
    """
    digest = hashlib.sha256()
    pending: queue.Queue = queue.Queue(maxsize=4)
    failure: list[BaseException] = []

    def hash_chunks() -> None:
        while (item := pending.get()) is not None:
            if failure:
                continue
            offset, length = item
            try:
                while length:
                    data = os.pread(dst_fd, min(HASH_CHUNK * 8, length), offset)
                    if not data:
                        raise BackupError("the copy is shorter than what was written to it")
                    digest.update(data)
                    offset, length = offset + len(data), length - len(data)
            except BaseException as err:  # reported by the copying thread
                failure.append(err)

    hasher = threading.Thread(target=hash_chunks, name="backup-sha256", daemon=True)
    hasher.start()
    try:
        for offset in range(0, size, COPY_CHUNK):
            length = min(COPY_CHUNK, size - offset)
            how = copy_range(src_fd, dst_fd, offset, length)
            if methods is not None:
                methods.append(how)
            if offset == 0:
                rollback_header(dst_fd)
            pending.put((offset, length))
            if failure:
                break
    finally:
        pending.put(None)
        hasher.join()
    if failure:
        raise failure[0]
    return digest.hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    with open(path, "rb") as handle:
        return sha256_fd(handle.fileno())[0]


def fsync_path(path: str | os.PathLike) -> None:
    """fsync a file or a directory (a rename is durable only once its directory is synced)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
