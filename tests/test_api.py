"""The REST API over real HTTP: a ``beryl serve`` process on a free loopback port."""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from tests.conftest import CliRunner

from beryl import config
from beryl.config import Settings
from beryl.data.demo import add_batch, init_workspace
from beryl.data.ingestion import ingest
from beryl.loop.passes import run_pass
from beryl.model.registry import Registry
from beryl.model.training import train

FEATURES = ["lastmonth_activity", "lastyear_activity", "number_of_employees"]


@dataclass
class Server:
    url: str
    settings: Settings
    config: Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_workspace(root: Path, *, run: bool = True, **overrides: object) -> tuple[Settings, Path]:
    ws = init_workspace(root, rows=600, files=3, seed=3)
    data = json.loads(ws.config.read_text())
    data["package_index_url"] = "http://127.0.0.1:9"  # never the internet in tests
    data.update(overrides)
    ws.config.write_text(json.dumps(data))
    settings = config.load(ws.config)
    if run:
        run_pass(settings, report=False)
    return settings, ws.config


def make_mixed_workspace(
    root: Path, *, run: bool = True, seed: int = 7, **api: object
) -> tuple[Settings, Path]:
    """The demo workspace plus a categorical column and a numeric one with a tiny spread.

    The tiny spread makes finite but huge numbers overflow once the model scales them, and the
    category exercises the one-hot path: both are where hostile values once became 500s.
    """
    settings, config_path = make_workspace(root, run=False, api=api)
    rng = np.random.default_rng(seed)
    for path in [*settings.input_folder.glob("*.csv"), *settings.test_data.glob("*.csv")]:
        frame = pd.read_csv(path, dtype={"corporation": str})
        frame["segment"] = rng.choice(np.array(["smb", "mid", "enterprise", ""]), len(frame))
        frame["margin"] = rng.normal(0.0, 0.01, len(frame))
        frame.to_csv(path, index=False)
    if run:
        run_pass(settings, report=False)
    return settings, config_path


def make_two_pass_workspace(root: Path, seed: int) -> tuple[Settings, Path]:
    """A workspace after two passes: the second ingested a batch with shifted activity."""
    settings, config_path = make_workspace(root)
    add_batch(settings.input_folder, "shifted.csv", rows=1_500, seed=seed, shift=0.8)
    run_pass(settings, report=False)
    return settings, config_path


@contextlib.contextmanager
def serving(config_path: Path, *extra: str, log_path: Path | None = None) -> Iterator[str]:
    """Run ``beryl serve`` in a subprocess until the block ends; yields its base URL.

    The server logs to ``log_path`` (kept for reading after a failure), else to a temporary
    file: a file, not a pipe, since a pipe nobody reads fills up and stalls the server.
    """
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("BERYL_CONFIG", "BERYL_API_TOKEN")}
    with contextlib.ExitStack() as stack:
        if log_path is None:
            log = stack.enter_context(tempfile.TemporaryFile(mode="w+"))
        else:
            log = stack.enter_context(log_path.open("w+"))
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "beryl", "--config", str(config_path)),
                *("serve", "--port", str(port), *extra),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                if process.poll() is not None:
                    log.seek(0)
                    raise AssertionError(f"server exited: {log.read()}")
                try:
                    if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError("server did not start")
                time.sleep(0.1)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("api") / "ws"
    settings, config_path = make_workspace(
        root, api={"max_body_bytes": 200_000, "max_records": 500}
    )
    with serving(config_path) as url:
        yield Server(url, settings, config_path)


def _records(settings: Settings, count: int = 5) -> list[dict[str, object]]:
    frame = pd.read_csv(settings.test_data / "testdata.csv").head(count)
    frame = frame.astype(object).where(frame.notna(), None)
    return frame.to_dict(orient="records")


