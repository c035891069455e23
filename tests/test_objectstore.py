"""The model registry on object storage (``registry_url``), against a real S3 server (SeaweedFS,
``tests/s3_server.py``): the CLI end to end, API replicas on several "machines" (separate
workspaces and caches) sharing one registry, racing promotions, and the errors a user sees."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests import s3_server
from tests.s3_server import S3Server
from tests.test_api import serving

from beryl import config
from beryl.config import Settings
from beryl.data.demo import add_batch, init_workspace
from beryl.data.ingestion import ingest
from beryl.errors import ConfigError, IntegrityError, ModelError, StateError
from beryl.loop.passes import run_pass
from beryl.model.registry import Registry
from beryl.model.training import train
from beryl.objectstore import S3Storage
from beryl.workspace import Workspace

POLL_S = 1.0  # api.registry_poll_s of the replicas
LOAD_S = 2.0  # at most this long, on a busy 2-core machine, to load a model once noticed


@pytest.fixture
def server(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """The session's server, named by the AWS_* variables of this process and its children."""
    for name, value in s3_server.environ().items():
        monkeypatch.setenv(name, value)
    return s3_server


def make_workspace(root: Path, url: str, *, rows: int = 600, **overrides: Any) -> Settings:
    """A demo workspace whose registry is ``url``."""
    ws = init_workspace(root, rows=rows, files=3, seed=3)
    data = json.loads(ws.config.read_text())
    data |= {"registry_url": url, "package_index_url": "http://127.0.0.1:9", **overrides}
    ws.config.write_text(json.dumps(data))
    return config.load(ws.config)


def with_versions(settings: Settings, count: int) -> Registry:
    """A first pass (v0001 in production), then ``count - 1`` more trained versions."""
    run_pass(settings, report=False)
    for seed in range(1, count):
        add_batch(settings.input_folder, f"more-{seed}.csv", rows=300, seed=40 + seed)
        ingest(settings)
        train(settings)
    registry = Workspace(settings).registry
    assert registry.ids() == [f"v{i:04d}" for i in range(1, count + 1)]
    return registry


def cli(settings: Settings, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "beryl", "--config", str(settings.config_path), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200", **env},
    )


def production(settings: Settings) -> str | None:
    listed = json.loads(cli(settings, "models", "list", "--json").stdout)
    return next((v["id"] for v in listed if v.get("production")), None)


def test_a_full_run_through_the_cli_keeps_the_registry_in_the_bucket(
    server: S3Server, tmp_path: Path
) -> None:
    url = server.url("cli")
    settings = make_workspace(tmp_path / "ws", url)
    first = cli(settings, "run", "--no-apicalls")
    assert first.returncode == 0, first.stderr
    assert "promoted" in first.stdout
    add_batch(settings.input_folder, "more.csv", rows=600, seed=8)
    second = cli(settings, "run", "--no-apicalls")
    assert second.returncode == 0, second.stderr
    listed = json.loads(cli(settings, "models", "list", "--json").stdout)
    assert [v["id"] for v in listed] == ["v0001", "v0002"]
    keys = S3Storage(url, server.environ()).keys()
    assert {"production.json", "promotions.jsonl"} <= set(keys)
    for version in ("v0001", "v0002"):
        assert {f"versions/{version}/{n}" for n in ("card.json", "model.json", "model.pkl")} <= (
            set(keys)
        )
    models = settings.model_folder
    assert not (models / "versions").exists() and not (models / "production.json").exists()
    assert (models / "trainedmodel.pkl").is_file()  # the original layout stays in the folder

    # Another machine: its own folder and cache, the same registry.
    other = make_workspace(tmp_path / "other", url)
    before = production(settings)
    other_promote = cli(other, "models", "promote", "v0002" if before == "v0001" else "v0001")
    assert other_promote.returncode == 0, other_promote.stderr
    moved = production(settings)
    assert moved != before and moved == production(other)
    rolled = cli(settings, "models", "rollback")
    assert rolled.returncode == 0, rolled.stderr
    assert production(settings) == production(other) == before
    moves = Workspace(settings).registry.moves()
    assert [m.action for m in moves][-2:] == ["promote", "rollback"]
    assert (other.model_folder / ".registry-cache").is_dir()  # its promotion checked the files


