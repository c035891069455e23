"""A way in from the original system: its config.json, its CLI habits and its clients' calls.

The workspace here has the original's layout: its config.json keys and values (written here, as
the original's README gives them), with Beryl's demo data in the original folder names. Its
commands run as the real CLI, and its clients' calls (``requests`` with a bare list body,
``GET /prediction?filename=...``, ``f1_score`` from ``/scoring``) go to a real ``beryl serve``.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import requests
from tests.test_api import serving
from tests.test_fastpath import assert_same, pair, post

from beryl import config
from beryl.data.demo import init_workspace

# The original system's config.json, key for key and value for value.
ORIGINAL_CONFIG = {
    "input_folder_path": "practicedata",
    "output_folder_path": "ingesteddata",
    "test_data_path": "testdata",
    "output_model_path": "practicemodels",
    "prod_deployment_path": "production_deployment",
    "model_scores_path": "modelscores",
    "reports_path": "reports",
    "api_responses": "api_responses",
    "source_data": "sourcedata",
}
IGNORED_KEYS = ("model_scores_path", "reports_path", "api_responses", "source_data")
FEATURES = ["lastmonth_activity", "lastyear_activity", "number_of_employees"]


def original_workspace(root: Path) -> Path:
    """Beryl's demo data in the original's folders, under the original's config.json."""
    made = init_workspace(root, rows=600, files=2, seed=11)
    practice = root / "practicedata"
    for path in made.practice_files:
        path.unlink()
    for path in made.source_files:  # the original's practicedata held dataset1.csv, dataset2.csv
        path.rename(practice / path.name)
    made.config.write_text(json.dumps(ORIGINAL_CONFIG, indent=4) + "\n", encoding="utf-8")
    return made.config


