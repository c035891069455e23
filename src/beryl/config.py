"""The workspace configuration: one ``config.json``, loaded once into a validated ``Settings``.

Every path in the file is relative to the folder that holds the file, so a workspace behaves the
same from any current directory (cron included)::

    settings = load("workspace/config.json")
    settings.input_folder       # absolute Path of input_folder_path

The original system's ``config.json`` works as it is: its four keys Beryl does not use
(``beryl.original.ORIGINAL_KEYS``) are accepted and left out, each with a one-line notice of
what Beryl does instead (``Settings.notices``; the CLI prints them);
``beryl.original.upgrade`` rewrites such a file without them. Any other unknown key is an
error.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from beryl.errors import ConfigError
from beryl.objectstore import checked_url as checked_registry_url
from beryl.original import ORIGINAL_KEYS, original_key_notice
from beryl.postgres import checked_url
from beryl.sections import DriftSettings as DriftSettings  # the sections, re-exported
from beryl.sections import LiveSettings as LiveSettings
from beryl.sections import MlflowSettings as MlflowSettings
from beryl.sections import SparkSettings as SparkSettings
from beryl.sections import TuningSettings as TuningSettings
from beryl.sections import WebhookSettings as WebhookSettings

CONFIG_ENV = "BERYL_CONFIG"
TOKEN_ENV = "BERYL_API_TOKEN"  # noqa: S105  (the variable name, not a token)
DEFAULT_CONFIG_NAME = "config.json"
HISTORY_DB_NAME = "beryl.sqlite"
DEFAULT_SCHEDULE = "*/10 * * * *"  # every 10 minutes


class ApiSettings(BaseModel):
    """Where `beryl serve` listens and `beryl apicalls` calls, and what the server accepts."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    token: str | None = None
    # ``Host`` names the server answers to; None: the loopback names when bound to loopback.
    allowed_hosts: list[str] | None = None
    max_body_bytes: int = Field(default=10 * 1024 * 1024, gt=0)
    max_records: int = Field(default=10_000, gt=0)
    max_file_bytes: int = Field(default=64 * 1024 * 1024, gt=0)  # a ``file_location`` file
    max_header_bytes: int = Field(default=16 * 1024, ge=1024)  # request line and headers
    header_timeout_s: float = Field(default=10.0, gt=0.0)  # to receive the request line + headers
    body_timeout_s: float = Field(default=30.0, gt=0.0)  # to receive the whole body
    keepalive_timeout_s: float = Field(default=5.0, gt=0.0)  # an idle keep-alive connection
    max_connections: int = Field(default=1000, ge=1)  # open connections per worker
    shutdown_grace_s: float = Field(default=30.0, ge=0.0)  # to finish requests on SIGTERM
    db_timeout_s: float = Field(default=5.0, gt=0.0)  # to wait for the history database
    # With registry_url: how often, at most, the API asks whether production moved (a HEAD).
    registry_poll_s: float = Field(default=2.0, gt=0.0, le=3600.0)
    # The model's name in the Open Inference Protocol's routes (/v2/models/<name>/infer).
    model_name: str = Field(default="attrition", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

    @field_validator("token")
    @classmethod
    def _token_characters(cls, value: str | None) -> str | None:
        if value is not None:
            problem = token_problem(value)
            if problem:
                raise ValueError(problem)
        return value

    @field_validator("allowed_hosts")
    @classmethod
    def _host_names(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            bad = [h for h in value if h != "*" and not _is_host_name(h)]
            if bad:
                raise ValueError(
                    f"{', '.join(map(repr, bad))}: give host names or addresses without a port "
                    "(e.g. 'beryl.example.com', '10.0.0.5', '::1'), or '*' for any host"
                )
        return [h.lower().strip("[]") for h in value] if value is not None else None


# RFC 6750's b64token: what a Bearer token may hold, so every HTTP client sends it unchanged.
_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_HOST_NAME = re.compile(r"[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.?")


def _is_host_name(host: str) -> bool:
    """A host name or an IP address, without a port (an IPv6 address may be in brackets)."""
    import ipaddress

    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if ":" in bare:
        try:
            ipaddress.IPv6Address(bare)
        except ValueError:
            return False
        return True
    return bare == host and _HOST_NAME.fullmatch(host) is not None


def token_problem(token: str) -> str | None:
    """What is wrong with an API token, or None: non-empty, RFC 6750 token characters only."""
    if not token:
        return (
            "must not be empty (remove the key to switch authentication off, or set a token of "
            "letters, digits and -._~+/)"
        )
    if not _TOKEN.fullmatch(token):
        return (
            "may hold only ASCII letters, digits and the characters -._~+/ (with = only at the "
            "end), so that every HTTP client sends it unchanged; e.g. `python -c 'import "
            "secrets; print(secrets.token_urlsafe(32))'`"
        )
    return None


class Settings(BaseModel):
    """Validated workspace configuration (DESIGN section 2)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input_folder_path: str = "sourcedata"
    output_folder_path: str = "ingesteddata"
    test_data_path: str = "testdata"
    output_model_path: str = "models"
    prod_deployment_path: str = "production_deployment"
    target: str = "exited"
    positive_label: int | str = 1
    id_columns: list[str] = Field(default_factory=lambda: ["corporation"])
    numeric_features: list[str] | None = None
    categorical_features: list[str] | None = None
    model: dict[str, Any] = Field(default_factory=dict)
    tuning: TuningSettings = Field(default_factory=TuningSettings)
    scale_features: bool = True  # standardise numeric features before the model
    promotion_margin: float = Field(default=0.0, ge=0.0, le=1.0)
    model_drift_tolerance: float = Field(default=0.05, ge=0.0, le=1.0)
    drift: DriftSettings = Field(default_factory=DriftSettings)
    live: LiveSettings = Field(default_factory=LiveSettings)
    schedule: str = DEFAULT_SCHEDULE
    write_csv_snapshot: bool = True
    package_index_url: str = "https://pypi.org/pypi"
    # PostgreSQL for the history and the pass lock (``beryl.postgres``); None: SQLite in the
    # workspace. Never shown: it may hold a password.
    history_url: Annotated[str | None, AfterValidator(checked_url)] = Field(None, repr=False)
    # The model registry on object storage, s3://bucket/prefix (``beryl.objectstore``); None:
    # the models folder.
    registry_url: Annotated[str | None, AfterValidator(checked_registry_url)] = None
    # The whole workspace on object storage, s3://bucket/prefix (``beryl.data.remote``): input
    # files under input/, the dataset under dataset/, reports under reports/ and, unless
    # registry_url names another place, the registry under models/; this machine's folders are
    # their cache. None: the workspace is the folders alone.
    workspace_url: Annotated[str | None, AfterValidator(checked_registry_url)] = None
    # What runs ingestion and training: this machine, or Spark (``beryl.spark``, the ``spark``
    # extra) for data that outgrows it.
    engine: Literal["local", "spark"] = "local"
    spark: SparkSettings = Field(default_factory=SparkSettings)
    # Where Beryl's events are POSTed, signed (``beryl.monitoring.webhooks``).
    webhooks: list[WebhookSettings] = Field(default_factory=list)
    # MLflow tracking of passes, versions and the champion alias (``beryl.monitoring.tracking``).
    mlflow: MlflowSettings = Field(default_factory=MlflowSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    root: Path = Field(default_factory=Path.cwd, exclude=True)
    config_file: Path | None = Field(default=None, exclude=True)
    # One line per original key the file gave that Beryl does not use (see ``ORIGINAL_KEYS``).
    notices: tuple[str, ...] = Field(default=(), exclude=True)

    @field_validator("target")
    @classmethod
    def _target_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must name the label column")
        return value

    @field_validator("id_columns", "numeric_features", "categorical_features")
    @classmethod
    def _unique_names(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("lists a column more than once")
        return value

    @field_validator("model")
    @classmethod
    def _known_model_parameters(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if (info.context or {}).get("check_model", True):
            problems = model_problems(value)
            if problems:
                raise ValueError("; ".join(problems))
        return value

    @field_validator("schedule")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        if value == DEFAULT_SCHEDULE:  # known good; spares every command importing croniter
            return value
        from croniter import croniter

        if not croniter.is_valid(value):
            raise ValueError(f"{value!r} is not a cron expression (e.g. '*/10 * * * *')")
        return value

    def _path(self, value: str) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else (self.root / path)

    @property
    def input_folder(self) -> Path:
        return self._path(self.input_folder_path)

    @property
    def output_folder(self) -> Path:
        return self._path(self.output_folder_path)

    @property
    def test_data(self) -> Path:
        return self._path(self.test_data_path)

    @property
    def model_folder(self) -> Path:
        return self._path(self.output_model_path)

    @property
    def prod_folder(self) -> Path:
        return self._path(self.prod_deployment_path)

    @property
    def config_path(self) -> Path:
        """The config file these settings came from (``root/config.json`` when built in code)."""
        return self.config_file or (self.root / DEFAULT_CONFIG_NAME)

    @property
    def history_db(self) -> Path:
        return self.root / HISTORY_DB_NAME

    @property
    def lock_file(self) -> Path:
        return self.root / ".beryl.lock"

    @property
    def registry_location(self) -> str | None:
        """Where the registry is on object storage (``registry_url``, else ``models/`` of
        ``workspace_url``), or None: the models folder."""
        if self.registry_url is not None or self.workspace_url is None:
            return self.registry_url
        return f"{self.workspace_url.rstrip('/')}/models"

    @property
    def api_token(self) -> str | None:
        """The API token from config, else from ``BERYL_API_TOKEN`` (read once, at load)."""
        return self.api.token


def model_problems(model: dict[str, Any]) -> list[str]:
    """What is wrong with the ``model`` parameters, in scikit-learn's own words."""
    from sklearn.linear_model import LogisticRegression

    known = set(LogisticRegression().get_params())
    unknown = sorted(set(model) - known)
    problems = []
    if unknown:
        problems.append(
            f"unknown LogisticRegression parameter(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(known))}"
        )
    for name in sorted(set(model) & known):
        validate = getattr(LogisticRegression(**{name: model[name]}), "_validate_params", None)
        if validate is None:
            continue
        try:
            validate()
        except (TypeError, ValueError) as exc:
            problems.append(str(exc).replace("\n", " "))
    return problems


def check_model(settings: Settings) -> None:
    """Refuse ``model`` parameters scikit-learn would refuse, naming the config file.

    ``load(..., check_model=False)`` skips this check (it imports scikit-learn, most of a
    command's start-up); whatever trains a model calls it first.
    """
    problems = model_problems(settings.model)
    if problems:
        raise ConfigError(
            f"invalid configuration in {settings.config_path}:",
            problems=["model: " + "; ".join(problems)],
        )


_PRIVATE_KEYS = ("root", "config_file", "notices")


def _format_problem(error: dict[str, Any]) -> str:
    location = ".".join(str(part) for part in error["loc"]) or "(top level)"
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown key (check the spelling; see the README's config reference)"
    return f"{location}: {message}"


def from_mapping(
    data: dict[str, Any],
    root: Path,
    config_file: Path | None = None,
    *,
    check_model: bool = True,
) -> Settings:
    """Validate a config mapping; every problem is listed in one ``ConfigError``.

    The original system's keys Beryl does not use (``ORIGINAL_KEYS``) are left out, each with
    a line in ``Settings.notices``; any other unknown key is a problem.
    """
    for private in _PRIVATE_KEYS:
        if private in data:
            raise ConfigError("invalid configuration:", problems=[f"{private}: unknown key"])
    ignored = {key: data[key] for key in ORIGINAL_KEYS if key in data}
    try:
        settings = Settings.model_validate(
            {
                **{key: value for key, value in data.items() if key not in ignored},
                "root": root.resolve(),
                "config_file": config_file.resolve() if config_file else None,
            },
            context={"check_model": check_model},
        )
    except ValidationError as exc:
        problems = [_format_problem(dict(e)) for e in exc.errors()]
        model = data.get("model")
        if not check_model and isinstance(model, dict) and model:
            # The file is refused anyway: its `model` parameters are listed with the rest
            # (scikit-learn is imported only on this path), so one edit fixes everything.
            problems += ["model: " + "; ".join(found) for found in [model_problems(model)] if found]
        raise ConfigError("invalid configuration:", problems=problems) from exc
    if not ignored:
        return settings
    notices = tuple(original_key_notice(k, v, settings) for k, v in ignored.items())
    return settings.model_copy(update={"notices": notices})


def resolve_path(
    path: str | os.PathLike[str] | None, environ: dict[str, str] | None = None
) -> Path:
    """The config file to use: the explicit path, else ``$BERYL_CONFIG``, else ./config.json."""
    env = os.environ if environ is None else environ
    if path is not None:
        return Path(path)
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV])
    return Path(DEFAULT_CONFIG_NAME)


def config_file_path(path: str | os.PathLike[str]) -> Path:
    """The config file ``path`` names: the path itself, or ``config.json`` in a folder."""
    config_path = Path(path).expanduser()
    return config_path / DEFAULT_CONFIG_NAME if config_path.is_dir() else config_path


def load(
    path: str | os.PathLike[str],
    environ: dict[str, str] | None = None,
    *,
    check_model: bool = True,
) -> Settings:
    """Read and validate a ``config.json``; paths in it become relative to its folder.

    ``check_model=False`` leaves the ``model`` parameters to ``check_model`` (see there).
    """
    env = os.environ if environ is None else environ
    config_path = config_file_path(path)
    _, data = _read_config(config_path)
    settings = _validated(data, config_path, check_model=check_model)
    if settings.api.token is None and TOKEN_ENV in env:
        problem = token_problem(env[TOKEN_ENV])
        if problem:
            raise ConfigError(f"invalid {TOKEN_ENV} in the environment: the token {problem}")
        api = settings.api.model_copy(update={"token": env[TOKEN_ENV]})
        settings = settings.model_copy(update={"api": api})
    return settings


def _read_config(config_path: Path) -> tuple[bytes, dict[str, Any]]:
    """The bytes of a config file and the JSON object they hold; a ``ConfigError`` naming the
    file otherwise."""
    try:
        raw = config_path.read_bytes()
        text = raw.decode("utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(
            f"no config file at {config_path}",
            hint="create a workspace with `beryl init DIR`, or pass --config / set BERYL_CONFIG",
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {config_path}: {exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{config_path} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{config_path} must hold a JSON object of settings")
    return raw, data


def _validated(data: Mapping[str, Any], config_path: Path, *, check_model: bool) -> Settings:
    """``from_mapping`` for the file at ``config_path``, its problems naming the file."""
    try:
        return from_mapping(dict(data), config_path.parent, config_path, check_model=check_model)
    except ConfigError as exc:
        raise ConfigError(
            f"invalid configuration in {config_path}:", problems=exc.problems
        ) from exc


def default_config() -> dict[str, Any]:
    """The config a new workspace starts with: the original five keys plus Beryl's defaults."""
    return {
        "input_folder_path": "sourcedata",
        "output_folder_path": "ingesteddata",
        "test_data_path": "testdata",
        "output_model_path": "models",
        "prod_deployment_path": "production_deployment",
        "target": "exited",
        "positive_label": 1,
        "id_columns": ["corporation"],
        "model": {"max_iter": 1000},
        "promotion_margin": 0.0,
        "schedule": DEFAULT_SCHEDULE,
        "api": {"host": "127.0.0.1", "port": 8000},
    }
