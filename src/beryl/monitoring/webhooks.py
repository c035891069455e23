"""Signed events to the receivers in ``webhooks`` (config.json), from an outbox in the history
database, so that no event is lost when a receiver is down or Beryl is killed.

Events are read from what Beryl records durably, never kept only in memory:

=================  ==========================================================================
``promoted``       a promotion of the production pointer (the history's promotions)
``rolled_back``    a rollback of it
``data_drift``     a batch that drifted as a whole (the history's drift checks)
``model_drift``    a pass that found production's F1 on new labelled rows below its recorded F1
``file_quarantined``  an input file refused for its name, kind or content (the dataset's record)
``pass_failed``    a pass of the loop that failed or was killed (the history's runs)
=================  ==========================================================================

``sweep`` runs at the end of every command that changes the workspace, under its lock (one
process at a time, on one machine or, with ``history_url``, on several): each event newer than
the time an endpoint was first configured is queued once per endpoint (``outbox``, keyed by the
event's id), then every due delivery is attempted, for at most ``SWEEP_BUDGET_S``. A POST
answered 2xx is delivered; anything else is tried again after 5 s, 20 s, 80 s ... (at most an
hour apart), and given up after ``MAX_ATTEMPTS`` (``beryl webhooks list`` shows it). A command
killed between queuing and delivery, or between a delivery and its record, leaves the event due:
the next command sends it, so a receiver may see an event twice and tells by its ``webhook-id``.

Each request is signed the Standard Webhooks way (``standardwebhooks``, the ``webhooks``
extra): headers ``webhook-id`` (the event's id), ``webhook-timestamp`` (seconds) and
``webhook-signature`` (``v1,`` and the base64 HMAC-SHA256 of ``id.timestamp.body`` with the
endpoint's secret). The body is ``{"type", "timestamp", "data"}``, or with ``format: "slack"``
a Slack-compatible ``{"text": ...}``. Redirects are not followed.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from beryl._io import utc_now
from beryl.config import Settings, WebhookSettings
from beryl.errors import BerylError, ConfigError
from beryl.monitoring.store import HistoryStore, OutboxEntry
from beryl.workspace import Workspace

log = logging.getLogger(__name__)

SWEEP_BUDGET_S = 10.0  # a command spends at most this long delivering at its end
REQUEST_TIMEOUT_S = 5.0
MAX_ATTEMPTS = 10
FIRST_RETRY_S = 5.0
MAX_RETRY_S = 3600.0
_LOOKBACK = 200  # records of each kind looked at per sweep (older ones were queued before)


@dataclass(frozen=True)
class Event:
    """One thing that happened: a stable id, its type, when, and what."""

    id: str
    type: str
    time: str
    data: dict[str, Any]
    text: str  # one line, for chat tools

    def body(self, style: str) -> bytes:
        content = {"text": f"Beryl: {self.text}"} if style == "slack" else {
            "type": self.type,
            "timestamp": self.time,
            "data": self.data,
        }  # fmt: skip
        return json.dumps(content, separators=(",", ":"), default=str).encode("utf-8")


@dataclass
class SweepResult:
    """What one sweep did."""

    queued: int = 0
    delivered: int = 0
    retrying: int = 0
    failed: int = 0


def events(workspace: Workspace) -> Iterator[Event]:
    """Every event the records hold (the latest ``_LOOKBACK`` of each kind)."""
    history = workspace.history
    for move in history.promotions(_LOOKBACK):
        kind = "rolled_back" if move.action == "rollback" else "promoted"
        verb = "rolled production back" if kind == "rolled_back" else "promoted"
        yield Event(
            f"{kind}-{move.time}-{move.to_version}",
            kind,
            move.time,
            move.to_dict(),
            f"{verb} {move.to_version} (from {move.from_version or 'none'}): "
            f"{move.reason or move.action}",
        )
    for check in history.drifts(_LOOKBACK):
        if check.result.verdict == "drifted":
            drifted = list(check.result.drifted_features)
            yield Event(
                f"data_drift-{check.time}",
                "data_drift",
                check.time,
                {
                    "run_id": check.run_id,
                    "drift_share": check.result.drift_share,
                    "drifted_features": drifted,
                },
                f"the latest batch drifted ({check.result.drift_share:.0%} of features: "
                f"{', '.join(drifted)})",
            )
    for model in history.model_drift_checks(_LOOKBACK):
        if model.verdict == "drifted":
            yield Event(
                f"model_drift-{model.time}-{model.version}",
                "model_drift",
                model.time,
                {
                    "run_id": model.run_id,
                    "version": model.version,
                    "f1_new_data": model.f1_new_data,
                    "f1_recorded": model.f1_recorded,
                    "tolerance": model.tolerance,
                    "rows": model.rows,
                },
                f"production {model.version} drifted: F1 {model.f1_new_data} on new rows "
                f"against {model.f1_recorded} recorded",
            )
    for run in history.runs(_LOOKBACK):
        if run.command == "run" and run.status in ("failed", "interrupted") and run.ended:
            yield Event(
                f"pass_failed-{run.id}-{run.started}",
                "pass_failed",
                run.ended,
                {
                    "run_id": run.id,
                    "status": run.status,
                    "exit_code": run.exit_code,
                    "summary": run.summary,
                },
                f"pass {run.id} {run.status}: {run.summary or 'see `beryl history`'}",
            )
    try:
        files = workspace.dataset.files[-_LOOKBACK:]
    except BerylError:
        files = []  # a damaged dataset record: its repair is the next command's job
    for record in files:
        if record.status == "quarantined":
            yield Event(
                f"file_quarantined-{record.name}-{record.sha256}",
                "file_quarantined",
                _iso(record.time),
                {"name": record.name, "reason": record.reason, "sha256": record.sha256},
                f"quarantined {record.name}: {record.reason}",
            )


def sweep(
    workspace: Workspace | Settings,
    *,
    started: str | None = None,
    budget_s: float = SWEEP_BUDGET_S,
) -> SweepResult:
    """Queue the events each endpoint has not had, then deliver what is due (module
    docstring); nothing without ``webhooks``. ``started``: when the command that sweeps began
    (an endpoint seen for the first time gets the events from then on)."""
    workspace = Workspace.of(workspace)
    endpoints = workspace.settings.webhooks
    result = SweepResult()
    if not endpoints:
        return result
    history = workspace.history
    found = sorted(events(workspace), key=lambda e: e.time)
    for endpoint in endpoints:
        since = history.outbox_since(endpoint.url, started or utc_now())
        for event in found:
            if event.time >= since and event.type in endpoint.events:
                payload = event.body(endpoint.format).decode("utf-8")
                entry = OutboxEntry(event.id, endpoint.url, event.type, event.time, payload)
                result.queued += history.outbox_add(entry)
    deliver(workspace.settings, history, result, budget_s=budget_s)
    return result


def deliver(
    settings: Settings, history: HistoryStore, result: SweepResult, *, budget_s: float
) -> None:
    """Attempt every due delivery, oldest first, until ``budget_s`` is spent."""
    import httpx

    by_url = {e.url: e for e in settings.webhooks}
    deadline = time.monotonic() + budget_s
    with httpx.Client(timeout=REQUEST_TIMEOUT_S, follow_redirects=False) as client:
        for entry in history.outbox_due(utc_now()):
            if time.monotonic() > deadline:
                break
            endpoint = by_url.get(entry.endpoint)
            if endpoint is None:
                continue  # no longer configured: kept, never sent
            error = _post(client, endpoint, entry)
            entry.attempts += 1
            if error is None:
                entry.delivered, entry.last_error = utc_now(), None
                result.delivered += 1
            elif entry.attempts >= MAX_ATTEMPTS:
                entry.failed, entry.last_error = utc_now(), error
                result.failed += 1
                log.warning(
                    "gave up delivering %s to %s: %s", entry.event_id, entry.endpoint, error
                )
            else:
                delay = min(FIRST_RETRY_S * 4 ** (entry.attempts - 1), MAX_RETRY_S)
                entry.next_attempt = _later(delay)
                entry.last_error = error
                result.retrying += 1
            history.outbox_update(entry)


def signed_headers(endpoint: WebhookSettings, event_id: str, body: bytes) -> dict[str, str]:
    """The Standard Webhooks headers of one request."""
    try:
        from standardwebhooks import Webhook
    except ImportError as exc:
        raise ConfigError(
            "webhooks need the Standard Webhooks signer, which is not installed",
            hint="pip install 'beryl[webhooks]'",
        ) from exc
    moment = datetime.now(UTC)
    signature = Webhook(secret_of(endpoint)).sign(event_id, moment, body.decode("utf-8"))
    return {
        "content-type": "application/json",
        "user-agent": "beryl-webhooks",
        "webhook-id": event_id,
        "webhook-timestamp": str(int(moment.timestamp())),
        "webhook-signature": signature,
    }


def secret_of(endpoint: WebhookSettings) -> str:
    """The endpoint's secret: ``secret``, else the variable ``secret_env`` names."""
    from beryl.sections import secret_problem

    if endpoint.secret is not None:
        return endpoint.secret
    name = endpoint.secret_env
    value = os.environ.get(name or "", "")
    if not name or not value:
        missing = f": ${name} is not set" if name else ": give secret_env or secret"
        raise ConfigError(
            f"webhook {endpoint.url} has no secret{missing}",
            hint=f"set {name or 'secret_env'} to whsec_ and base64 (or give secret in config.json)",
        )
    problem = secret_problem(value)
    if problem:
        raise ConfigError(f"the webhook secret in ${name} {problem}")
    return value


def _post(client: Any, endpoint: WebhookSettings, entry: OutboxEntry) -> str | None:
    """One attempt; None when the receiver took it, else why not (one line)."""
    import httpx

    body = entry.payload.encode("utf-8")
    try:
        headers = signed_headers(endpoint, entry.event_id, body)
        answer = client.post(endpoint.url, content=body, headers=headers)
    except ConfigError as exc:
        return exc.message
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"[:300]
    if 200 <= answer.status_code < 300:
        return None
    return f"HTTP {answer.status_code}"


def _later(seconds: float) -> str:
    moment = datetime.now(UTC) + timedelta(seconds=seconds)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _iso(stamp: str) -> str:
    """A file record's time (to the second) in the form of every other record's time."""
    return stamp.replace("Z", ".000000Z") if stamp.endswith("Z") and "." not in stamp else stamp