def test_prediction_from_json_records_matches_the_model(server: Server) -> None:
    records = _records(server.settings, 20)
    answer = httpx.post(f"{server.url}/prediction", json={"records": records}, timeout=10)
    assert answer.status_code == 200
    body = answer.json()
    assert body["model_version"] == "v0001"
    assert len(body["predictions"]) == len(body["probabilities"]) == 20
    assert all(0.0 <= p <= 1.0 for p in body["probabilities"])
    registry = Registry(server.settings.model_folder)
    model, threshold = registry.pipeline("v0001"), registry.model("v0001").threshold
    frame = pd.DataFrame(records)[FEATURES].astype(float)
    expected = model.predict_proba(frame)[:, list(model.classes_).index(1)]
    # the pickled pipeline's probabilities, decided at the threshold chosen in training
    assert body["predictions"] == (expected > threshold).astype(int).tolist()
    assert body["probabilities"] == pytest.approx(expected.tolist(), abs=1e-12)


def test_prediction_from_csv_body_and_file_location_agree(server: Server) -> None:
    test_file = server.settings.test_data / "testdata.csv"
    by_csv = httpx.post(
        f"{server.url}/prediction",
        content=test_file.read_bytes(),
        headers={"Content-Type": "text/csv"},
        timeout=10,
    )
    by_file = httpx.post(
        f"{server.url}/prediction", json={"file_location": "testdata/testdata.csv"}, timeout=10
    )
    assert by_csv.status_code == by_file.status_code == 200
    rows = len(pd.read_csv(test_file))
    assert len(by_csv.json()["predictions"]) == rows
    assert by_csv.json() == by_file.json()


def test_prediction_with_explain_over_http(server: Server) -> None:
    """``explain`` in a JSON body or ``?explain=`` for CSV: every feature's contribution (3 of
    3 here) plus the base value is the logit behind the probability; without it, no reasons."""
    url = f"{server.url}/prediction"
    records = _records(server.settings, 10)
    by_json = httpx.post(url, json={"records": records, "explain": 3}, timeout=10)
    csv = pd.DataFrame(records).to_csv(index=False).encode()
    by_csv = httpx.post(
        f"{url}?explain=3", content=csv, headers={"Content-Type": "text/csv"}, timeout=10
    )
    plain = httpx.post(url, json={"records": records}, timeout=10)
    assert by_json.status_code == by_csv.status_code == plain.status_code == 200
    body = by_json.json()
    assert "explanations" not in plain.json()
    assert body["predictions"] == plain.json()["predictions"]
    for chance, explanation in zip(body["probabilities"], body["explanations"], strict=True):
        assert sorted(r["feature"] for r in explanation["reasons"]) == sorted(FEATURES)
        total = sum(r["contribution"] for r in explanation["reasons"]) + explanation["base_value"]
        assert total == pytest.approx(explanation["logit"], abs=1e-9)
        assert explanation["logit"] == pytest.approx(math.log(chance / (1 - chance)), abs=1e-9)
    assert [e["logit"] for e in by_csv.json()["explanations"]] == pytest.approx(
        [e["logit"] for e in body["explanations"]], abs=1e-12
    )
    bad = httpx.post(url, json={"records": records, "explain": "x"}, timeout=10)
    assert bad.status_code == 422 and bad.json()["detail"] == {"field": "explain"}


@pytest.mark.parametrize(
    ("location", "status"),
    [
        ("/etc/passwd", 403),
        ("../../../../etc/passwd", 403),
        ("testdata/../../outside.csv", 403),
        ("testdata/../testdata/nothing.csv", 404),
        ("no/such/file.csv", 404),
        ("testdata", 422),
    ],
)
def test_file_location_cannot_leave_the_workspace(
    server: Server, location: str, status: int
) -> None:
    answer = httpx.post(f"{server.url}/prediction", json={"file_location": location}, timeout=10)
    assert answer.status_code == status
    assert "error" in answer.json()


