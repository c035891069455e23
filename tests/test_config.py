"""Tests for beryl.config: defaults, path resolution, validation messages and the token fallback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from croniter import croniter
from tests.test_porting import ORIGINAL_CONFIG

from beryl import config
from beryl.config import Settings
from beryl.errors import ConfigError
from beryl.original import upgrade


def write_config(folder: Path, data: dict[str, Any] | str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


def test_empty_config_gives_documented_defaults(tmp_path: Path) -> None:
    settings = config.load(write_config(tmp_path, {}), environ={})

    assert settings.input_folder_path == "sourcedata"
    assert settings.output_folder_path == "ingesteddata"
    assert settings.test_data_path == "testdata"
    assert settings.output_model_path == "models"
    assert settings.prod_deployment_path == "production_deployment"
    assert settings.target == "exited"
    assert settings.positive_label == 1
    assert settings.id_columns == ["corporation"]
    assert settings.numeric_features is None
    assert settings.categorical_features is None
    assert settings.model == {}
    assert settings.promotion_margin == 0.0
    assert settings.schedule == "*/10 * * * *"
    assert settings.write_csv_snapshot is True
    assert settings.api.host == "127.0.0.1"
    assert settings.api.port == 8000
    assert settings.api.token is None
    assert settings.api_token is None


def test_default_config_is_valid_and_keeps_the_original_keys(tmp_path: Path) -> None:
    data = config.default_config()
    settings = config.load(write_config(tmp_path, data), environ={})

    for key in (
        "input_folder_path",
        "output_folder_path",
        "test_data_path",
        "output_model_path",
        "prod_deployment_path",
    ):
        assert getattr(settings, key) == data[key]
    assert settings.model == {"max_iter": 1000}


def test_string_positive_label_is_kept_as_a_string(tmp_path: Path) -> None:
    settings = config.load(write_config(tmp_path, {"positive_label": "Yes"}), environ={})
    assert settings.positive_label == "Yes"


def test_paths_are_relative_to_the_config_folder_not_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = tmp_path / "ws"
    path = write_config(ws, {"input_folder_path": "in", "output_folder_path": "deep/out"})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    settings = config.load(path, environ={})

    root = ws.resolve()
    assert settings.root == root
    assert settings.input_folder == root / "in"
    assert settings.output_folder == root / "deep" / "out"
    assert settings.test_data == root / "testdata"
    assert settings.model_folder == root / "models"
    assert settings.prod_folder == root / "production_deployment"
    assert settings.history_db == root / "beryl.sqlite"
    assert settings.lock_file.parent == root
    assert not str(settings.input_folder).startswith(str(elsewhere))


def test_relative_config_path_is_pinned_at_load_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_config(tmp_path / "ws", {"input_folder_path": "in"})
    monkeypatch.chdir(tmp_path)
    settings = config.load("ws/config.json", environ={})
    other = tmp_path / "other"
    other.mkdir()
    monkeypatch.chdir(other)

    assert settings.input_folder == (tmp_path / "ws" / "in").resolve()
    assert settings.input_folder.is_absolute()


def test_absolute_paths_in_config_are_kept(tmp_path: Path) -> None:
    target = tmp_path / "data" / "incoming"
    settings = config.load(
        write_config(tmp_path / "ws", {"input_folder_path": str(target)}), environ={}
    )
    assert settings.input_folder == target


def test_load_accepts_the_workspace_folder(tmp_path: Path) -> None:
    write_config(tmp_path / "ws", {"target": "churned"})
    settings = config.load(tmp_path / "ws", environ={})
    assert settings.target == "churned"
    assert settings.root == (tmp_path / "ws").resolve()


def test_resolve_path_prefers_explicit_path_over_env_and_default(tmp_path: Path) -> None:
    env = {"BERYL_CONFIG": str(tmp_path / "from-env.json")}
    explicit = tmp_path / "explicit.json"

    assert config.resolve_path(explicit, environ=env) == explicit
    assert config.resolve_path(str(explicit), environ=env) == explicit
    assert config.resolve_path(None, environ=env) == tmp_path / "from-env.json"
    assert config.resolve_path(None, environ={}) == Path("config.json")
    assert config.resolve_path(None, environ={"BERYL_CONFIG": ""}) == Path("config.json")


def test_several_problems_are_all_named_in_one_error(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        {
            "input_folder_pth": "typo",
            "target": 5,
            "id_columns": "corporation",
            "promotion_margin": -0.5,
            "schedule": "every ten minutes",
            "model": {"bogus_param": 1},
            "api": {"port": "eighty"},
        },
    )

    with pytest.raises(ConfigError) as info:
        config.load(path, environ={})

    message = str(info.value)
    assert str(path) in message
    for name in (
        "input_folder_pth",
        "target",
        "id_columns",
        "promotion_margin",
        "schedule",
        "model",
        "bogus_param",
        "api.port",
    ):
        assert name in message, f"{name} missing from:\n{message}"
    assert len(info.value.problems) == 7
    assert info.value.exit_code == 2
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("model", "named"),
    [
        ({"C": -1}, "'C'"),
        ({"max_iter": "100"}, "'max_iter'"),
        ({"penalty": "bogus"}, "'penalty'"),
    ],
)
def test_bad_model_parameter_value_is_named(
    tmp_path: Path, model: dict[str, Any], named: str
) -> None:
    with pytest.raises(ConfigError) as info:
        config.load(write_config(tmp_path, {"model": model}), environ={})
    assert len(info.value.problems) == 1
    assert info.value.problems[0].startswith("model:")
    assert named in info.value.problems[0]


def test_unknown_and_bad_model_parameters_are_both_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        config.load(write_config(tmp_path, {"model": {"bogus_param": 1, "C": -1}}), environ={})
    message = str(info.value)
    assert "bogus_param" in message
    assert "'C'" in message


def test_valid_model_parameters_are_accepted(tmp_path: Path) -> None:
    settings = config.load(
        write_config(tmp_path, {"model": {"C": 0.5, "max_iter": 200}}), environ={}
    )
    assert settings.model == {"C": 0.5, "max_iter": 200}


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"promotion_margin": 1.5}, "promotion_margin"),
        ({"target": "   "}, "target"),
        ({"id_columns": ["a", "a"]}, "id_columns"),
        ({"numeric_features": ["x", "x"]}, "numeric_features"),
        ({"api": {"port": 0}}, "api.port"),
        ({"api": {"colour": "blue"}}, "api.colour"),
        ({"positive_label": [1]}, "positive_label"),
        ({"write_csv_snapshot": "maybe"}, "write_csv_snapshot"),
        ({"schedule": "every 10 minutes"}, "schedule"),
        ({"schedule": "*/10 * * *"}, "schedule"),
    ],
)
def test_single_problem_names_its_key(tmp_path: Path, data: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.load(write_config(tmp_path, data), environ={})
    assert info.value.problems
    assert all(p.startswith(key) for p in info.value.problems), info.value.problems


def test_the_default_schedule_is_a_cron_expression_and_others_are_kept(tmp_path: Path) -> None:
    assert croniter.is_valid(config.DEFAULT_SCHEDULE)
    assert config.load(write_config(tmp_path, {}), environ={}).schedule == config.DEFAULT_SCHEDULE
    hourly = config.load(write_config(tmp_path, {"schedule": "0 * * * *"}), environ={})
    assert hourly.schedule == "0 * * * *"


def test_missing_config_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "config.json"
    with pytest.raises(ConfigError) as info:
        config.load(missing, environ={})
    assert str(missing) in str(info.value)


def test_invalid_json_names_the_path_and_position(tmp_path: Path) -> None:
    path = write_config(tmp_path, '{"target": "exited",\n  oops}')
    with pytest.raises(ConfigError) as info:
        config.load(path, environ={})
    message = str(info.value)
    assert str(path) in message
    assert "not valid JSON" in message
    assert "line 2" in message


def test_json_that_is_not_an_object_is_refused(tmp_path: Path) -> None:
    path = write_config(tmp_path, "[1, 2, 3]")
    with pytest.raises(ConfigError, match="JSON object") as info:
        config.load(path, environ={})
    assert str(path) in str(info.value)


def test_token_comes_from_environment_when_config_has_none(tmp_path: Path) -> None:
    path = write_config(tmp_path, {})
    settings = config.load(path, environ={"BERYL_API_TOKEN": "s3cret"})
    assert settings.api.token == "s3cret"
    assert settings.api_token == "s3cret"
    assert config.load(path, environ={}).api_token is None


def test_token_in_config_wins_over_environment(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"api": {"token": "from-config"}})
    settings = config.load(path, environ={"BERYL_API_TOKEN": "from-env"})
    assert settings.api_token == "from-config"


def test_settings_are_frozen(tmp_path: Path) -> None:
    settings = config.load(write_config(tmp_path, {}), environ={})
    with pytest.raises(ValueError, match="frozen"):
        settings.target = "other"  # type: ignore[misc]


def test_from_mapping_uses_the_given_root(tmp_path: Path) -> None:
    settings = config.from_mapping({"output_folder_path": "out"}, tmp_path)
    assert isinstance(settings, Settings)
    assert settings.output_folder == tmp_path.resolve() / "out"


# The original system's config.json, key for key (its four keys Beryl does not use last).
ORIGINAL = ORIGINAL_CONFIG
UNUSED = ["model_scores_path", "reports_path", "api_responses", "source_data"]


def test_the_original_config_is_accepted_with_a_notice_per_unused_key(tmp_path: Path) -> None:
    settings = config.load(write_config(tmp_path, ORIGINAL), environ={})

    assert settings.input_folder == tmp_path.resolve() / "practicedata"
    assert settings.model_folder == tmp_path.resolve() / "practicemodels"
    assert [n.split(": ")[0] for n in settings.notices] == UNUSED
    for notice in settings.notices:
        assert notice.isprintable() and notice.endswith("; the key is ignored"), notice
    assert "practicemodels/latestscore.txt" in settings.notices[0]
    assert "set input_folder_path to sourcedata" in settings.notices[3]
    assert not set(UNUSED) & set(settings.model_dump())
    assert config.load(write_config(tmp_path, {}), environ={}).notices == ()


def test_a_source_data_naming_the_input_folder_says_it_is_the_same(tmp_path: Path) -> None:
    settings = config.load(write_config(tmp_path, {"source_data": "sourcedata"}), environ={})
    (notice,) = settings.notices
    assert "input_folder_path (sourcedata), the same folder" in notice


def test_an_unknown_key_beside_the_original_ones_still_fails(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        config.load(write_config(tmp_path, {**ORIGINAL, "reports_pth": "x"}), environ={})
    assert [p.split(":")[0] for p in info.value.problems] == ["reports_pth"]
    assert "unknown key" in info.value.problems[0]


def test_notices_cannot_be_given_in_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="notices: unknown key"):
        config.load(write_config(tmp_path, {"notices": ["hello"]}), environ={})


def test_upgrade_drops_only_the_unused_keys_and_keeps_the_old_file(tmp_path: Path) -> None:
    data = {**ORIGINAL, "model": {"max_iter": 200}, "api": {"token": "s3cret"}}
    path = write_config(tmp_path, data)
    path.chmod(0o600)  # it holds a token
    before = path.read_bytes()

    result = upgrade(tmp_path)

    assert result.path == path and list(result.removed) == UNUSED
    assert result.backup == tmp_path / "config.json.before-upgrade"
    assert result.backup.read_bytes() == before
    kept = json.loads(path.read_text())
    assert list(kept) == [k for k in data if k not in UNUSED]  # values and order as they were
    assert kept == {k: v for k, v in data.items() if k not in UNUSED}
    assert path.stat().st_mode & 0o777 == result.backup.stat().st_mode & 0o777 == 0o600
    assert config.load(path, environ={}).notices == ()
    assert upgrade(path).backup is None  # nothing left to change

    write_config(tmp_path, data)
    assert upgrade(path).backup == tmp_path / "config.json.before-upgrade-2"


def test_upgrade_refuses_an_invalid_config_and_changes_nothing(tmp_path: Path) -> None:
    path = write_config(tmp_path, {**ORIGINAL, "promotion_margin": 5})
    before = path.read_bytes()
    with pytest.raises(ConfigError, match="promotion_margin"):
        upgrade(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]
