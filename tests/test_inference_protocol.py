"""The Open Inference Protocol (V2) routes (``beryl.api.routes.inference``) on a real
``beryl serve``: Triton's own HTTP client (``tritonclient[http]``, run in a subprocess: it
brings gevent) with JSON and with binary tensors, KServe-style JSON with httpx, the answers
equal to ``/prediction``'s, and the refusals of bad tensors, names, versions and limits."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from tests.test_api import make_workspace, serving

TOKEN = "t" * 40
AUTH = {"Authorization": f"Bearer {TOKEN}"}
RECORDS = [
    {"lastmonth_activity": 20.0, "lastyear_activity": 300.0, "number_of_employees": 5.0},
    {"lastmonth_activity": 900.0, "lastyear_activity": 40.0, "number_of_employees": 250.0},
    {"lastmonth_activity": None, "lastyear_activity": 1200.0, "number_of_employees": 12.0},
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    api = {"host": "127.0.0.1", "port": 8000, "token": TOKEN, "max_records": 50}
    _, config_path = make_workspace(tmp_path_factory.mktemp("oip") / "ws", api=api)
    with serving(config_path) as base:
        yield base


def tensors(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"name": f, "shape": [len(records)], "datatype": "FP64", "data": [r[f] for r in records]}
        for f in records[0]
    ]


def expected(base: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    answer = httpx.post(f"{base}/prediction", json={"records": records}, headers=AUTH, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_health_and_metadata_as_the_protocol_defines_them(server: str) -> None:
    assert httpx.get(f"{server}/v2/health/live").json() == {"live": True}  # open, like /health
    assert httpx.get(f"{server}/v2/health/ready").json() == {"ready": True}
    assert httpx.get(f"{server}/v2/models/attrition").status_code == 401  # the rest needs it
    meta = httpx.get(f"{server}/v2/models/attrition", headers=AUTH).json()
    assert meta["name"] == "attrition" and meta["versions"] == ["v0001"]
    assert [i["name"] for i in meta["inputs"]] == [
        "lastmonth_activity",
        "lastyear_activity",
        "number_of_employees",
    ]
    assert {i["datatype"] for i in meta["inputs"]} == {"FP64"}
    assert [o["name"] for o in meta["outputs"]] == ["predictions", "probabilities"]
    ready = httpx.get(f"{server}/v2/models/attrition/ready", headers=AUTH)
    assert ready.status_code == 200 and ready.json()["ready"] is True
    assert httpx.get(f"{server}/v2", headers=AUTH).json()["name"] == "beryl"


def test_a_kserve_style_json_request_gets_the_answer_of_prediction(server: str) -> None:
    body = {"id": "req-7", "inputs": tensors(RECORDS)}
    answer = httpx.post(f"{server}/v2/models/attrition/infer", json=body, headers=AUTH, timeout=30)
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["id"] == "req-7" and result["model_version"] == "v0001"
    outputs = {o["name"]: o for o in result["outputs"]}
    want = expected(server, RECORDS)
    assert outputs["predictions"]["data"] == [str(p) for p in want["predictions"]]
    assert outputs["probabilities"]["data"] == pytest.approx(want["probabilities"], abs=1e-12)
    assert outputs["probabilities"]["shape"] == [3]
    # [N, 1] shapes, nested data and one output asked for by name
    nested = [{**t, "shape": [3, 1], "data": [[v] for v in t["data"]]} for t in tensors(RECORDS)]
    only = {"inputs": nested, "outputs": [{"name": "probabilities"}]}
    again = httpx.post(f"{server}/v2/models/attrition/infer", json=only, headers=AUTH).json()
    assert [o["name"] for o in again["outputs"]] == ["probabilities"]
    versioned = httpx.post(
        f"{server}/v2/models/attrition/versions/v0001/infer", json=body, headers=AUTH
    )
    assert versioned.status_code == 200


CLIENT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tritonclient.http as http

    url, token, binary = sys.argv[1], sys.argv[2], sys.argv[3] == "binary"
    records = json.loads(sys.argv[4])
    client = http.InferenceServerClient(url)
    headers = {"Authorization": "Bearer " + token}
    assert client.is_server_live()
    assert client.is_model_ready("attrition", headers=headers)
    meta = client.get_model_metadata("attrition", headers=headers)
    inputs = []
    for spec in meta["inputs"]:
        column = np.array(
            [np.nan if r[spec["name"]] is None else r[spec["name"]] for r in records],
            dtype=np.float64,
        )
        tensor = http.InferInput(spec["name"], [len(records)], "FP64")
        tensor.set_data_from_numpy(column, binary_data=binary)
        inputs.append(tensor)
    outputs = [
        http.InferRequestedOutput(n, binary_data=binary) for n in ("predictions", "probabilities")
    ]
    result = client.infer("attrition", inputs, outputs=outputs, headers=headers, request_id="r1")
    labels = result.as_numpy("predictions").tolist()
    print(json.dumps({
        "predictions": [p.decode() if isinstance(p, bytes) else str(p) for p in labels],
        "probabilities": result.as_numpy("probabilities").tolist(),
        "version": result.get_response()["model_version"],
    }))
    """
)


