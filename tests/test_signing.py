"""Model integrity as an authentication: write access to models/ alone cannot change answers.

Beryl serves, predicts and scores with the signed data-only ``model.json``; the pickle is only
the original layout's artifact. These tests play the attacker who can write to ``models/`` but
does not hold the key, which lives outside the workspace.
"""

from __future__ import annotations

import json
import os
import pickle
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from tests.conftest import CliRunner
from tests.test_api import serving

from beryl.config import Settings
from beryl.data.ingestion import ingest
from beryl.errors import ConfigError, IntegrityError
from beryl.model.registry import Registry
from beryl.model.signing import KEY_ENV, KEY_FILE_ENV, Keyring, default_key_path
from beryl.model.training import train


@pytest.fixture
def trained(workspace: Settings) -> Settings:
    ingest(workspace)
    train(workspace)
    train(workspace)
    Registry(workspace.model_folder).promote("v0001", reason="first")
    return workspace


def _edit_json(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


EDITS: dict[str, Callable[[dict[str, Any]], None]] = {
    "positive-label": lambda d: d["model"]["schema"].update(positive_label=0),
    "coefficient": lambda d: d["model"]["coef"][0].__setitem__(0, 5.0),
    "intercept": lambda d: d["model"].update(intercept=[-3.0]),
    "threshold": lambda d: d["model"].update(threshold=0.9),
    "threshold-removed": lambda d: d["model"].pop("threshold"),
    "classes": lambda d: d["model"].update(classes=d["model"]["classes"][::-1]),
    "fill-value": lambda d: d["model"]["numeric"]["fill"].__setitem__(0, 1e6),
    "features": lambda d: d["model"]["schema"].update(
        numeric=d["model"]["schema"]["numeric"][::-1]
    ),
    "pickle-hash": lambda d: d.update(model_sha256="0" * 64),
    "signature-removed": lambda d: d.pop("signature"),
    "signature-of-another-file": lambda d: d["signature"].update(hmac_sha256="ab" * 32),
}


@pytest.mark.parametrize("edit", EDITS, ids=list(EDITS))
def test_any_edit_of_the_signed_model_is_refused(trained: Settings, edit: str) -> None:
    registry = Registry(trained.model_folder)
    _edit_json(registry.data_model_path("v0001"), EDITS[edit])
    with pytest.raises(IntegrityError) as err:
        registry.model("v0001")
    assert "model.json" in str(err.value)
    assert not registry.verify("v0001")
    with pytest.raises(IntegrityError):
        registry.promote("v0001")
    assert registry.model("v0002") is not None


def test_a_card_that_disagrees_with_the_signed_model_is_refused(trained: Settings) -> None:
    """The card is not what is served, but a card claiming another positive label is a lie."""
    registry = Registry(trained.model_folder)
    card = registry.version_folder("v0001") / "card.json"
    _edit_json(card, lambda d: d["schema"].update(positive_label=0))
    with pytest.raises(IntegrityError, match="disagrees with its signed model"):
        registry.model("v0001")


def test_a_model_file_copied_into_another_version_is_refused(trained: Settings) -> None:
    registry = Registry(trained.model_folder)
    source = registry.data_model_path("v0002").read_bytes()
    registry.data_model_path("v0001").write_bytes(source)
    with pytest.raises(IntegrityError, match="belongs to version 'v0002'"):
        registry.model("v0001")


def test_a_model_signed_with_another_key_names_both_keys(trained: Settings) -> None:
    mine = Registry(trained.model_folder)
    theirs = Registry(trained.model_folder, Keyring(b"k" * 40, "$OTHER"))
    with pytest.raises(IntegrityError, match="signed with another key") as err:
        theirs.model("v0001")
    assert mine.keyring.key_id in str(err.value) and theirs.keyring.key_id in str(err.value)
    assert mine.keyring.key.decode() not in str(err.value)


class _Payload:
    """A pickle that leaves a mark when it is loaded: what an attacker would put in models/."""

    def __init__(self, mark: Path) -> None:
        self.mark = mark

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.write_text, (self.mark, "the pickle ran"))


