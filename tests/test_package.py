"""The package's public surface and its import-time behaviour."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import beryl
from beryl import errors


def test_all_is_sorted_and_complete() -> None:
    assert beryl.__all__ == sorted(beryl.__all__)
    error_classes = {
        name
        for name, value in vars(errors).items()
        if inspect.isclass(value) and issubclass(value, errors.BerylError)
    }
    assert error_classes <= set(beryl.__all__)
    for name in beryl.__all__:
        assert hasattr(beryl, name), name


def test_errors_carry_exit_codes_and_builtin_bases() -> None:
    assert issubclass(errors.ConfigError, ValueError)
    assert issubclass(errors.ModelNotFoundError, LookupError)
    assert issubclass(errors.SchemaError, errors.DataError)
    codes = {cls.exit_code for cls in (errors.ConfigError, errors.DataError, errors.ModelError)}
    assert len(codes) == 3 and 0 not in codes
    assert str(errors.BerylError("broken", hint="fix it")) == "broken (fix it)"


def test_import_has_no_side_effects(tmp_path: Path) -> None:
    code = (
        "import beryl, beryl.cli, beryl.data.ingestion, beryl.model.training\n"
        "import beryl.monitoring.diagnostics, beryl.monitoring.reporting, beryl.model.deployment\n"
        "import beryl.monitoring.history, beryl.data.demo\n"
        "import logging, sys\n"
        "assert not logging.getLogger().handlers\n"
        "assert 'matplotlib' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True)
    assert list(tmp_path.iterdir()) == []


def test_core_does_not_import_web_or_cli_libraries() -> None:
    code = (
        "import sys, beryl.data.ingestion, beryl.model.training, beryl.model.scoring\n"
        "import beryl.model.registry, beryl.model.deployment, beryl.monitoring.diagnostics\n"
        "import beryl.monitoring.history\n"
        "bad = {'fastapi', 'click', 'uvicorn', 'starlette'} & set(sys.modules)\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
