"""open_confined: one open below a root, no symlink, FIFO, device, hard link or race gets out.

The race helpers take the reader as an argument so the same attack can be run against any
implementation (a naive check-then-open one leaks and hangs under them).
"""

from __future__ import annotations

import functools
import os
import random
import socket
import stat
import threading
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from beryl.data.confined import (
    BLOCK_SIZE,
    BadNameError,
    ConfinedError,
    ConfinedFile,
    LinkError,
    NotAFileError,
    NotFoundError,
    OutsideError,
    TooLargeError,
    UnreadableError,
    open_confined,
    read_confined,
)

GOOD = b"customer_id,tenure\n1,12\n"
SECRET = b"TOP-SECRET-7f3a9c-do-not-leak"
FIFO_DATA = b"FIFO-DATA-from-the-pipe"
ELSEWHERE = "elsewhere-b41d"  # the outside folder's name: it must never show in a message
LIMIT = 1 << 20

Reader = Callable[[Path, str], bytes]
read_1mib: Reader = functools.partial(read_confined, max_bytes=LIMIT)


@dataclass
class Tree:
    root: Path
    outside: Path
    secret: Path


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    """A workspace with ``input.csv`` and ``data/input.csv``, and a secret in a folder beside it."""
    root = tmp_path / "ws"
    (root / "data").mkdir(parents=True)
    (root / "input.csv").write_bytes(GOOD)
    (root / "data" / "input.csv").write_bytes(GOOD)
    outside = tmp_path / ELSEWHERE
    (outside / "data").mkdir(parents=True)
    secret = outside / "secret.txt"
    secret.write_bytes(SECRET)
    (outside / "data" / "input.csv").write_bytes(SECRET)
    return Tree(root, outside, secret)


def refusal(root: Path, name: str, max_bytes: int = LIMIT) -> ConfinedError:
    with pytest.raises(ConfinedError) as info:
        read_confined(root, name, max_bytes=max_bytes)
    return info.value


def messages(exc: BaseException) -> str:
    """Every message along the exception's chain: a leak in a cause is a leak too."""
    text: list[str] = []
    link: BaseException | None = exc
    while link is not None and len(text) < 10:
        text.append(str(link))
        link = link.__cause__ or link.__context__
    return "\n".join(text)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# --- names ---------------------------------------------------------------------------------


def test_reads_a_plain_file(tree: Tree) -> None:
    assert read_1mib(tree.root, "input.csv") == GOOD


def test_reads_nested_folders(tree: Tree) -> None:
    deep = tree.root / "a" / "b" / "c"
    deep.mkdir(parents=True)
    (deep / "x.csv").write_bytes(b"deep\n")
    assert read_1mib(tree.root, "a/b/c/x.csv") == b"deep\n"
    assert read_1mib(tree.root, "./a//b/./c/x.csv") == b"deep\n"


def test_absolute_name_inside_root_is_accepted(tree: Tree) -> None:
    assert read_1mib(tree.root, str(tree.root / "data" / "input.csv")) == GOOD


@pytest.mark.parametrize("where", ["secret", "etc", "sibling"])
def test_absolute_name_outside_root_is_refused(tree: Tree, where: str) -> None:
    name = {
        "secret": str(tree.secret),
        "etc": "/etc/passwd",
        "sibling": str(tree.root) + "-other/input.csv",  # a prefix of the string, not a parent
    }[where]
    (tree.root.parent / "ws-other").mkdir()
    (tree.root.parent / "ws-other" / "input.csv").write_bytes(SECRET)
    error = refusal(tree.root, name)
    assert isinstance(error, OutsideError)
    assert error.kind == "outside"


@pytest.mark.parametrize(
    "name", ["..", "../x", "../elsewhere-b41d/secret.txt", "data/../../x", "../ws/input.csv"]
)
def test_dotdot_stepping_above_the_root_is_refused(tree: Tree, name: str) -> None:
    """Even ``../ws/input.csv``, which would come back in: no name steps above the root."""
    error = refusal(tree.root, name)
    assert error.kind == "outside"
    assert "'..'" in error.hint


def test_absolute_name_stepping_above_the_root_is_refused(tree: Tree) -> None:
    assert refusal(tree.root, f"{tree.root}/../ws/input.csv").kind == "outside"