def test_file_location_through_a_link_pointing_outside_is_refused(
    server: Server, tmp_path: Path
) -> None:
    outside = tmp_path / "secret.csv"
    outside.write_text("lastmonth_activity,lastyear_activity,number_of_employees\n1,2,3\n")
    link = server.settings.root / "link.csv"
    link.symlink_to(outside)
    try:
        answer = httpx.post(f"{server.url}/prediction", json={"file_location": "link.csv"})
    finally:
        link.unlink()
    assert answer.status_code == 403
    assert "inside the workspace" in answer.json()["error"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"records": [{"lastmonth_activity": 1, "lastyear_activity": 2}]}, "number_of_employees"),
        (
            {
                "records": [
                    {"lastmonth_activity": "lots", "lastyear_activity": 2, "number_of_employees": 3}
                ]
            },
            "records[0].lastmonth_activity",
        ),
        (
            {
                "records": [
                    {"lastmonth_activity": 1, "lastyear_activity": 2, "number_of_employees": 3},
                    {"lastmonth_activity": True, "lastyear_activity": 2, "number_of_employees": 3},
                ]
            },
            "records[1].lastmonth_activity",
        ),
        ({"records": [[1, 2, 3]]}, "records[0]"),
        ({"records": "all of them"}, "records"),
        ({"records": []}, "records"),
    ],
)
def test_bad_records_are_4xx_naming_the_field(
    server: Server, body: dict[str, object], field: str
) -> None:
    answer = httpx.post(f"{server.url}/prediction", json=body, timeout=10)
    assert answer.status_code == 422
    payload = answer.json()
    assert field in json.dumps(payload)
    assert set(payload) == {"error", "detail"}


def test_malformed_requests_are_4xx(server: Server) -> None:
    url = f"{server.url}/prediction"
    not_json = httpx.post(url, content=b"{nope", headers={"Content-Type": "application/json"})
    assert not_json.status_code == 400
    both = httpx.post(url, json={"records": [], "file_location": "x"})
    assert both.status_code == 422
    unknown = httpx.post(url, json={"rows": []})
    assert unknown.status_code == 422
    xml = httpx.post(url, content=b"<a/>", headers={"Content-Type": "application/xml"})
    assert xml.status_code == 415
    bad_csv = httpx.post(url, content=b"a,b\n1,2\n", headers={"Content-Type": "text/csv"})
    assert bad_csv.status_code == 422
    assert "lastmonth_activity" in bad_csv.json()["error"]
    missing = httpx.get(f"{server.url}/nowhere")
    assert missing.status_code == 404 and "error" in missing.json()


def test_body_and_record_limits(server: Server) -> None:
    record = {"lastmonth_activity": 1, "lastyear_activity": 2, "number_of_employees": 3}
    too_many = httpx.post(f"{server.url}/prediction", json={"records": [record] * 501})
    assert too_many.status_code == 413
    assert "500" in too_many.json()["error"]
    huge = httpx.post(
        f"{server.url}/prediction",
        content=b"x" * 300_000,
        headers={"Content-Type": "text/csv"},
    )
    assert huge.status_code == 413


def test_monitoring_endpoints(server: Server) -> None:
    scoring = httpx.get(f"{server.url}/scoring").json()
    card = Registry(server.settings.model_folder).card("v0001")
    assert scoring["model_version"] == "v0001"
    assert scoring["f1"] == pytest.approx(card.f1)
    assert scoring["f1_score"] == scoring["score"] == scoring["f1"]  # the original's names
    stats = httpx.get(f"{server.url}/summarystats").json()
    assert set(stats["columns"]) == set(FEATURES)
    finaldata = pd.read_csv(server.settings.output_folder / "finaldata.csv")
    assert stats["rows"] == len(finaldata)
    for column in FEATURES:
        assert stats["columns"][column]["mean"] == pytest.approx(finaldata[column].mean())
        assert stats["columns"][column]["median"] == pytest.approx(finaldata[column].median())
    diagnostics = httpx.get(f"{server.url}/diagnostics").json()
    assert diagnostics["model_version"] == "v0001"
    assert set(diagnostics["missing_percent"]) >= set(FEATURES)
    assert diagnostics["timings"]["ingest_s"] is not None
    assert diagnostics["timings"]["train_s"] is not None
    assert httpx.get(f"{server.url}/health").json() == {"status": "ok"}
    assert httpx.get(f"{server.url}/ready").json() == {"ready": True, "model_version": "v0001"}
    assert httpx.get(f"{server.url}/docs").status_code == 200
    spec = httpx.get(f"{server.url}/openapi.json").json()
    assert {"/prediction", "/scoring", "/summarystats", "/diagnostics"} <= set(spec["paths"])


