"""Atomic writes: a reader sees the old file or the new one, never a part of either."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from beryl._io import (
    TMP_PREFIX,
    append_line,
    atomic_write_bytes,
    atomic_write_with,
    remove_stale_temporaries,
    sha256_bytes,
    sha256_file,
)
from beryl.errors import StateError


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "data.json"
    target.write_text("old")

    def broken(path: Path) -> None:
        path.write_text("half of the new")
        raise OSError("disk full")

    with pytest.raises(StateError, match="disk full") as err:  # named by the file, one line
        atomic_write_with(target, broken)
    assert str(target) in str(err.value) and ".beryl-tmp" not in str(err.value)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["data.json"]


def test_readers_never_see_a_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "big.bin"
    versions = [bytes([i]) * 2_000_000 for i in range(4)]
    atomic_write_bytes(target, versions[0])
    digests = {sha256_bytes(v) for v in versions}
    seen: list[str] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            seen.append(sha256_file(target))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for round_ in range(40):
            atomic_write_bytes(target, versions[round_ % len(versions)])
    finally:
        stop.set()
        reader.join()
    assert seen
    assert set(seen) <= digests  # every read was one whole version


def test_append_line_starts_a_new_line_after_a_torn_one(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    log.write_text('{"complete": 1}\n{"torn": ')
    append_line(log, '{"next": 2}')
    assert log.read_text().splitlines() == ['{"complete": 1}', '{"torn": ', '{"next": 2}']


def test_stale_temporaries_are_removed(tmp_path: Path) -> None:
    (tmp_path / f"{TMP_PREFIX}abc").write_text("left by a killed writer")
    (tmp_path / "keep.csv").write_text("a,b\n")
    assert remove_stale_temporaries(tmp_path) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["keep.csv"]
