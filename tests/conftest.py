from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.servers import ServerProcess, start_server


@pytest.fixture(autouse=True)
def private_store(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test's servers get their own SQLite file (request log, offline queue, cache)
    unless they choose one: a refinement queued by one test must not replay in another."""
    monkeypatch.setenv("SPECULATE_STORE__PATH", f"{tmp_path}/speculate.db")


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The embedded default: SmolLM2 edge + local llama_cpp.server stand-in cloud."""
    proc = start_server(str(tmp_path_factory.mktemp("server")))
    yield proc
    proc.stop()
