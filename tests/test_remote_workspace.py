"""The whole workspace on object storage (``workspace_url``, ``beryl.data.remote``): input files
dropped in the bucket, the dataset's batches and manifest, the report and the registry there,
shared by "machines" (separate workspace folders) that each keep a cache. The mirror's rules are
checked on a folder standing in for the bucket and on a real S3 server (SeaweedFS); the CLI end
to end runs on SeaweedFS."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from tests.s3_server import S3Server

from beryl import config
from beryl.config import Settings
from beryl.data.demo import add_batch, init_workspace
from beryl.data.ingestion import ingest
from beryl.data.remote import INPUT_PREFIX, WorkspaceMirror
from beryl.errors import StateError
from beryl.loop.commands import locked_run
from beryl.objectstore import S3Storage
from beryl.storage import FileStorage, LocalStorage
from beryl.workspace import Workspace


@pytest.fixture
def server(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    for name, value in s3_server.environ().items():
        monkeypatch.setenv(name, value)
    return s3_server


def machine(root: Path, url: str | None = None, **overrides: Any) -> Settings:
    """A workspace folder of one "machine" (its own history and lock), its input folder empty:
    the input files are in the bucket."""
    ws = init_workspace(root, rows=400, files=1, seed=5)
    for path in ws.source_files:
        path.unlink()
    data = json.loads(ws.config.read_text())
    data |= {"package_index_url": "http://127.0.0.1:9", **overrides}
    if url is not None:
        data["workspace_url"] = url
    ws.config.write_text(json.dumps(data))
    return config.load(ws.config)


def drop(
    storage: FileStorage, tmp_path: Path, name: str, *, rows: int = 300, seed: int = 1
) -> None:
    """Put a new input file into the bucket's input/."""
    local = add_batch(tmp_path / "drops", name, rows=rows, seed=seed)
    assert storage.put_file(f"{INPUT_PREFIX}{name}", local) is not None


def rows_of(settings: Settings) -> pd.DataFrame:
    frame = Workspace(settings).dataset.read()
    return frame.sort_values(list(frame.columns)).reset_index(drop=True)


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "beryl", "--config", str(settings.config_path), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200"},
    )


# -- the mirror's rules, on a folder and on a real bucket -----------------------------------


@pytest.fixture(params=["folder", "s3"])
def bucket(request: pytest.FixtureRequest, tmp_path: Path) -> FileStorage:
    if request.param == "folder":
        return LocalStorage(tmp_path / "bucket")
    server: S3Server = request.getfixturevalue("server")
    return S3Storage(server.url(f"mirror-{tmp_path.name}"), server.environ())


def mirrored(settings: Settings, bucket: FileStorage) -> Workspace:
    return Workspace(settings, mirror=WorkspaceMirror(settings, bucket))


def command(workspace: Workspace, name: str = "ingest") -> None:
    """What a command that changes the workspace does: sync in, change, sync out."""
    with locked_run(workspace, name):
        ingest(workspace)


def test_a_second_machine_takes_the_dataset_without_reading_a_file_again(
    bucket: FileStorage, tmp_path: Path
) -> None:
    drop(bucket, tmp_path, "a.csv", seed=1)
    drop(bucket, tmp_path, "b.csv", seed=2)
    one = mirrored(machine(tmp_path / "one"), bucket)
    command(one)
    assert one.dataset.rows == 600
    assert {"dataset/dataset.json", "dataset/ingestedfiles.txt"} <= set(bucket.keys("dataset/"))
    batch = one.dataset.batches[0].id
    assert {f"dataset/batches/{batch}{s}" for s in (".parquet", ".hashes.npy", ".batch.json")} <= (
        set(bucket.keys("dataset/batches/"))
    )

    two = mirrored(machine(tmp_path / "two"), bucket)
    with locked_run(two, "ingest"):
        result = ingest(two)
        assert result.records == [] and not result.changed  # nothing read again
    pd.testing.assert_frame_equal(rows_of(two.settings), rows_of(one.settings))
    assert sorted(p.name for p in two.settings.input_folder.iterdir()) == ["a.csv", "b.csv"]

    drop(bucket, tmp_path, "c.csv", seed=3)
    command(two)
    assert two.dataset.rows == 900
    command(one)  # takes machine two's batch; c.csv is not ingested twice
    pd.testing.assert_frame_equal(rows_of(one.settings), rows_of(two.settings))
    assert [f.name for f in one.dataset.files if f.status == "ingested"] == [
        "a.csv",
        "b.csv",
        "c.csv",
    ]


