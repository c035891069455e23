"""An input file, opened once and hashed as it is read.

A file is opened with ``beryl.data.safeopen.open_regular``: without following a link and without
blocking (a FIFO or a folder swapped in is refused on the opened descriptor, never read). Every
read is a pass from the start, hashed as it goes; ``settled`` says whether the file stayed as it
was while it was read. A file up to ``WHOLE_FILE_BYTES`` is read whole (``read_all``), a larger
one streamed by Arrow in blocks (``stream``).
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from beryl.data.safeopen import Identity, open_regular

if TYPE_CHECKING:
    import pyarrow as pa

WHOLE_FILE_BYTES = 32 * 2**20  # read into memory and parsed in one go up to this size
_SNIFF_BYTES = 64 * 1024
_CHUNK = 1 << 20


class InputFile:
    """A regular file, opened once, whose content is hashed (sha256) as it is read.

    Each read of the content is a pass from the start with its own position (positional reads),
    so a reader that was given up (Arrow's may read ahead on a thread) never disturbs the next
    one; the digest is that of the latest pass. Use as a context manager.
    """

    def __init__(self, path: Path) -> None:
        fd, info = open_regular(path)  # NotRegularFileError for a link, a folder, a FIFO...
        self.path = path
        self.identity = Identity.of(info)
        self.closed = False
        self.error: OSError | None = None  # a read that failed (Arrow may report it otherwise)
        self._fd = fd
        self._pass = _Pass(self)

    def __enter__(self) -> InputFile:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.closed = True
        os.close(self._fd)

    @property
    def size(self) -> int:
        return self.identity.size

    @property
    def digest(self) -> str:
        """The hex sha256 of what the latest pass read."""
        return self._pass.hash.hexdigest()

    def pread(self, buffer: Any, position: int) -> int:
        if self.closed:
            return 0  # a reader given up, still reading ahead after the file was closed
        try:
            return os.preadv(self._fd, [buffer], position)
        except OSError as exc:
            self.error = exc
            raise

    def read_all(self) -> bytes:
        """The whole content, hashed; a file that grew is read as it is (``settled`` says so)."""
        self._pass = _Pass(self)
        chunks = []
        buffer = bytearray(_CHUNK)
        while count := self._pass.readinto(buffer):
            chunks.append(bytes(buffer[:count]))
        return b"".join(chunks)

    def drain(self) -> None:
        """Read the latest pass on to the end, so that the digest covers the whole file."""
        buffer = bytearray(_CHUNK)
        while self._pass.readinto(buffer):
            pass

    def head(self, size: int = _SNIFF_BYTES) -> bytes:
        """The first ``size`` bytes (outside any pass)."""
        buffer = bytearray(min(size, self.size))
        count = self.pread(buffer, 0) if buffer else 0
        return bytes(buffer[:count])

    def stream(self) -> pa.NativeFile:
        """A new pass over the content, for Arrow's streaming reader (hashed as Arrow reads)."""
        import pyarrow as pa

        self._pass = _Pass(self)
        return pa.PythonFile(self._pass, mode="r")

    def raise_read_error(self) -> None:
        """Raise the ``OSError`` a read met (Arrow may report it as a parse error)."""
        if self.error is not None:
            raise self.error

    def settled(self) -> bool:
        """True when the latest pass read the whole file and the file is still as it was when
        it was opened: the same size and times, and still the file at its path."""
        if self._pass.position != self.identity.size:
            return False
        try:
            now = Identity.of(os.fstat(self._fd))
            there = os.lstat(self.path)
        except OSError:
            return False
        return now == self.identity and (there.st_dev, there.st_ino) == (now.dev, now.ino)


class _Pass(io.RawIOBase):
    """One read of an ``InputFile`` from its start: a file object of its own, for Arrow's
    ``PythonFile``, hashing what it reads."""

    def __init__(self, source: InputFile) -> None:
        self._source = source
        self.position = 0
        self.hash = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        count = self._source.pread(buffer, self.position)
        if count:
            self.hash.update(memoryview(buffer)[:count])
            self.position += count
        return count
