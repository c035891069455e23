"""What the Spark tests share: one session's settings, small workspaces with a categorical
feature and files of every fate, and a standalone Spark cluster on 127.0.0.1 started with
PySpark's own launcher."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from beryl.data.demo import generate

# Every Spark test in a process uses these settings, so the session is started once.
SPARK_CONF: dict[str, str | int | float | bool] = {
    "spark.ui.enabled": False,
    "spark.sql.shuffle.partitions": 4,
    "spark.default.parallelism": 2,
    "spark.driver.memory": "1g",
    "spark.sql.adaptive.enabled": True,
}
PLANS = ["basic", "pro", "team"]
# scikit-learn's lbfgs stops at tol (1e-4 by default) short of the optimum along the one-hot
# columns' shared direction; tight enough, it reaches the optimum MLlib reaches.
TOL = 1e-10


def require_java() -> None:
    """Fail (never skip) with a clear message where Java is missing."""
    found = shutil.which("java") or (
        os.environ.get("JAVA_HOME") and shutil.which("java", path=os.environ["JAVA_HOME"] + "/bin")
    )
    assert found, "the Spark tests need Java 17 or newer: apt-get install openjdk-17-jre-headless"


def customers(rows: int, seed: int) -> pd.DataFrame:
    """Demo customers with a plan (a categorical feature that moves the risk) and gaps."""
    frame = generate(rows, seed)
    rng = np.random.default_rng(seed + 7)
    plan = rng.choice(PLANS, rows, p=[0.5, 0.3, 0.2]).astype(object)
    flip = (rng.random(rows) < 0.25) & (plan == "basic")
    frame["exited"] = np.where(flip, 1, frame["exited"])
    plan[rng.random(rows) < 0.03] = None
    frame.insert(4, "plan", plan)
    return frame


def _csv(frame: pd.DataFrame, path: Path) -> Path:
    out = frame.copy()
    for column in ("lastmonth_activity", "lastyear_activity", "number_of_employees"):
        out[column] = out[column].astype("Int64")
    path.write_text(out.to_csv(index=False))
    return path


def make_workspace(root: Path, engine: str, master: str = "local[2]", *, rows: int = 900) -> Path:
    """A workspace whose input folder holds files of every fate: overlapping rows, a row
    repeated within a file, a renamed copy, padded text (the careful parser), a bad value."""
    source, tests = root / "sourcedata", root / "testdata"
    source.mkdir(parents=True)
    tests.mkdir()
    data = customers(rows, seed=0)
    first, second = data.iloc[: rows // 2], data.iloc[rows // 3 :]
    _csv(first, source / "a.csv")
    _csv(pd.concat([second, second.iloc[:5]]), source / "b.csv")
    shutil.copy(source / "a.csv", source / "a_copy.csv")
    padded = customers(60, seed=5)
    padded["plan"] = padded["plan"].map(lambda p: f"  {p} " if isinstance(p, str) else p)
    _csv(padded, source / "c.csv")
    bad = _csv(customers(40, seed=6), source / "d.csv").read_text().splitlines()
    cells = bad[7].split(",")
    cells[1] = "lots"  # text in a numeric column
    bad[7] = ",".join(cells)
    (source / "d.csv").write_text("\n".join(bad) + "\n")
    _csv(customers(300, seed=9), tests / "testdata.csv")
    config = {
        "categorical_features": ["plan"],
        "model": {"max_iter": 1000, "tol": TOL},
        "engine": engine,
        "spark": {"master": master, "conf": SPARK_CONF},
    }
    path = root / "config.json"
    path.write_text(json.dumps(config, indent=2))
    old = time.time() - 60  # settled: older than the settle period
    for file in source.iterdir():
        os.utime(file, (old, old))
    return path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _spark_class() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent / "bin" / "spark-class"


@contextmanager
def standalone_cluster(workdir: Path, workers: int = 2) -> Iterator[str]:
    """A Spark standalone master and ``workers`` workers (1 core, 1 GB each) on 127.0.0.1,
    started with PySpark's own ``spark-class``; yields the master URL and stops them all (each
    in a process group of its own, so its JVM goes with it)."""
    require_java()
    port = _free_port()
    url = f"spark://127.0.0.1:{port}"
    env = {
        **os.environ,
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_NO_DAEMONIZE": "1",
        "PYSPARK_PYTHON": sys.executable,
        "SPARK_LOG_DIR": str(workdir),
    }
    launched: list[subprocess.Popen[bytes]] = []
    logs = []

    def daemon(name: str, *args: str) -> None:
        log = (workdir / f"{name}.log").open("wb")
        logs.append(log)
        command = [str(_spark_class()), *args, "--webui-port", str(_free_port())]
        launched.append(
            subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        )

    try:
        daemon(
            "master",
            "org.apache.spark.deploy.master.Master",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        )
        _wait_for_port(port, launched[0], workdir / "master.log")
        for number in range(workers):
            daemon(
                f"worker{number}",
                *("org.apache.spark.deploy.worker.Worker", url, "--host", "127.0.0.1"),
                *("--cores", "1", "--memory", "1g", "--work-dir", str(workdir / f"work{number}")),
            )
        _wait_for_workers(workdir, workers, launched)
        yield url
    finally:
        for process in reversed(launched):
            if process.poll() is None:
                os.killpg(process.pid, 15)
        for process in launched:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
                process.wait(timeout=10)
        for log in logs:
            log.close()


def _wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the Spark master exited: {log.read_text()[-2000:]}"
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise AssertionError(f"the Spark master did not listen on {port}: {log.read_text()[-2000:]}")


def _wait_for_workers(workdir: Path, count: int, launched: list[subprocess.Popen[bytes]]) -> None:
    """Wait until the master's log says every worker registered."""
    deadline = time.monotonic() + 120
    log = workdir / "master.log"
    while time.monotonic() < deadline:
        for process in launched:
            assert process.poll() is None, f"a Spark daemon exited: {log.read_text()[-2000:]}"
        if log.read_text(errors="replace").count("Registering worker") >= count:
            return
        time.sleep(0.3)
    raise AssertionError(f"the Spark workers did not register: {log.read_text()[-2000:]}")