@dataclass(frozen=True)
class Answer:
    replica: int
    started: float
    ended: float
    status: int
    version: str | None


@dataclass(frozen=True)
class Moved:
    started: float
    ended: float
    before: str
    after: str


def in_production(moves: list[Moved], initial: str, start: float, end: float) -> set[str]:
    """Versions that were in production at some moment in [start, end]."""
    found, current = set(), initial
    for move in moves:
        if move.ended <= start:
            current = move.after
    found.add(current)
    for move in moves:
        if move.started < end and move.ended > start:
            found |= {move.before, move.after}
    return found


def test_three_replicas_serve_a_promotion_made_elsewhere_within_the_poll_bound(
    server: S3Server, tmp_path: Path
) -> None:
    url = server.url("replicas")
    primary = make_workspace(tmp_path / "primary", url)
    with_versions(primary, 2)
    replicas = [
        make_workspace(tmp_path / f"replica-{i}", url, rows=60, api={"registry_poll_s": POLL_S})
        for i in range(3)
    ]
    answers: list[Answer] = []
    moves: list[Moved] = []
    stop = threading.Event()
    lock = threading.Lock()
    records = [
        {"lastmonth_activity": 20 + i, "lastyear_activity": 300, "number_of_employees": 5}
        for i in range(5)
    ]

    with contextlib.ExitStack() as stack:
        urls = [stack.enter_context(serving(r.config_path)) for r in replicas]
        for base in urls:
            assert httpx.get(f"{base}/ready", timeout=30).status_code == 200

        def load(replica: int) -> None:
            with httpx.Client(base_url=urls[replica], timeout=30) as client:
                while not stop.is_set():
                    started = time.monotonic()
                    response = client.post("/prediction", json={"records": records})
                    ended = time.monotonic()
                    body = response.json() if response.is_success else {}
                    with lock:
                        answers.append(
                            Answer(
                                replica, started, ended, response.status_code,
                                body.get("model_version"),
                            )
                        )  # fmt: skip

        workers = [threading.Thread(target=load, args=(i,)) for i in range(3)]
        for worker in workers:
            worker.start()
        try:
            current = "v0001"
            for index in range(4):
                time.sleep(POLL_S + LOAD_S + 1.0)
                started = time.monotonic()
                args = ("models", "promote", "v0002") if index % 2 == 0 else (
                    "models", "rollback"
                )  # fmt: skip
                done = cli(primary, *args)  # another process than the replicas
                assert done.returncode == 0, done.stderr
                after = "v0002" if index % 2 == 0 else "v0001"
                moves.append(Moved(started, time.monotonic(), current, after))
                current = after
            time.sleep(POLL_S + LOAD_S + 1.0)
        finally:
            stop.set()
            for worker in workers:
                worker.join(timeout=30)

    failed = [a for a in answers if a.status != 200]
    assert failed == [], f"{len(failed)} of {len(answers)} requests failed: {failed[:3]}"
    for replica in range(3):
        served = [a for a in answers if a.replica == replica]
        assert len(served) >= 40, f"replica {replica} barely answered"
        assert {a.version for a in served} == {"v0001", "v0002"}
    bound = POLL_S + LOAD_S
    late = [  # answers that name a version production had left more than the bound before
        a
        for a in answers
        if a.version not in in_production(moves, "v0001", a.started - bound, a.ended)
    ]
    assert late == [], f"answers named a version out of production for over {bound} s: {late[:3]}"
    for move in moves:  # every replica served the move within the bound
        for replica in range(3):
            settled = [
                a
                for a in answers
                if a.replica == replica and move.ended + bound <= a.started < move.ended + bound + 1
            ]
            assert settled and all(a.version == move.after for a in settled), (replica, move)


