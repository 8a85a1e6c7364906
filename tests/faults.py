"""A misbehaving OpenAI-compatible server on real loopback sockets.

The first path segment picks the fault: ``http://127.0.0.1:PORT/<fault>/v1``.  It
counts the requests each fault received, so tests can check retry behaviour.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter

from tests.loopback import LoopbackServer

FAULTS = (
    "ok",
    "silence",
    "stall",
    "drop",
    "429",
    "500",
    "503",
    "malformed_sse",
    "malformed_json",
    "endless",
    "huge",
)


def sse(text: str) -> bytes:
    chunk = {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
    return f"data: {json.dumps(chunk)}\n\n".encode()


class FaultyCloud(LoopbackServer):
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        super().__init__(name="faulty cloud")

    def url(self, fault: str) -> str:
        return f"http://127.0.0.1:{self.port}/{fault}/v1"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            path = lines[0].split(" ")[1]
            length = next(
                (
                    int(line.split(":")[1])
                    for line in lines
                    if line.lower().startswith("content-length:")
                ),
                0,
            )
            await reader.readexactly(length)
            fault = path.split("/")[1]
            self.counts[fault] += 1
            await self._respond(fault, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _respond(
        self, fault: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        async def head(status: str = "200 OK", extra: str = "") -> None:
            writer.write(
                f"HTTP/1.1 {status}\r\ncontent-type: text/event-stream\r\n{extra}"
                "transfer-encoding: chunked\r\nconnection: close\r\n\r\n".encode()
            )
            await writer.drain()

        async def body(data: bytes) -> None:
            writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            await writer.drain()

        async def end() -> None:
            writer.write(b"0\r\n\r\n")
            await writer.drain()

        if fault in ("429", "500", "503"):
            error = json.dumps({"error": {"message": f"fault {fault}"}}).encode()
            retry = "retry-after: 1\r\n" if fault != "500" else ""
            writer.write(
                f"HTTP/1.1 {fault} Fault\r\ncontent-type: application/json\r\n{retry}"
                f"content-length: {len(error)}\r\nconnection: close\r\n\r\n".encode()
                + error
            )
            await writer.drain()
            return
        if fault == "silence":
            await reader.read()  # say nothing until the client hangs up
            return
        await head()
        if fault == "ok":
            for word in ("Hello ", "from ", "the ", "cloud."):
                await body(sse(word))
            await body(b"data: [DONE]\n\n")
            await end()
        elif fault in ("stall", "drop"):
            await body(sse("Hello "))
            await body(sse("from "))
            if fault == "stall":
                await reader.read()  # go quiet until the client hangs up
                return
            writer.transport.abort()  # a broken connection, not a clean end
        elif fault == "malformed_sse":
            await body(b"data: {not json\n\n")
        elif fault == "malformed_json":
            await body(b'data: {"choices": "nope"}\n\n')
        elif fault == "endless":
            while True:
                await body(sse("more "))
                await asyncio.sleep(0.01)
        elif fault == "huge":
            await body(sse("x" * (3 << 20)))
            await body(b"data: [DONE]\n\n")
            await end()
