"""The per-request state machine: tokens in, wire events out.

A :class:`Session` knows nothing about threads, sockets or clocks: the caller passes
``now`` (seconds, any monotonic origin) and forwards the returned events.  It owns
the shown text, the ``seq`` counter, coalescing of draft tokens, the alignment of
cloud text against the draft, and the rules for how a stream ends.  Every wire
``error`` event is made here, from a :class:`~speculate.errors.SpeculateError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from rapidfuzz.distance import Levenshtein

from speculate.core.diff import DraftAligner, complete_words, splice_ops
from speculate.core.protocol import (
    Commit,
    Done,
    Draft,
    Error,
    Event,
    FinalSource,
    Patch,
    Queued,
    Route,
    Start,
)
from speculate.errors import SpeculateError

SideState = Literal["off", "running", "done", "failed"]


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """Coalescing, the overtaken edge, and cost parameters (prices in USD per million
    tokens)."""

    coalesce_s: float = 0.016
    coalesce_chars: int = 96
    # The edge stops once the cloud has passed all of its draft, if the draft has at least
    # this many tokens: a draft the user has begun to read is never cut off at its start.
    overtaken_after_tokens: int = 8
    # ... or once the cloud writes faster than the edge, judged after this many of its
    # tokens over at least this long: a burst that came in one read of the network says
    # nothing of the cloud's pace.
    outpaced_after_cloud_tokens: int = 8
    outpaced_after_s: float = 0.05
    edge_usd_per_mtok: float = 0.0
    cloud_usd_per_mtok_in: float = 0.0
    cloud_usd_per_mtok_out: float = 0.0


class Session:
    def __init__(
        self,
        request_id: str,
        *,
        route: Route,
        reason: str,
        edge_model: str,
        cloud_model: str | None,
        config: SessionConfig | None = None,
        now: float = 0.0,
        commit_progressively: bool = False,
        queue_reason: str | None = None,
        queue_on_cloud_failure: bool = False,
        hold_commits: bool = False,
        dropped_turns: dict[str, int] | None = None,
        edge_model_sha256: str | None = None,
    ) -> None:
        """``commit_progressively``: commit text as soon as it cannot change any more
        (the edge's text on the edge route, the cloud's finished words otherwise), so
        an append-only client can stream it.  A cloud failure then keeps the committed
        cloud words and continues with the draft's uncovered tail, instead of reverting
        to the full draft.

        ``queue_reason``: the cloud is away and this answer's refinement is queued; the
        stream sends ``queued`` before a provisional ``done`` and commits nothing, so the
        refinement can still patch the text.  ``queue_on_cloud_failure``: a transient
        cloud failure does the same (a cloud-only request falls back to the edge).
        ``hold_commits``: an append-only client's edge text is not committed until
        :meth:`settle` (the draft may still be escalated to the cloud)."""
        self.request_id = request_id
        self.route: Route = route
        self._reason = reason
        self._edge_model = edge_model
        self._cloud_model = cloud_model
        self._dropped_turns = dropped_turns or {"edge": 0, "cloud": 0}
        self._edge_model_sha256 = edge_model_sha256
        self.config = config or SessionConfig()
        self._t0 = now
        self._progressive = commit_progressively
        self.queued_reason = queue_reason
        self._queue_on_failure = queue_on_cloud_failure and not commit_progressively
        self._hold_commits = hold_commits
        self._committed = 0
        self._seq = 0
        self.shown = ""
        self.draft = ""
        self.cloud = ""
        self._cloud_scanned = 0  # end of the last finished cloud word
        self._aligner = DraftAligner()
        self._dirty = False  # draft text received but not shown yet
        self._last_flush: float | None = None
        both = ("speculative", "verify")
        self.edge: SideState = "running" if route in (*both, "edge") else "off"
        self.cloud_state: SideState = "running" if route in (*both, "cloud") else "off"
        self.finished = False
        # The cloud's text has passed the whole draft, or it writes faster than the edge
        # and will: the edge stops (its tokens would only be replaced), and starts again
        # from its draft if the cloud then fails.
        self.edge_overtaken = False
        # When each side's text began, and how long its first piece was: their pace is
        # what each wrote after it, per second.
        self._draft_began: tuple[float, int] | None = None
        self._cloud_began: tuple[float, int] | None = None
        self.tool_calls: list[dict[str, Any]] | None = None  # the cloud's, if it called any
        self.stats: dict[str, Any] = {
            "draft_first_ms": None,
            "cloud_first_ms": None,
            "final_ms": None,
            "draft_tokens": 0,
            "cloud_tokens": 0,
            "edit_distance": 0,
            "cost_usd": 0.0,
            "cost_saved_usd": 0.0,
            "prompt_tokens": 0,
            "edge_queue_ms": 0.0,
            "patches": 0,
        }

    # -- events --------------------------------------------------------------------
    def _next(self) -> int:
        self._seq += 1
        return self._seq

    def start(self) -> list[Event]:
        return [
            Start(
                request_id=self.request_id,
                seq=self._next(),
                route=self.route,
                reason=self._reason,
                edge_model=self._edge_model,
                cloud_model=self._cloud_model,
                dropped_turns=self._dropped_turns,
                edge_model_sha256=self._edge_model_sha256,
            )
        ]

    @property
    def next_flush_at(self) -> float | None:
        """When buffered draft text must go out even if no further token comes."""
        if not self._dirty or self._last_flush is None:
            return None
        return self._last_flush + self.config.coalesce_s

    # -- edge side -----------------------------------------------------------------
    def receive_draft(self, text: str, now: float) -> list[Event]:
        if self.edge != "running" or self.finished or not text:
            return []
        self.draft += text
        self.stats["draft_tokens"] += 1
        if self.stats["draft_first_ms"] is None:
            self.stats["draft_first_ms"] = self._ms(now)
            self._draft_began = (now, len(self.draft))
        # Throttle, do not delay: a token after a quiet spell goes out at once; tokens
        # arriving within coalesce_s of the last send wait for the next one together.
        self._dirty = True
        last = self._last_flush
        due = last is None or now >= last + self.config.coalesce_s
        if due or len(self.draft) - len(self.shown) >= self.config.coalesce_chars:
            return self.flush(now)
        return []

    def flush(self, now: float) -> list[Event]:
        """Bring the client's text up to date with everything received so far."""
        self._dirty = False
        if self.finished:
            return []
        self._last_flush = now
        events = self._show(self._target(), "edge")
        if self.route == "edge" and self._progressive:
            events += self._commit(len(self.shown))
        return events

    def edge_finished(self, now: float) -> list[Event]:
        if self.edge != "running":
            return []
        self.edge = "done"
        return self.flush(now) + self._maybe_done(now)

    def edge_cancelled(self) -> None:
        """The orchestrator stopped the edge because its draft is no longer needed."""
        if self.edge == "running":
            self.edge = "done"

    def edge_failed(self, error: SpeculateError, now: float) -> list[Event]:
        if self.edge != "running" or self.finished:
            return []
        self.edge = "failed"
        events = self.flush(now)
        if self.route == "edge":
            return events + self._fatal(error)
        return [*events, self._error(error, fatal=False), *self._maybe_done(now)]

    # -- cloud side ----------------------------------------------------------------
    def receive_cloud(self, text: str, now: float) -> list[Event]:
        if self.cloud_state != "running" or self.finished or not text:
            return []
        self.cloud += text
        self.stats["cloud_tokens"] += 1
        if self.stats["cloud_first_ms"] is None:
            self.stats["cloud_first_ms"] = self._ms(now)
            self._cloud_began = (now, len(self.cloud))
        if self.route == "cloud":
            # No draft to align with: nothing shown can change, so the text goes out as
            # it arrives, not a word at a time.
            self._cloud_scanned = len(self.cloud)
            return self._show(self._target(), "cloud") + self._commit(self._cloud_scanned)
        words, end = complete_words(self.cloud, self._cloud_scanned)
        if not words:
            return []
        self._cloud_scanned = end
        if self.route == "speculative":
            self._aligner.set_draft(self.draft)
            self._aligner.add_cloud_words(words)
        events = self._show(self._target(), "cloud") + self._commit(self._cloud_scanned)
        if (
            self.route == "speculative"
            and self.edge == "running"
            and self.stats["draft_tokens"] >= self.config.overtaken_after_tokens
        ):
            # What the edge writes next would be replaced too, and it competes with the
            # cloud for the device meanwhile: everything it has written is covered, or the
            # cloud writes faster and so will cover whatever the edge adds.
            if self._aligner.tail_offset >= len(self.draft):
                self._stop_edge_for_cloud("overtaken by the cloud")
            elif self._cloud_outpaces_edge(now):
                self._stop_edge_for_cloud("the cloud writes faster")
        return events

    def _stop_edge_for_cloud(self, reason: str) -> None:
        self.edge, self.edge_overtaken = "done", True
        self.stats["edge_stopped"] = reason

    def _cloud_outpaces_edge(self, now: float) -> bool:
        """Has the cloud written at least as many characters per second as the edge, each
        since its first piece, once it has sent enough tokens over long enough to judge
        its pace by?"""
        if self._draft_began is None or self._cloud_began is None:
            return False
        (draft_at, draft_first), (cloud_at, cloud_first) = self._draft_began, self._cloud_began
        if (
            self.stats["cloud_tokens"] < self.config.outpaced_after_cloud_tokens
            or now - cloud_at < self.config.outpaced_after_s
        ):
            return False
        # Compared crosswise, so no division: cloud chars / cloud time >= draft's.
        cloud_chars = len(self.cloud) - cloud_first
        draft_chars = len(self.draft) - draft_first
        return cloud_chars * (now - draft_at) >= draft_chars * (now - cloud_at)

    def cloud_finished(
        self,
        now: float,
        *,
        completion_tokens: int | None = None,
        tool_calls: list[dict[str, Any]] | None = None,
    ) -> list[Event]:
        if self.cloud_state != "running" or self.finished:
            return []
        self.cloud_state = "done"
        if completion_tokens is not None:
            self.stats["cloud_tokens"] = completion_tokens
        self.tool_calls = tool_calls or None
        self.edge_cancelled()
        return self._show(self.cloud, "cloud") + self._done("cloud", now)

    def cloud_failed(self, error: SpeculateError, now: float) -> list[Event]:
        if self.cloud_state != "running" or self.finished:
            return []
        self.cloud_state = "failed"
        queueable = self._queue_on_failure and error.transient
        if queueable:
            self.queued_reason = f"the cloud is unavailable ({error.code}); refinement queued"
        if self.route == "cloud" and queueable:
            # Fall back to the edge: the caller starts it when it sees edge == "running".
            self.route, self.edge = "edge", "running"
            self.stats["fallback"] = "edge"
            return [*self._show(self._target(), "edge"), self._error(error, fatal=False)]
        if self.route == "cloud":
            return self._fatal(error)
        # The draft stands: undo whatever cloud text had been spliced in (all of it,
        # unless it was already committed to an append-only client).
        events = [*self._show(self._target(), "edge"), self._error(error, fatal=False)]
        if self.edge_overtaken:  # the edge stopped for the cloud: it finishes its draft
            self.edge, self.edge_overtaken = "running", False
            self.stats.pop("edge_stopped", None)
        return events + self._maybe_done(now)

    # -- routing changes mid-stream -----------------------------------------------
    def escalate(self, reason: str) -> list[Event]:
        """The draft looks unsure: bring the cloud in (edge → speculative).  The caller
        starts the cloud when it sees ``cloud_state == "running"``."""
        if self.route != "edge" or self.finished or self.edge != "running":
            return []
        self.route, self.cloud_state = "speculative", "running"
        self.stats["escalated"] = reason
        return self.settle()

    def settle(self) -> list[Event]:
        """Stop holding commits back (the route will not change any more)."""
        self._hold_commits = False
        return self._commit(len(self.shown)) if self.route == "edge" else []

    def answer_from_cache(self, text: str, now: float) -> list[Event]:
        """Route ``cache``: a stored cloud answer to the same messages, whole."""
        self.stats["cached"] = True
        return self._show(text, "cache") + self._done("cloud", now)

    def cancel(
        self,
        code: str = "cancelled",
        message: str = "cancelled by the client",
        source: Literal["client", "server"] = "client",
    ) -> list[Event]:
        """End the stream from outside (client cancel, client gone, server shutdown)."""
        if self.finished:
            return []
        return self._fatal_event(code, message, source)

    def fail(self, error: SpeculateError) -> list[Event]:
        """An unexpected failure outside both backends ends the stream."""
        return [] if self.finished else self._fatal(error)

    # -- internals -----------------------------------------------------------------
    def _target(self) -> str:
        """What the client should see now: cloud words so far + the uncovered draft tail."""
        if self.route == "edge":
            return self.draft
        covered = self.cloud[: self._cloud_scanned]
        if self.route == "cloud":
            return covered
        if not covered:
            return self.draft
        if self.cloud_state == "failed" and not self._progressive:
            return self.draft
        self._aligner.set_draft(self.draft)
        tail = self.draft[self._aligner.tail_offset :]
        if tail and not tail[0].isspace():
            return f"{covered} {tail}"  # the draft's first word: keep the two apart
        return covered + tail

    def _show(self, target: str, source: str) -> list[Event]:
        if target == self.shown:
            return []
        if target.startswith(self.shown) and source == "edge":
            event: Event = Draft(
                request_id=self.request_id, seq=self._next(), text=target[len(self.shown) :]
            )
        else:
            ops = tuple(splice_ops(self.shown, target, floor=self._committed))
            event = Patch(request_id=self.request_id, seq=self._next(), ops=ops, source=source)
            self.stats["patches"] += 1
        self.shown = target
        return [event]

    def _commit(self, upto: int) -> list[Event]:
        if self._hold_commits or not self._progressive:
            return []
        if upto <= self._committed or self.finished:
            return []
        self._committed = upto
        return [Commit(request_id=self.request_id, seq=self._next(), upto=upto)]

    def _maybe_done(self, now: float) -> list[Event]:
        if self.finished or self.edge == "running" or self.cloud_state == "running":
            return []
        if self.cloud_state == "done":
            return self._done("cloud", now)
        if self.shown or self.edge == "done":
            return self._done("edge", now)
        return self._fatal_event("no_answer", "neither model produced an answer", "server")

    def _done(self, final_source: FinalSource, now: float) -> list[Event]:
        self.finished = True
        self.stats["final_ms"] = self._ms(now)
        self.stats["edit_distance"] = Levenshtein.distance(self.draft, self.shown)
        self._account(final_source)
        if final_source == "edge" and self.queued_reason is not None:
            # Provisional: the queued refinement will patch this text later.
            self.stats["queued"] = True
            queued = Queued(request_id=self.request_id, seq=self._next(), reason=self.queued_reason)
            done = Done(
                request_id=self.request_id,
                seq=self._next(),
                text=self.shown,
                final_source="edge",
                stats=dict(self.stats),
            )
            return [queued, done]
        self._committed = len(self.shown)
        commit = Commit(request_id=self.request_id, seq=self._next(), upto=len(self.shown))
        done = Done(
            request_id=self.request_id,
            seq=self._next(),
            text=self.shown,
            final_source=final_source,
            stats=dict(self.stats),
            tool_calls=self.tool_calls if final_source == "cloud" else None,
        )
        return [commit, done]

    def _account(self, final_source: FinalSource) -> None:
        """Fill ``cost_usd`` and ``cost_saved_usd`` (against sending it all to the cloud)."""
        c, s = self.config, self.stats
        prompt = s["prompt_tokens"]
        per_token = 1e-6
        cloud_cost = 0.0
        if self.cloud_state != "off":
            prefill = s.get("cloud_prefill_tokens") or prompt  # verify prefills its checks
            cloud_cost = (
                prefill * c.cloud_usd_per_mtok_in + s["cloud_tokens"] * c.cloud_usd_per_mtok_out
            )
        edge_cost = (
            (prompt + s["draft_tokens"]) * c.edge_usd_per_mtok if self.edge != "off" else 0.0
        )
        answer = s["cloud_tokens"] if final_source == "cloud" else s["draft_tokens"]
        all_cloud = prompt * c.cloud_usd_per_mtok_in + answer * c.cloud_usd_per_mtok_out
        s["cost_usd"] = round((cloud_cost + edge_cost) * per_token, 9)
        s["cost_saved_usd"] = round(all_cloud * per_token - s["cost_usd"], 9)

    def _error(self, error: SpeculateError, *, fatal: bool) -> Error:
        return Error(
            request_id=self.request_id,
            seq=self._next(),
            code=error.code,
            message=error.message,
            source=error.source,
            fatal=fatal,
        )

    def _fatal(self, error: SpeculateError) -> list[Event]:
        self.finished = True
        return [self._error(error, fatal=True)]

    def _fatal_event(
        self, code: str, message: str, source: Literal["client", "server"]
    ) -> list[Event]:
        self.finished = True
        return [
            Error(
                request_id=self.request_id,
                seq=self._next(),
                code=code,
                message=message,
                source=source,
                fatal=True,
            )
        ]

    def _ms(self, now: float) -> float:
        return round((now - self._t0) * 1000, 3)
