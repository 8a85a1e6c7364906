"""A loopback TCP proxy that counts the chat-completion requests passing through it."""

from __future__ import annotations

import asyncio
import contextlib

from tests.loopback import LoopbackServer


class CountingProxy(LoopbackServer):
    """Listens on ``port`` (fixed, so a cloud can "come back" where it was) and forwards
    every connection to ``upstream_port``."""

    def __init__(self, port: int, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.completions = 0  # only the proxy's loop thread writes it
        super().__init__(port, name="proxy")

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, count: bool
    ) -> None:
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            while data := await reader.read(65536):
                if count:
                    self.completions += data.count(b"POST /v1/chat/completions ")
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(
            self._pipe(reader, up_writer, True), self._pipe(up_reader, writer, False)
        )