@pytest.mark.parametrize("name", ["data/../input.csv", "missing/../input.csv", "ln/../input.csv"])
def test_dotdot_below_the_root_is_folded_lexically(tree: Tree, name: str) -> None:
    """``a/../b`` is ``b``: ``a`` is never opened, so it may be missing or even a symlink."""
    (tree.root / "ln").symlink_to(tree.outside)
    assert read_1mib(tree.root, name) == GOOD


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "empty"),
        ("input.csv\x00.txt", "NUL"),
        ("input\ud800.csv", "surrogate"),
        ("a/" * 2100 + "x", "longer than 4096"),
        ("x" * 300, "too long"),
    ],
)
def test_bad_names_are_refused(tree: Tree, name: str, problem: str) -> None:
    error = refusal(tree.root, name)
    assert isinstance(error, BadNameError)
    assert error.kind == "bad-name"
    assert problem in error.message


def test_a_name_that_is_the_root_or_ends_with_a_slash_is_not_a_file(tree: Tree) -> None:
    assert refusal(tree.root, ".").kind == "not-a-file"
    assert refusal(tree.root, str(tree.root)).kind == "not-a-file"
    assert refusal(tree.root, "input.csv/").kind == "not-a-file"


def test_a_file_whose_name_ends_in_deleted_is_still_read(tree: Tree) -> None:
    """/proc shows a removed name as "... (deleted)": a real name like that is not confused."""
    (tree.root / "old (deleted)").write_bytes(GOOD)
    assert read_1mib(tree.root, "old (deleted)") == GOOD


@pytest.mark.parametrize(
    ("error", "kind", "builtin"),
    [
        (BadNameError, "bad-name", ValueError),
        (OutsideError, "outside", ValueError),
        (LinkError, "link", ValueError),
        (NotFoundError, "not-found", LookupError),
        (NotAFileError, "not-a-file", ValueError),
        (TooLargeError, "too-large", ValueError),
        (UnreadableError, "unreadable", ConfinedError),
    ],
)
def test_each_kind_of_refusal_has_its_own_class(
    error: type[ConfinedError], kind: str, builtin: type[Exception]
) -> None:
    raised = error("x.csv", "'x.csv' is refused", "do this")
    assert raised.kind == kind
    assert isinstance(raised, ConfinedError) and isinstance(raised, builtin)
    assert (raised.name, raised.message, raised.hint) == ("x.csv", "'x.csv' is refused", "do this")
    assert str(raised) == "'x.csv' is refused (do this)"


def test_missing_files_and_files_used_as_folders_are_not_found(tree: Tree) -> None:
    missing = refusal(tree.root, "nope.csv")
    assert isinstance(missing, NotFoundError)
    assert isinstance(missing, LookupError)
    assert missing.message == "no file 'nope.csv' in the workspace"
    assert refusal(tree.root, "nope/x.csv").kind == "not-found"
    through_file = refusal(tree.root, "input.csv/x.csv")
    assert through_file.kind == "not-found"
    assert "'input.csv' in 'input.csv/x.csv' is not a folder" in through_file.message


def test_messages_are_one_line_and_name_the_file_as_written(tree: Tree) -> None:
    error = refusal(tree.root, "evil\nname\r.csv")
    assert "\n" not in str(error) and "\r" not in str(error)
    assert error.name == "evil\nname\r.csv"
    assert "'evil\\nname\\r.csv'" in str(error)
    assert str(error) == f"{error.message} ({error.hint})"


def test_a_root_that_does_not_exist_is_unreadable(tmp_path: Path) -> None:
    error = refusal(tmp_path / "no-workspace", "input.csv")
    assert isinstance(error, UnreadableError)


def test_negative_max_bytes_is_a_programming_error(tree: Tree) -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        open_confined(tree.root, "input.csv", max_bytes=-1)


# --- symlinks ------------------------------------------------------------------------------


@pytest.mark.parametrize("to", ["inside", "outside"])
def test_a_symlink_as_the_file_is_refused(tree: Tree, to: str) -> None:
    (tree.root / "link.csv").symlink_to(tree.root / "input.csv" if to == "inside" else tree.secret)
    error = refusal(tree.root, "link.csv")
    assert isinstance(error, LinkError)
    assert error.kind == "link"
    assert "even to files inside the workspace" in error.message
    assert ELSEWHERE not in messages(error) and SECRET.decode() not in messages(error)


