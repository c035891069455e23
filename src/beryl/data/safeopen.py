"""Opening a file once, safely, and knowing it again by its identity.

``open_regular`` is the one way Beryl opens a file it did not write: the last step of the path
is never followed if it is a symbolic link, opening a FIFO never blocks, and the check that it
is a regular file runs on the opened descriptor, so what is read is what was checked, whatever
is swapped in at the path meanwhile. ``beryl.data.confined`` walks a user-named path to it one
folder at a time and adds its own checks (one hard link, a size limit); ``beryl.data.inputfile``
opens input files with it and hashes them as it reads.

``Identity`` is what ``stat`` says about a file: the same identity means the same content (as
git and rsync assume), provided its times are older than a write could be.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

# O_NOFOLLOW: a symlink as the last component fails (ELOOP) instead of being followed.
# O_NONBLOCK: opening a FIFO returns at once instead of waiting for a writer.
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
FILE_FLAGS = (
    os.O_RDONLY
    | NOFOLLOW
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_NOCTTY", 0)
    | getattr(os, "O_CLOEXEC", 0)
)
LINK_ERRNOS = frozenset({errno.ELOOP, errno.EMLINK})  # O_NOFOLLOW on a symlink (EMLINK: BSDs)


@dataclass(frozen=True)
class Identity:
    """A file's device, inode, size and modification and change times."""

    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, info: os.stat_result) -> Identity:
        return cls(info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)

    @classmethod
    def at(cls, path: Path) -> Identity | None:
        """The identity of the file at ``path`` now, or None when there is none to stat."""
        try:
            return cls.of(path.stat())
        except OSError:
            return None


class NotRegularFileError(OSError):
    """The path is (no longer) a regular file: a symbolic link (``mode`` None), or a folder,
    FIFO, socket or device (``mode``: the ``st_mode`` of what was opened)."""

    def __init__(self, code: int, what: str, path: str, mode: int | None = None) -> None:
        super().__init__(code, what, path)
        self.mode = mode


def open_regular(path: str | Path, *, dir_fd: int | None = None) -> tuple[int, os.stat_result]:
    """Open a regular file for reading, once; returns the descriptor and its ``fstat``.

    ``path`` is relative to the folder descriptor ``dir_fd`` when one is given. A symbolic link
    at the last step, a folder, a FIFO, a socket or a device is a ``NotRegularFileError``
    (a FIFO without blocking); any other failure is the ``OSError`` of the open. The caller
    closes the descriptor.
    """
    try:
        fd = os.open(path, FILE_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in LINK_ERRNOS:
            raise NotRegularFileError(exc.errno, "a symbolic link", str(path)) from exc
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotRegularFileError(errno.EINVAL, "not a regular file", str(path), info.st_mode)
    except BaseException:
        os.close(fd)
        raise
    return fd, info


def describe(mode: int) -> str:
    """What a file of this ``st_mode`` is, for messages."""
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"
