"""The storage seam's contract, run against every implementation: a folder, and a prefix of a
bucket on a real S3 server (SeaweedFS, ``tests/s3_server.py``).

Every implementation must pass the same tests: atomic replacement, create-only writes with one
winner and compare-and-swap with one winner (threads and processes racing), durable appends
that never tear or lose a line, keys that never leave the store.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from tests import s3_server

from beryl.objectstore import S3Storage
from beryl.storage import LocalStorage, Storage


def _s3(root: Path) -> Storage:
    """A prefix of the test bucket named after ``root``: the same one in every process."""
    server = s3_server.shared()
    prefix = hashlib.sha256(str(root).encode()).hexdigest()[:16]
    return S3Storage(f"s3://{s3_server.BUCKET}/contract-{prefix}", server.environ())


IMPLEMENTATIONS: dict[str, Callable[[Path], Storage]] = {"local": LocalStorage, "s3": _s3}


@pytest.fixture(params=list(IMPLEMENTATIONS))
def implementation(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def storage(implementation: str, tmp_path: Path) -> Storage:
    made = IMPLEMENTATIONS[implementation](tmp_path / "store")
    assert isinstance(made, Storage)
    return made


def test_write_then_read_and_missing_is_none(storage: Storage) -> None:
    assert storage.read("a/b.json") is None and not storage.exists("a/b.json")
    storage.write("a/b.json", b"one")
    assert storage.read("a/b.json") == b"one" and storage.exists("a/b.json")
    storage.write("a/b.json", b"two")
    assert storage.read("a/b.json") == b"two"


def test_a_reader_sees_the_old_bytes_or_the_new_never_a_mix(storage: Storage) -> None:
    old, new = b"o" * 200_000, b"n" * 300_000
    storage.write("big", old)
    seen: set[bytes] = set()
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            data = storage.read("big")
            assert data is not None
            seen.add(data[:1] + str(len(data)).encode())

    reader = threading.Thread(target=read)
    reader.start()
    for i in range(50):
        storage.write("big", new if i % 2 == 0 else old)
    stop.set()
    reader.join()
    assert seen <= {b"o200000", b"n300000"}


def test_create_writes_only_once(storage: Storage) -> None:
    assert storage.create("versions/v0001/model.json", b"first")
    assert not storage.create("versions/v0001/model.json", b"second")
    assert storage.read("versions/v0001/model.json") == b"first"


def test_concurrent_creators_have_one_winner(storage: Storage) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        won = list(pool.map(lambda i: storage.create("claim", f"{i}".encode()), range(32)))
    assert won.count(True) == 1
    assert storage.read("claim") == str(won.index(True)).encode()


def test_swap_replaces_only_what_the_caller_read(storage: Storage) -> None:
    assert storage.swap("pointer", b"v1", expected=None)
    assert not storage.swap("pointer", b"v9", expected=None)  # exists already
    assert not storage.swap("pointer", b"v9", expected=b"v0")  # changed since
    assert storage.swap("pointer", b"v2", expected=b"v1")
    assert storage.read("pointer") == b"v2"


def test_concurrent_swaps_from_the_same_reading_have_one_winner(storage: Storage) -> None:
    storage.write("pointer", b"v1")
    barrier = threading.Barrier(8)

    def move(i: int) -> bool:
        barrier.wait()
        return storage.swap("pointer", f"v{i + 2}".encode(), expected=b"v1")

    with ThreadPoolExecutor(max_workers=8) as pool:
        won = list(pool.map(move, range(8)))
    assert won.count(True) == 1
    assert storage.read("pointer") == f"v{won.index(True) + 2}".encode()


def test_concurrent_appends_keep_every_line_whole(storage: Storage) -> None:
    lines = [f"line {i} " + "x" * 500 for i in range(200)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda line: storage.append("log.jsonl", line), lines))
    data = storage.read("log.jsonl")
    assert data is not None
    assert sorted(data.decode().splitlines()) == sorted(lines)


def test_keys_are_listed_by_prefix_and_never_leave_the_store(storage: Storage) -> None:
    for key in ("versions/v0001/card.json", "versions/v0002/card.json", "production.json"):
        storage.write(key, b"{}")
    assert storage.keys("versions/") == ["versions/v0001/card.json", "versions/v0002/card.json"]
    assert storage.keys() == [
        "production.json",
        "versions/v0001/card.json",
        "versions/v0002/card.json",
    ]
    assert storage.keys("nothing/") == []
    for bad in ("../outside", "/etc/passwd", "a/../../b", ""):
        with pytest.raises(ValueError):
            storage.write(bad, b"x")


def test_stamp_changes_with_the_content_and_where_names_the_key(storage: Storage) -> None:
    assert storage.stamp("production.json") is None
    storage.write("production.json", b"one")
    first = storage.stamp("production.json")
    assert first is not None and storage.stamp("production.json") == first
    storage.write("production.json", b"two, longer")
    assert storage.stamp("production.json") not in (None, first)
    assert storage.where("versions/v0001/card.json").endswith("/versions/v0001/card.json")


ROUNDS = 3
RACERS = 4


def _racer(
    implementation: str, root: Path, action: str, barrier: Any, results: Any, me: int
) -> None:
    """One process of a race: build the storage, then in each round wait for the others and
    try to create the round's key, or to swap it from ``v1``."""
    storage = IMPLEMENTATIONS[implementation](root)
    storage.exists("warm-up")  # the first request (a client, a listing) before the start line
    for round_ in range(ROUNDS):
        barrier.wait(timeout=120)
        key, data = f"race/{round_}", f"{action}-{me}".encode()
        won = storage.create(key, data) if action == "create" else (
            storage.swap(key, data, expected=b"v1")
        )  # fmt: skip
        results.put((round_, me, won))


@pytest.mark.parametrize("action", ["create", "swap"])
def test_processes_racing_have_one_winner(
    implementation: str, storage: Storage, tmp_path: Path, action: str
) -> None:
    if action == "swap":
        for round_ in range(ROUNDS):
            storage.write(f"race/{round_}", b"v1")
    spawn = multiprocessing.get_context("spawn")
    barrier, results = spawn.Barrier(RACERS), spawn.Queue()
    racers = [
        spawn.Process(
            target=_racer, args=(implementation, tmp_path / "store", action, barrier, results, i)
        )
        for i in range(RACERS)
    ]
    for racer in racers:
        racer.start()
    outcomes = [results.get(timeout=180) for _ in range(ROUNDS * RACERS)]
    for racer in racers:
        racer.join(timeout=60)
        assert racer.exitcode == 0
    for round_ in range(ROUNDS):
        winners = [me for r, me, won in outcomes if r == round_ and won]
        assert len(winners) == 1, f"round {round_}: {winners} all won"
        assert storage.read(f"race/{round_}") == f"{action}-{winners[0]}".encode()
