"""``hf:OWNER/REPO/FILE.gguf`` models: pulled with huggingface_hub from a local stand-in
for the hub (``HF_ENDPOINT``), served from its cache, clear errors when it cannot be had."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from speculate.backends import models
from speculate.backends.standin import free_port
from speculate.client import stream_sse
from speculate.core.protocol import Start
from speculate.core.text import ShownText
from speculate.errors import ModelNotFound
from tests.hub import hub_app
from tests.servers import serve_in_thread, start_server

REF = "hf:local-org/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def hub() -> Iterator[str]:
    files = {"local-org/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf": models.resolve("smollm2-135m")}
    with serve_in_thread(hub_app(files)) as url:
        yield url


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "speculate.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_references_are_parsed_and_malformed_ones_refused() -> None:
    ref = models.hub_reference("hf:owner/repo/sub/dir/model.gguf@v1.0")
    assert ref is not None
    assert (ref.repo_id, ref.filename, ref.revision) == ("owner/repo", "sub/dir/model.gguf", "v1.0")
    assert models.hub_reference("smollm2-135m") is None
    for bad in ("hf:owner/model.gguf", "hf:owner/repo/model.bin", "hf:o/r/m.gguf@a@b"):
        with pytest.raises(ModelNotFound, match=r"hf:OWNER/REPO/FILE\.gguf"):
            models.hub_reference(bad)


@pytest.mark.slow
def test_pull_serve_and_errors_against_a_local_hub(hub: str, tmp_path: Path) -> None:
    env = {"HF_ENDPOINT": hub, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_DISABLE_XET": "1"}
    # A file the hub does not have: said plainly.
    missing = cli("models", "pull", REF.replace("Q4_1", "Q8_0"), env=env)
    assert missing.returncode == 2
    assert "the hub has no such file in local-org/smollm2" in missing.stderr

    pulled = cli("models", "pull", REF, env=env)
    assert pulled.returncode == 0, pulled.stderr
    cached = list((tmp_path / "hf").rglob("SmolLM2-135M-Instruct.Q4_1.gguf"))
    assert cached
    original = models.resolve("smollm2-135m").read_bytes()
    assert hashlib.sha256(cached[0].read_bytes()).digest() == hashlib.sha256(original).digest()

    # The hub gone: a pull of something not cached fails clearly; what is cached serves.
    down = {**env, "HF_ENDPOINT": f"http://127.0.0.1:{free_port()}"}
    offline = cli("models", "pull", "hf:local-org/other/model.gguf", env=down)
    assert offline.returncode == 2
    assert "the hub could not be reached and the file is not cached" in offline.stderr
    assert "Traceback" not in offline.stderr

    server = start_server(
        str(tmp_path), {**down, "HF_HUB_OFFLINE": "1", "SPECULATE_EDGE__MODEL": REF}
    )
    try:
        shown = ShownText()

        async def ask() -> Start:
            body = {"messages": [{"role": "user", "content": "Hi"}], "mode": "edge"}
            first = None
            with anyio.fail_after(60):
                async for event in stream_sse(server.url, body):
                    first = first or event
                    shown.apply(event)
            assert isinstance(first, Start)
            return first

        start = anyio.run(ask)
    finally:
        server.stop()
    assert start.edge_model == "SmolLM2-135M-Instruct.Q4_1"
    assert shown.done is not None
    assert shown.done.final_source == "edge"
