from __future__ import annotations

from pathlib import Path

import pytest

from speculate.errors import ConfigError
from speculate.settings import Settings

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@pytest.mark.parametrize("config", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(config: Path) -> None:
    Settings.load(config)


def test_environment_beats_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPECULATE_CLOUD__BASE_URL", "http://gpu:8000/v1")
    monkeypatch.setenv("SPECULATE_EDGE__TEMPERATURE", "0.3")
    settings = Settings.load(CONFIGS / "vllm.yaml")
    assert settings.cloud.base_url == "http://gpu:8000/v1"
    assert settings.edge.temperature == 0.3
    assert settings.cloud.model == "meta-llama/Llama-3.3-70B-Instruct"  # file value kept


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("edge: [1, 2", "not valid YAML"),
        ("- a list", "mapping"),
        ("edge: {n_ctx: 1}", "n_ctx"),
        ("typo: {}", "typo"),
    ],
)
def test_bad_config_is_a_clear_error(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=fragment):
        Settings.load(path)


def test_missing_config_file() -> None:
    with pytest.raises(ConfigError, match="not found"):
        Settings.load("/nowhere.yaml")
