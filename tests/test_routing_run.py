"""Routing decisions carried out by a running request (scripted models, real SQLite):
escalation of unsure drafts, redaction, keep-on-device, the answer cache, a full queue,
and personal data that never reaches a log."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from speculate.core.protocol import Commit, Draft, Error, Event, Start
from speculate.core.request import SpeculateRequest
from speculate.core.text import ShownText
from speculate.engine.cloud_health import CloudHealth
from speculate.engine.context import Backends
from speculate.engine.eventlog import EventLog, RequestRegistry
from speculate.engine.orchestrator import Orchestrator
from speculate.engine.refiner import Refiner
from speculate.server.logs import RequestLogger
from speculate.settings import Settings
from speculate.storage.answer_cache import AnswerCache
from speculate.storage.refinement_queue import RefinementQueue
from speculate.storage.request_log import RequestLog
from tests.scripted import ScriptedBackend, words

DRAFT = "Owls are birds that hunt at night and sleep in the day in tall old trees."
CLOUD = "Owls are nocturnal birds of prey. They hunt at night."
EMAIL = "jane.doe@example.com"
CARD = "4111 1111 1111 1111"


def ask(text: str, mode: str = "auto", *, append_only: bool = False) -> SpeculateRequest:
    messages = [{"role": "user", "content": text}]
    request_id = SpeculateRequest.new_id()
    return SpeculateRequest(messages, mode, request_id=request_id, append_only=append_only)  # type: ignore[arg-type]


def replay(events: list[Event]) -> ShownText:
    shown = ShownText()
    for event in events:
        shown.apply(event)
    return shown


def everything_in(directory: Path) -> bytes:
    """Every byte the run left on disk (the database, its WAL, ...)."""
    return b"".join(path.read_bytes() for path in directory.iterdir())


def start_of(events: list[Event]) -> Start:
    assert isinstance(events[0], Start)
    return events[0]


class Rig:
    """An orchestrator with real health, queue and cache over scripted models."""

    def __init__(
        self, tmp_path: Path, edge: ScriptedBackend, cloud: ScriptedBackend, **settings: Any
    ) -> None:
        self.settings = Settings(**settings)
        self.health = CloudHealth(cloud, self.settings.cloud)
        db = tmp_path / "speculate.db"
        self.queue = RefinementQueue(db, self.settings.store.queue_max)
        self.cache = AnswerCache(db, ttl_s=3600)
        self.refiner = Refiner(
            self.settings, self.queue, self.cache, cloud, self.health, RequestRegistry()
        )
        self.request_log = RequestLog(db, keep_prompts=True)
        self.orchestrator = Orchestrator(
            self.settings,
            Backends(edge, cloud),
            [RequestLogger(), self.request_log],
            health=self.health,
            offline=self.refiner,
        )
        self.db = db

    async def run(self, request: SpeculateRequest) -> list[Event]:
        log = EventLog(request.request_id)
        with anyio.fail_after(10):
            await self.orchestrator.run(request, log)
        return log.events

    def open_circuit(self) -> None:
        for _ in range(self.settings.cloud.circuit_failures):
            self.health.breaker.record_failure(0.0, "cloud_unreachable")


def unsure_edge(entropy: float) -> ScriptedBackend:
    edge = ScriptedBackend("edge", words(DRAFT), delay_s=0.004)
    edge.entropy = [entropy] * len(edge.pieces)
    return edge


async def test_an_unsure_draft_escalates_to_the_cloud_mid_stream(tmp_path: Path) -> None:
    cloud = ScriptedBackend("cloud", words(CLOUD), delay_s=0.002)
    rig = Rig(tmp_path, unsure_edge(3.4), cloud)
    events = await rig.run(ask("Tell me about owls"))
    start = start_of(events)
    assert start.route == "edge"
    shown = replay(events)
    assert shown.done is not None
    assert (shown.text, shown.done.final_source) == (CLOUD, "cloud")
    assert shown.done.stats["escalated"] == "draft entropy 3.40 > 2.5"
    # The user read the draft (at least the judged tokens) before the cloud's first patch.
    first_patch = next(i for i, e in enumerate(events) if e.type == "patch")
    drafted = "".join(e.text for e in events[:first_patch] if isinstance(e, Draft))
    assert len(words(drafted)) >= 12
    assert cloud.opened == 1


async def test_a_confident_draft_stays_on_the_edge(tmp_path: Path) -> None:
    cloud = ScriptedBackend("cloud", words(CLOUD))
    rig = Rig(tmp_path, unsure_edge(0.8), cloud)
    events = await rig.run(ask("Tell me about owls"))
    shown = replay(events)
    assert shown.done is not None
    assert (shown.text, shown.done.final_source) == (DRAFT, "edge")
    assert shown.done.stats["draft_entropy"] == 0.8
    assert "escalated" not in shown.done.stats
    assert cloud.opened == 0


@pytest.mark.parametrize("entropy", [0.8, 3.4])
async def test_append_only_clients_get_no_commit_until_the_draft_is_judged(
    tmp_path: Path, entropy: float
) -> None:
    cloud = ScriptedBackend("cloud", words(CLOUD), delay_s=0.002)
    rig = Rig(tmp_path, unsure_edge(entropy), cloud, router={"confidence_tokens": 6})
    events = await rig.run(ask("Tell me about owls", append_only=True))
    shown = replay(events)  # invariant 2: committed text never changes
    assert shown.done is not None
    first_commit = next(i for i, e in enumerate(events) if isinstance(e, Commit))
    drafted = "".join(e.text for e in events[:first_commit] if isinstance(e, Draft))
    assert len(words(drafted)) >= 6
    assert shown.text == (CLOUD if entropy > 2.5 else DRAFT)


async def test_trivial_prompts_are_not_judged(tmp_path: Path) -> None:
    cloud = ScriptedBackend("cloud", words(CLOUD))
    rig = Rig(tmp_path, unsure_edge(5.0), cloud)
    shown = replay(await rig.run(ask("thanks!")))
    assert shown.done is not None
    assert shown.done.final_source == "edge"
    assert cloud.opened == 0


async def test_redaction_sends_placeholders_and_restores_the_answer(tmp_path: Path) -> None:
    # The cloud echoes the placeholder back, split across chunks.
    cloud = ScriptedBackend("cloud", ["I will write to [EMA", "IL_1] today", "."], delay_s=0.002)
    edge = ScriptedBackend("edge", words("Writing to someone soon."), delay_s=0.01)
    rig = Rig(tmp_path, edge, cloud, privacy={"policy": "redact"})
    events = await rig.run(ask(f"Draft a reminder to {EMAIL} about the invoice", "speculative"))
    shown = replay(events)
    assert shown.done is not None
    assert shown.text == f"I will write to {EMAIL} today."
    sent = cloud.asked[0][-1]["content"]
    assert sent == "Draft a reminder to [EMAIL_1] about the invoice"
    assert edge.asked[0][-1]["content"].endswith(f"{EMAIL} about the invoice")  # on device
    assert "e-mail address redacted" in start_of(events).reason
    assert rig.cache.size() == 0  # answers about personal data are not cached


async def test_keep_on_device_overrides_even_mode_cloud(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cloud = ScriptedBackend("cloud", words(CLOUD))
    edge = ScriptedBackend("edge", words("Please call your bank."))
    rig = Rig(tmp_path, edge, cloud)
    with caplog.at_level(logging.DEBUG):
        events = await rig.run(ask(f"My card {CARD} was declined, mail {EMAIL}", "cloud"))
    start = start_of(events)
    assert (start.route, start.cloud_model) == ("edge", None)
    assert start.reason == "privacy: payment card number, e-mail address kept on the device"
    assert cloud.opened == 0
    # Raw personal data is never logged: not in log records, not in the request log.
    rig.request_log.close()
    stored = everything_in(tmp_path)
    for secret in (EMAIL, CARD, CARD.replace(" ", "")):
        assert secret not in caplog.text
        assert secret.encode() not in stored
    assert b"[CARD]" in stored  # the request log keeps the prompt, masked


async def test_offline_a_cached_cloud_answer_beats_the_draft(tmp_path: Path) -> None:
    cloud = ScriptedBackend("cloud", words(CLOUD), delay_s=0.001)
    edge = ScriptedBackend("edge", words(DRAFT), delay_s=0.01)
    rig = Rig(tmp_path, edge, cloud)
    online = replay(await rig.run(ask("Tell me about owls.", "speculative")))
    assert online.done is not None
    assert online.done.final_source == "cloud"
    assert rig.cache.size() == 1
    rig.open_circuit()
    opened = edge.opened
    events = await rig.run(ask("  tell me   ABOUT owls. ", "speculative"))  # normalised match
    shown = replay(events)
    assert start_of(events).route == "cache"
    assert (
        start_of(events).reason
        == "requested: speculative; the cloud is away: a cached cloud answer"
    )
    assert shown.done is not None
    assert (shown.text, shown.done.final_source) == (CLOUD, "cloud")
    assert shown.done.stats["cached"] is True
    assert edge.opened == opened  # the edge was not even asked
    # A conversation not in the cache: the edge answers and the refinement is queued.
    other = await rig.run(ask("Tell me about cats.", "speculative"))
    assert start_of(other).route == "edge"
    assert [e.type for e in other[-2:]] == ["queued", "done"]
    assert rig.queue.counts() == {"pending": 1}


async def test_a_full_queue_ends_the_stream_with_the_draft(tmp_path: Path) -> None:
    cloud = ScriptedBackend("cloud", words(CLOUD))
    edge = ScriptedBackend("edge", words(DRAFT))
    rig = Rig(tmp_path, edge, cloud, store={"queue_max": 0})
    rig.open_circuit()
    events = await rig.run(
        ask("Explain owls step by step and compare them with hawks.", "speculative")
    )
    shown = replay(events)
    assert shown.done is not None
    assert (shown.text, shown.done.final_source) == (DRAFT, "edge")
    errors = [e for e in events if isinstance(e, Error)]
    assert [(e.code, e.fatal) for e in errors] == [("queue_full", False)]
