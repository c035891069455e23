"""Signed webhook events from the history's outbox (``beryl.monitoring.webhooks``), delivered to
a real HTTP receiver on 127.0.0.1 that checks every signature with the Standard Webhooks library,
fails, is down, hangs and recovers; through the CLI and with ``beryl run`` SIGKILLed mid-delivery.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks import Webhook

from beryl import config
from beryl.config import Settings
from beryl.data.demo import add_batch, init_workspace
from beryl.monitoring import webhooks
from beryl.workspace import Workspace

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()


class Receiver:
    """An HTTP endpoint that verifies each request's signature; ``fail`` requests get 500 first,
    ``hang`` seconds of sleep before answering."""

    def __init__(self, port: int = 0, *, fail: int = 0, hang: float = 0.0) -> None:
        self.got: list[dict[str, Any]] = []
        self.refused = 0
        self.bad_signatures = 0
        self.fail, self.hang = fail, hang
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                if receiver.hang:
                    time.sleep(receiver.hang)
                try:
                    Webhook(SECRET).verify(body, dict(self.headers.items()))
                except Exception:
                    receiver.bad_signatures += 1
                    self.send_response(401)
                    self.end_headers()
                    return
                if receiver.fail > 0:
                    receiver.fail -= 1
                    receiver.refused += 1
                    self.send_response(500)
                    self.end_headers()
                    return
                receiver.got.append({"id": self.headers["webhook-id"], **json.loads(body)})
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def types(self) -> list[str]:
        return [g.get("type") or g.get("text", "") for g in self.got]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.stop()


def workspace(root: Path, url: str, **hook: Any) -> Settings:
    ws = init_workspace(root, rows=600, files=2, seed=6)
    data = json.loads(ws.config.read_text())
    data |= {
        "package_index_url": "http://127.0.0.1:9",
        "webhooks": [{"url": url, "secret": SECRET, **hook}],
    }
    ws.config.write_text(json.dumps(data))
    return config.load(ws.config)


def command(settings: Settings, *args: str) -> list[str]:
    return [sys.executable, "-m", "beryl", "--config", str(settings.config_path), *args]


def beryl(settings: Settings, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "HOOK_SECRET"} | env
    return subprocess.run(
        command(settings, *args), capture_output=True, text=True, timeout=300, env=environ
    )


def test_a_promotion_is_delivered_signed_with_the_standard_headers(
    receiver: Receiver, tmp_path: Path
) -> None:
    settings = workspace(tmp_path / "ws", receiver.url)
    done = beryl(settings, "run", "--no-apicalls")
    assert done.returncode == 0, done.stderr
    assert receiver.bad_signatures == 0
    (event,) = receiver.got
    assert event["type"] == "promoted"
    assert event["data"]["to_version"] == "v0001"
    assert event["id"].startswith("promoted-")
    assert set(event) == {"id", "type", "timestamp", "data"}
    again = beryl(settings, "run", "--no-apicalls")  # nothing new: nothing sent twice
    assert again.returncode == 0 and len(receiver.got) == 1
    listed = json.loads(beryl(settings, "webhooks", "list", "--json").stdout)
    assert [(e["type"], e["attempts"], bool(e["delivered"])) for e in listed] == [
        ("promoted", 1, True)
    ]


def test_a_receiver_that_is_down_then_fails_gets_every_event_once_it_recovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    down = Receiver()
    port = down.port
    down.stop()  # nothing listens there now
    settings = workspace(tmp_path / "ws", f"http://127.0.0.1:{port}/hook")
    done = beryl(settings, "run", "--no-apicalls")
    assert done.returncode == 0, done.stderr  # a receiver that is down never fails a pass
    (pending,) = Workspace(settings).history.outbox_entries()
    assert (
        pending.attempts == 1 and not pending.delivered and "Connect" in (pending.last_error or "")
    )
    monkeypatch.setattr(webhooks, "FIRST_RETRY_S", 0.05)
    monkeypatch.setattr(webhooks, "MAX_RETRY_S", 0.05)
    back = Receiver(port, fail=2)
    try:
        pending.next_attempt = ""  # due now
        Workspace(settings).history.outbox_update(pending)
        for _ in range(20):
            webhooks.sweep(settings)
            if back.got:
                break
            time.sleep(0.1)
        assert back.refused == 2 and back.bad_signatures == 0
        assert [g["type"] for g in back.got] == ["promoted"]
        (settled,) = Workspace(settings).history.outbox_entries()
        assert settled.attempts == 4 and settled.delivered and settled.last_error is None
    finally:
        back.stop()


def test_a_receiver_that_never_recovers_is_given_up_after_the_last_attempt(
    receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver.fail = 10_000
    settings = workspace(tmp_path / "ws", receiver.url)
    assert beryl(settings, "run", "--no-apicalls").returncode == 0
    monkeypatch.setattr(webhooks, "FIRST_RETRY_S", 0.0)
    monkeypatch.setattr(webhooks, "MAX_RETRY_S", 0.0)
    (first,) = Workspace(settings).history.outbox_entries()
    first.next_attempt = ""  # the CLI's first attempt set the next one 5 s away
    Workspace(settings).history.outbox_update(first)
    for _ in range(webhooks.MAX_ATTEMPTS):
        webhooks.sweep(settings)
    (entry,) = Workspace(settings).history.outbox_entries()
    assert (
        entry.attempts == webhooks.MAX_ATTEMPTS and entry.failed and entry.last_error == "HTTP 500"
    )
    webhooks.sweep(settings)  # given up: never tried again
    assert Workspace(settings).history.outbox_entries()[0].attempts == webhooks.MAX_ATTEMPTS
    shown = beryl(settings, "webhooks", "list")
    assert "given up" in shown.stdout and "HTTP 500" in shown.stdout


def test_an_event_killed_before_delivery_is_sent_by_the_next_command(tmp_path: Path) -> None:
    hanging = Receiver(hang=30.0)
    settings = workspace(tmp_path / "ws", hanging.url)
    process = subprocess.Popen(
        command(settings, "run", "--no-apicalls"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not Workspace(settings).history.outbox_entries():  # queued, now being sent
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.1)
        time.sleep(0.5)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        hanging.hang = 0.0
        hanging.stop()
    assert hanging.got == []
    working = Receiver(hanging.port)
    try:
        done = beryl(settings, "webhooks", "deliver")
        assert done.returncode == 0, done.stderr
        assert "delivered 1" in done.stdout
        assert [g["type"] for g in working.got] == ["promoted"]
    finally:
        working.stop()


def test_events_lost_from_the_outbox_are_queued_again_from_the_records(
    receiver: Receiver, tmp_path: Path
) -> None:
    settings = workspace(tmp_path / "ws", receiver.url)
    assert beryl(settings, "run", "--no-apicalls").returncode == 0
    history = Workspace(settings).history
    history._execute("DELETE FROM outbox")  # type: ignore[attr-defined]  # as if never queued
    webhooks.sweep(settings)
    assert [g["type"] for g in receiver.got] == ["promoted", "promoted"]
    assert receiver.got[0]["id"] == receiver.got[1]["id"]  # the same event, by its id


def test_quarantine_drift_and_a_failed_pass_are_events_and_slack_gets_text(
    receiver: Receiver, tmp_path: Path
) -> None:
    settings = workspace(tmp_path / "ws", receiver.url, format="slack")
    assert beryl(settings, "run", "--no-apicalls").returncode == 0
    (settings.input_folder / "broken.csv").write_text("corporation,exited\nabcd,maybe\n")
    add_batch(settings.input_folder, "shifted.csv", rows=600, seed=31, shift=4.0)
    beryl(settings, "run", "--no-apicalls")
    texts = receiver.types()
    assert all(t.startswith("Beryl: ") for t in texts), texts
    assert any("quarantined broken.csv" in t for t in texts), texts
    assert any("the latest batch drifted" in t for t in texts), texts
    shutil.rmtree(settings.test_data)  # scoring needs the test data: the next pass fails
    add_batch(settings.input_folder, "more.csv", rows=300, seed=32)
    failed = beryl(settings, "run", "--no-apicalls")
    assert failed.returncode != 0
    assert any(t.startswith("Beryl: pass ") and "failed" in t for t in receiver.types())
    assert receiver.bad_signatures == 0


def test_an_endpoint_gets_only_its_events_and_only_from_when_it_was_added(
    receiver: Receiver, tmp_path: Path
) -> None:
    settings = workspace(tmp_path / "ws", receiver.url, events=["rolled_back"])
    assert beryl(settings, "run", "--no-apicalls").returncode == 0
    assert receiver.got == []  # a promotion: not asked for
    add_batch(settings.input_folder, "more.csv", rows=600, seed=40)
    beryl(settings, "run", "--no-apicalls")
    listed = json.loads(beryl(settings, "models", "list", "--json").stdout)
    if not next(v for v in listed if v["id"] == "v0002").get("production"):
        assert beryl(settings, "models", "promote", "v0002").returncode == 0
    rolled = beryl(settings, "models", "rollback")
    assert rolled.returncode == 0, rolled.stderr
    assert receiver.types() == ["rolled_back"]
    other = Receiver()
    try:
        data = json.loads(settings.config_path.read_text())
        data["webhooks"].append({"url": other.url, "secret": SECRET})
        settings.config_path.write_text(json.dumps(data))
        beryl(settings, "run", "--no-apicalls")
        assert other.got == []  # the old promotions are not sent to a new endpoint
    finally:
        other.stop()


def test_bad_webhook_settings_are_refused_in_one_line(tmp_path: Path) -> None:
    for hook, needle in (
        ({"url": "ftp://x/hook", "secret": SECRET}, "http:// or https://"),
        ({"url": "http://127.0.0.1:9/h", "secret": "s3cret-value"}, "whsec_"),
        ({"url": "http://u:p@127.0.0.1:9/h", "secret": SECRET}, "credentials"),
        ({"url": "http://127.0.0.1:9/h", "events": ["everything"]}, "events"),
    ):
        ws = init_workspace(tmp_path / f"ws{len(needle)}", rows=60, files=1, seed=1, force=True)
        data = json.loads(ws.config.read_text()) | {"webhooks": [hook]}
        ws.config.write_text(json.dumps(data))
        done = subprocess.run(
            [sys.executable, "-m", "beryl", "--config", str(ws.config), "config", "check"],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 2, done.stdout + done.stderr
        assert needle in done.stderr and "Traceback" not in done.stderr
        assert "s3cret-value" not in done.stderr  # a secret is never echoed


def test_a_missing_secret_variable_is_the_delivery_s_error_not_the_pass_s(
    receiver: Receiver, tmp_path: Path
) -> None:
    settings = workspace(tmp_path / "ws", receiver.url, secret=None, secret_env="HOOK_SECRET")
    done = beryl(settings, "run", "--no-apicalls")  # HOOK_SECRET not set
    assert done.returncode == 0, done.stderr
    (entry,) = Workspace(settings).history.outbox_entries()
    assert "HOOK_SECRET" in (entry.last_error or "")
    entry.next_attempt = ""  # due now, rather than after its backoff
    Workspace(settings).history.outbox_update(entry)
    sent = beryl(settings, "webhooks", "deliver", HOOK_SECRET=SECRET)
    assert sent.returncode == 0, sent.stderr
    assert receiver.types() == ["promoted"] and receiver.bad_signatures == 0
