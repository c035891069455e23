"""What a fresh ``beryl`` process loads for its everyday commands.

``beryl ingest`` and ``beryl run`` start every few minutes, and each start pays for the
interpreter and the imports. Each test runs the CLI's entry point (``beryl.cli.main``) in a fresh
process over a small workspace and reads ``sys.modules`` when it is done: the model, API and
report libraries never load for these commands, and Arrow only when there is a file to read. A
module-level import of one of them, added back anywhere on the way, fails here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from beryl.data.demo import init_workspace
from beryl.data.scan import _SETTLE_NS

# Libraries that ingestion and a pass with nothing new never use (training, drift tests, reports,
# the API and its server and client, the schedule, the optional engines and exports).
UNUSED = frozenset(
    {
        *("sklearn", "scipy", "pandas", "matplotlib"),
        *("fastapi", "starlette", "uvicorn", "httpx", "prometheus_client", "croniter"),
        *("pyspark", "mlflow", "onnx"),
    }
)
# What reads and writes the rows: loaded only when there are rows to read.
ROWS = frozenset({"pyarrow"})

_PROBE = textwrap.dedent(
    """
    import json, sys

    from beryl.cli import main

    argv, out = json.loads(sys.argv[1]), sys.argv[2]
    try:
        main(argv)
    except SystemExit as exc:
        if exc.code:
            raise
    with open(out, "w", encoding="utf-8") as handle:
        json.dump(sorted(sys.modules), handle)
    """
)


def _run_cli(tmp_path: Path, *argv: str) -> tuple[set[str], str]:
    """Run ``beryl ARGV`` in a fresh process: the modules it loaded, and its stdout."""
    out = tmp_path / "modules.json"
    env = {k: v for k, v in os.environ.items() if k != "BERYL_CONFIG"}
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(argv), str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return set(json.loads(out.read_text(encoding="utf-8"))), done.stdout


def _libraries(modules: set[str]) -> set[str]:
    return {name.partition(".")[0] for name in modules}


def _beryl_api(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m == "beryl.api" or m.startswith("beryl.api."))


@pytest.fixture(scope="module")
def settled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The config of a workspace whose files are ingested and a model trained on them.

    The source files are left to settle first: a file written within the settle period of the
    listing is recorded without its times and read again by the next pass."""
    ws = init_workspace(tmp_path_factory.mktemp("startup") / "ws", rows=200, files=1, seed=3)
    time.sleep(_SETTLE_NS / 1e9 + 0.2)
    subprocess.run(
        [sys.executable, "-m", "beryl", "--config", str(ws.config), "run", "--no-apicalls"],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return ws.config


def test_the_cli_itself_loads_no_data_library(tmp_path: Path) -> None:
    """``import beryl.cli`` and parsing (``beryl --help``): no NumPy, no Arrow, nothing unused."""
    loaded, out = _run_cli(tmp_path, "--help")
    assert "ingest" in out
    assert sorted(_libraries(loaded) & (UNUSED | ROWS | {"numpy"})) == []
    assert _beryl_api(loaded) == []


def test_ingesting_a_new_file_loads_only_what_reads_it(tmp_path: Path) -> None:
    ws = init_workspace(tmp_path / "ws", rows=200, files=1, seed=4)
    loaded, out = _run_cli(tmp_path, "--config", str(ws.config), "ingest", "--json")
    assert [r["status"] for r in json.loads(out)["records"]] == ["ingested"]
    assert _libraries(loaded) >= ROWS  # the check sees what the command did load
    assert sorted(_libraries(loaded) & UNUSED) == []
    assert _beryl_api(loaded) == []


def test_ingesting_nothing_new_loads_no_arrow(settled: Path, tmp_path: Path) -> None:
    loaded, out = _run_cli(tmp_path, "--config", str(settled), "ingest")
    assert "No new files" in out
    assert sorted(_libraries(loaded) & (UNUSED | ROWS)) == []
    assert _beryl_api(loaded) == []


def test_a_pass_with_nothing_new_loads_neither_the_api_nor_arrow(
    settled: Path, tmp_path: Path
) -> None:
    """With the API calls on (the default): the API is loaded by a promotion, not by a pass."""
    loaded, out = _run_cli(tmp_path, "--config", str(settled), "run")
    assert "no-new-data" in out
    assert sorted(_libraries(loaded) & (UNUSED | ROWS)) == []
    assert _beryl_api(loaded) == []
