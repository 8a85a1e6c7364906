"""Token streams fed on the event loop: read piece by piece, or followed by a listener
that is handed each piece inside the backend's own callback."""

from __future__ import annotations

import asyncio

import anyio
import pytest

from speculate.backends.base import StoppedStream, TokenChannel, Usage, follow
from speculate.bench.fake import FakeStream
from speculate.errors import EdgeError


class PullOnly:
    """A stream that can only be read (an HTTP one): ``follow`` reads it."""

    def __init__(self, pieces: list[str]) -> None:
        self.usage = Usage()
        self._pieces = list(pieces)

    async def receive(self) -> str:
        await anyio.lowlevel.checkpoint()
        if not self._pieces:
            raise anyio.EndOfStream
        return self._pieces.pop(0)


def feed_later(channel: TokenChannel, pieces: list[str], error: EdgeError | None = None) -> None:
    """Each piece in a callback of its own, then the end: as a model's thread queues them."""
    loop = asyncio.get_running_loop()
    for piece in pieces:
        loop.call_soon(channel.put, piece)
    loop.call_soon(channel.end, error)


async def test_a_followed_channel_hands_each_piece_in_order_then_ends() -> None:
    channel, seen = TokenChannel(), []
    feed_later(channel, ["a", "b", "c"])
    with anyio.fail_after(5):
        assert await channel.follow(seen.append) is True
    assert seen == ["a", "b", "c"]
    with pytest.raises(anyio.EndOfStream):
        await channel.receive()


async def test_a_read_channel_gives_the_same_pieces_and_raises_the_streams_error() -> None:
    channel = TokenChannel()
    feed_later(channel, ["a", "b"], EdgeError("the model failed"))
    with anyio.fail_after(5):
        assert [await channel.receive(), await channel.receive()] == ["a", "b"]
        with pytest.raises(EdgeError, match="the model failed"):
            await channel.receive()


async def test_the_streams_error_is_raised_to_its_follower_after_its_pieces() -> None:
    channel, seen = TokenChannel(), []
    feed_later(channel, ["a"], EdgeError("the model failed"))
    with anyio.fail_after(5), pytest.raises(EdgeError, match="the model failed"):
        await channel.follow(seen.append)
    assert seen == ["a"]


async def test_a_pause_keeps_the_later_pieces_for_the_next_follow_even_past_the_end() -> None:
    channel, seen = TokenChannel(), []

    def listener(piece: str) -> bool:
        seen.append(piece)
        return piece == "b"  # pause after "b"

    loop = asyncio.get_running_loop()
    for piece in ["a", "b", "c"]:
        loop.call_soon(channel.put, piece)
    with anyio.fail_after(5):
        assert await channel.follow(listener) is False
        assert seen == ["a", "b"]
        channel.put("d")  # "d" and the end arrive while nobody follows
        channel.end()
        assert await channel.follow(listener) is True
    assert seen == ["a", "b", "c", "d"]  # each once, in order


async def test_a_listeners_failure_ends_its_following_and_it_gets_nothing_more() -> None:
    channel, seen = TokenChannel(), []

    def listener(piece: str) -> None:
        seen.append(piece)
        if piece == "b":
            raise RuntimeError("a bug in the listener")

    loop = asyncio.get_running_loop()
    for piece in ["a", "b"]:
        loop.call_soon(channel.put, piece)
    with anyio.fail_after(5), pytest.raises(RuntimeError, match="a bug in the listener"):
        await channel.follow(listener)
    channel.put("c")
    assert seen == ["a", "b"]
    assert await channel.receive() == "c"  # kept for a reader, not lost


async def test_a_cancelled_follower_is_given_nothing_after_the_cancel() -> None:
    channel, seen = TokenChannel(), []
    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(channel.follow, seen.append)
            await anyio.wait_all_tasks_blocked()
            channel.put("a")
            group.cancel_scope.cancel()  # as the session finishing does, in a callback
            channel.put("b")  # queued before the follower's task has run again
    assert seen == ["a"]
    assert await channel.receive() == "b"


async def test_follow_reads_a_stream_that_cannot_push() -> None:
    seen: list[str] = []
    with anyio.fail_after(5):
        assert await follow(PullOnly(["a", "b", "c"]), seen.append) is True
        stream = PullOnly(["a", "b", "c"])
        assert await follow(stream, lambda piece: piece == "a" or None) is False
        assert await stream.receive() == "b"  # the pause took nothing more
    assert seen == ["a", "b", "c"]


@pytest.mark.parametrize("pushed", [True, False])
async def test_a_stop_sequence_is_cut_across_pieces_when_followed(pushed: bool) -> None:
    pieces = ["Hello wor", "ld. EN", "D more", " text"]
    source: TokenChannel | PullOnly = TokenChannel() if pushed else PullOnly(pieces)
    if isinstance(source, TokenChannel):
        feed_later(source, pieces)
    stopped, seen = StoppedStream(source, ("END",)), []
    with anyio.fail_after(5):
        assert await follow(stopped, seen.append) is True
    assert "".join(seen) == "Hello world. "
    assert stopped.usage.finish_reason == "stop"


async def test_a_fake_stream_followed_gives_what_it_gives_when_read() -> None:
    words = ["one", " two", " three"]
    read = FakeStream(list(words), 0.001, entropy=[0.1, 0.2, 0.3])
    pushed = FakeStream(list(words), 0.001, entropy=[0.1, 0.2, 0.3])
    seen: list[str] = []
    with anyio.fail_after(5):
        got = [await read.receive() for _ in words]
        async with pushed:
            assert await follow(pushed, seen.append) is True
    assert seen == got == words
    assert pushed.usage.completion_tokens == read.usage.completion_tokens == 3
    assert pushed.usage.extra == read.usage.extra
