"""The Spark engine (``engine: "spark"``): ingestion and training give what the local engine
gives on the same files, on ``local[2]`` and on a standalone cluster driven by the real CLI.

Parity, as ``README.md`` ("Scaling out") states it: the same file records (statuses, reasons,
rows read and kept), the same dataset rows in the same order (same row hashes), coefficients
within 1e-4 (measured: about 2e-8) and identical predicted labels on the test data. One Spark
session serves the module; the cluster is started once for its test and stopped after it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tests.spark_support import SPARK_CONF, customers, make_workspace, require_java
from tests.spark_support import standalone_cluster as start_cluster

from beryl import config
from beryl.config import SparkSettings
from beryl.data.ingestion import IngestionResult, ingest
from beryl.data.schema import Schema
from beryl.errors import ConfigError, SchemaError
from beryl.model.training import train
from beryl.spark import session as spark_session
from beryl.workspace import Workspace

ENGINES = ("local", "spark")


@pytest.fixture(scope="module")
def spark() -> Iterator[None]:
    """The module's Spark session (local[2]), stopped when the module is done."""
    require_java()
    spark_session.session(SparkSettings(conf=SPARK_CONF))
    yield
    spark_session.stop()


@pytest.fixture(scope="module")
def pair(
    tmp_path_factory: pytest.TempPathFactory, spark: None
) -> tuple[dict[str, Workspace], dict[str, IngestionResult]]:
    """The same input folder ingested by each engine, in a workspace of its own."""
    root = tmp_path_factory.mktemp("parity")
    spaces = {e: Workspace(config.load(make_workspace(root / e, e))) for e in ENGINES}
    return spaces, {e: ingest(ws) for e, ws in spaces.items()}


def _records(result: IngestionResult) -> list[tuple[object, ...]]:
    return [
        (r.name, r.status, r.reason, r.rows_read, r.rows_kept, r.note, r.schema_key, bool(r.batch))
        for r in result.records
    ]


def _same_dataset(spaces: dict[str, Workspace]) -> None:
    local, spark = (spaces[e].dataset for e in ENGINES)
    assert local.rows == spark.rows > 0
    assert np.array_equal(local.row_hashes(), spark.row_hashes())
    assert local.read_table().equals(spark.read_table())  # same rows, same order, same types


def test_the_spark_section_is_validated() -> None:
    settings = config.from_mapping({}, Path("."))
    assert settings.engine == "local" and settings.spark.master == "local[2]"
    good = {"engine": "spark", "spark": {"master": "spark://10.0.0.5:7077", "conf": {}}}
    assert config.from_mapping(good, Path(".")).spark.master == "spark://10.0.0.5:7077"
    for master in ("k8s://https://kube:443", "sc://connect:15002", "local[*]", "yarn"):
        config.from_mapping({"spark": {"master": master}}, Path("."))
    with pytest.raises(ConfigError) as refused:
        config.from_mapping(
            {"engine": "dask", "spark": {"master": "cluster", "conf": {"memory": "1g"}}},
            Path("."),
        )
    problems = " ".join(refused.value.problems)
    assert "engine" in problems and "spark.master" in problems and "'memory'" in problems