def _plant_pickle(settings: Settings, version: str, mark: Path) -> None:
    """Replace a version's pickle (and the layout's copies) and rewrite the card's hash."""
    import hashlib

    registry = Registry(settings.model_folder)
    payload = pickle.dumps(_Payload(mark))
    for path in (registry.model_path(version), settings.model_folder / "trainedmodel.pkl"):
        path.write_bytes(payload)
    _edit_json(
        registry.version_folder(version) / "card.json",
        lambda d: d.update(model_sha256=hashlib.sha256(payload).hexdigest()),
    )


def test_a_planted_pickle_never_runs_in_predict_or_serve(
    trained: Settings, beryl_cli: CliRunner, tmp_path: Path
) -> None:
    """The attack that worked before: replace the pickle and rewrite the hash beside it."""
    mark = tmp_path / "mark.txt"
    config_path = trained.root / "config.json"
    source = next(trained.test_data.glob("*.csv"))
    before = tmp_path / "before.csv"
    beryl_cli("predict", str(source), "-o", str(before), config=config_path, check=True)

    _plant_pickle(trained, "v0001", mark)
    after = tmp_path / "after.csv"
    beryl_cli("predict", str(source), "-o", str(after), config=config_path, check=True)
    assert after.read_bytes() == before.read_bytes()
    for command in (["score", "--version", "v0001"], ["report"], ["diagnose", "--no-outdated"]):
        result = beryl_cli(*command, config=config_path)
        assert "Traceback" not in result.stderr, result.stderr
    with serving(config_path) as url:
        answer = httpx.post(
            f"{url}/prediction",
            content=source.read_bytes(),
            headers={"Content-Type": "text/csv"},
            timeout=30,
        )
        assert answer.status_code == 200
        expected = pd.read_csv(before)
        assert answer.json()["predictions"] == expected["prediction"].tolist()
    assert not mark.exists()
    # The planted pickle cannot reach production_deployment either.
    result = beryl_cli("models", "rollback", config=config_path)
    result = beryl_cli("deploy", "--version", "v0001", config=config_path)
    assert "Traceback" not in result.stderr
    assert not mark.exists()


def test_a_pointer_written_by_hand_is_refused_and_repair_restores_the_signed_one(
    trained: Settings,
) -> None:
    registry = Registry(trained.model_folder)
    registry.promote("v0002", reason="better")
    registry.pointer_path.write_text(json.dumps({"version": "v0001", "since": "2024"}))
    with pytest.raises(IntegrityError, match="no signature"):
        registry.production()
    assert any("v0002" in line for line in registry.repair())
    assert registry.production() == "v0002"


def test_a_forged_log_line_moves_nothing(trained: Settings) -> None:
    registry = Registry(trained.model_folder)
    registry.promote("v0002", reason="better")
    forged = {
        "time": "2030-01-01T00:00:00Z",
        "action": "promote",
        "from_version": "v0002",
        "to_version": "v0001",
        "reason": "forged",
    }
    with registry.log_path.open("a") as handle:
        handle.write(json.dumps(forged) + "\n")
    assert [m.to_version for m in registry.moves()] == ["v0001", "v0002"]
    assert registry.unsigned_moves() == 1
    registry.repair()
    assert registry.production() == "v0002"
    assert registry.rollback().to_version == "v0001"  # from the signed log: v0002 replaced v0001


def test_versions_of_an_older_beryl_are_signed_by_the_sign_command(
    trained: Settings, beryl_cli: CliRunner
) -> None:
    registry = Registry(trained.model_folder)
    expected = registry.model("v0001").coef.tolist()
    for version in ("v0001", "v0002"):
        registry.data_model_path(version).unlink()
    pointer = json.loads(registry.pointer_path.read_text())
    pointer.pop("signature")
    registry.pointer_path.write_text(json.dumps(pointer))
    config_path = trained.root / "config.json"

    refused = beryl_cli(
        "predict", str(next(trained.test_data.glob("*.csv"))), "-o", "x.csv", config=config_path
    )
    assert refused.returncode == 4 and "beryl models sign" in refused.stderr
    assert "Traceback" not in refused.stderr
    result = beryl_cli("models", "sign", "--all", config=config_path, check=True)
    assert "v0001: signed" in result.stdout and "v0002: signed" in result.stdout
    assert registry.model("v0001").coef.tolist() == expected
    assert registry.production() == "v0001"
    again = beryl_cli("models", "sign", "v0001", config=config_path, check=True)
    assert "already signed" in again.stdout


