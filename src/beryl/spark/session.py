"""The Spark session the Spark engine works in: started once per process, reused by every pass.

``spark.master`` names where it runs: ``local[N]`` (N cores of this machine), a standalone
cluster (``spark://host:7077``), Kubernetes (``k8s://https://host:443``, e.g. with the Spark
operator), YARN, or a Spark Connect server (``sc://host:15002``). Executors read the input
files and the dataset's hash indexes by path, so the workspace must be on storage every
executor sees under the same path (a shared file system), and each executor's Python must have
the same Beryl installed. On this machine (``local`` and ``spark://`` masters) the executors
use this process's Python unless ``spark.pyspark.python`` says otherwise.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from beryl.config import SparkSettings
from beryl.errors import ConfigError, StateError, first_line

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

# Beryl's defaults under the user's ``spark.conf``: no progress bars or INFO lines mixed into
# the CLI's output.
DEFAULT_CONF: dict[str, str] = {
    "spark.app.name": "beryl",
    "spark.ui.showConsoleProgress": "false",
    "spark.log.level": "ERROR",
}

_current: tuple[tuple[str, tuple[tuple[str, str], ...]], SparkSession] | None = None


def conf_of(settings: SparkSettings) -> dict[str, str]:
    """The Spark settings a session starts with: Beryl's defaults, then ``spark.conf``.

    On a ``local`` master the driver's JVM is all of Spark (its executors are threads in it),
    and Spark's default heap of 1 GiB runs out of memory on a few million rows: unless
    ``spark.conf`` says otherwise it gets half of this machine's memory."""
    given = {key: _text(value) for key, value in settings.conf.items()}
    defaults = dict(DEFAULT_CONF)
    if settings.master.startswith("local"):
        defaults["spark.driver.memory"] = f"{local_driver_memory_gib()}g"
        # A task's rows come back to the driver whole (one file's kept rows: hundreds of MB at
        # millions of rows a file); above spark.task.maxDirectResultSize they go through the
        # block manager, which in local mode lost a result of that size.
        defaults["spark.task.maxDirectResultSize"] = "1g"
        defaults["spark.rpc.message.maxSize"] = "1024"
    return defaults | given


def local_driver_memory_gib() -> int:
    """Half of this machine's memory, in whole GiB (at least 1)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 1
    return max(1, total // 2**31)


def session(settings: SparkSettings) -> SparkSession:
    """The process's Spark session for these settings (started on first use; a session for
    other settings is stopped first, as a process holds one)."""
    global _current
    conf = conf_of(settings)
    key = (settings.master, tuple(sorted(conf.items())))
    if _current is not None:
        if _current[0] == key and _alive(_current[1]):
            return _current[1]
        stop()
    spark = _start(settings.master, conf)
    _current = (key, spark)
    return spark


def stop() -> None:
    """Stop the process's Spark session, if one was started (the next use starts another)."""
    global _current
    if _current is not None:
        _, spark = _current
        _current = None
        with contextlib.suppress(Exception), quiet():  # already gone with its JVM
            spark.stop()


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence PySpark's notice about the pandas version (Beryl hands it Arrow, not pandas)."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="PySpark does not yet fully support", category=FutureWarning
        )
        yield


@contextlib.contextmanager
def failures(doing: str, hint: str) -> Iterator[None]:
    """Spark's own errors (a task that failed, a cluster gone, Py4J) as one ``StateError``
    line naming what was being done; Beryl's errors pass as they are."""
    from py4j.protocol import Py4JError
    from pyspark.errors import PySparkException

    try:
        yield
    except (PySparkException, Py4JError) as exc:
        raise StateError(f"Spark failed while {doing}: {first_line(exc)}", hint=hint) from exc


def _start(master: str, conf: dict[str, str]) -> SparkSession:
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise ConfigError(
            'engine "spark" needs PySpark, which is not installed',
            hint="install the spark extra: pip install 'beryl[spark]'",
        ) from exc
    remote = master.startswith("sc://")
    if not remote:
        _need_java()
        if master.startswith(("local", "spark://")):
            # PySpark starts its Python workers with $PYSPARK_PYTHON (else `python3` on PATH,
            # which may lack Beryl): the executors on this machine run this Python.
            os.environ.setdefault(
                "PYSPARK_PYTHON", conf.get("spark.pyspark.python", sys.executable)
            )
    builder: Any = SparkSession.builder
    builder = builder.remote(master) if remote else builder.master(master)
    for key, value in conf.items():
        builder = builder.config(key, value)
    try:
        with quiet():
            spark: SparkSession = builder.getOrCreate()
    except Exception as exc:  # PySpark's gateway and Py4J errors: the cluster is unreachable
        raise StateError(
            f"cannot start a Spark session on {master}: {first_line(exc)}",
            hint="check spark.master in config.json and that the cluster is up",
        ) from exc
    return spark


def _need_java() -> None:
    home = os.environ.get("JAVA_HOME")
    found = (home and shutil.which("java", path=str(Path(home) / "bin"))) or shutil.which("java")
    if not found:
        raise ConfigError(
            'engine "spark" needs Java 17 or newer, and no `java` was found',
            hint="install a Java runtime (e.g. apt-get install openjdk-17-jre-headless) or set "
            "JAVA_HOME",
        )


def _alive(spark: SparkSession) -> bool:
    """Whether the session still runs (a stopped classic session has no Java context left)."""
    context = getattr(spark, "_sc", None)
    if context is not None:
        return getattr(context, "_jsc", None) is not None
    return not getattr(spark, "is_stopped", False)  # Spark Connect


def _text(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