def test_a_file_removed_from_the_bucket_is_removed_from_the_cache_and_its_rows_stay(
    bucket: FileStorage, tmp_path: Path
) -> None:
    drop(bucket, tmp_path, "a.csv")
    one = mirrored(machine(tmp_path / "one"), bucket)
    command(one)
    (one.settings.input_folder / "local-only.csv").write_text("kept\n")
    bucket_path = f"{INPUT_PREFIX}a.csv"
    if isinstance(bucket, LocalStorage):
        bucket.path(bucket_path).unlink()
    else:
        import obstore

        obstore.delete(bucket._client(), bucket_path)
    with one.mirror.turn():  # type: ignore[union-attr]
        report = one.mirror.pull_inputs()  # type: ignore[union-attr]
    assert report.removed == [bucket_path]
    assert sorted(p.name for p in one.settings.input_folder.iterdir()) == ["local-only.csv"]
    assert one.dataset.rows == 300


def test_of_two_machines_publishing_at_once_without_a_shared_lock_one_wins_and_nothing_is_lost(
    bucket: FileStorage, tmp_path: Path
) -> None:
    drop(bucket, tmp_path, "a.csv", seed=1)
    one = mirrored(machine(tmp_path / "one"), bucket)
    two = mirrored(machine(tmp_path / "two"), bucket)
    command(one)
    command(two)  # both hold the same dataset now
    # Each machine ingests a file of its own and publishes; two's publish comes second.
    drop(bucket, tmp_path, "b.csv", seed=2)
    with one.mirror.turn():  # type: ignore[union-attr]
        one.mirror.pull_inputs()  # type: ignore[union-attr]
    add_batch(two.settings.input_folder, "two-only.csv", rows=200, seed=9)
    ingest(one)
    ingest(two)
    one.publish()
    with pytest.raises(StateError, match="another machine changed the dataset") as refused:
        two.publish()
    assert "history_url" in (refused.value.hint or "")
    # Two's next command takes one's dataset, sets its own unpublished batch aside and reads
    # its file again: every row of every file is there once.
    command(two)
    assert two.dataset.rows == 300 + 300 + 200
    command(one)
    pd.testing.assert_frame_equal(rows_of(one.settings), rows_of(two.settings))
    recovered = list((two.settings.output_folder / ".recovered").rglob("*.parquet"))
    assert recovered, "the batch that lost is kept aside, not deleted"


def test_a_change_that_never_reached_the_bucket_is_uploaded_by_the_next_command(
    bucket: FileStorage, tmp_path: Path
) -> None:
    drop(bucket, tmp_path, "a.csv")
    one = mirrored(machine(tmp_path / "one"), bucket)
    with one.mirror.turn():  # type: ignore[union-attr]
        one.mirror.pull_inputs()  # type: ignore[union-attr]
    ingest(one)  # as if killed before its upload
    assert bucket.read("dataset/dataset.json") is None
    command(one)  # the next command uploads it (and ingests nothing new)
    two = mirrored(machine(tmp_path / "two"), bucket)
    command(two)
    assert two.dataset.rows == one.dataset.rows == 300


