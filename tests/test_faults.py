"""Server faults are 503 with a JSON reason naming the file, never a 4xx or a hang: a damaged
history database or dataset, a damaged production pointer, and a history database another
process holds (a bounded wait, then ``Retry-After``, while predictions go on).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.test_api import make_workspace
from tests.test_event_loop import in_process

from beryl import config

RECORD = {"lastmonth_activity": 5, "lastyear_activity": 300, "number_of_employees": 12}


def _damage(path: Path, how: str) -> None:
    if how == "garbage":
        path.write_bytes(b"\x00garbage\xff" * 100)
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 3)])
    elif how == "empty":
        path.write_bytes(b"")


@pytest.mark.parametrize("how", ["garbage", "truncated"])
def test_a_damaged_history_database_is_503(tmp_path: Path, how: str) -> None:
    settings, _ = make_workspace(tmp_path / "ws")
    for suffix in ("-wal", "-shm"):
        Path(f"{settings.history_db}{suffix}").unlink(missing_ok=True)
    _damage(settings.history_db, how)
    with in_process(settings) as (url, _):
        for route in ("/history", "/dashboard", "/metrics", "/diagnostics", "/drift"):
            answer = httpx.get(f"{url}{route}", timeout=10)
            assert answer.status_code == 503, (route, answer.text)
            assert "beryl.sqlite" in answer.json()["error"]
        assert httpx.post(f"{url}/prediction", json={"records": [RECORD]}).status_code == 200


@pytest.mark.parametrize(
    ("target", "routes"),
    [
        ("ingesteddata/dataset.json", ["/summarystats", "/diagnostics", "/dashboard"]),
        ("batch", ["/summarystats", "/diagnostics", "/dashboard"]),
        ("models/production.json", ["/scoring", "/ready"]),
    ],
)
@pytest.mark.parametrize("how", ["garbage", "truncated", "empty"])
def test_damaged_workspace_state_is_503_naming_the_file(
    tmp_path: Path, target: str, routes: list[str], how: str
) -> None:
    settings, _ = make_workspace(tmp_path / "ws")
    if target == "batch":
        path = next((settings.output_folder / "batches").glob("*.parquet"))
    else:
        path = settings.root / target
    (settings.output_folder / "profile.json").unlink(missing_ok=True)
    _damage(path, how)
    with in_process(settings) as (url, _):
        for route in routes:
            answer = httpx.get(f"{url}{route}", timeout=10)
            assert answer.status_code == 503, (route, answer.text)
            body = answer.json()
            assert set(body) >= {"error", "detail"} or route == "/ready"
            assert path.name in json.dumps(body) or route == "/ready"
        if target.endswith("production.json"):
            answer = httpx.post(f"{url}/prediction", json={"records": [RECORD]})
            assert answer.status_code == 503 and "production.json" in answer.json()["error"]


def test_a_held_history_database_is_503_with_retry_after_and_predictions_go_on(
    tmp_path: Path,
) -> None:
    settings, config_path = make_workspace(tmp_path / "ws", api={"db_timeout_s": 1.0})
    settings = config.load(config_path)
    holder = sqlite3.connect(settings.history_db, isolation_level=None)
    holder.execute("PRAGMA locking_mode = EXCLUSIVE")  # in WAL mode, what shuts readers out
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("UPDATE runs SET summary = summary")
    try:
        with in_process(settings) as (url, _):
            outcome: dict[str, Any] = {}

            def ask_history() -> None:
                outcome["history"] = httpx.get(f"{url}/history", timeout=30)
                outcome["history_done"] = time.monotonic()

            thread = threading.Thread(target=ask_history)
            thread.start()
            time.sleep(0.2)  # /history is now waiting for the database
            answer = httpx.post(f"{url}/prediction", json={"records": [RECORD]}, timeout=30)
            predicted = time.monotonic()
            thread.join(timeout=30)
            assert answer.status_code == 200
            history = outcome["history"]
            assert history.status_code == 503 and history.headers["Retry-After"] == "1"
            assert "held by another process" in history.json()["error"]
            assert predicted < outcome["history_done"]  # answered while /history waited
    finally:
        holder.execute("ROLLBACK")
        holder.close()
