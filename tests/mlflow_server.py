"""A real MLflow tracking server for the tests: ``mlflow server`` on 127.0.0.1, its runs in a
SQLite file and its artifacts in a folder of its own, stopped when the test ends.

The server is MLflow's full package, whose pins (pyarrow among them) differ from Beryl's, so it
lives in a virtual environment of its own, ``.venv-mlflow`` (``make mlflow`` builds it; ``make
test`` does so first). Beryl's side talks to it with ``mlflow-skinny`` from its own venv. Where
the server's venv is missing the tests are skipped, and fail under CI::

    server = MlflowServer(tmp_path)    # not started
    server.start(); server.url          # http://127.0.0.1:<port>
    server.stop(); server.start()       # the same port and data: a server that comes back
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

VENV = Path(__file__).resolve().parents[1] / ".venv-mlflow"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class MlflowServer:
    def __init__(self, folder: Path) -> None:
        self.binary = VENV / "bin" / "mlflow"
        if not self.binary.exists():
            reason = f"MLflow's server in {VENV} (run `make mlflow`)"
            if os.environ.get("CI"):
                pytest.fail(f"MLflow tests cannot run: no {reason}")
            pytest.skip(f"MLflow tests need {reason}")
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90.0) -> None:
        env = {
            **os.environ,
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "DO_NOT_TRACK": "true",
            "PATH": f"{self.binary.parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        env.pop("VIRTUAL_ENV", None)
        with (self.folder / "server.log").open("ab") as log:
            self.process = subprocess.Popen(
                [
                    str(self.binary), "server", "--host", "127.0.0.1", "--port", str(self.port),
                    "--workers", "1",
                    "--backend-store-uri", f"sqlite:///{self.folder / 'mlflow.db'}",
                    "--artifacts-destination", str(self.folder / "artifacts"),
                ],
                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.folder,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"mlflow server did not answer in {timeout} s: {self.log_tail()}")

    def stop(self) -> None:
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, 15)
            self.process.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.process.pid, 9)
            self.process.wait()
        self.process = None

    def log_tail(self) -> str:
        path = self.folder / "server.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""
