"""Where a WebSocket request's first draft token spends its time, step by step.

``python -m speculate.bench.timeline [--rounds N] [--json]`` starts the server that
``speculate serve`` runs, in a child process (cloud off, the edge on one thread, as the
first-token suite runs it) with a stamp at each
step of the first token's way through the server, sends N requests of the suite's prompt
over one WebSocket, one at a time, and prints each step's median time since the client sent
its frame.  Every stamp is ``time.perf_counter``, which on Linux is the one system-wide
monotonic clock, so the server's stamps and the client's compare.  A diagnostic, not a
suite: each stamp costs a microsecond or two, and the suite (``scripts/bench ttft``)
measures the server unstamped.

The steps, in the order each causes the next (the ``start`` event's write goes on beside
the decoding thread's steps and is not one of them):
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import websockets

from speculate.backends.standin import free_port
from speculate.bench.children import Child
from speculate.bench.edge import PROMPT
from speculate.client import ws_url
from speculate.core.protocol import decode_event

# (name, what it marks), in causal order; the last is the client's.
STEPS: tuple[tuple[str, str], ...] = (
    ("frame_read", "the server has the client's frame as JSON"),
    ("validated", "the request's body is validated"),
    ("fitted", "the conversation is fitted to the model's window"),
    ("run_began", "the request's run has begun (its own task)"),
    ("handed_to_thread", "the first turn is handed to the decoding thread"),
    ("thread_began", "the decoding thread has begun the turn"),
    ("tokenizing", "the prompt goes into llama.cpp's tokenizer (the loop waits until then)"),
    ("prompt_to_llama", "the prompt's tokens are handed to llama.cpp"),
    ("first_token", "llama.cpp has given the first token"),
    ("token_handed_over", "the decoding thread hands the token to the event loop"),
    ("token_on_loop", "the event loop has woken with the token (and gives it to the session)"),
    ("draft_to_uvicorn", "the draft event's frame is handed to uvicorn to write"),
    ("client_has_draft", "the client has the draft event"),
)
__doc__ += "".join(f"\n- ``{name}``: {what}" for name, what in STEPS) + "\n"

STAMPS_ENV = "SPECULATE_TIMELINE_STAMPS"
ANSWER_TIMEOUT_S = 60.0  # one request's answer; a server that never ends it fails the run


def _install_stamps(stamps: list[tuple[str, float]]) -> None:
    """Wrap each step's function in the server so that it stamps its step."""
    import llama_cpp
    from uvicorn.protocols.websockets import websockets_sansio_impl as uvicorn_ws

    from speculate.backends import llamacpp
    from speculate.backends.base import TokenChannel
    from speculate.engine.orchestrator import Orchestrator
    from speculate.server import ws

    clock = time.perf_counter

    def stamp(owner: Any, name: str, step: str, *, when: str, awaited: bool = False) -> None:
        """Wrap ``owner.name`` to stamp ``step`` as it is called or once it has returned."""
        original = getattr(owner, name)

        def called(*args: Any, **kwargs: Any) -> Any:
            if when == "called":
                stamps.append((step, clock()))
            result = original(*args, **kwargs)
            if when == "returned":
                stamps.append((step, clock()))
            return result

        async def awaited_call(*args: Any, **kwargs: Any) -> Any:
            if when == "called":
                stamps.append((step, clock()))
            result = await original(*args, **kwargs)
            if when == "returned":
                stamps.append((step, clock()))
            return result

        setattr(owner, name, awaited_call if awaited else called)

    stamp(ws, "_parse", "frame_read", when="returned")
    stamp(ws, "parse_speculate", "validated", when="returned")
    stamp(ws, "fit_to_windows", "fitted", when="returned", awaited=True)
    stamp(Orchestrator, "run", "run_began", when="called", awaited=True)
    stamp(llamacpp.LlamaCppEdge, "_first_turn_now", "handed_to_thread", when="called")
    stamp(llamacpp.LlamaCppEdge, "_turn", "thread_began", when="called")
    stamp(llamacpp.LlamaCppEdge, "_prompt_tokens", "tokenizing", when="called")
    stamp(llamacpp._Answer, "keep", "token_handed_over", when="called")
    stamp(TokenChannel, "put", "token_on_loop", when="called")

    create_completion = llama_cpp.Llama.create_completion

    def first_stamped(chunks: Iterator[Any]) -> Iterator[Any]:
        try:
            for index, chunk in enumerate(chunks):
                if index == 0:
                    stamps.append(("first_token", clock()))
                yield chunk
        finally:
            close: Callable[[], None] | None = getattr(chunks, "close", None)
            if close is not None:
                close()

    def completion(self: Any, *args: Any, **kwargs: Any) -> Any:
        stamps.append(("prompt_to_llama", clock()))
        chunks: Any = create_completion(self, *args, **kwargs)
        return first_stamped(chunks) if kwargs.get("stream") else chunks

    llama_cpp.Llama.create_completion = completion  # type: ignore[method-assign]

    send = uvicorn_ws.WebSocketsSansIOProtocol.send

    async def writing(self: Any, message: Any) -> None:
        if '"event":"draft"' in (message.get("text") or "")[:40]:
            stamps.append(("draft_to_uvicorn", clock()))
        await send(self, message)

    uvicorn_ws.WebSocketsSansIOProtocol.send = writing  # type: ignore[method-assign]