def test_odd_names_in_the_bucket_never_leave_the_input_folder(
    bucket: FileStorage, tmp_path: Path
) -> None:
    for key in ("input/.hidden.csv", "input/sub/deep.csv", "input/ok.csv"):
        local = add_batch(tmp_path / "drops", "x.csv", rows=20, seed=1)
        bucket.put_file(key, local)
    one = mirrored(machine(tmp_path / "one"), bucket)
    with one.mirror.turn():  # type: ignore[union-attr]
        report = one.mirror.pull_inputs()  # type: ignore[union-attr]
    assert report.downloaded == ["input/ok.csv"]
    assert [p.name for p in one.settings.input_folder.iterdir()] == ["ok.csv"]
    assert not (one.settings.root / "sub").exists()


# -- the CLI end to end, on SeaweedFS -------------------------------------------------------


def test_two_machines_run_the_loop_on_one_bucket_through_the_cli(
    server: S3Server, tmp_path: Path
) -> None:
    url = server.url("workspace-cli")
    storage = S3Storage(url, server.environ())
    drop(storage, tmp_path, "first.csv", rows=500, seed=1)
    drop(storage, tmp_path, "second.csv", rows=500, seed=2)
    one, two = machine(tmp_path / "one", url), machine(tmp_path / "two", url)

    first = cli(one, "run", "--no-apicalls")
    assert first.returncode == 0, first.stderr
    assert "promoted" in first.stdout
    keys = set(storage.keys())
    assert {
        "dataset/dataset.json",
        "models/production.json",
        "models/versions/v0001/card.json",
        "reports/report.html",
        "reports/report.json",
        "reports/confusionmatrix.png",
    } <= keys

    # The other machine: nothing new, the same production model, the report downloaded.
    second = cli(two, "run", "--no-apicalls")
    assert second.returncode == 0, second.stderr
    assert "no new data" in second.stdout
    pd.testing.assert_frame_equal(rows_of(two), rows_of(one))
    assert (two.model_folder / "report.html").read_bytes() == (
        one.model_folder / "report.html"
    ).read_bytes()

    drop(storage, tmp_path, "third.csv", rows=500, seed=3)
    third = cli(two, "run", "--no-apicalls")
    assert third.returncode == 0, third.stderr
    listed = json.loads(cli(one, "models", "list", "--json").stdout)
    assert [v["id"] for v in listed] == ["v0001", "v0002"]
    summary = cli(one, "ingest")  # machine one takes two's batch: nothing to read
    assert summary.returncode == 0, summary.stderr
    pd.testing.assert_frame_equal(rows_of(one), rows_of(two))
    assert rows_of(one).shape[0] == 1500


def test_an_unreachable_bucket_is_one_line_and_exit_7(server: S3Server, tmp_path: Path) -> None:
    one = machine(tmp_path / "one", server.url("unreachable"))
    env = {**os.environ, "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
    result = subprocess.run(
        [sys.executable, "-m", "beryl", "--config", str(one.config_path), "run"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 7, result.stderr
    assert "cannot be reached" in result.stderr and "Traceback" not in result.stderr


def test_the_api_of_another_machine_serves_a_dataset_published_elsewhere_within_the_poll_bound(
    server: S3Server, tmp_path: Path
) -> None:
    import time

    import httpx
    from tests.test_api import serving

    url = server.url("workspace-api")
    storage = S3Storage(url, server.environ())
    drop(storage, tmp_path, "first.csv", rows=500, seed=1)
    writer = machine(tmp_path / "writer", url)
    assert cli(writer, "run", "--no-apicalls").returncode == 0
    reader = machine(tmp_path / "reader", url, api={"registry_poll_s": 1.0})
    with serving(reader.config_path) as base:
        first = httpx.get(f"{base}/summarystats", timeout=30)
        assert first.status_code == 200 and first.json()["rows"] == 500
        drop(storage, tmp_path, "second.csv", rows=250, seed=2)
        assert cli(writer, "ingest").returncode == 0
        published = time.monotonic()
        while True:
            rows = httpx.get(f"{base}/summarystats", timeout=30).json()["rows"]
            if rows == 750:
                break
            assert time.monotonic() - published < 10, f"still {rows} rows"
            time.sleep(0.2)
    assert not (reader.output_folder / ".remote" / "dataset.json").exists()
