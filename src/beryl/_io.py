"""Atomic file writes (the only way Beryl writes a file a reader may see), content hashes, and
the small helpers every record needs: UTC time stamps and a UTF-8 check."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from beryl.errors import StateError, describe_os_error

TMP_PREFIX = ".beryl-tmp-"
_CHUNK = 1 << 20


def is_utf8(text: str) -> bool:
    """False for strings UTF-8 cannot encode: lone surrogates, which JSON escapes and
    undecodable file names (``os.fsdecode``) both produce."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def utc_now() -> str:
    """The current UTC time as written in every Beryl record (ISO 8601, microseconds, Z)."""
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's content, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fsync_dir(folder: Path) -> None:
    """Make a rename inside ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write_with(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def atomic_write_with(path: Path, writer: Callable[[Path], object]) -> None:
    """Let ``writer`` produce a file at a temporary path, then move it into place atomically."""
    with atomic_path(path) as tmp:
        writer(tmp)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path to write ``path``'s new content at; moved into place atomically on exit.

    The temporary file sits beside ``path`` and is fsynced before the rename, so a reader sees
    the old file or the new one, never a half-written one; on failure it is removed and
    ``path`` is untouched.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=TMP_PREFIX, dir=path.parent, suffix=path.suffix)
    except OSError as exc:
        raise _write_error(path, exc) from exc
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with tmp.open("rb+") as handle:
            os.fsync(handle.fileno())
        tmp.chmod(0o644)
        tmp.replace(path)
        fsync_dir(path.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise _write_error(path, exc) from exc
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise


def _write_error(path: Path, exc: OSError) -> StateError:
    """A failed atomic write, named by the file it was for (never the temporary one)."""
    message, hint = describe_os_error(exc, path)
    if message.startswith(f"{path}: "):
        message = "cannot write " + message
    return StateError(message, hint=hint)


def append_line(path: Path, line: str) -> None:
    """Append one line to an append-only log and make it durable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+b") as handle:
        prefix = b""
        if handle.tell() > 0:  # a line torn by a crash must not swallow this one
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                prefix = b"\n"
        handle.write(prefix + line.rstrip("\n").encode("utf-8") + b"\n")
        handle.flush()
        os.fsync(handle.fileno())


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def remove_stale_temporaries(folder: Path) -> int:
    """Delete temporary files a killed writer left in ``folder``; returns how many."""
    removed = 0
    if folder.is_dir():
        for leftover in folder.glob(TMP_PREFIX + "*"):
            if leftover.is_file():
                leftover.unlink(missing_ok=True)
                removed += 1
    return removed
