"""Which model answers: a pure function of the request, the conversation and cloud health.

The complexity score is a weighted sum of cheap text signals squashed into [0, 1]
(regular expressions over the last user turn, a few microseconds each).  Two
thresholds split it: below ``edge_max`` the edge answers alone, from ``cloud_min`` the
cloud answers alone, in between the edge drafts and the cloud refines.  The privacy
guard and the cloud's health override the score; momentum keeps a conversation that
needed the cloud with the cloud for a few more turns unless a follow-up is trivial.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Literal

from speculate.core.chat import Message
from speculate.core.protocol import Route
from speculate.core.request import Mode
from speculate.policy.privacy import PrivacyGuard, describe

CloudHealth = Literal["up", "open", "none"]  # reachable, circuit open, not configured

_CODE = re.compile(
    r"```|\b(?:def|class|import|return|function|const|let|var|lambda|async|await|SELECT|FROM|"
    r"WHERE|JOIN|regex|compile|stack ?trace|segfault|traceback|exception|bug|debug|refactor|"
    r"implement|algorithm|complexity|API|SQL|Python|JavaScript|TypeScript|Rust|C\+\+|Go|Java|"
    r"Kubernetes|Docker|\w+(?:Error|Exception))\b|[{};]\s*$|==|=>|->|\w+\(\)",
    re.MULTILINE,
)
_REASONING = re.compile(
    r"(?i)\b(?:why|explain|analy[sz]e|compare|contrast|trade-?offs?|evaluate|justify|prove|"
    r"derive|reason|implications?|critique|pros and cons|design|architecture|strategy|"
    r"optimi[sz]e|recommend|assess|in depth|detailed|step[- ]by[- ]step)\b"
)
_MATH = re.compile(
    r"(?i)\b(?:integral|derivative|equation|theorem|proof|probability|matrix|eigen\w*|"
    r"solve|calculate|compute|variance|regression|polynomial|limit|logarithm|sum of)\b"
    r"|\d+\s*[-+*/^=]\s*\d+|[∫∑√π≈≤≥]"
)
_STEPS = re.compile(
    r"(?im)^\s*(?:\d+[.)]|[-*•])\s+|\b(?:first(?:ly)?|second(?:ly)?|then|next|finally|"
    r"after that|also|additionally)\b"
)
_HARD_QUESTION = re.compile(r"(?i)\b(?:how|why|what if|which is better|should i)\b")
_TRIVIAL = re.compile(
    r"(?i)^\s*(?:thanks?(?: you)?|thx|ok(?:ay)?|cool|great|nice|yes|no|yep|nope|sure|"
    r"got it|hi|hello|hey|bye|good(?:bye| night| morning)?)\b[\s!.?]*$"
)

# Weights of each signal (a signal is a count capped at 1 after scaling).
WEIGHTS = {"length": 1.0, "code": 1.6, "reasoning": 1.3, "math": 1.4, "steps": 0.9, "question": 0.6}
_BIAS = -2.6


@dataclass(frozen=True, slots=True)
class Complexity:
    score: float
    signals: dict[str, float]

    def top(self) -> str:
        strongest = sorted(self.signals.items(), key=lambda kv: -kv[1] * WEIGHTS[kv[0]])
        names = [name for name, value in strongest if value >= 0.25][:2]
        return " + ".join(names) if names else "short and plain"


def complexity(text: str) -> Complexity:
    """Score one user turn: 0 is small talk, 1 needs the big model."""
    words = len(text.split())
    signals = {
        "length": min(1.0, words / 120),
        "code": min(1.0, len(_CODE.findall(text)) / 3),
        "reasoning": min(1.0, len(_REASONING.findall(text)) / 2),
        "math": min(1.0, len(_MATH.findall(text)) / 2),
        "steps": min(1.0, len(_STEPS.findall(text)) / 3),
        "question": min(1.0, len(_HARD_QUESTION.findall(text)) / 2 + text.count("?") / 6),
    }
    z = _BIAS + sum(WEIGHTS[name] * value for name, value in signals.items()) * 2
    return Complexity(round(1 / (1 + math.exp(-z)), 4), signals)


def is_trivial(text: str) -> bool:
    return bool(_TRIVIAL.match(text))


@dataclass(frozen=True, slots=True)
class RouterConfig:
    edge_max: float = 0.35  # score below this: the edge alone
    cloud_min: float = 0.85  # score from this: the cloud alone
    momentum_turns: int = 2  # follow-ups that stay with the cloud after a cloud turn
    privacy_policy: Literal["keep_on_device", "redact", "off"] = "keep_on_device"
    prefer_verify: bool = False  # the middle band verifies instead of speculating


@dataclass(frozen=True, slots=True)
class Decision:
    route: Route
    reason: str
    score: float | None = None
    wants_cloud: bool = False  # the cloud should refine this answer (queue it if offline)
    redact: bool = False  # send placeholders instead of the personal data found
    private_kinds: tuple[str, ...] = ()
    escalate: bool = False  # an edge answer may move to the cloud if the draft is unsure
    basis: str = ""  # why the cloud was wanted, before the cloud's health overrode it


def _by_score(score: float, config: RouterConfig) -> Route:
    if score < config.edge_max:
        return "edge"
    return "cloud" if score >= config.cloud_min else "speculative"


def _user_turns(messages: list[Message]) -> list[str]:
    return [m["content"] for m in messages if m["role"] == "user"]


def momentum(messages: list[Message], config: RouterConfig) -> int:
    """How many turns back the conversation last needed the cloud (0: not within reach).

    The router is deterministic, so an earlier turn's route is its score's route:
    nothing has to be remembered between requests."""
    if config.momentum_turns <= 0:
        return 0
    earlier = _user_turns(messages)[:-1]
    for back, text in enumerate(reversed(earlier[-config.momentum_turns :]), start=1):
        if _by_score(complexity(text).score, config) != "edge":
            return back
    return 0


@dataclass(slots=True)
class Router:
    config: RouterConfig = field(default_factory=RouterConfig)
    guard: PrivacyGuard = field(default_factory=PrivacyGuard)

    def decide(
        self,
        mode: Mode,
        messages: list[Message],
        cloud: CloudHealth,
        *,
        can_verify: bool = False,
        verify_blocked: str = "",
        needs_cloud: str = "",
    ) -> Decision:
        """``can_verify``: the cloud can score drafts (see :mod:`speculate.backends.scoring`);
        ``verify_blocked``: why this request cannot be verified even so;
        ``needs_cloud``: why only the cloud can answer it (tools, a response format),
        which overrides the mode unless it is ``edge`` or privacy keeps it here."""
        kinds: tuple[str, ...] = ()
        if self.config.privacy_policy != "off" and mode != "edge" and cloud != "none":
            kinds = tuple(self.guard.kinds_in(messages))
        if kinds and self.config.privacy_policy == "keep_on_device":
            return Decision(
                "edge", f"privacy: {describe(kinds)} kept on the device", private_kinds=kinds
            )
        redacting = bool(kinds)
        suffix = f"; {describe(kinds)} redacted" if redacting else ""
        if mode == "edge":
            return Decision("edge", "requested: edge only")
        if cloud == "none":
            return Decision("edge", "no cloud backend is configured")
        decision = Decision("cloud", needs_cloud) if needs_cloud else self._choose(mode, messages)
        if decision.route == "verify" and (redacting or not can_verify or verify_blocked):
            why = "the draft holds personal data" if redacting else "this cloud cannot score"
            why = verify_blocked or why
            decision = Decision(
                "speculative", f"{decision.reason}, but {why}: speculating", decision.score
            )
        if decision.route == "edge":
            return decision
        if cloud == "open":
            return Decision(
                "edge",
                f"{decision.reason}, but the cloud circuit is open: the "
                "edge answers and the refinement is queued",
                decision.score,
                wants_cloud=True,
                redact=redacting,
                private_kinds=kinds,
                basis=decision.reason,
            )
        return Decision(
            decision.route,
            decision.reason + suffix,
            decision.score,
            wants_cloud=True,
            redact=redacting,
            private_kinds=kinds,
        )

    def _choose(self, mode: Mode, messages: list[Message]) -> Decision:
        if mode == "cloud":
            return Decision("cloud", "requested: cloud only")
        if mode == "verify":
            return Decision("verify", "requested: verify")
        if mode == "speculative":
            return Decision("speculative", "requested: speculative")
        turns = _user_turns(messages)
        last = turns[-1] if turns else ""
        measured = complexity(last)
        score, route = measured.score, _by_score(measured.score, self.config)
        why = f"auto: complexity {score:.2f} ({measured.top()})"
        if route == "edge" and not is_trivial(last):
            back = momentum(messages, self.config)
            if back:
                return Decision("speculative", f"{why}; follows a cloud turn {back} back", score)
        if route == "edge":
            return Decision("edge", why, score, escalate=not is_trivial(last))
        if route == "speculative" and self.config.prefer_verify:
            route = "verify"
        return Decision(route, why, score)
