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


def test_the_cli_and_a_pass_with_no_new_data_load_no_model_library(tmp_path: Path) -> None:
    """A pass with nothing new (every 10 minutes) only stats files: scikit-learn, scipy and
    pandas stay unloaded, for `beryl --help` and for the pass itself."""
    from beryl.data.demo import init_workspace

    ws = init_workspace(tmp_path / "ws", rows=200, files=1, seed=3)
    subprocess.run(
        [sys.executable, "-m", "beryl", "--config", str(ws.config), "run", "--no-apicalls"],
        check=True,
        capture_output=True,
    )
    code = (
        "import sys, runpy\n"
        f"sys.argv = ['beryl', '--config', {str(ws.config)!r}, 'run', '--no-apicalls']\n"
        "try:\n"
        "    runpy.run_module('beryl', run_name='__main__')\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        "heavy = {'sklearn', 'scipy', 'pandas', 'matplotlib'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "no-new-data" in done.stdout or "no new data" in done.stdout
