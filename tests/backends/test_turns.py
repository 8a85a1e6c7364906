"""Fair turns between clients on one model."""

from __future__ import annotations

import anyio

from speculate.backends.turns import FairTurns


async def test_a_backlog_does_not_go_before_another_clients_request() -> None:
    turns = FairTurns()
    for client in ["a"] * 6 + ["b", "c"]:
        turns.enter(client)
    order: list[str] = []
    await turns.acquire("a")  # a holds the model ...

    async def ask(client: str, name: str) -> None:
        await turns.acquire(client)
        order.append(name)
        turns.release()

    async with anyio.create_task_group() as group:
        for i in range(5):  # ... and queues five more (a backlog)
            group.start_soon(ask, "a", f"a{i}")
        await anyio.wait_all_tasks_blocked()
        group.start_soon(ask, "b", "b0")  # then b and c ask once each
        group.start_soon(ask, "c", "c0")
        await anyio.wait_all_tasks_blocked()
        assert turns.waiting == 7
        turns.release()
    assert order[:2] == ["b0", "c0"]  # not after a's whole backlog
    assert order[2:] == [f"a{i}" for i in range(5)]  # a's own requests keep their order
    assert not turns.busy()


async def test_the_holder_gives_way_only_to_a_client_that_had_less() -> None:
    turns = FairTurns(slice_s=0.25)
    for client in ("a", "a", "b"):
        turns.enter(client)
    await turns.acquire("a")
    turns._held_since -= 1.0  # a has held the model for a second
    async with anyio.create_task_group() as group:
        group.start_soon(turns.acquire, "a")  # a's own next request waits
        await anyio.wait_all_tasks_blocked()
        assert not turns.should_yield("a")
        group.start_soon(turns.acquire, "b")  # b, charged nothing yet, waits
        await anyio.wait_all_tasks_blocked()
        assert turns.should_yield("a")
        turns.release()
        assert turns.holder == "b"  # charged least
        assert not turns.should_yield("b")  # a had more: b keeps the model
        turns.release()
        assert turns.holder == "a"
        turns.release()
    assert not turns.busy()


async def test_a_cancelled_waiter_neither_takes_nor_loses_a_turn() -> None:
    turns = FairTurns()
    await turns.acquire("a")
    got: list[str] = []

    async def ask(client: str) -> None:
        await turns.acquire(client)
        got.append(client)
        turns.release()

    async with anyio.create_task_group() as group:
        async with anyio.create_task_group() as leaving:
            leaving.start_soon(ask, "c")
            await anyio.wait_all_tasks_blocked()
            leaving.cancel_scope.cancel()  # c leaves before its turn
        group.start_soon(ask, "b")
        await anyio.wait_all_tasks_blocked()
        assert turns.waiting == 1
        turns.release()
    assert got == ["b"]
    assert not turns.busy()
