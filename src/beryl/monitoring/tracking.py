"""MLflow tracking: Beryl's passes as MLflow runs, its versions as registered model versions.

With ``mlflow.tracking_uri`` in config.json, every command that changes the workspace ends by
bringing the tracking server up to date with the history (``track``), under the pass lock:

* each recorded pass (and ``train``, ``promote``, ``deploy``, ``rollback``, ``ingest``) not yet
  logged becomes a run of ``mlflow.experiment``, named ``run #12``: its outcome and summary as
  tags, each step's duration, the rows it added and the F1s it compared as metrics, and for the
  version it trained that version's parameters and threshold as parameters, its model card
  (``model_card.json``), the digests of the data batches and files it was trained on
  (``data.json``) and the version exported for MLflow (``model/``, see ``beryl.model.export``);
* each such version is registered under ``mlflow.registered_model`` (tagged ``beryl.version``),
  so ``models:/beryl-attrition@champion`` loads with ``mlflow.pyfunc.load_model``;
* the ``champion`` alias names the version in production, so it follows promotions and
  rollbacks.

Runs are found again by their ``beryl.run_id`` tag, so nothing is logged twice; a run left
unfinished by a command that was killed while logging it is deleted and logged again. When the
server cannot be reached the command goes on, says so once (and once again when the server is
back), and the next command catches up with what was missed: the history is the record, MLflow
a view of it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from beryl.errors import ConfigError, ModelError, first_line

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from beryl.config import Settings
    from beryl.monitoring.store import RunRecord
    from beryl.workspace import Workspace

log = logging.getLogger(__name__)

TRACKED = ("run", "train", "promote", "deploy", "rollback", "ingest")
CHAMPION = "champion"
RUN_TAG = "beryl.run_id"
VERSION_TAG = "beryl.version"
DOWN_MARK = ".mlflow-unreachable"  # in the workspace root: the outage was already reported
CATCH_UP = 200  # at most this many of the latest recorded commands are looked at


@dataclass
class Tracked:
    """What one ``track`` logged: run ids of the history, versions registered, the alias."""

    runs: list[int] = field(default_factory=list)
    versions: list[str] = field(default_factory=list)
    champion: str | None = None


def track(workspace: Workspace) -> Tracked | None:
    """Bring the tracking server up to date (module docstring); None without a server. Never
    raises: an unreachable server is reported once and caught up with later."""
    settings = workspace.settings
    if settings.mlflow.tracking_uri is None:
        return None
    mark = settings.root / DOWN_MARK
    try:
        done = _track(workspace)
    except ModelError as exc:  # a version that cannot be exported: nothing to retry
        log.warning("MLflow tracking skipped a version: %s", exc.message)
        return None
    except Exception as exc:  # the server down, refusing, or answering nonsense
        if not mark.exists():
            log.warning(
                "MLflow tracking at %s failed (%s); Beryl goes on and logs what it missed "
                "once the server answers again",
                settings.mlflow.tracking_uri,
                first_line(exc),
            )
            _touch(mark)
        return None
    if mark.exists():
        log.warning(
            "MLflow tracking at %s answers again: %d runs caught up",
            settings.mlflow.tracking_uri,
            len(done.runs),
        )
        mark.unlink(missing_ok=True)
    return done


def _track(workspace: Workspace) -> Tracked:
    settings = workspace.settings
    client = _client(settings)
    experiment = _experiment(client, settings.mlflow.experiment)
    logged, unfinished = _logged_runs(client, experiment)
    for run_id in unfinished:
        client.delete_run(run_id)
    name = settings.mlflow.registered_model
    registered = _registered_versions(client, name)
    done = Tracked()
    records = workspace.history.runs(limit=CATCH_UP)
    for record in sorted(records, key=lambda r: r.id):
        if record.command not in TRACKED or record.ended is None or record.id in logged:
            continue
        version = _version_of(record)
        mlflow_run = _log_run(client, workspace, experiment, record, version)
        done.runs.append(record.id)
        if version is not None and version not in registered:
            registered[version] = _register(client, name, version, mlflow_run)
            done.versions.append(version)
    production = workspace.registry.production()
    if production is not None:
        if production not in registered:  # trained before tracking began
            record_run = _log_version_run(client, workspace, experiment, production)
            registered[production] = _register(client, name, production, record_run)
            done.versions.append(production)
        number = registered[production]
        if _alias(client, name) != number:
            client.set_registered_model_alias(name, CHAMPION, number)
        done.champion = production
    return done


# -- the server -----------------------------------------------------------------------------------
def _client(settings: Settings) -> MlflowClient:
    try:
        from mlflow import MlflowClient
    except ImportError as exc:
        raise ConfigError(
            "mlflow.tracking_uri is set, but MLflow is not installed",
            hint="install the mlflow extra: pip install 'beryl[mlflow]'",
        ) from exc
    # One try per request within the timeout: MLflow's default retries for minutes.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(settings.mlflow.timeout_s)))
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    uri = settings.mlflow.tracking_uri
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _experiment(client: MlflowClient, name: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            client.restore_experiment(found.experiment_id)
        return str(found.experiment_id)
    return str(client.create_experiment(name, tags={"beryl": "attrition"}))


def _logged_runs(client: MlflowClient, experiment: str) -> tuple[set[int], list[str]]:
    """The history ids already logged, and MLflow runs a killed command left unfinished."""
    logged: set[int] = set()
    unfinished: list[str] = []
    token = None
    while True:
        page = client.search_runs(
            [experiment], filter_string=f"tags.`{RUN_TAG}` != ''", max_results=1000,
            page_token=token,
        )  # fmt: skip
        for run in page:
            if run.info.status == "FINISHED" or run.info.status == "FAILED":
                logged.add(int(run.data.tags[RUN_TAG]))
            else:
                unfinished.append(run.info.run_id)
        token = page.token
        if not token:
            return logged, unfinished


def _registered_versions(client: MlflowClient, name: str) -> dict[str, str]:
    """Beryl version -> MLflow version number, of the registered model (created if missing)."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        client.create_registered_model(name, description="Beryl's customer-attrition model")
        return {}
    found = client.search_model_versions(f"name = '{name}'")
    return {v.tags[VERSION_TAG]: str(v.version) for v in found if VERSION_TAG in v.tags}