@pytest.mark.parametrize("to", ["inside", "outside"])
def test_a_symlink_as_a_folder_on_the_way_is_refused(tree: Tree, to: str) -> None:
    (tree.root / "alias").symlink_to(
        tree.root / "data" if to == "inside" else tree.outside / "data"
    )
    error = refusal(tree.root, "alias/input.csv")
    assert error.kind == "link"
    assert error.message.startswith("'alias' in 'alias/input.csv' is a symbolic link")
    assert ELSEWHERE not in messages(error)


def test_a_dangling_symlink_is_refused_as_a_link(tree: Tree) -> None:
    (tree.root / "gone.csv").symlink_to(tree.root / "never-there.csv")
    assert refusal(tree.root, "gone.csv").kind == "link"


def test_symlinks_above_the_root_are_fine(tree: Tree, tmp_path: Path) -> None:
    """The root is resolved once; the confinement is about what lies below it."""
    (tmp_path / "alias").symlink_to(tmp_path)
    root = tmp_path / "alias" / "ws"
    assert read_1mib(root, "data/input.csv") == GOOD
    assert read_1mib(root, str(root / "data" / "input.csv")) == GOOD  # as written
    assert read_1mib(root, str(tree.root / "data" / "input.csv")) == GOOD  # as resolved
    (tmp_path / "ws-link").symlink_to(tree.root)
    assert read_1mib(tmp_path / "ws-link", "input.csv") == GOOD


# --- special files -------------------------------------------------------------------------


@pytest.mark.timeout(10)
def test_a_fifo_is_refused_at_once_without_a_writer(tree: Tree) -> None:
    os.mkfifo(tree.root / "pipe.csv")
    started = time.monotonic()
    error = refusal(tree.root, "pipe.csv")
    assert time.monotonic() - started < 1
    assert isinstance(error, NotAFileError)
    assert "FIFO" in error.message


def test_a_folder_is_not_a_file(tree: Tree) -> None:
    error = refusal(tree.root, "data")
    assert error.kind == "not-a-file"
    assert "is a folder" in error.message


def test_a_socket_is_not_a_file(tree: Tree) -> None:
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(tree.root / "sock"))
        error = refusal(tree.root, "sock")
    assert error.kind == "not-a-file"