def beryl(config_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The real CLI, as the original's users would call it: ``python -m beryl --config ...``."""
    env = {k: v for k, v in os.environ.items() if k not in ("BERYL_CONFIG", "BERYL_API_TOKEN")}
    return subprocess.run(
        [sys.executable, "-m", "beryl", "--config", str(config_path), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def notices(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("note: ")]


@dataclass
class Original:
    config: Path
    first_run: subprocess.CompletedProcess[str]

    @property
    def root(self) -> Path:
        return self.config.parent


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> Original:
    config_path = original_workspace(tmp_path_factory.mktemp("original") / "ws")
    return Original(config_path, beryl(config_path, "run", "--no-apicalls", "--json"))


@pytest.fixture(scope="module")
def url(original: Original) -> Iterator[str]:
    assert original.first_run.returncode == 0, original.first_run.stderr
    with serving(original.config) as base:
        yield base


def test_the_original_config_runs_with_one_notice_per_ignored_key(original: Original) -> None:
    result = original.first_run
    assert result.returncode == 0, result.stderr
    lines = notices(result.stderr)
    assert len(lines) == len(IGNORED_KEYS), result.stderr
    for key in IGNORED_KEYS:
        (line,) = [line for line in lines if line.startswith(f"note: {original.config}: {key}: ")]
        assert line.endswith("the key is ignored"), line
    # --json output on stdout is intact: one JSON document, nothing else
    answer = json.loads(result.stdout)
    assert answer["outcome"] == "promoted" and answer["exit_code"] == 0
    assert "note" not in result.stdout


def test_the_notices_say_what_beryl_does_instead(original: Original) -> None:
    by_key = {line.split(": ")[2]: line for line in notices(original.first_run.stderr)}
    assert "practicemodels/latestscore.txt" in by_key["model_scores_path"]
    assert "card.json" in by_key["model_scores_path"]
    assert "report.html" in by_key["reports_path"]
    assert "practicemodels/" in by_key["reports_path"]
    assert "practicemodels/apireturns.txt" in by_key["api_responses"]
    assert "input_folder_path (practicedata)" in by_key["source_data"]
    assert "sourcedata" in by_key["source_data"]


def test_the_original_values_are_the_paths_beryl_uses(original: Original) -> None:
    root = original.root
    assert (root / "practicemodels" / "trainedmodel.pkl").is_file()
    assert float((root / "practicemodels" / "latestscore.txt").read_text()) > 0.5
    assert (root / "production_deployment" / "trainedmodel.pkl").is_file()
    assert (root / "ingesteddata" / "ingestedfiles.txt").read_text().split() == [
        "dataset1.csv",
        "dataset2.csv",
    ]
    for unused in ("models", "modelscores", "reports", "api_responses"):
        assert not (root / unused).exists(), unused


def test_every_command_prints_the_notices_once_on_stderr(original: Original) -> None:
    result = beryl(original.config, "run", "--no-apicalls")  # no new data: a quick pass
    assert result.returncode == 0, result.stderr
    assert sorted(line.split(": ")[2] for line in notices(result.stderr)) == sorted(IGNORED_KEYS)
    assert "note:" not in result.stdout
    history = beryl(original.config, "history", "--json")
    assert history.returncode == 0, history.stderr
    assert len(notices(history.stderr)) == len(IGNORED_KEYS)
    assert [run["command"] for run in json.loads(history.stdout)][:2] == ["run", "run"]


def test_an_unknown_key_that_is_not_an_original_one_still_fails(tmp_path: Path) -> None:
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps({**ORIGINAL_CONFIG, "model_score_path": "typo"}))
    result = beryl(config_path, "history")
    assert result.returncode == 2
    assert "model_score_path: unknown key" in result.stderr
    assert not [key for key in IGNORED_KEYS if key in result.stderr]  # only the typo is named
    assert notices(result.stderr) == []


def _records(root: Path, count: int = 8) -> list[dict[str, Any]]:
    frame = pd.read_csv(root / "testdata" / "testdata.csv").head(count)
    records: list[dict[str, Any]] = frame.astype(object).to_dict(orient="records")
    return records


def test_a_bare_list_of_rows_is_answered_as_records(url: str, original: Original) -> None:
    records = _records(original.root)
    answer = requests.post(f"{url}/prediction", json=records, timeout=30)  # as apicalls.py did
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert len(body["predictions"]) == len(body["probabilities"]) == len(records)
    assert body["model_version"] == "v0001"
    as_records = requests.post(f"{url}/prediction", json={"records": records}, timeout=30)
    assert answer.content == as_records.content
    assert answer.headers["content-type"] == as_records.headers["content-type"]


def test_behind_the_fast_path_a_bare_list_is_answered_by_the_route(original: Original) -> None:
    """The fast path leaves the original's body to the route: the answer is the same."""
    both = pair(config.load(original.config, environ={}))
    records = _records(original.root)
    route, fast, handled = both.both(post(records))
    assert_same(route, fast)
    assert route.status == 200 and not handled
    assert fast.body == both.both(post({"records": records}))[1].body
    route, fast, handled = both.both(post([*records, {"lastmonth_activity": 1}]))
    assert_same(route, fast)
    assert route.status == 422 and not handled


RECORD = {"lastmonth_activity": 1, "lastyear_activity": 2, "number_of_employees": 3}


@pytest.mark.parametrize(
    ("rows", "status", "field"),
    [
        ([{"lastmonth_activity": 1, "lastyear_activity": 2}], 422, "number_of_employees"),
        ([RECORD, {**RECORD, "lastmonth_activity": "lots"}], 422, "records[1].lastmonth_activity"),
        ([RECORD, {**RECORD, "number_of_employees": True}], 422, "records[1].number_of_employees"),
        ([[1, 2, 3]], 422, "records[0]"),
        ([], 422, "records"),
        ([RECORD] * 10_001, 413, "10000"),  # api.max_records by default
    ],
)
def test_a_bare_list_gets_the_errors_and_limits_of_records(
    url: str, rows: list[Any], status: int, field: str
) -> None:
    bare = requests.post(f"{url}/prediction", json=rows, timeout=30)
    as_records = requests.post(f"{url}/prediction", json={"records": rows}, timeout=30)
    assert bare.status_code == status, bare.text
    assert bare.content == as_records.content
    assert field in bare.text
    assert set(bare.json()) == {"error", "detail"}


def test_get_prediction_with_filename_answers_as_file_location(url: str) -> None:
    answer = requests.get(
        f"{url}/prediction", params={"filename": "testdata/testdata.csv"}, timeout=30
    )
    assert answer.status_code == 200, answer.text
    by_file = requests.post(
        f"{url}/prediction", json={"file_location": "testdata/testdata.csv"}, timeout=30
    )
    assert answer.content == by_file.content
    assert len(answer.json()["predictions"]) == 150
    explained = requests.get(
        f"{url}/prediction", params={"filename": "testdata/testdata.csv", "explain": 2}, timeout=30
    )
    by_file = requests.post(
        f"{url}/prediction",
        json={"file_location": "testdata/testdata.csv", "explain": 2},
        timeout=30,
    )
    assert explained.status_code == 200 and explained.content == by_file.content


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
def test_filename_cannot_leave_the_workspace(url: str, location: str, status: int) -> None:
    answer = requests.get(f"{url}/prediction", params={"filename": location}, timeout=30)
    assert answer.status_code == status, answer.text
    by_file = requests.post(f"{url}/prediction", json={"file_location": location}, timeout=30)
    assert by_file.status_code == status
    if status != 404:
        assert answer.json()["detail"]["field"] == "filename"
        assert answer.json()["error"] == by_file.json()["error"].replace(
            "file_location", "filename"
        )
    assert "root:" not in answer.text


def test_filename_through_a_link_pointing_outside_is_refused(
    url: str, original: Original, tmp_path: Path
) -> None:
    outside = tmp_path / "secret.csv"
    outside.write_text(",".join(FEATURES) + "\n1,2,3\n")
    link = original.root / "link.csv"
    link.symlink_to(outside)
    try:
        answer = requests.get(f"{url}/prediction", params={"filename": "link.csv"}, timeout=30)
    finally:
        link.unlink()
    assert answer.status_code == 403
    assert answer.json()["error"].startswith("filename must name a regular file inside")


def test_get_prediction_from_a_page_on_another_site_is_refused(url: str) -> None:
    """A cross-site GET needs no preflight: the browser's Sec-Fetch-Site keeps it from files."""
    params = {"filename": "testdata/testdata.csv"}
    for site in ("cross-site", "same-site"):
        answer = requests.get(
            f"{url}/prediction", params=params, headers={"Sec-Fetch-Site": site}, timeout=30
        )
        assert answer.status_code == 403, site
        assert answer.json()["detail"]["field"] == "filename"
    for site in ("same-origin", "none"):
        answer = requests.get(
            f"{url}/prediction", params=params, headers={"Sec-Fetch-Site": site}, timeout=30
        )
        assert answer.status_code == 200, site


def test_filename_given_twice_or_empty_is_422(url: str) -> None:
    twice = requests.get(f"{url}/prediction?filename=a.csv&filename=b.csv", timeout=30)
    empty = requests.get(f"{url}/prediction?filename=", timeout=30)
    for answer in (twice, empty):
        assert answer.status_code == 422
        assert answer.json()["detail"] == {"field": "filename"}


def test_requests_without_the_original_shapes_are_answered_as_before(url: str) -> None:
    """A GET without filename gets the 405 every other method gets (``Allow: POST``), and the
    OpenAPI document describes the same operations as before."""
    plain = requests.get(f"{url}/prediction", timeout=30)
    other = requests.put(f"{url}/prediction", timeout=30)
    assert plain.status_code == other.status_code == 405
    assert plain.content == other.content
    assert plain.headers["allow"] == other.headers["allow"] == "POST"
    document = requests.get(f"{url}/openapi.json", timeout=30).json()
    assert set(document["paths"]["/prediction"]) == {"post"}


def test_scoring_answers_the_original_f1_score(url: str, original: Original) -> None:
    scoring = requests.get(f"{url}/scoring", timeout=30).json()
    recorded = float((original.root / "practicemodels" / "latestscore.txt").read_text())
    assert scoring["f1_score"] == scoring["score"] == scoring["f1"]
    assert scoring["f1_score"] == pytest.approx(recorded)
    assert scoring["model_version"] == "v0001"


def test_the_original_clients_calls_all_answer(url: str, tmp_path: Path) -> None:
    """apicalls.py's calls one after the other, their answers written to one text file."""
    calls = [
        requests.get(f"{url}/prediction", params={"filename": "testdata/testdata.csv"}),
        requests.get(f"{url}/scoring"),
        requests.get(f"{url}/summarystats"),
    ]
    assert [call.status_code for call in calls] == [200, 200, 200]
    responses = tmp_path / "apireturns.txt"
    responses.write_text("\n".join(call.text for call in calls))
    assert '"f1_score"' in responses.read_text()


def test_config_upgrade_rewrites_the_original_config_in_beryls_form(tmp_path: Path) -> None:
    config_path = tmp_path / "config.json"
    original_bytes = (json.dumps(ORIGINAL_CONFIG, indent=4) + "\n").encode()
    config_path.write_bytes(original_bytes)
    config_path.chmod(0o600)

    result = beryl(config_path, "config", "upgrade")

    assert result.returncode == 0, result.stderr
    assert notices(result.stderr) == []
    for key in IGNORED_KEYS:
        assert f"removed {key}: " in result.stdout
    backup = tmp_path / "config.json.before-upgrade"
    assert str(backup) in result.stdout
    assert backup.read_bytes() == original_bytes
    upgraded = json.loads(config_path.read_text())
    assert upgraded == {k: v for k, v in ORIGINAL_CONFIG.items() if k not in IGNORED_KEYS}
    assert stat.S_IMODE(config_path.stat().st_mode) == 0o600
    assert config.load(config_path, environ={}).notices == ()

    again = beryl(config_path, "config", "upgrade")
    assert again.returncode == 0
    assert "nothing to change" in again.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", backup.name]
