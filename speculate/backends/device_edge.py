"""An edge that is an OpenAI-compatible server already running on the device.

llama.cpp's ``llama-server``, Ollama or ``llama_cpp.server`` on the laptop or the Jetson:
the same client as the cloud's speaks to it, and its failures are the edge's (a cloud
error there would open the cloud's circuit and queue refinements for the wrong side).
Verify mode re-drafts from a given prefix, which a chat endpoint cannot do; with
``edge.chat_template_model`` (the GGUF the server runs) it goes through ``/completions``
with the prompt the chat endpoint would have built.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from speculate.backends.base import GenerationParams, TokenStream, texts
from speculate.backends.openai_compat import OpenAICompatCloud
from speculate.core.chat import Message
from speculate.core.trim import Window
from speculate.errors import CloudError, EdgeError


class DeviceServerEdge:
    """An :class:`~speculate.backends.base.EdgeBackend` over an OpenAI-compatible server."""

    def __init__(self, client: OpenAICompatCloud, window: Window) -> None:
        self._client = client
        self._window = window
        self.model_name = client.model_name
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
        try:
            if prefix is None:
                async with self._client.stream(messages, params) as tokens:
                    yield tokens
            else:
                if self._client.scoring is None:
                    raise EdgeError(
                        "the edge server cannot continue a draft (verify mode): set "
                        "edge.chat_template_model to the GGUF it serves"
                    )
                async with self._client.continue_from(messages, prefix, params) as tokens:
                    yield tokens
        except CloudError as exc:
            raise EdgeError(f"the edge server at {self._client.base_url}: {exc.message}") from None
