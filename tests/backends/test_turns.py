"""Fair turns between clients on one model."""

from __future__ import annotations

import anyio

from speculate.backends.turns import FairTurns


async def test_turns_go_round_the_clients_not_first_come_first_served() -> None:
    turns = FairTurns()
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
        group.start_soon(ask, "b", "b0")  # then b asks once
        group.start_soon(ask, "c", "c0")
        await anyio.wait_all_tasks_blocked()
        assert turns.waiting == 7
        assert turns.others_waiting("a")
        turns.release()
    # b and c are served after at most one more turn of a, not after a's whole backlog.
    assert order.index("b0") <= 1
    assert order.index("c0") <= 2
    assert [n for n in order if n.startswith("a")] == [f"a{i}" for i in range(5)]
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
