"""Verify mode's decisions, pure: which part of a draft the cloud accepts, and how to go on.

The cloud scores a draft continuation with its own tokenizer and reports, for every
token of it, its top choices at that position (prompt log-probabilities).  At
temperature 0 the cloud would have produced a token itself exactly when it is its top
choice, so the longest run of top-1 tokens is accepted and the first other token is
replaced by the cloud's top choice: the result is the cloud's own greedy text.

:class:`Planner` sizes the next draft block from the acceptance rate and the round-trip
time, and chooses who goes on after a correction: the edge re-drafts when it produces
accepted tokens faster than the cloud decodes, otherwise the cloud simply continues.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Strategy = Literal["edge", "cloud"]


@dataclass(frozen=True, slots=True)
class ScoredToken:
    """One cloud token of the continuation: where it starts (code points into the
    continuation; negative if it began in the prompt), its text, and the cloud's top
    choices at its position, best first, as ``(text, logprob)``."""

    start: int
    text: str
    logprob: float | None
    top: tuple[tuple[str, float], ...]

    @property
    def end(self) -> int:
        return self.start + len(self.text)

    @property
    def is_top(self) -> bool:
        if not self.top:
            return False
        best_text, best = self.top[0]
        return self.text == best_text or (self.logprob is not None and self.logprob >= best)


@dataclass(frozen=True, slots=True)
class Scored:
    tokens: tuple[ScoredToken, ...]
    next_text: str  # the cloud's own next token after the continuation ("" at the end)
    finished: bool  # the cloud ends its answer right after the continuation
    prompt_tokens: int = 0  # how many tokens the cloud prefilled for this


@dataclass(frozen=True, slots=True)
class Verdict:
    accepted_chars: int  # of the continuation
    accepted_tokens: int
    rejected_tokens: int
    correction: str  # the cloud's text after the accepted part ("" if none)
    correction_tokens: int
    ended: bool  # the answer is complete (end of sequence or the token budget)
    margin: float | None = None  # top-1 minus top-2 log-probability where it diverged
    # The text no longer tokenizes along the cloud's own path: a token runs across the
    # end of the verified text (the cloud generated " A", "im"; the joined text reads
    # " Aim"). Nothing after it can be judged against greedy; the cloud must go on.
    resync: bool = False
    held: bool = False  # the draft's last token stays unjudged (see judge)


def judge(scored: Scored, budget: int, *, complete: bool = False) -> Verdict:
    """Accept the longest top-1 prefix (at most ``budget`` tokens) and correct the rest.

    A token is only accepted once the text after it is known: where text follows, the
    joined text may tokenize differently (" A" + "im" reads " Aim"), and the cloud's own
    path would part from what it was shown. So the draft's last token is held back (kept
    as draft, judged again with what follows) unless the draft is ``complete`` (the edge
    ended it) or the cloud ends its answer right there.
    """
    accepted = chars = 0
    tokens = scored.tokens
    if tokens and tokens[0].start < 0:
        return Verdict(0, 0, len(tokens), "", 0, ended=False, resync=True)
    for index, token in enumerate(tokens):
        if accepted >= budget:
            return Verdict(chars, accepted, len(tokens) - index, "", 0, ended=True)
        if token.is_top:
            if index == len(tokens) - 1 and not (complete or scored.finished):
                return Verdict(chars, accepted, 0, "", 0, ended=False, held=True)
            accepted += 1
            chars = max(chars, token.end)
            continue
        margin = token.top[0][1] - token.top[1][1] if len(token.top) > 1 else None
        return Verdict(
            token.start,
            accepted,
            len(tokens) - index,
            token.top[0][0],
            1,
            ended=accepted + 1 >= budget,
            margin=margin,
        )
    return Verdict(chars, accepted, 0, "", 0, ended=accepted >= budget or scored.finished)


@dataclass(slots=True)
class Planner:
    """Running estimates shared by the requests of one server (exponential averages)."""

    min_block: int = 4
    max_block: int = 48
    acceptance: float = 0.6
    rtt_s: float = 0.05
    edge_tokens_per_s: float | None = None
    cloud_tokens_per_s: float | None = None
    weight: float = 0.3

    def _mix(self, old: float | None, new: float) -> float:
        return new if old is None else (1 - self.weight) * old + self.weight * new

    def saw_verdict(self, verdict: Verdict, rtt_s: float) -> None:
        scored = verdict.accepted_tokens + verdict.rejected_tokens
        if scored:
            self.acceptance = self._mix(self.acceptance, verdict.accepted_tokens / scored)
        self.rtt_s = self._mix(self.rtt_s, rtt_s)

    def saw_edge(self, tokens: int, seconds: float) -> None:
        if tokens >= 2 and seconds > 0:
            self.edge_tokens_per_s = self._mix(self.edge_tokens_per_s, tokens / seconds)

    def saw_cloud(self, tokens: int, seconds: float) -> None:
        if tokens >= 2 and seconds > 0:
            self.cloud_tokens_per_s = self._mix(self.cloud_tokens_per_s, tokens / seconds)

    def block(self) -> int:
        """Draft tokens to send for the next check: the run the cloud is expected to
        accept, and at least what the edge drafts during one round trip."""
        a = min(self.acceptance, 0.95)
        expected_run = a / (1 - a)
        during_rtt = (self.edge_tokens_per_s or 0.0) * self.rtt_s
        size = round(max(expected_run * 1.5, during_rtt, self.min_block))
        return max(self.min_block, min(self.max_block, size))

    def strategy(self) -> Strategy:
        """After a correction: re-draft on the edge if its accepted tokens arrive faster
        than the cloud decodes (and a check's round trip is paid per block)."""
        edge, cloud = self.edge_tokens_per_s, self.cloud_tokens_per_s
        if edge is None or cloud is None:
            choice: Strategy = "cloud"  # unknown: a GPU cloud decodes far faster than an edge
        else:
            block = self.block()
            per_block_s = block / edge + self.rtt_s
            edge_rate = block * self.acceptance / per_block_s
            choice = "edge" if edge_rate > cloud else "cloud"
        return choice