def _promote_at_the_line(url: str, folder: str, version: str, line: Any, results: Any) -> None:
    """One process of a race: read the pointer and log the move, wait until the other process
    has too, then swap the pointer."""

    class AtTheLine(S3Storage):
        def swap(self, key: str, data: bytes, *, expected: bytes | None) -> bool:
            if key == "production.json":
                line.wait(timeout=120)
            return super().swap(key, data, expected=expected)

    storage = AtTheLine(url, s3_server.shared().environ())
    registry = Registry(Path(folder), storage=storage)
    try:
        registry.promote(version)
        results.put((version, "won"))
    except ModelError as exc:
        results.put((version, exc.message))


def test_two_processes_promoting_at_once_exactly_one_wins(server: S3Server, tmp_path: Path) -> None:
    url = server.url("race")
    settings = make_workspace(tmp_path / "ws", url)
    registry = with_versions(settings, 3)
    spawn = multiprocessing.get_context("spawn")
    line, results = spawn.Barrier(2), spawn.Queue()
    racers = [
        spawn.Process(
            target=_promote_at_the_line,
            args=(url, str(tmp_path / f"machine-{v}"), v, line, results),
        )
        for v in ("v0002", "v0003")
    ]
    for racer in racers:
        racer.start()
    outcomes = dict(results.get(timeout=180) for _ in racers)
    for racer in racers:
        racer.join(timeout=60)
    winners = [v for v, outcome in outcomes.items() if outcome == "won"]
    assert len(winners) == 1, outcomes
    loser = next(v for v in outcomes if v not in winners)
    assert "production moved while promoting" in outcomes[loser]
    assert registry.production() == winners[0]
    assert [m.to_version for m in registry.moves()] == ["v0001", winners[0]]  # the loser voided


def test_model_files_are_checked_on_download_and_in_the_cache(
    server: S3Server, tmp_path: Path
) -> None:
    url = server.url("tamper")
    settings = make_workspace(tmp_path / "ws", url)
    with_versions(settings, 1)
    storage = S3Storage(url, server.environ())
    elsewhere = Registry(tmp_path / "elsewhere", storage=storage)
    cached = elsewhere.model_path("v0001")
    assert cached.is_file() and elsewhere.verify("v0001")
    cached.write_bytes(b"not the model")  # a damaged cache is downloaded again
    assert elsewhere.verify("v0001") and cached.read_bytes() != b"not the model"
    storage.write("versions/v0001/model.pkl", b"a planted pickle")
    fresh = Registry(tmp_path / "fresh", storage=storage)
    assert not fresh.verify("v0001")
    with pytest.raises(IntegrityError, match="does not match its signed model file"):
        fresh.model_path("v0001")
    card = json.loads(storage.read("versions/v0001/card.json") or b"{}")
    storage.write("versions/v0001/card.json", json.dumps({**card, "classes": [7, 8]}).encode())
    with pytest.raises(IntegrityError, match="disagrees with its signed model file"):
        fresh.model("v0001")


def test_a_version_whose_writer_was_killed_before_its_card_is_set_aside_by_the_next_command(
    server: S3Server, tmp_path: Path
) -> None:
    url = server.url("half-written")
    settings = make_workspace(tmp_path / "ws", url)
    registry = with_versions(settings, 1)
    storage = S3Storage(url, server.environ())
    model = storage.read("versions/v0001/model.json") or b""
    assert storage.create("versions/v0002/model.json", model)  # killed after its claim
    assert storage.create("versions/v0002/model.pkl", b"half")
    assert "v0002" in registry.damaged()
    add_batch(settings.input_folder, "more.csv", rows=300, seed=12)
    done = cli(settings, "run", "--no-apicalls")
    assert done.returncode == 0, done.stderr
    fresh = Workspace(settings).registry
    assert fresh.damaged() == {}
    assert fresh.ids() == ["v0001", "v0002"]  # the freed id went to the new version
    assert json.loads(storage.read("versions/v0002/card.json") or b"{}")["id"] == "v0002"
    kept = [k for k in storage.keys(".recovered/") if k.endswith("/versions/v0002/model.pkl")]
    assert len(kept) == 1 and storage.read(kept[0]) == b"half"