def test_sign_refuses_a_pickle_that_does_not_match_its_card(trained: Settings) -> None:
    registry = Registry(trained.model_folder)
    registry.data_model_path("v0002").unlink()
    path = registry.model_path("v0002")
    path.write_bytes(path.read_bytes()[:-3] + b"xx.")
    with pytest.raises(IntegrityError, match="does not match its model card"):
        registry.sign("v0002")
    assert not registry.data_model_path("v0002").exists()


# -- the key --------------------------------------------------------------------------------------
def test_a_key_is_made_once_outside_the_workspace_with_private_permissions(
    tmp_path: Path,
) -> None:
    environ = {"XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    first = Keyring.from_environment(environ)
    path = default_key_path(environ)
    assert first.created and first.source == str(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    second = Keyring.from_environment(environ)
    assert second.key == first.key and not second.created
    assert len(first.key) == 64


def test_processes_making_the_key_at_once_agree_on_one(tmp_path: Path) -> None:
    code = (
        "import os, sys; from beryl.model.signing import Keyring; "
        "print(Keyring.from_environment(os.environ).key_id)"
    )
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    processes = [
        subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(6)
    ]
    ids = {p.communicate(timeout=60)[0].strip() for p in processes}
    assert len(ids) == 1 and all(p.returncode == 0 for p in processes)
    assert not [p for p in (tmp_path / "cfg" / "beryl").iterdir() if p.name != "signing.key"]


@pytest.mark.parametrize(
    ("environ", "problem"),
    [
        ({KEY_ENV: "short"}, "shorter than 32"),
        ({KEY_ENV: " " * 40}, "shorter than 32"),
        ({KEY_FILE_ENV: "/nonexistent/beryl.key"}, "no signing key file"),
    ],
)
def test_bad_keys_are_refused_with_what_to_do(environ: dict[str, str], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        Keyring.from_environment(environ)


def test_a_key_file_others_can_write_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text("x" * 40)
    path.chmod(0o664)
    with pytest.raises(ConfigError, match="chmod 600"):
        Keyring.from_environment({KEY_FILE_ENV: str(path)})
    path.chmod(0o600)
    assert Keyring.from_environment({KEY_FILE_ENV: str(path)}).key == b"x" * 40


def test_a_key_inside_the_workspace_is_refused(workspace: Settings) -> None:
    inside = workspace.model_folder / "signing.key"
    inside.parent.mkdir(parents=True, exist_ok=True)
    inside.write_text("y" * 40)
    inside.chmod(0o600)
    keyring = Keyring.from_environment({KEY_FILE_ENV: str(inside)})
    with pytest.raises(ConfigError, match="inside the workspace"):
        keyring.check_outside(workspace.model_folder)


def test_the_key_from_the_environment_signs_across_machines(workspace: Settings) -> None:
    """Replicas given the same key (say, from a secret store) accept each other's models; a
    replica with its own key refuses them."""
    ingest(workspace)
    card = train(workspace)
    shared = Registry(workspace.model_folder, Keyring.from_environment({KEY_ENV: "s" * 48}))
    assert (
        shared.sign(card.id) == "signed"
    )  # signed by the session's key: re-signed from the pickle
    replica = Registry(workspace.model_folder, Keyring.from_environment({KEY_ENV: "s" * 48}))
    assert replica.model(card.id).coef.tolist() == shared.model(card.id).coef.tolist()
    with pytest.raises(IntegrityError, match="another key"):
        Registry(workspace.model_folder).model(card.id)
