"""Open a file a user named, once, confined to a folder: no symlink, FIFO or race gets out.

Checking a path and then opening it by name again lets anyone who can write below the folder swap
the file for a symlink, a FIFO or a hard link in between. Here the name is walked one component at
a time from a descriptor of the folder (``openat`` with ``O_NOFOLLOW``), every check runs on the
descriptor that was opened, and the same descriptor is read, in bounded blocks::

    with open_confined(settings.root, "input/new.csv", max_bytes=50 << 20) as opened:
        data = opened.read_all()

Refused (each with its own ``ConfinedError`` subclass and ``kind``): names that are empty, hold a
NUL byte or a lone surrogate, or are too long (``bad-name``); absolute names not under the folder
and ``..`` that would step above it, even to come back (``outside``); a symlink at any position,
even one pointing inside, a file with more than one hard link, and a hard link swapped away while
it was opened (``link``); a missing file or a file used as a folder (``not-found``); folders,
FIFOs, sockets and devices (``not-a-file``); a file over ``max_bytes``, by size before any read or
because it grew while read (``too-large``); and any other OS error (``unreadable``). Messages name
the file as the user wrote it, never its content nor where a link points. ``a/../b`` is read
lexically as ``b`` (``a`` is never looked at).

The folder itself is resolved once with ``Path.resolve()``: symlinks above it are the
administrator's business; the confinement is about what lies below. The file itself is opened by
``beryl.data.safeopen.open_regular``, as every file Beryl did not write. Linux and other POSIX
systems.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Literal

from beryl._io import is_utf8
from beryl.data.safeopen import LINK_ERRNOS, NOFOLLOW, NotRegularFileError, describe, open_regular
from beryl.errors import StateError

__all__ = [
    "BLOCK_SIZE",
    "BadNameError",
    "ConfinedError",
    "ConfinedFile",
    "Kind",
    "LinkError",
    "NotAFileError",
    "NotFoundError",
    "OutsideError",
    "RootUnavailableError",
    "TooLargeError",
    "UnreadableError",
    "open_confined",
    "read_confined",
]

BLOCK_SIZE = 1 << 20
_MAX_NAME_BYTES = 4096  # PATH_MAX on Linux: a longer name cannot name a file anyway
_SHOWN_CHARS = 120

# O_PATH (Linux) opens a folder without needing read permission on it; elsewhere O_RDONLY (0).
_FOLDER_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_PATH", 0)
    | getattr(os, "O_DIRECTORY", 0)
    | NOFOLLOW
    | getattr(os, "O_NONBLOCK", 0)  # without O_PATH, a FIFO named as a folder must not block
    | getattr(os, "O_CLOEXEC", 0)
)
_DELETED = " (deleted)"  # how /proc/self/fd shows a descriptor whose name was removed

Kind = Literal["bad-name", "outside", "link", "not-found", "not-a-file", "too-large", "unreadable"]


class ConfinedError(Exception):
    """Root of every refusal: ``kind`` says which, ``name`` is the file as the user wrote it.

    ``str()`` is one line, ``message (hint)``; it never holds file content or a link's target.
    """

    kind: ClassVar[Kind]

    def __init_subclass__(cls, kind: Kind | None = None, **rest: Any) -> None:
        super().__init_subclass__(**rest)
        if kind is not None:
            cls.kind = kind

    def __init__(self, name: str, message: str, hint: str) -> None:
        super().__init__(f"{message} ({hint})")
        self.name = name
        self.message = message
        self.hint = hint


class BadNameError(ConfinedError, ValueError, kind="bad-name"):
    """The name cannot name a file: empty, a NUL byte, a lone surrogate, too long."""


class OutsideError(ConfinedError, ValueError, kind="outside"):
    """The name points above or beside the folder."""


class LinkError(ConfinedError, ValueError, kind="link"):
    """A symlink somewhere on the way, or a file with more than one hard link."""


class NotFoundError(ConfinedError, LookupError, kind="not-found"):
    """No such file, or a component on the way is not a folder."""


class NotAFileError(ConfinedError, ValueError, kind="not-a-file"):
    """A folder, FIFO, socket or device: only regular files are read."""


class TooLargeError(ConfinedError, ValueError, kind="too-large"):
    """Over ``max_bytes``: by its size when opened, or because it grew while being read."""


class UnreadableError(ConfinedError, kind="unreadable"):
    """The OS refused the open or the read for another reason (permissions, I/O error)."""


class RootUnavailableError(UnreadableError):
    """The folder itself cannot be opened: the fault of whoever runs Beryl, not of the name."""


class ConfinedFile:
    """A regular file opened by :func:`open_confined`; reads stop once ``max_bytes`` is passed.

    ``size`` is the size when it was opened. Reading is one pass: ``blocks()`` and
    ``read_all()`` continue where the last read stopped and share one ``max_bytes`` budget.
    """

    def __init__(self, raw: io.FileIO, name: str, size: int, max_bytes: int) -> None:
        self.name = name
        self.size = size
        self.max_bytes = max_bytes
        self._raw = raw
        self._taken = 0

    def read_all(self) -> bytes:
        """The rest of the file; memory stays within ``max_bytes`` plus one block."""
        first = self._take(self.size + 1)  # one read normally returns the whole file
        if not first:
            return first
        rest = list(iter(lambda: self._take(BLOCK_SIZE), b""))
        return b"".join([first, *rest]) if rest else first

    def blocks(self, block_size: int = BLOCK_SIZE) -> Iterator[bytes]:
        """The rest of the file in blocks of at most ``block_size`` bytes, for streaming parsers."""
        if block_size < 1:
            raise ValueError(f"block_size must be at least 1, not {block_size}")
        while chunk := self._take(block_size):
            yield chunk

    def close(self) -> None:
        self._raw.close()

    @property
    def closed(self) -> bool:
        return self._raw.closed

    def __enter__(self) -> ConfinedFile:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{self._taken} of {self.size} bytes read"
        return f"<ConfinedFile {_shown(self.name)} {state}>"

    def _take(self, want: int) -> bytes:
        # Never ask for more than one byte past the budget: the byte that proves it was passed.
        want = min(want, self.max_bytes + 1 - self._taken)
        try:
            chunk = self._raw.read(want) or b""
        except OSError as exc:
            raise _unreadable(self.name, exc) from exc
        self._taken += len(chunk)
        if self._taken > self.max_bytes:
            raise TooLargeError(
                self.name,
                f"{_shown(self.name)} grew past the limit of {self.max_bytes:,} bytes "
                "while it was being read",
                "wait until the file is complete, or split it into smaller files",
            )
        return chunk


def read_confined(root: Path, name: str, *, max_bytes: int) -> bytes:
    """The whole content of the regular file ``name`` below ``root``, at most ``max_bytes``."""
    with open_confined(root, name, max_bytes=max_bytes) as opened:
        return opened.read_all()


def open_confined(root: Path, name: str, *, max_bytes: int) -> ConfinedFile:
    """Open the regular file ``name`` (relative to ``root``, or absolute below it) for reading.

    No symlink is followed at any step and every check runs on the opened descriptor, so a file
    swapped in while this runs is refused or is the file read, never a file outside ``root``.
    Raises a :class:`ConfinedError` subclass; a file over ``max_bytes`` is refused unread.
    """
    if max_bytes < 0:
        raise ValueError(f"max_bytes must be 0 or more, not {max_bytes}")
    if not (NOFOLLOW and os.open in os.supports_dir_fd):
        # An environment fault (the API answers 503), not the caller's: no safe way to open it.
        raise StateError(
            "this system cannot open a named file safely (no O_NOFOLLOW or openat)",
            hint="run Beryl on Linux or another POSIX system to read files by name",
        )
    real_root = Path(root).resolve()
    parts = _parts_below(name, real_root, Path(root).absolute())
    if not parts:
        raise NotAFileError(
            name, f"{_shown(name)} names the workspace folder itself", "name a file inside it"
        )
    folder = _open_root(real_root, name)
    try:
        for depth, part in enumerate(parts[:-1], start=1):
            child = _open_folder(folder, part, name, "/".join(parts[:depth]))
            os.close(folder)
            folder = child
        fd, info = _open_file(folder, parts[-1], name)
        try:
            size = _check_opened(fd, info, folder, parts[-1], name, max_bytes)
            os.set_blocking(fd, True)
            raw = io.FileIO(fd, "rb", closefd=True)
        except BaseException:
            os.close(fd)
            raise
    finally:
        os.close(folder)
    return ConfinedFile(raw, name, size, max_bytes)


def _parts_below(name: str, real_root: Path, given_root: Path) -> list[str]:
    """The components of ``name`` below the root, ``.`` and ``..`` folded away lexically."""
    problem = None
    if not isinstance(name, str):
        name, problem = repr(name), "is not text"
    elif not name:
        problem = "is empty"
    elif "\x00" in name:
        problem = "contains a NUL byte"
    elif not is_utf8(name):
        problem = "contains an unpaired surrogate (not valid UTF-8)"
    elif len(name.encode("utf-8")) > _MAX_NAME_BYTES:
        problem = f"is longer than {_MAX_NAME_BYTES} bytes"
    if problem:
        raise BadNameError(
            name, f"the file name {_shown(name)} {problem}", "name a file inside the workspace"
        )
    if name.endswith("/"):
        raise NotAFileError(
            name, f"{_shown(name)} ends with '/', so it names a folder", "name a file"
        )
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if name.startswith("/"):
        for root in (real_root, given_root):
            prefix = list(root.parts[1:])
            if parts[: len(prefix)] == prefix:
                parts = parts[len(prefix) :]
                break
        else:
            raise _outside(name)
    below: list[str] = []
    for part in parts:
        if part != "..":
            below.append(part)
        elif below:
            below.pop()
        else:  # above the root, even if a later component would come back in
            raise _outside(name)
    return below


def _open_root(real_root: Path, name: str) -> int:
    try:
        return os.open(real_root, _FOLDER_FLAGS)
    except OSError as exc:
        raise RootUnavailableError(
            name,
            f"cannot open the workspace folder to read {_shown(name)}: {exc.strerror}",
            "check that the workspace exists and is readable",
        ) from exc


def _open_folder(folder: int, part: str, name: str, so_far: str) -> int:
    """Open the folder ``part`` below the descriptor ``folder``, never following a symlink."""
    try:
        return os.open(part, _FOLDER_FLAGS, dir_fd=folder)
    except OSError as exc:
        raise _refusal(exc, folder, part, name, so_far, last=False) from exc


def _open_file(folder: int, part: str, name: str) -> tuple[int, os.stat_result]:
    """Open the regular file ``part`` below the descriptor ``folder`` (``open_regular``)."""
    try:
        return open_regular(part, dir_fd=folder)
    except OSError as exc:
        if isinstance(exc, NotRegularFileError) and exc.mode is not None:
            raise NotAFileError(
                name,
                f"{_shown(name)} is {describe(exc.mode)}, not a regular file",
                "name a regular file",
            ) from exc
        raise _refusal(exc, folder, part, name, part, last=True) from exc  # a link among them


def _refusal(
    exc: OSError, folder: int, part: str, name: str, so_far: str, last: bool
) -> ConfinedError:
    where = _shown(name) if last else f"{_shown(so_far)} in {_shown(name)}"
    if exc.errno in (errno.ENOTDIR, *LINK_ERRNOS):
        # A folder opened with O_DIRECTORY|O_NOFOLLOW (or O_PATH) gives ENOTDIR for a symlink
        # and for a file alike; lstat tells them apart, for the message only.
        if exc.errno in LINK_ERRNOS or _is_symlink(folder, part):
            return LinkError(
                name,
                f"{where} is a symbolic link; links are refused, even to files inside the "
                "workspace",
                "name the file itself, not a link to it",
            )
        return NotFoundError(
            name,
            f"{where} is not a folder, so there is no file {_shown(name)} in the workspace",
            "check the path, relative to the workspace folder",
        )
    if exc.errno == errno.ENOENT:
        return NotFoundError(
            name,
            f"no file {_shown(name)} in the workspace",
            "check the path, relative to the workspace folder",
        )
    if exc.errno in (errno.ENXIO, errno.ENODEV, errno.EOPNOTSUPP):  # a socket or a device
        return NotAFileError(
            name, f"{where} is a socket or a device, not a regular file", "name a regular file"
        )
    if exc.errno == errno.ENAMETOOLONG:
        return BadNameError(name, f"the file name {_shown(name)} is too long", "use a shorter path")
    return _unreadable(name, exc)


def _check_opened(
    fd: int, info: os.stat_result, folder: int, part: str, name: str, max_bytes: int
) -> int:
    """The checks beyond ``open_regular``'s, on the descriptor ``info`` is the fstat of: one
    link, not too big."""
    if info.st_nlink > 1:
        raise LinkError(
            name,
            f"{_shown(name)} has {info.st_nlink} hard links; a hard link may be a file outside "
            "the workspace",
            "copy the file into the workspace instead of linking it",
        )
    if info.st_nlink == 1 and not _no_other_name(fd, folder, part, info):
        # The name we opened is gone yet the file has a name: a hard link swapped in, opened,
        # then removed so that the count reads 1. That one name may be outside.
        raise LinkError(
            name,
            f"{_shown(name)} was replaced while it was being opened, by a file with another name",
            "copy files into the workspace instead of linking them, then try again",
        )
    if info.st_size > max_bytes:
        raise TooLargeError(
            name,
            f"{_shown(name)} is {info.st_size:,} bytes, over the limit of {max_bytes:,}",
            "split it into smaller files",
        )
    return info.st_size


def _is_symlink(folder: int, part: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(part, dir_fd=folder, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _no_other_name(fd: int, folder: int, part: str, opened: os.stat_result) -> bool:
    """Whether the file ``fd`` (one link at the fstat ``opened``) has no name but ours.

    Linux marks the descriptor's path " (deleted)" once the name it was opened by is gone, and
    for good: a name still there now was there at the fstat, so it was the file's only name. A
    name gone is fine too if the file now has no name at all (replaced by the producer), but not
    if it has one: that is a hard link swapped in and out, and its other name may be outside.
    Without /proc (or for a name that itself ends in " (deleted)") compare the name's inode,
    which leaves a narrower race: the link removed before the fstat and put back after it.

    The kernel drops the link count before it marks the name deleted, both under the folder's
    lock; looking up a name that is in no cache takes that lock too, so it first waits for an
    unlink or rename under way in the folder to finish.
    """
    with contextlib.suppress(OSError):
        os.stat(f".beryl-barrier-{secrets.token_hex(8)}", dir_fd=folder, follow_symlinks=False)
    try:
        if not str(Path(f"/proc/self/fd/{fd}").readlink()).endswith(_DELETED):
            return True
        if os.fstat(fd).st_nlink == 0:
            return True
        if not part.endswith(_DELETED):
            return False
    except OSError:
        pass
    try:
        named = os.stat(part, dir_fd=folder, follow_symlinks=False)
    except OSError:
        return False
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


def _outside(name: str) -> OutsideError:
    return OutsideError(
        name,
        f"{_shown(name)} is outside the workspace",
        "name a file inside it, relative to the workspace folder, without '..' stepping out",
    )


def _unreadable(name: str, exc: OSError) -> UnreadableError:
    return UnreadableError(
        name, f"cannot read {_shown(name)}: {exc.strerror}", "check the file's permissions"
    )


def _shown(name: str) -> str:
    """``name`` quoted on one line (``repr`` escapes newlines and control characters), cut short."""
    if len(name) > _SHOWN_CHARS:
        return repr(name[:_SHOWN_CHARS]) + "…"
    return repr(name)