def serve(port: int, stamps_path: Path) -> int:
    """The server ``speculate serve`` runs (its app, uvicorn settings and draining), with
    the stamps in; they are written out as the server exits."""
    from speculate.server import create_app
    from speculate.server.run import DrainingServer, uvicorn_config
    from speculate.settings import Settings

    stamps: list[tuple[str, float]] = []
    _install_stamps(stamps)
    atexit.register(lambda: stamps_path.write_text(json.dumps(stamps)))
    # uvicorn raises the signal that stopped it again once it is done; as an exit, not
    # a kill, so that the stamps are written.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    settings = Settings.load(None, server={"port": port})
    DrainingServer(uvicorn_config(create_app(settings), settings)).run()
    return 0


class StampedServer(Child):
    ready_path = "/readyz"

    def __init__(self, stamps_path: Path) -> None:
        port = free_port()
        command = [sys.executable, "-m", "speculate.bench.timeline", "--serve", str(port)]
        env = {
            STAMPS_ENV: str(stamps_path),
            "SPECULATE_CLOUD__ENABLED": "false",
            "SPECULATE_EDGE__N_THREADS": "1",
            "SPECULATE_STORE__REQUEST_LOG": "false",
            "SPECULATE_SERVER__RATE_PER_MINUTE": "0",
        }
        super().__init__(command, env, port)


def rounds_of(
    stamps: list[tuple[str, float]], sent: list[tuple[float, float]]
) -> list[dict[str, float]]:
    """Each request's steps in ms since its frame was sent: the first stamp of each step
    between the send and the client's draft (requests ran one at a time)."""
    rounds = []
    for began, has_draft in sent:
        steps: dict[str, float] = {}
        for step, at in stamps:
            if began <= at <= has_draft and step not in steps:
                steps[step] = round((at - began) * 1000, 3)
        steps["client_has_draft"] = round((has_draft - began) * 1000, 3)
        rounds.append(steps)
    return rounds


def run(rounds: int = 40, max_tokens: int = 8) -> dict[str, Any]:
    body = {"type": "speculate", "messages": PROMPT, "mode": "edge", "max_tokens": max_tokens}
    sent: list[tuple[float, float]] = []

    async def ask(url: str) -> None:
        async with websockets.connect(ws_url(url), compression=None) as socket:
            for index in range(rounds + 2):  # two warm-up rounds, not kept
                began, has_draft = time.perf_counter(), None
                await socket.send(json.dumps(body))
                with anyio.fail_after(ANSWER_TIMEOUT_S):  # a few tokens: well under a second
                    while True:
                        event = decode_event(str(await socket.recv()))
                        if event.type == "draft" and has_draft is None:
                            has_draft = time.perf_counter()
                        if event.type in ("done", "error"):
                            break
                if index >= 2 and has_draft is not None:
                    sent.append((began, has_draft))
                # The first-token suite runs other paths between two requests to the
                # server; an idle pause keeps this one's requests as far apart.
                await anyio.sleep(0.05)

    with tempfile.TemporaryDirectory() as folder:
        stamps_path = Path(folder) / "stamps.json"
        with StampedServer(stamps_path) as server:
            anyio.run(ask, server.url)
        stamps = [(step, at) for step, at in json.loads(stamps_path.read_text())]
    per_round = rounds_of(stamps, sent)
    medians: dict[str, float | None] = {}
    for step, _ in STEPS:
        values = [r[step] for r in per_round if step in r]
        medians[step] = round(statistics.median(values), 3) if values else None
    return {"rounds": len(per_round), "median_ms": medians, "rounds_ms": per_round}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve is not None:
        return serve(args.serve, Path(os.environ[STAMPS_ENV]))
    result = run(args.rounds)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{result['rounds']} requests; median ms since the client sent its frame")
    previous = 0.0
    for step, what in STEPS:
        at = result["median_ms"][step]
        if at is None:
            print(f"{'':>9}  {'':>8}  {step}: not seen")
            continue
        print(f"{at:9.3f}  {at - previous:+8.3f}  {step}: {what}")
        previous = at
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
