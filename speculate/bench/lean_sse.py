"""A lean SSE client for latency figures: one keep-alive HTTP/1.1 connection, a POST
written as prepared bytes, the chunked answer parsed by the protocol's own decoder.

A latency figure that is meant to be the server's must not carry the client's cost:
httpx spends about a millisecond of its own Python per streamed request on a 2-core
machine (request building, h11, its stream wrappers; the first-token suite reports the
same request through httpx beside this client's), and a benchmark that used it would
charge that to the server.  Only
what the suites need: no redirects, no TLS, no compression, a 200 with a chunked body.
"""

from __future__ import annotations

import asyncio
import codecs
import json
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from speculate.core.protocol import SSEDecoder, SSEMessage


class LeanSSEError(RuntimeError):
    """The server answered something this client does not read (not a chunked 200)."""


class LeanSSE:
    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> LeanSSE:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._writer is not None:
            self._writer.close()

    async def post(self, path: str, body: dict[str, Any]) -> AsyncIterator[SSEMessage]:
        """POST ``body`` as JSON; every SSE message of the answer, as it arrives.  Read
        to its end, so that the connection serves the next request."""
        if self._reader is None or self._writer is None:
            raise RuntimeError("LeanSSE is used in `async with`")
        payload = json.dumps(body).encode()
        self._writer.write(
            b"POST %s HTTP/1.1\r\nhost: %s:%d\r\ncontent-type: application/json\r\n"
            b"accept: text/event-stream\r\ncontent-length: %d\r\n\r\n%s"
            % (path.encode(), self.host.encode(), self.port, len(payload), payload)
        )
        head = await self._reader.readuntil(b"\r\n\r\n")
        status, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines)}
        if " 200 " not in f"{status} " or headers.get("transfer-encoding") != "chunked":
            raise LeanSSEError(f"expected a chunked 200, got {status!r} {headers}")
        decoder, text = SSEDecoder(), codecs.getincrementaldecoder("utf-8")()
        while True:
            size = int((await self._reader.readuntil(b"\r\n")).split(b";")[0], 16)
            chunk = await self._reader.readexactly(size + 2)  # the data and its CRLF
            if size == 0:
                return
            for message in decoder.feed(text.decode(chunk[:-2])):
                yield message
