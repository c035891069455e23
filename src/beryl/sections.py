"""The sections of ``config.json`` that group their keys (``drift``, ``live``, ``tuning``,
``spark``): each a frozen pydantic model with its limits, validated as part of
``beryl.config.Settings`` (which re-exports them)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator


class DriftSettings(BaseModel):
    """Thresholds of the drift checks (the ``drift`` section of config.json)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    p_value: float = Field(default=0.01, gt=0.0, lt=1.0)
    psi_threshold: float = Field(default=0.1, gt=0.0)
    jensen_shannon_threshold: float = Field(default=0.1, gt=0.0, le=1.0)
    new_category_share: float = Field(default=0.05, gt=0.0, le=1.0)
    dataset_drift_share: float = Field(default=0.5, gt=0.0, le=1.0)
    min_rows: int = Field(default=30, ge=1)
    max_reference_rows: int = Field(default=200_000, ge=100)


class LiveSettings(BaseModel):
    """Live monitoring of what Beryl is asked (the ``live`` section; ``beryl.monitoring.live``):
    per UTC hour, counters and a sample of at most ``sample_per_hour`` inputs, written every
    ``flush_seconds``, reported over the last ``window_hours`` and kept ``retention_hours``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    sample_per_hour: int = Field(default=2000, ge=10, le=100_000)
    flush_seconds: float = Field(default=10.0, ge=0.1, le=3600.0)
    window_hours: int = Field(default=24, ge=1, le=24 * 31)
    retention_hours: int = Field(default=24 * 7, ge=1, le=24 * 366)

    @field_validator("retention_hours")
    @classmethod
    def _keeps_the_window(cls, value: int, info: ValidationInfo) -> int:
        window = info.data.get("window_hours")
        if isinstance(window, int) and value < window:
            raise ValueError(f"must be at least window_hours ({window})")
        return value


class TuningSettings(BaseModel):
    """How training chooses its settings on the training data alone (the ``tuning`` section;
    ``beryl.model.tuning``): a grid of ``class_weight`` x ``C`` and the decision threshold,
    scored by F1 in stratified ``folds``-fold cross-validation on at most ``search_rows`` rows,
    and a sigmoid calibration kept when it lowers the cross-validated Brier score."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    class_weight: list[Literal["balanced"] | None] = Field(
        default_factory=lambda: [None, "balanced"],  # type: ignore[arg-type]
        min_length=1,
    )
    # scikit-learn's defaults first: a later setting is chosen only when clearly better
    C: list[float] = Field(default_factory=lambda: [1.0, 0.1, 10.0], min_length=1)
    folds: int = Field(default=5, ge=2, le=20)
    search_rows: int = Field(default=100_000, ge=100)
    calibration: Literal["auto", "never", "always"] = "auto"

    @field_validator("C")
    @classmethod
    def _positive(cls, value: list[float]) -> list[float]:
        if any(not c > 0 for c in value):
            raise ValueError("every C must be a number above 0")
        return value


# What ``spark.master`` may name: a local master, a standalone cluster, Kubernetes, YARN.
_SPARK_MASTER = re.compile(
    r"local(\[(\*|[1-9][0-9]*)(,[1-9][0-9]*)?\])?"
    r"|spark://[^\s/]+(:[0-9]+)?(,[^\s/]+(:[0-9]+)?)*"
    r"|k8s://https?://\S+|yarn"
)


