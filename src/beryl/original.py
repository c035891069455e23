"""The original system's ``config.json``: what Beryl does instead of each key it does not use,
and ``upgrade``, which rewrites such a file in Beryl's own form.

``beryl.config.from_mapping`` accepts these keys (``ORIGINAL_KEYS``) and turns each into a
one-line notice (``Settings.notices``, printed by the CLI); any other unknown key is an error.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from beryl.errors import StateError, describe_os_error

if TYPE_CHECKING:
    from beryl.config import Settings

# Keys of the original system's config.json that Beryl does not use: accepted and left out, each
# with a notice of what Beryl does instead (README, "Where everything lands").
ORIGINAL_KEYS = ("model_scores_path", "reports_path", "api_responses", "source_data")


def _shown(value: Any) -> str:
    """A config value for a one-line notice: a printable string as it is, else as JSON."""
    if isinstance(value, str) and value.isprintable():
        return value
    return json.dumps(value)


def original_key_notice(key: str, value: Any, settings: Settings) -> str:
    """What Beryl does instead of an original key it ignores, in one line naming the key."""
    models = _shown(settings.output_model_path.rstrip("/") or "/")
    if key == "model_scores_path":
        return (
            f"{key}: Beryl keeps scores in each model's card ({models}/versions/<id>/card.json, "
            f"`beryl models show`) and the latest F1 in {models}/latestscore.txt; the key is "
            "ignored"
        )
    if key == "reports_path":
        return (
            f"{key}: Beryl writes reports (confusionmatrix.png, classificationreport.png, "
            f"report.html) to {models}/; the key is ignored"
        )
    if key == "api_responses":
        return (
            f"{key}: Beryl writes the API calls' answers to {models}/apireturns.txt (timestamped "
            f"copies in {models}/apireturns/); the key is ignored"
        )
    if key == "source_data":
        source = _shown(value)
        watched = f"input_folder_path ({_shown(settings.input_folder_path)})"
        instead = (
            f"{watched}, the same folder"
            if value == settings.input_folder_path
            else f"{watched} only: set input_folder_path to {source} to use that folder"
        )
        return (
            f"{key}: the original fullprocess.py looked for new data in {source}; `beryl run` "
            f"takes new files from {instead}; the key is ignored"
        )
    raise ValueError(f"{key!r} is not one of the original keys {ORIGINAL_KEYS}")


@dataclass(frozen=True)
class Upgrade:
    """What ``upgrade`` did to a config file: the original keys it took out, each with its
    notice, and where the old file was kept (None: the file was left as it was)."""

    path: Path
    removed: dict[str, str]
    backup: Path | None


def upgrade(path: str | os.PathLike[str]) -> Upgrade:
    """Rewrite a config file in Beryl's own form: without the original keys Beryl ignores.

    Every other key keeps its value and place, so Beryl behaves as before. The file must be
    valid first. The old file is kept beside it (``config.json.before-upgrade``, or ``-2``,
    ``-3``... when taken) and the new one replaces it atomically, with the old one's mode (a
    file holding ``api.token`` stays as private as it was). A file without original keys is
    left untouched.
    """
    from beryl.config import _read_config, _validated, config_file_path

    config_path = config_file_path(path)
    raw, data = _read_config(config_path)
    settings = _validated(data, config_path, check_model=False)
    removed = {k: original_key_notice(k, data[k], settings) for k in ORIGINAL_KEYS if k in data}
    if not removed:
        return Upgrade(config_path, {}, None)
    kept = {key: value for key, value in data.items() if key not in removed}
    text = json.dumps(kept, indent=2, ensure_ascii=False) + "\n"
    try:
        mode = config_path.stat().st_mode & 0o777
        backup = _keep_copy(config_path, raw, mode)
        _replace(config_path, text.encode("utf-8"), mode)
    except OSError as exc:
        message, hint = describe_os_error(exc)
        raise StateError(f"cannot upgrade {config_path}: {message}", hint=hint) from exc
    return Upgrade(config_path, removed, backup)


def _keep_copy(path: Path, data: bytes, mode: int) -> Path:
    """Write ``data`` to a new file beside ``path`` (never over an existing one); its path."""
    for attempt in range(1, 1000):
        suffix = ".before-upgrade" if attempt == 1 else f".before-upgrade-{attempt}"
        copy = path.with_name(path.name + suffix)
        try:
            fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        except FileExistsError:
            continue
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        return copy
    raise FileExistsError(f"{path.name}.before-upgrade-999 and every earlier copy exist")


def _replace(path: Path, data: bytes, mode: int) -> None:
    """Replace ``path`` with ``data`` atomically (temporary file beside it, fsync, rename)."""
    fd, tmp_name = tempfile.mkstemp(prefix=".beryl-tmp-", dir=path.parent, suffix=path.suffix)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