def test_promotion_is_picked_up_without_restart_and_without_failures(
    tmp_path: Path, beryl_cli: CliRunner
) -> None:
    settings, config_path = make_workspace(tmp_path / "ws")
    add_batch(settings.input_folder, "more.csv", rows=400, seed=11)
    ingest(settings)
    train(settings)  # v0002, not yet in production
    record = {"lastmonth_activity": 20, "lastyear_activity": 300, "number_of_employees": 5}
    seen: list[tuple[int, str | None]] = []
    stop = threading.Event()
    with serving(config_path) as url:

        def hammer() -> None:
            with httpx.Client(base_url=url, timeout=10) as client:
                while not stop.is_set():
                    answer = client.post("/prediction", json={"records": [record]})
                    version = answer.json().get("model_version") if answer.is_success else None
                    seen.append((answer.status_code, version))

        worker = threading.Thread(target=hammer)
        worker.start()
        try:
            time.sleep(0.5)
            beryl_cli("models", "promote", "v0002", config=config_path, check=True)
            deadline = time.monotonic() + 20
            while not any(v == "v0002" for _, v in seen[-5:]) and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            stop.set()
            worker.join(timeout=20)
        assert httpx.get(f"{url}/ready").json()["model_version"] == "v0002"
    assert seen, "no request was made"
    assert all(status == 200 for status, _ in seen)
    versions = [v for _, v in seen]
    assert set(versions) == {"v0001", "v0002"}
    first_new = versions.index("v0002")
    assert all(v == "v0002" for v in versions[first_new:])


def test_token_guards_everything_but_health_and_ready(tmp_path: Path) -> None:
    _, config_path = make_workspace(tmp_path / "ws", api={"token": "s3cret"})
    with serving(config_path) as url:
        assert httpx.get(f"{url}/health").status_code == 200
        assert httpx.get(f"{url}/ready").status_code == 200
        for path in ("/scoring", "/summarystats", "/diagnostics", "/openapi.json"):
            assert httpx.get(f"{url}{path}").status_code == 401
            wrong = httpx.get(f"{url}{path}", headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401
            right = httpx.get(f"{url}{path}", headers={"Authorization": "Bearer s3cret"})
            assert right.status_code == 200


def test_apicalls_records_every_endpoint(server: Server, beryl_cli: CliRunner) -> None:
    result = beryl_cli("apicalls", "--url", server.url, config=server.config)
    assert result.returncode == 0, result.stderr
    answers = json.loads((server.settings.model_folder / "apireturns.txt").read_text())
    paths = [c["path"] for c in answers["calls"]]
    assert paths == [
        "/prediction",
        "/scoring",
        "/summarystats",
        "/diagnostics",
        "/health",
        "/ready",
    ]
    assert all(c["status"] == 200 for c in answers["calls"])
    copies = list((server.settings.model_folder / "apireturns").glob("apireturns-*.txt"))
    assert copies


def test_apicalls_non_200_is_recorded_and_fails(tmp_path: Path, beryl_cli: CliRunner) -> None:
    settings, config_path = make_workspace(tmp_path / "ws", run=False)
    ingest(settings)  # data, but no model in production: /prediction cannot answer 200
    with serving(config_path) as url:
        result = beryl_cli("apicalls", "--url", url, config=config_path)
    assert result.returncode == 1
    answers = json.loads((settings.model_folder / "apireturns.txt").read_text())
    statuses = {c["path"]: c["status"] for c in answers["calls"]}
    assert statuses["/prediction"] == 503
    assert statuses["/health"] == 200
    assert statuses["/ready"] == 503


def test_apicalls_without_a_server_is_one_clear_error(server: Server, beryl_cli: CliRunner) -> None:
    result = beryl_cli(
        "apicalls", "--url", f"http://127.0.0.1:{_free_port()}", config=server.config
    )
    assert result.returncode == 6
    assert "cannot reach the Beryl API" in result.stderr
    assert "Traceback" not in result.stderr


def _listening_addresses(port: int) -> set[str]:
    """Local addresses with a socket listening on ``port``, read from /proc/net/tcp."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, port_hex = local.split(":")
        if state == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
            found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc")
def test_server_binds_to_loopback_by_default(server: Server) -> None:
    port = int(server.url.rsplit(":", 1)[1])
    assert _listening_addresses(port) == {"127.0.0.1"}