class SparkSettings(BaseModel):
    """Where the Spark engine runs (the ``spark`` section; ``beryl.spark``): ``master`` is a
    Spark master URL (``local[2]``, ``spark://host:7077``, ``k8s://https://...``, ``yarn``) or
    a Spark Connect server (``sc://host:15002``); ``conf`` holds extra ``spark.*`` settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    master: str = "local[2]"
    conf: dict[str, str | int | float | bool] = Field(default_factory=dict)

    @field_validator("master")
    @classmethod
    def _master_url(cls, value: str) -> str:
        if not (_SPARK_MASTER.fullmatch(value) or re.fullmatch(r"sc://\S+", value)):
            raise ValueError(
                f"{value!r} is not a Spark master: give local[N], spark://HOST:PORT, "
                "k8s://https://HOST:PORT, yarn, or sc://HOST:PORT for Spark Connect"
            )
        return value

    @field_validator("conf")
    @classmethod
    def _spark_keys(
        cls, value: dict[str, str | int | float | bool]
    ) -> dict[str, str | int | float | bool]:
        bad = sorted(key for key in value if not key.startswith("spark."))
        if bad:
            raise ValueError(f"{', '.join(map(repr, bad))}: Spark settings start with 'spark.'")
        if "spark.master" in value:
            raise ValueError("'spark.master': give it as the section's master key instead")
        return value


EVENTS = ("promoted", "rolled_back", "data_drift", "model_drift", "file_quarantined", "pass_failed")


class WebhookSettings(BaseModel):
    """One receiver of Beryl's events (an entry of the ``webhooks`` list;
    ``beryl.monitoring.webhooks``): where they are POSTed, the secret they are signed with the
    Standard Webhooks way (``whsec_`` and base64, given in config.json as ``secret`` or, better,
    named by ``secret_env``), which ``events`` it gets (all by default) and the body's
    ``format``: Beryl's JSON, or ``slack`` (a Slack-compatible ``{"text": ...}``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str
    secret: str | None = Field(default=None, repr=False)
    secret_env: str | None = None
    events: list[Literal[EVENTS]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: list(EVENTS), min_length=1
    )
    format: Literal["standard", "slack"] = "standard"

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return http_url(
            value,
            "must be an http:// or https:// URL (https outside a trusted network)",
            credentials="sign with the secret instead",
        )

    @field_validator("secret")
    @classmethod
    def _standard_secret(cls, value: str | None) -> str | None:
        if value is not None and secret_problem(value):
            raise ValueError(secret_problem(value))
        return value

    @field_validator("secret_env")
    @classmethod
    def _variable_name(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
            raise ValueError(f"{value!r} is not an environment variable name")
        return value


def secret_problem(secret: str) -> str | None:
    """What is wrong with a webhook secret (never echoing it), or None."""
    import base64
    import binascii

    if not secret.startswith("whsec_"):
        return "must start with whsec_ followed by base64 (e.g. whsec_ + 32 random bytes)"
    try:
        raw = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        return "is not whsec_ followed by base64"
    if len(raw) < 24:
        return "must hold at least 24 random bytes after whsec_"
    return None


class MlflowSettings(BaseModel):
    """MLflow tracking (the ``mlflow`` section; ``beryl.monitoring.tracking``, the ``mlflow``
    extra): with ``tracking_uri`` set, every pass is logged as a run of ``experiment``, every
    model version is registered under ``registered_model`` and its ``champion`` alias follows
    production. ``timeout_s`` bounds each request, so that a server that is down costs a pass
    seconds, not minutes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tracking_uri: str | None = None
    experiment: str = Field(default="beryl", min_length=1)
    registered_model: str = Field(default="beryl-attrition", min_length=1)
    timeout_s: float = Field(default=5.0, gt=0, le=120)

    @field_validator("tracking_uri")
    @classmethod
    def _server_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return http_url(
            value,
            "must be the http:// or https:// URL of an MLflow tracking server",
            credentials="set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or "
            "MLFLOW_TRACKING_TOKEN) in the environment",
        )


def http_url(value: str, problem: str, *, credentials: str) -> str:
    """``value`` if it is an http(s) URL with a host and no credentials; else ``ValueError``
    saying ``problem``, or that credentials belong elsewhere (``credentials``: where)."""
    from urllib.parse import urlsplit

    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(problem)
    if parts.username or parts.password:
        raise ValueError(f"must not hold credentials: {credentials}")
    return value