def test_a_device_is_not_a_file(tree: Tree) -> None:
    try:
        os.mknod(tree.root / "null.csv", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    except OSError as exc:
        pytest.skip(f"cannot make a device node here: {exc.strerror}")
    error = refusal(tree.root, "null.csv")
    assert error.kind == "not-a-file"
    assert "a device" in error.message


def test_a_symlink_to_a_device_is_refused_as_a_link(tree: Tree) -> None:
    (tree.root / "zero.csv").symlink_to("/dev/zero")
    assert refusal(tree.root, "zero.csv").kind == "link"


def test_a_hard_link_to_a_file_outside_is_refused(tree: Tree) -> None:
    os.link(tree.secret, tree.root / "copy.csv")
    error = refusal(tree.root, "copy.csv")
    assert error.kind == "link"
    assert "2 hard links" in error.message
    assert SECRET.decode() not in messages(error) and ELSEWHERE not in messages(error)


def test_a_hard_link_inside_is_refused_too(tree: Tree) -> None:
    """From the file alone there is no telling where its other name lives."""
    os.link(tree.root / "input.csv", tree.root / "data" / "twin.csv")
    assert refusal(tree.root, "data/twin.csv").kind == "link"


# --- size ----------------------------------------------------------------------------------


def test_exactly_max_bytes_is_read_one_more_is_refused(tree: Tree) -> None:
    (tree.root / "big.csv").write_bytes(b"x" * 1000)
    assert read_confined(tree.root, "big.csv", max_bytes=1000) == b"x" * 1000
    error = refusal(tree.root, "big.csv", max_bytes=999)
    assert isinstance(error, TooLargeError)
    assert error.message == "'big.csv' is 1,000 bytes, over the limit of 999"


def test_an_empty_file_fits_a_zero_limit(tree: Tree) -> None:
    (tree.root / "empty.csv").write_bytes(b"")
    assert read_confined(tree.root, "empty.csv", max_bytes=0) == b""
    with open_confined(tree.root, "empty.csv", max_bytes=0) as opened:
        assert list(opened.blocks()) == []


def test_a_huge_sparse_file_is_refused_before_reading(tree: Tree) -> None:
    with (tree.root / "huge.csv").open("wb") as handle:
        handle.truncate(64 << 30)  # 64 GiB of holes: reading it would take minutes and memory
    tracemalloc.start()
    started = time.monotonic()
    try:
        error = refusal(tree.root, "huge.csv", max_bytes=50 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert error.kind == "too-large"
    assert time.monotonic() - started < 1
    assert peak < 256 << 10


def test_a_file_growing_after_the_open_stops_one_byte_past_the_limit(tree: Tree) -> None:
    limit = 3 * BLOCK_SIZE
    path = tree.root / "growing.csv"
    path.write_bytes(b"a,b\n")
    with open_confined(tree.root, "growing.csv", max_bytes=limit) as opened:
        assert opened.size == 4
        with path.open("ab") as writer:  # the producer keeps writing after our fstat
            for _ in range(40):
                writer.write(b"y" * BLOCK_SIZE)
        tracemalloc.start()
        try:
            with pytest.raises(TooLargeError, match="grew past the limit"):
                opened.read_all()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < limit + 2 * BLOCK_SIZE  # not the 40 MiB that were there to read


def test_streaming_blocks_never_hand_over_more_than_the_limit(tree: Tree) -> None:
    path = tree.root / "growing.csv"
    path.write_bytes(b"z" * 10)
    handed: list[bytes] = []
    with open_confined(tree.root, "growing.csv", max_bytes=25) as opened:
        path.write_bytes(b"z" * 100)  # same inode, truncated and rewritten larger
        with pytest.raises(TooLargeError):
            handed.extend(opened.blocks(block_size=7))
    assert sum(map(len, handed)) <= 25
    assert all(len(block) <= 7 for block in handed)


def test_blocks_stream_the_whole_file(tree: Tree) -> None:
    content = bytes(range(256)) * 1000
    (tree.root / "stream.bin").write_bytes(content)
    with open_confined(tree.root, "stream.bin", max_bytes=len(content)) as opened:
        blocks = list(opened.blocks(block_size=4096))
    assert b"".join(blocks) == content
    assert {len(block) for block in blocks[:-1]} == {4096}


# --- descriptors ---------------------------------------------------------------------------


def test_the_file_is_closed_by_the_context_manager(tree: Tree) -> None:
    with open_confined(tree.root, "data/input.csv", max_bytes=LIMIT) as opened:
        assert isinstance(opened, ConfinedFile)
        assert not opened.closed
        assert opened.read_all() == GOOD
    assert opened.closed
    with pytest.raises(ValueError):
        opened.read_all()


def test_no_refusal_leaves_a_descriptor_open(tree: Tree) -> None:
    os.mkfifo(tree.root / "pipe.csv")
    os.link(tree.secret, tree.root / "hard.csv")
    (tree.root / "link.csv").symlink_to(tree.secret)
    (tree.root / "dirlink").symlink_to(tree.outside)
    names = [
        "pipe.csv", "hard.csv", "link.csv", "dirlink/secret.txt", "data", "nope", "data/nope",
        "input.csv/x", "../x", "a\x00", "input.csv",
    ]  # fmt: skip
    before = open_fds()
    for _ in range(50):
        for name in names:
            with suppress(ConfinedError):
                read_confined(tree.root, name, max_bytes=3)
    assert open_fds() == before


# --- names, as a property ------------------------------------------------------------------


@pytest.fixture(scope="module")
def fixed_tree(tmp_path_factory: pytest.TempPathFactory) -> Tree:
    """One tree for every example: files, folders, links of every sort, and a secret outside."""
    base = tmp_path_factory.mktemp("property")
    root = base / "ws"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "f.csv").write_bytes(b"a/f\n")
    (root / "a" / "b" / "g.csv").write_bytes(b"a/b/g\n")
    (root / "f.csv").write_bytes(b"f\n")
    outside = base / ELSEWHERE
    outside.mkdir()
    secret = outside / "secret.txt"
    secret.write_bytes(SECRET)
    (root / "up").symlink_to(outside)
    (root / "a" / "s.csv").symlink_to(secret)
    (root / "a" / "in.csv").symlink_to(root / "f.csv")
    os.link(secret, root / "h.csv")
    os.mkfifo(root / "p.csv")
    return Tree(root, outside, secret)


_COMPONENTS = st.sampled_from(
    ["a", "b", "f.csv", "g.csv", "s.csv", "in.csv", "h.csv", "p.csv", "up", "secret.txt",
     "ws", ELSEWHERE, ".", "..", "", "\x00", "\ud800", "x\ny"]
)  # fmt: skip


@st.composite
def _names(draw: st.DrawFn) -> str:
    name = "/".join(draw(st.lists(_COMPONENTS, max_size=8)))
    return draw(st.sampled_from(["", "/", "{root}/"])) + name if draw(st.booleans()) else name


@hypothesis_settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(name=st.one_of(_names(), st.text(max_size=40)))
def test_any_name_reads_an_inside_file_or_is_refused(fixed_tree: Tree, name: str) -> None:
    name = name.replace("{root}", str(fixed_tree.root))
    inside = {b"a/f\n", b"a/b/g\n", b"f\n"}
    try:
        data = read_confined(fixed_tree.root, name, max_bytes=LIMIT)
    except ConfinedError as error:
        text = messages(error)
        assert SECRET.decode() not in text
        assert ELSEWHERE in name or ELSEWHERE not in text  # where a link points never shows
        assert "\n" not in str(error)
        assert error.name == name
    else:
        assert data in inside


# --- races ---------------------------------------------------------------------------------


@dataclass
class Tally:
    """What a race produced: good reads, refusals by kind, leaks, and anything else."""

    good: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    leaks: list[str] = field(default_factory=list)
    other: Counter[str] = field(default_factory=Counter)
    calls: int = 0

    def record(self, reader: Reader, root: Path, name: str) -> None:
        self.calls += 1
        try:
            data = reader(root, name)
        except ConfinedError as error:
            self.refused[error.kind] += 1
            self._check(messages(error), "message")
        except Exception as error:  # an implementation under test may fail in other ways
            self.other[type(error).__name__] += 1
            self._check(messages(error), "message")
        else:
            if data == GOOD:
                self.good += 1
            else:
                self.other["wrong content"] += 1
                self._check(data.decode(errors="replace"), "content")

    def _check(self, text: str, where: str) -> None:
        for bad in (SECRET.decode(), FIFO_DATA.decode(), ELSEWHERE):
            if bad in text:
                self.leaks.append(f"{bad} in {where}")


@contextmanager
def running(step: Callable[[], None]) -> Iterator[None]:
    """Run ``step`` over and over in a background thread while the block runs."""
    stop = threading.Event()
    failures: list[BaseException] = []

    def loop() -> None:
        try:
            while not stop.is_set():
                step()
        except BaseException as exc:  # surfaced below, in the test's thread
            failures.append(exc)

    thread = threading.Thread(target=loop, name="swapper", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)
    assert not failures, failures
    assert not thread.is_alive()


def race(
    reader: Reader,
    root: Path,
    name: str,
    step: Callable[[], None],
    *,
    calls: int = 3000,
    seconds: float = 2.0,
) -> Tally:
    """Call ``reader`` at least ``calls`` times and for at least ``seconds`` while ``step``
    swaps things in a background thread."""
    tally = Tally()
    started = time.monotonic()
    with running(step):
        while tally.calls < calls or time.monotonic() - started < seconds:
            tally.record(reader, root, name)
    return tally


def bounded(work: Callable[[], Tally], seconds: float, release: Callable[[], None]) -> Tally | None:
    """``work()``'s tally, or None if it was still running after ``seconds`` (it blocked).

    ``release`` then unblocks it, so no thread outlives the test; a failure inside is re-raised.
    """
    outcome: list[Tally | BaseException] = []

    def run() -> None:
        try:
            outcome.append(work())
        except BaseException as exc:  # re-raised in the test's thread
            outcome.append(exc)

    worker = threading.Thread(target=run, name="reader", daemon=True)
    worker.start()
    worker.join(seconds)
    blocked = worker.is_alive()
    while worker.is_alive():
        release()
        worker.join(0.05)
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return None if blocked else outcome[0]


def dwell() -> None:
    """Leave the swapped-in thing for a random few thread switches: a swapper and a reader
    that take turns at every system call otherwise fall into step and one sees one phase."""
    for _ in range(random.randrange(4)):
        time.sleep(0)


def swap_file(target: Path, make_bad: Callable[[Path], None]) -> Callable[[], None]:
    """A step that puts a bad thing at ``target``, then a fresh regular file, each atomically."""
    tmp = target.with_name(".swap-tmp")

    def step() -> None:
        make_bad(tmp)
        os.replace(tmp, target)
        dwell()
        tmp.write_bytes(GOOD)
        os.replace(tmp, target)
        dwell()

    return step


def swap_fifo(target: Path, fifo: Path, *, feed: bool) -> Callable[[], None]:
    """A step that puts a hard link of ``fifo`` at ``target`` (with ``feed``, writes to any
    reader while it is there), then a fresh regular file."""
    tmp = target.with_name(".swap-tmp")

    def step() -> None:
        os.link(fifo, tmp)  # the same FIFO every time, so ``feed_fifo`` reaches stuck readers
        os.replace(tmp, target)
        dwell()
        if feed:
            feed_fifo(fifo)
        tmp.write_bytes(GOOD)
        os.replace(tmp, target)
        dwell()

    return step


def feed_fifo(fifo: Path) -> None:
    """Write FIFO_DATA to whoever has ``fifo`` open for reading, if anyone; never block."""
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:  # ENXIO: no reader right now
        return
    try:
        os.write(fd, FIFO_DATA)
    except OSError:  # the reader left (EPIPE) or the pipe is full
        pass
    finally:
        os.close(fd)


def swap_folder(folder: Path, elsewhere: Path) -> Callable[[], None]:
    """A step that turns ``folder`` into a symlink to ``elsewhere`` and back (two renames each)."""
    aside = folder.with_name(".real-" + folder.name)
    link = folder.with_name(".link-" + folder.name)
    link.symlink_to(elsewhere)

    def step() -> None:
        os.rename(folder, aside)
        os.rename(link, folder)
        dwell()
        os.rename(folder, link)
        os.rename(aside, folder)
        dwell()

    return step


def assert_held(tally: Tally, refusals: set[str]) -> None:
    """Nothing leaked, every call read the good file or was refused, and both happened."""
    assert tally.leaks == [], f"{len(tally.leaks)} leaks in {tally.calls} calls"
    assert tally.other == Counter(), tally
    assert set(tally.refused) <= refusals, tally
    assert tally.good > 0 and sum(tally.refused.values()) > 0, f"the race never ran: {tally}"


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_race_swapping_the_file_for_a_symlink_never_leaks(tree: Tree) -> None:
    step = swap_file(tree.root / "input.csv", lambda tmp: tmp.symlink_to(tree.secret))
    tally = race(read_1mib, tree.root, "input.csv", step)
    assert_held(tally, {"link"})
    assert tally.refused["link"] > 0


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_race_swapping_the_file_for_a_hard_link_never_leaks(tree: Tree) -> None:
    step = swap_file(tree.root / "input.csv", lambda tmp: os.link(tree.secret, tmp))
    assert_held(race(read_1mib, tree.root, "input.csv", step), {"link"})


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_race_swapping_a_folder_for_a_symlink_never_leaks(tree: Tree) -> None:
    step = swap_folder(tree.root / "data", tree.outside / "data")
    tally = race(read_1mib, tree.root, "data/input.csv", step)
    assert_held(tally, {"link", "not-found"})
    assert tally.refused["link"] > 0


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("feed", [False, True], ids=["no-writer", "writer"])
def test_race_swapping_the_file_for_a_fifo_never_blocks(tree: Tree, feed: bool) -> None:
    fifo = tree.outside / "pipe"
    os.mkfifo(fifo)
    step = swap_fifo(tree.root / "input.csv", fifo, feed=feed)
    tally = bounded(
        lambda: race(read_1mib, tree.root, "input.csv", step), 60, lambda: feed_fifo(fifo)
    )
    assert tally is not None, "a call blocked on the FIFO"
    assert_held(tally, {"not-a-file"})
