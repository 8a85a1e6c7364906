"""The edge as an OpenAI-compatible server already on the device: a real, unmodified
``llama_cpp.server`` process (what ``python -m llama_cpp.server`` users run), with
`speculate serve` pointed at it by ``edge.base_url``."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import anyio
import pytest

from speculate.backends import models
from speculate.backends.standin import free_port
from speculate.client import stream_sse
from speculate.core.protocol import Error, Event, Start
from speculate.core.text import ShownText
from tests.servers import ServerProcess, start_server, wait_until_ok

pytestmark = pytest.mark.slow

ALIAS = "device-smollm2"
INTERNALS = ("ExceptionGroup", "Traceback", "Error(", "repr", 'File "')


@pytest.fixture(scope="module")
def device_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("device") / "llama_cpp_server.log"
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llama_cpp.server",
                "--model",
                str(models.resolve("smollm2-135m")),
                "--model_alias",
                ALIAS,
                "--port",
                str(port),
                "--n_threads",
                "1",
                "--n_ctx",
                "2048",
            ],
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_until_ok(f"{base_url}/models", process, str(log))
        yield base_url
    finally:
        process.terminate()
        process.wait(timeout=20)


@pytest.fixture(scope="module")
def server(device_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = start_server(
        str(tmp_path_factory.mktemp("speculate")),
        {
            "SPECULATE_EDGE__BASE_URL": device_server,
            "SPECULATE_EDGE__MODEL": ALIAS,
            "SPECULATE_EDGE__CHAT_TEMPLATE_MODEL": "smollm2-135m",
        },
    )
    yield proc
    proc.stop()


async def run(server: ServerProcess, body: dict[str, object]) -> tuple[ShownText, list[Event]]:
    shown, events = ShownText(), []
    with anyio.fail_after(180):
        async for event in stream_sse(server.url, body):
            events.append(event)
            shown.apply(event)
    return shown, events


@pytest.mark.parametrize(("mode", "source"), [("edge", "edge"), ("speculative", "cloud")])
async def test_the_device_server_drafts(server: ServerProcess, mode: str, source: str) -> None:
    body = {
        "messages": [{"role": "user", "content": "Name two fruits."}],
        "mode": mode,
        "max_tokens": 24,
    }
    shown, events = await run(server, body)
    start = events[0]
    assert isinstance(start, Start)
    assert start.edge_model == ALIAS
    assert not [e for e in events if isinstance(e, Error)]
    assert shown.done is not None
    assert shown.done.final_source == source
    assert shown.done.stats["draft_tokens"] > 0
    assert shown.done.stats["draft_first_ms"] is not None


async def test_verify_re_drafts_through_the_device_server(server: ServerProcess) -> None:
    body = {
        "messages": [{"role": "user", "content": "Give me two tips for sleeping well."}],
        "mode": "verify",
        "max_tokens": 32,
        "temperature": 0,
    }
    shown, events = await run(server, body)
    assert not [e for e in events if isinstance(e, Error)]
    assert shown.done is not None
    assert shown.done.final_source == "cloud"
    assert shown.done.stats["draft_tokens"] > 0


async def test_a_long_chat_is_trimmed_for_the_device_servers_window(server: ServerProcess) -> None:
    messages = [{"role": "user", "content": "Hello"}]
    for i in range(24):
        messages += [
            {"role": "assistant", "content": f"Answer {i}: " + "rest and routine help. " * 20},
            {"role": "user", "content": f"Question {i}: and then?"},
        ]
    shown, events = await run(server, {"messages": messages, "mode": "edge", "max_tokens": 8})
    assert not [e for e in events if isinstance(e, Error)]
    start = events[0]
    assert isinstance(start, Start)
    assert start.dropped_turns["edge"] > 0
    assert shown.done is not None


async def test_a_device_server_that_is_down_is_a_clear_edge_error(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    proc = start_server(
        str(tmp_path_factory.mktemp("down")),
        {
            "SPECULATE_EDGE__BASE_URL": f"http://127.0.0.1:{free_port()}/v1",
            "SPECULATE_EDGE__MODEL": ALIAS,
            "SPECULATE_CLOUD__ENABLED": "false",
        },
    )
    try:
        body = {"messages": [{"role": "user", "content": "Hi"}], "mode": "edge"}
        _, events = await run(proc, body)
    finally:
        proc.stop()
    errors = [e for e in events if isinstance(e, Error)]
    assert errors
    assert errors[-1].fatal
    assert errors[-1].code == "edge_failed"
    assert errors[-1].source == "edge"
    assert "the edge server at http://127.0.0.1:" in errors[-1].message
    for internal in INTERNALS:
        assert internal not in errors[-1].message, errors[-1].message
