"""An edge that is an OpenAI-compatible server already running on the device.

llama.cpp's ``llama-server``, Ollama or ``llama_cpp.server`` on the laptop or the Jetson:
the same client as the cloud's speaks to it, and its failures are the edge's (a cloud
error there would open the cloud's circuit and queue refinements for the wrong side).
Verify mode re-drafts from a given prefix, which a chat endpoint cannot do; with
``edge.chat_template_model`` (the GGUF the server runs) it goes through ``/completions``
with the prompt the chat endpoint would have built.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

from speculate.backends.base import GenerationParams, TokenStream, texts
from speculate.backends.openai_compat import OpenAICompatCloud
from speculate.core.chat import Message
from speculate.core.trim import Window
from speculate.errors import CloudError, EdgeError, SpeculateError, unwrapped


class DeviceServerEdge:
    """An :class:`~speculate.backends.base.EdgeBackend` over an OpenAI-compatible server."""

    def __init__(self, client: OpenAICompatCloud, window: Window) -> None:
        self._client = client
        self._window = window
        self.model_name = client.model_name
        self.model_sha256: str | None = None  # the server's file is not ours to hash
        self.n_ctx = window.tokens
        self.waiting = 0  # the server queues for itself

    def window(self) -> Window:
        return self._window

    async def aclose(self) -> None:
        await self._client.aclose()

    async def prewarm(self, messages: list[Message]) -> bool:
        """A one-token request: the server's own prompt cache (llama-server's
        ``cache_prompt``, Ollama's) then holds the conversation."""
        try:
            async with self._client.stream(messages, GenerationParams(1, 0.0)) as tokens:
                async for _ in texts(tokens):
                    pass
        except CloudError:
            return False
        return True

    @asynccontextmanager
    async def stream(
        self, messages: list[Message], params: GenerationParams, prefix: str | None = None
    ) -> AsyncIterator[TokenStream]:
        if prefix is not None and self._client.scoring is None:
            raise EdgeError(
                "the edge server cannot continue a draft (verify mode): set "
                "edge.chat_template_model to the GGUF it serves"
            )
        with unwrapped():  # a task group's one exception, given back as itself
            try:
                if prefix is None:
                    opened = self._client.stream(messages, params)
                else:
                    opened = self._client.continue_from(messages, prefix, params)
                async with opened as tokens, anyio.create_task_group() as group:
                    pumped = PumpedStream(tokens, f"the edge server at {self._client.base_url}")
                    group.start_soon(pumped.pump)
                    try:
                        yield pumped
                    finally:
                        group.cancel_scope.cancel()
            except CloudError as exc:
                raise EdgeError(
                    f"the edge server at {self._client.base_url}: {exc.message}"
                ) from None


class PumpedStream:
    """An HTTP token stream read by its own task into a queue.

    The edge's reader waits for tokens with a deadline (it flushes coalesced text when
    none comes); cancelling a read in the middle of an HTTP response would lose the
    response, so the response is read here and the reader waits on a queue instead."""

    def __init__(self, tokens: TokenStream, where: str) -> None:
        self._tokens = tokens
        self._where = where
        self.usage = tokens.usage
        self._send, self._receive = anyio.create_memory_object_stream[str](math.inf)
        self._error: SpeculateError | None = None

    async def pump(self) -> None:
        with self._send:
            try:
                async for text in texts(self._tokens):
                    await self._send.send(text)
            except CloudError as exc:
                self._error = EdgeError(f"{self._where}: {exc.message}")
            except SpeculateError as exc:
                self._error = exc

    async def receive(self) -> str:
        try:
            return await self._receive.receive()
        except anyio.EndOfStream:
            if self._error is not None:
                raise self._error from None
            raise