def test_a_local_master_gets_half_the_machine_s_memory_unless_the_config_says_otherwise() -> None:
    half = spark_session.local_driver_memory_gib()
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert half == max(1, total // 2**31)
    local = spark_session.conf_of(SparkSettings(master="local[2]"))
    assert local["spark.driver.memory"] == f"{half}g"
    given = spark_session.conf_of(
        SparkSettings(master="local[2]", conf={"spark.driver.memory": "3g"})
    )
    assert given["spark.driver.memory"] == "3g"
    cluster = spark_session.conf_of(SparkSettings(master="spark://127.0.0.1:7077"))
    assert "spark.driver.memory" not in cluster  # the cluster's own defaults


def test_the_local_engine_never_loads_pyspark(tmp_path: Path) -> None:
    code = textwrap.dedent(
        f"""
        import sys
        import beryl, beryl.cli
        from beryl import config
        from beryl.data.demo import init_workspace
        from beryl.workspace import Workspace
        ws = init_workspace(__import__("pathlib").Path({str(tmp_path / "ws")!r}), rows=100)
        print(type(Workspace(config.load(ws.config)).engine).__name__)
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("pyspark", "py4j")))
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["SklearnEngine", "[]"]


def test_without_pyspark_or_java_the_spark_engine_says_what_to_install() -> None:
    code = textwrap.dedent(
        """
        import sys
        if sys.argv[1] == "no-pyspark":
            sys.modules["pyspark"] = None  # as if the spark extra were not installed
        from beryl.config import SparkSettings
        from beryl.errors import ConfigError
        from beryl.spark.session import session
        try:
            session(SparkSettings())
        except ConfigError as exc:
            print(exc.exit_code, exc)
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "JAVA_HOME"}
    missing = {
        "no-pyspark": (env, "pip install 'beryl[spark]'"),
        "no-java": ({**env, "PATH": str(Path(sys.executable).parent)}, "Java 17"),
    }
    for case, (environ, advice) in missing.items():
        done = subprocess.run(
            [sys.executable, "-c", code, case], capture_output=True, text=True, env=environ
        )
        assert done.stdout.startswith("2 ") and advice in done.stdout, done.stdout + done.stderr


def test_an_outcome_is_read_again_only_when_the_pass_moved_past_what_it_was_read_under() -> None:
    from beryl.spark.ingest import Outcome

    first = Schema("exited", 1, numeric=["a", "b"])
    other = Schema("exited", 1, numeric=["a"], categorical=["b"])
    own = Outcome(3, None, stayed=True, schema=first)  # typed by its own content, accepted
    assert own.current(None, []) and own.current(first, [0, 1])
    assert not own.current(other, [0, 1])  # its types differ: read under the pass's
    refused = Outcome(3, None, stayed=True, schema=first, refusal=SchemaError("bad"))
    assert not refused.current(first, [])  # a refusal under its own types says nothing
    given = Outcome(3, first, stayed=True, schema=first)
    assert given.current(first, []) and not given.current(other, [])
    large = Outcome(3, first, classes_given=[0], stayed=True, schema=first)
    assert large.current(first, [0]) and not large.current(first, [0, 1])
    for decided in (
        Outcome(3, None, error=FileNotFoundError(2, "gone")),
        Outcome(3, None, moved=True),
        Outcome(3, None, stayed=False),
        Outcome(3, None, stayed=True, withheld=True),
    ):
        assert decided.current(other, [0, 1])  # decided before any parse


def test_spark_ingestion_records_and_rows_equal_the_local_engine(
    pair: tuple[dict[str, Workspace], dict[str, IngestionResult]],
) -> None:
    spaces, results = pair
    local, spark = (_records(results[e]) for e in ENGINES)
    assert spark == local
    fates = {name: status for name, status, *_ in local}
    assert fates == {
        "a.csv": "ingested",
        "b.csv": "ingested",
        "c.csv": "ingested",  # padded text: the careful parser
        "a_copy.csv": "duplicate-file",
        "d.csv": "quarantined",  # text in a numeric column
    }
    assert dict((n, k) for n, _, _, _, k, *_ in local)["b.csv"] < 605  # overlap and repeats
    _same_dataset(spaces)

    # A second pass: a new file that repeats stored rows is deduplicated against the batches.
    for engine, workspace in spaces.items():
        folder = workspace.settings.input_folder
        fresh = pd.concat([customers(80, seed=11), pd.read_csv(folder / "a.csv").iloc[:30]])
        fresh.to_csv(folder / "e.csv", index=False)
        os.utime(folder / "e.csv", (1e9, 1e9))
        results[engine] = ingest(workspace)
    local, spark = (_records(results[e]) for e in ENGINES)
    assert spark == local and [(r[0], r[4]) for r in local] == [("e.csv", 80)]
    _same_dataset(spaces)


def test_spark_training_equals_the_local_engine(
    pair: tuple[dict[str, Workspace], dict[str, IngestionResult]],
) -> None:
    spaces, _ = pair
    cards = {e: train(ws) for e, ws in spaces.items()}
    local, spark = (spaces[e].registry.model(cards[e].id) for e in ENGINES)
    assert cards["spark"].parameters["engine"] == "spark"
    assert cards["spark"].tuning["params"] == cards["local"].tuning["params"]
    assert spark.threshold == local.threshold
    assert spark.classes == local.classes and spark.categories == local.categories
    assert spark.categorical_fill == local.categorical_fill
    np.testing.assert_allclose(spark.numeric_fill, local.numeric_fill, rtol=0, atol=1e-12)
    np.testing.assert_allclose(spark.mean, local.mean, rtol=1e-12)
    np.testing.assert_allclose(spark.scale, local.scale, rtol=1e-12)
    assert np.abs(spark.coef - local.coef).max() < 1e-4
    assert np.abs(spark.intercept - local.intercept).max() < 1e-4
    test = pd.read_csv(spaces["spark"].settings.test_data / "testdata.csv")
    labels, chances = spark.predict_frame(test)
    local_labels, local_chances = local.predict_frame(test)
    assert (labels == local_labels).all()
    assert np.abs(chances - local_chances).max() < 1e-4
    # The original layout's pickle is a scikit-learn pipeline giving the same probabilities.
    pipeline = spaces["spark"].registry.pipeline(cards["spark"].id)
    assert np.abs(pipeline.predict_proba(test)[:, 1] - chances).max() < 1e-12


@pytest.fixture(scope="module")
def standalone_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A Spark standalone master and two workers on 127.0.0.1, for this module."""
    workdir = tmp_path_factory.mktemp("cluster")
    with start_cluster(workdir, workers=2) as url:
        yield url, workdir


def test_a_full_pass_through_the_cli_on_a_standalone_cluster(
    standalone_cluster: tuple[str, Path], tmp_path: Path
) -> None:
    url, workdir = standalone_cluster
    path = make_workspace(tmp_path / "ws", "spark", master=url)
    settings = json.loads(path.read_text())
    settings["spark"]["conf"] |= {
        "spark.executor.memory": "512m",
        "spark.executor.cores": 1,
        "spark.driver.host": "127.0.0.1",
    }
    path.write_text(json.dumps(settings))
    env = {k: v for k, v in os.environ.items() if k != "BERYL_CONFIG"}
    env |= {"COLUMNS": "200", "SPARK_LOCAL_IP": "127.0.0.1", "BERYL_CONFIG": str(path)}
    done = subprocess.run(
        [sys.executable, "-m", "beryl", "run"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 10, done.stdout + done.stderr  # partial: d.csv is quarantined
    assert "promoted" in done.stdout, done.stdout
    workspace = Workspace(config.load(path))
    card = workspace.registry.card(workspace.registry.require_production())
    assert card.parameters["engine"] == "spark"
    assert card.parameters["mllib"]["master"] == url
    # Both workers ran executors of the pass.
    assert all(list((workdir / f"work{n}").glob("app-*")) for n in range(2))
    # The dataset is the one the local engine makes of the same files.
    local = Workspace(config.load(make_workspace(tmp_path / "local", "local")))
    ingest(local)
    assert np.array_equal(local.dataset.row_hashes(), workspace.dataset.row_hashes())
    assert local.dataset.read_table().equals(workspace.dataset.read_table())