class CountingStorage(S3Storage):
    def __init__(self, url: str, environ: dict[str, str]) -> None:
        super().__init__(url, environ)
        self.stamps = 0

    def stamp(self, key: str) -> str | None:
        self.stamps += 1
        return super().stamp(key)


def test_requests_never_ask_the_bucket_and_a_move_is_noticed_by_polling(
    server: S3Server, tmp_path: Path
) -> None:
    from beryl.api.holder import ModelHolder

    url = server.url("poll")
    settings = make_workspace(tmp_path / "ws", url)
    registry = with_versions(settings, 2)
    storage = CountingStorage(url, server.environ())
    holder = ModelHolder(Registry(tmp_path / "replica", storage=storage), poll_s=0.3)
    try:
        assert holder.get().version == "v0001"
        started = time.monotonic()
        seen = {holder.get().version for _ in range(20_000)}
        assert seen == {"v0001"}
        assert storage.stamps <= 2 + (time.monotonic() - started) / 0.3  # a HEAD per tick only
        registry.promote("v0002")
        deadline = time.monotonic() + 0.3 + LOAD_S
        while (loaded := holder.peek()) is not None and loaded.version != "v0002":
            assert time.monotonic() < deadline, "the promotion was not noticed in time"
            time.sleep(0.01)
    finally:
        holder.close()


def _one_line(result: subprocess.CompletedProcess[str], secret: str) -> str:
    assert result.returncode == StateError.exit_code, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert secret not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_an_unreachable_server_wrong_credentials_or_no_bucket_is_one_line_exit_7(
    server: S3Server, tmp_path: Path
) -> None:
    url = server.url("errors")
    settings = make_workspace(tmp_path / "ws", url)
    secret = server.secret_key
    for command in (("models", "list"), ("run", "--no-apicalls")):
        down = _one_line(cli(settings, *command, AWS_ENDPOINT_URL="http://127.0.0.1:9"), secret)
        assert url in down and "cannot be reached" in down and "AWS_ENDPOINT_URL" in down
        wrong = "Wrong" + secret[::-1]
        denied = _one_line(cli(settings, *command, AWS_SECRET_ACCESS_KEY=wrong), wrong)
        assert url in denied and "refused the credentials" in denied
        assert "AWS_SECRET_ACCESS_KEY" in denied
    missing = make_workspace(tmp_path / "missing", "s3://no-such-bucket/models")
    line = _one_line(cli(missing, "models", "list"), secret)
    assert "there is no bucket no-such-bucket" in line and "create the bucket" in line
    assert not list(settings.output_folder.glob("batches/*.parquet"))  # nothing ingested


def test_the_default_install_never_imports_the_object_storage_client(tmp_path: Path) -> None:
    settings = init_workspace(tmp_path / "ws", rows=60, files=1, seed=1)
    data = json.loads(settings.config.read_text()) | {"registry_url": "s3://beryl-models/a"}
    settings.config.write_text(json.dumps(data))
    code = (
        "import sys, beryl; from beryl import config; "
        f"s = config.load({str(settings.config)!r}); "
        "assert s.registry_url == 's3://beryl-models/a'; "
        "assert 'obstore' not in sys.modules, 'obstore was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    bad = data | {"registry_url": "s3://key:secret@Bucket/x"}
    settings.config.write_text(json.dumps(bad))
    with pytest.raises(ConfigError) as refused:
        config.load(settings.config)
    assert "registry_url: must not hold credentials" in str(refused.value)
    assert "secret" not in str(refused.value).replace("AWS_SECRET_ACCESS_KEY", "")
