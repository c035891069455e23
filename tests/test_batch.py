"""Batch scoring: `beryl predict` streams a CSV through the production model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tests.conftest import CliRunner

from beryl.config import Settings
from beryl.data.demo import generate, write_csv
from beryl.errors import ModelNotFoundError, SchemaError
from beryl.loop.passes import run_pass
from beryl.model.predictfile import score_file
from beryl.model.registry import Registry

FEATURES = ["lastmonth_activity", "lastyear_activity", "number_of_employees"]


@pytest.fixture
def deployed(workspace: Settings) -> Settings:
    run_pass(workspace, report=False)
    return workspace


def test_scores_match_the_model_across_many_blocks(deployed: Settings, tmp_path: Path) -> None:
    source = write_csv(generate(5_000, 9), tmp_path / "customers.csv")
    output = tmp_path / "scored.csv"
    result = score_file(deployed, source, output, block_bytes=4096)  # dozens of blocks
    assert result.rows == 5_000 and result.version == "v0001"
    scored = pd.read_csv(output, dtype={"corporation": str})
    assert list(scored.columns) == ["corporation", "prediction", "probability"]
    frame = pd.read_csv(source, dtype={"corporation": str})
    registry = Registry(deployed.model_folder)
    model, threshold = registry.pipeline("v0001"), registry.model("v0001").threshold
    assert scored["corporation"].tolist() == frame["corporation"].tolist()
    expected = model.predict_proba(frame[FEATURES])[:, 1]
    # the pickled pipeline's probabilities at the threshold chosen in training
    assert scored["prediction"].tolist() == (expected > threshold).astype(int).tolist()
    np.testing.assert_allclose(scored["probability"], expected, rtol=0, atol=1e-12)
    one_block = tmp_path / "one-block.csv"
    score_file(deployed, source, one_block)
    assert one_block.read_bytes() == output.read_bytes()


def test_a_bad_value_names_the_rows_and_leaves_no_output(
    deployed: Settings, tmp_path: Path
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    source = folder / "bad.csv"
    good = "corporation,lastmonth_activity,lastyear_activity,number_of_employees\n"
    source.write_text(good + "a,1,2,3\n" * 2000 + "b,lots,2,3\n")
    output = folder / "out.csv"
    with pytest.raises(
        SchemaError, match=r"bad\.csv line 2002: column 'lastmonth_activity'.*'lots'"
    ):
        score_file(deployed, source, output, block_bytes=4096)
    assert [p.name for p in folder.iterdir()] == ["bad.csv"]  # no output, no temporary


def test_no_production_model_is_a_clear_error(workspace: Settings, tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="no model is in production"):
        score_file(workspace, tmp_path / "x.csv", tmp_path / "y.csv")


def test_cli_predict(deployed: Settings, tmp_path: Path, beryl_cli: CliRunner) -> None:
    source = deployed.test_data / "testdata.csv"
    output = tmp_path / "scored.csv"
    done = beryl_cli(
        "predict", str(source), "-o", str(output), config=deployed.root / "config.json"
    )
    assert done.returncode == 0, done.stderr
    assert len(pd.read_csv(output)) == len(pd.read_csv(source))
    missing = beryl_cli(
        "predict",
        str(tmp_path / "none.csv"),
        "-o",
        str(output),
        config=deployed.root / "config.json",
    )
    assert missing.returncode == 3 and "is not a file" in missing.stderr


@pytest.mark.parametrize("block_bytes", [None, 256])
def test_a_value_that_is_not_a_number_names_the_line_and_column_through_the_cli(
    deployed: Settings, tmp_path: Path, block_bytes: int | None
) -> None:
    """Whether Arrow meets it in the first block (as the file is opened) or a later one."""
    source = tmp_path / "bad.csv"
    good = "corporation,lastmonth_activity,lastyear_activity,number_of_employees\n"
    source.write_text(good + "a,1,2,3\n" * 40 + "b,12,lots,3\n")
    if block_bytes is None:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "beryl",
                "--config",
                str(deployed.root / "config.json"),
                "predict",
                str(source),
                "-o",
                str(tmp_path / "out.csv"),
            ],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 3 and "Traceback" not in done.stderr
        message = done.stderr.strip()
    else:
        with pytest.raises(SchemaError) as caught:
            score_file(deployed, source, tmp_path / "out.csv", block_bytes=block_bytes)
        message = str(caught.value)
    assert "bad.csv line 42: column 'lastyear_activity' has a value that is not a number" in message
    assert "'lots'" in message and "\n" not in message
    assert not (tmp_path / "out.csv").exists()
