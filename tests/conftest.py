"""Shared fixtures: small workspaces built with the demo generator, and a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings
from tests.pg_server import postgres  # noqa: F401  (the session's PostgreSQL server fixture)
from tests.s3_server import s3_server  # noqa: F401  (the session's S3 server fixture)

from beryl import config
from beryl.config import Settings
from beryl.data.demo import init_workspace

# Every run explores the same examples, locally and in CI: no example database carries over.
hypothesis_settings.register_profile("beryl", database=None)
hypothesis_settings.load_profile("beryl")

UDACITY = Path(__file__).resolve().parents[2] / "shared" / "data" / "udacity"


@pytest.fixture
def workspace(tmp_path: Path) -> Settings:
    """A fresh demo workspace (600 rows in 3 source files) and its settings."""
    ws = init_workspace(tmp_path / "ws", rows=600, files=3, seed=0)
    return config.load(ws.config)


@pytest.fixture
def udacity() -> Path:
    """The original system's sample data; tests using it are skipped where it is absent."""
    if not UDACITY.is_dir():
        pytest.skip("original sample data not present")
    return UDACITY


CliRunner = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def beryl_cli() -> CliRunner:
    """Run the real ``beryl`` CLI in a subprocess: ``beryl_cli("ingest", config=path)``."""

    def run(
        *args: str, config: Path | None = None, cwd: Path | None = None, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "BERYL_CONFIG"}
        env["COLUMNS"] = "200"
        if config is not None:
            env["BERYL_CONFIG"] = str(config)
        result = subprocess.run(
            [sys.executable, "-m", "beryl", *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=cwd,
            timeout=300,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"beryl {' '.join(args)} exited {result.returncode}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        return result

    return run


@pytest.fixture
def workspace_config(workspace: Settings) -> Path:
    """The config file of the ``workspace`` fixture."""
    return workspace.root / "config.json"


# Model signing keys go to a folder of the test session's own, never the user's config folder;
# subprocesses (the CLI, the server) inherit it.
os.environ.setdefault("XDG_CONFIG_HOME", tempfile.mkdtemp(prefix="beryl-test-config-"))
os.environ.pop("BERYL_SIGNING_KEY", None)
os.environ.pop("BERYL_SIGNING_KEY_FILE", None)