def _alias(client: MlflowClient, name: str) -> str | None:
    aliases = client.get_registered_model(name).aliases or {}
    value = aliases.get(CHAMPION)
    return None if value is None else str(value)


# -- what a run holds -----------------------------------------------------------------------------
def _version_of(record: RunRecord) -> str | None:
    """The version a recorded command trained, if it trained one."""
    for step in record.steps:
        if step.name == "train" and step.status == "ok" and step.detail.get("version"):
            return str(step.detail["version"])
    return None


def _log_run(
    client: MlflowClient, workspace: Workspace, experiment: str, record: RunRecord,
    version: str | None,
) -> Any:  # fmt: skip
    """Log one recorded command as a finished (or failed) MLflow run; returns the run."""
    tags = {
        RUN_TAG: str(record.id),
        "beryl.command": record.command,
        "beryl.status": record.status,
        "beryl.exit_code": str(record.exit_code),
        "beryl.summary": (record.summary or "")[:4000],
    }
    outcome = record.detail.get("outcome")
    if outcome:
        tags["beryl.outcome"] = str(outcome)
    if version:
        tags[VERSION_TAG] = version
    run = client.create_run(
        experiment, start_time=_millis(record.started), tags=tags,
        run_name=f"{record.command} #{record.id}",
    )  # fmt: skip
    metrics: dict[str, float] = {}
    for key in ("candidate_f1", "production_f1"):
        value = record.detail.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            metrics[key] = float(value)
    for step in record.steps:
        if step.duration_s is not None:
            metrics[f"step.{step.name}_s"] = float(step.duration_s)
        if step.name == "ingest" and isinstance(step.detail.get("rows_added"), int):
            metrics["rows_added"] = float(step.detail["rows_added"])
    if record.duration_s is not None:
        metrics["duration_s"] = float(record.duration_s)
    _log_metrics(client, run.info.run_id, metrics, record.ended)
    if version is not None:
        _log_version(client, workspace, run.info.run_id, version)
    status = "FINISHED" if record.status == "ok" else "FAILED"
    client.set_terminated(run.info.run_id, status, end_time=_millis(record.ended))
    return run


def _log_version_run(
    client: MlflowClient, workspace: Workspace, experiment: str, version: str
) -> Any:
    """A run of its own for a version no logged command trained (trained before tracking)."""
    run = client.create_run(
        experiment, tags={VERSION_TAG: version, RUN_TAG: "0"}, run_name=f"version {version}"
    )
    _log_version(client, workspace, run.info.run_id, version)
    client.set_terminated(run.info.run_id, "FINISHED")
    return run


def _log_version(client: MlflowClient, workspace: Workspace, run_id: str, version: str) -> None:
    from mlflow.entities import Param

    from beryl.model.export import export

    registry = workspace.registry
    card = registry.card(version)
    model = registry.model(version)
    params = {f"model.{k}": v for k, v in card.parameters.items()}
    params |= {"threshold": model.threshold, "version": version}
    client.log_batch(run_id, params=[Param(k, str(v)[:6000]) for k, v in sorted(params.items())])
    metrics = {
        f"test.{k}": float(v)
        for k, v in card.metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }
    metrics["training_rows"] = float(card.training.get("rows", 0))
    _log_metrics(client, run_id, metrics, card.created)
    client.log_dict(run_id, card.to_dict(), "model_card.json")
    data = {k: card.training.get(k) for k in ("rows", "batches", "files")}
    client.log_dict(run_id, data, "data.json")
    with tempfile.TemporaryDirectory(prefix="beryl-mlflow-") as work:
        exported = export(model, card, "mlflow", Path(work) / "model")
        client.log_artifacts(run_id, str(exported.folder), "model")


def _register(client: MlflowClient, name: str, version: str, run: Any) -> str:
    created = client.create_model_version(
        name,
        source=f"{run.info.artifact_uri}/model",
        run_id=run.info.run_id,
        tags={VERSION_TAG: version},
        description=f"Beryl model version {version}",
    )
    return str(created.version)


def _log_metrics(
    client: MlflowClient, run_id: str, values: dict[str, float], when: str | None
) -> None:
    from mlflow.entities import Metric

    stamp = _millis(when)
    client.log_batch(run_id, metrics=[Metric(k, v, stamp, 0) for k, v in sorted(values.items())])


def _millis(text: str | None) -> int:
    from datetime import datetime

    if not text:
        return int(datetime.now().timestamp() * 1000)
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def _touch(path: Path) -> None:
    # a read-only workspace says it again next time: better than saying nothing
    with contextlib.suppress(OSError):
        path.write_text(json.dumps({"reported": True}) + "\n")
