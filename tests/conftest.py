from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.servers import ServerProcess, start_server


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The embedded default: SmolLM2 edge + local llama_cpp.server stand-in cloud."""
    proc = start_server(str(tmp_path_factory.mktemp("server")))
    yield proc
    proc.stop()
