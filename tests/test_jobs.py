"""Running requests and their grace periods: when a request without readers is stopped."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel

from speculate.core.protocol import Done, Error
from speculate.core.request import SpeculateRequest
from speculate.engine.context import Backends
from speculate.engine.eventlog import EventLog, RequestRegistry
from speculate.engine.jobs import FIRST_STEP_WAIT_S, Jobs
from speculate.engine.orchestrator import Orchestrator
from speculate.settings import Settings
from tests.scripted import ScriptedBackend, words

ANSWER = "A slow and steady answer that takes its time to arrive."


def request() -> SpeculateRequest:
    return SpeculateRequest(
        messages=[{"role": "user", "content": "take your time"}],
        mode="edge",
        request_id=SpeculateRequest.new_id(),
    )


@asynccontextmanager
async def jobs(resume_grace_s: float, delay_s: float) -> AsyncIterator[Jobs]:
    """Jobs over an edge that sends a word every ``delay_s``."""
    edge = ScriptedBackend("edge", words(ANSWER), delay_s=delay_s)
    running = Jobs(
        Orchestrator(Settings(), Backends(edge, None)), RequestRegistry(), resume_grace_s
    )
    async with running.running():
        yield running


async def ending(log: EventLog) -> Done | Error:
    """The event that ended the request (read without counting as a reader)."""
    async for event in log.follow():
        if isinstance(event, Done | Error):
            return event
    raise AssertionError("the log ended without an end event")


async def test_a_request_nobody_follows_is_stopped_after_its_grace_period() -> None:
    with anyio.fail_after(10):
        async with jobs(resume_grace_s=0.05, delay_s=1.0) as running:
            end = await ending(running.start(request()))
    assert isinstance(end, Error)
    assert end.code == "cancelled"


async def test_a_request_whose_reader_stays_runs_to_its_end() -> None:
    with anyio.fail_after(10):
        async with jobs(resume_grace_s=0.05, delay_s=0.01) as running:
            job = request()
            log = running.start(job)
            async with running.following(job.request_id):
                end = await ending(log)
    assert isinstance(end, Done)
    assert end.text == ANSWER


async def test_an_attached_request_stops_the_moment_its_reader_leaves() -> None:
    with anyio.fail_after(10):
        async with jobs(resume_grace_s=60, delay_s=1.0) as running:
            job = request()
            log = running.start(job, attached=True, start_grace_s=60)
            async with running.following(job.request_id):
                async for _ in log.follow():
                    break  # the start event: it runs, and has had a reader
            end = await ending(log)
    assert isinstance(end, Error)
    assert end.code == "cancelled"


async def test_a_shorter_grace_set_after_a_longer_one_is_kept() -> None:
    # The reaper sleeps until the soonest deadline; a sooner one must wake it.
    with anyio.fail_after(10):
        async with jobs(resume_grace_s=60, delay_s=1.0) as running:
            patient = running.start(request(), attached=True, start_grace_s=60)
            async for _ in patient.follow():
                break  # it runs: so does the reaper, asleep until the patient's deadline
            hasty = running.start(request(), attached=True, start_grace_s=0.05)
            end = await ending(hasty)
            assert not patient.finished
    assert isinstance(end, Error)
    assert end.code == "cancelled"


class SlowToSend:
    """A cloud that, like an HTTP client, yields to the loop a few times before its
    request has left; ``hold``: it never gets that far."""

    model_name = "slow-to-send"

    def __init__(self, yields: int = 5, hold: bool = False) -> None:
        self.yields, self.hold = yields, hold
        self.sent = False
        self.inner = ScriptedBackend("cloud", words(ANSWER))

    @asynccontextmanager
    async def stream(self, messages: Any, params: Any) -> AsyncIterator[Any]:
        for _ in range(self.yields):
            await anyio.lowlevel.checkpoint()
        if self.hold:
            await anyio.sleep_forever()
        self.sent = True
        async with self.inner.stream(messages, params) as tokens:
            yield tokens

    async def probe(self) -> dict[str, Any]:
        return {"state": "up", "rtt_ms": 0.0}

    async def aclose(self) -> None:
        pass


@asynccontextmanager
async def cloud_jobs(cloud: SlowToSend) -> AsyncIterator[Jobs]:
    edge = ScriptedBackend("edge", words(ANSWER))
    running = Jobs(Orchestrator(Settings(), Backends(edge, cloud)), RequestRegistry(), 1.0)
    async with running.running():
        yield running


def cloud_request() -> SpeculateRequest:
    return SpeculateRequest(
        messages=[{"role": "user", "content": "ask the cloud"}],
        mode="cloud",
        request_id=SpeculateRequest.new_id(),
    )


async def test_the_first_step_waits_until_the_request_has_left() -> None:
    cloud = SlowToSend(yields=5)
    with anyio.fail_after(10):
        async with cloud_jobs(cloud) as running:
            log = running.start(cloud_request(), attached=True)
            await running.first_step(log)
            assert cloud.sent
            assert log.underway
            async with running.following(log.request_id):
                end = await ending(log)
    assert isinstance(end, Done)


async def test_the_first_step_does_not_wait_long_for_a_request_that_cannot_leave() -> None:
    cloud = SlowToSend(hold=True)
    with anyio.fail_after(10):
        async with cloud_jobs(cloud) as running:
            log = running.start(cloud_request(), attached=True)
            started = anyio.current_time()
            await running.first_step(log)
            waited = anyio.current_time() - started
            assert not cloud.sent
            assert not log.underway
            running.cancel(log.request_id)
            end = await ending(log)
    # The bound is a deadline: it may be passed by a loop's turn, never cut short.
    assert FIRST_STEP_WAIT_S <= waited < FIRST_STEP_WAIT_S + 5
    assert isinstance(end, Error)
    assert log.underway  # the end of a request that never left releases any waiter too