@pytest.mark.parametrize("encoding", ["json", "binary"])
def test_triton_s_own_client_scores_through_the_protocol(server: str, encoding: str) -> None:
    pytest.importorskip("tritonclient.http")
    host = server.removeprefix("http://")
    ran = subprocess.run(
        [sys.executable, "-c", CLIENT, host, TOKEN, encoding, json.dumps(RECORDS)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stderr
    got = json.loads(ran.stdout)
    want = expected(server, RECORDS)
    assert got["predictions"] == [str(p) for p in want["predictions"]]
    assert got["probabilities"] == pytest.approx(want["probabilities"], abs=1e-12)
    assert got["version"] == "v0001"


def _refused(server: str, body: Any, status: int, needle: str, path: str = "attrition") -> None:
    answer = httpx.post(
        f"{server}/v2/models/{path}/infer",
        content=body if isinstance(body, bytes) else json.dumps(body).encode(),
        headers={**AUTH, "Content-Type": "application/json"},
        timeout=30,
    )
    assert answer.status_code == status, answer.text
    assert needle in answer.json()["error"], answer.json()


def test_bad_requests_are_4xx_naming_the_tensor(server: str) -> None:
    good = tensors(RECORDS)
    _refused(server, b"{not json", 400, "not valid JSON")
    _refused(server, [1, 2], 400, "JSON object")
    _refused(server, {"inputs": []}, 422, "non-empty list")
    _refused(server, {"inputs": good[:2]}, 422, "no input tensor for number_of_employees")
    _refused(server, {"inputs": [*good, {**good[0], "name": "age"}]}, 422, "not a feature")
    _refused(server, {"inputs": [*good, good[0]]}, 422, "given twice")
    _refused(server, {"inputs": [{**good[0], "shape": [3, 2]}, *good[1:]]}, 422, "shape")
    _refused(server, {"inputs": [{**good[0], "shape": [4]}, *good[1:]]}, 422, "has 3 values")
    bad = [{**good[0], "data": ["x", 1, 2]}, *good[1:]]
    _refused(server, {"inputs": bad}, 422, "inputs[0].data[0] must be a number")
    inf = [{**good[0], "data": [1e400, 1, 2]}, *good[1:]]
    _refused(server, {"inputs": inf}, 422, "finite")
    _refused(server, {"inputs": good, "outputs": [{"name": "logits"}]}, 422, "unknown output")
    listed = [{**good[0], "parameters": [1]}, *good[1:]]
    _refused(server, {"inputs": listed}, 422, "parameters must be an object")
    _refused(server, {"inputs": good, "id": 7}, 422, "'id' must be a string")
    _refused(server, {"inputs": [{**good[0], "shape": [True]}, *good[1:]]}, 422, "shape")
    many = [{**t, "shape": [51], "data": [1.0] * 51} for t in good]
    _refused(server, {"inputs": many}, 413, "api.max_records")
    _refused(server, {"inputs": good}, 404, "no model", path="churn")
    _refused(server, {"inputs": good}, 404, "not served", path="attrition/versions/v0009")
    cut = json.dumps({"inputs": [{**good[0], "parameters": {"binary_data_size": 24}}]}).encode()
    answer = httpx.post(
        f"{server}/v2/models/attrition/infer",
        content=cut,
        headers={**AUTH, "Inference-Header-Content-Length": str(len(cut))},
    )
    assert answer.status_code == 400 and "runs past the body" in answer.json()["error"]
    wrong = httpx.post(
        f"{server}/v2/models/attrition/infer",
        content=b"{}",
        headers={**AUTH, "Inference-Header-Content-Length": "99"},
    )
    assert wrong.status_code == 400
