"""The router: complexity, privacy, momentum, health; accuracy on the labelled prompts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from speculate.policy.router import Router, RouterConfig, complexity, is_trivial

DATA = Path(__file__).resolve().parent.parent / "speculate" / "bench" / "data"


def labelled(name: str) -> list[dict[str, str]]:
    lines = (DATA / name).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def test_scores_are_in_range_and_ordered() -> None:
    easy = complexity("What is the capital of France?").score
    hard = complexity(
        "Explain step by step why quicksort is O(n log n) on average, then implement it in "
        "Python with tests and analyze the worst case."
    ).score
    assert 0.0 <= easy < 0.35 <= hard <= 1.0
    assert complexity("").score < 0.35


@pytest.mark.parametrize("name", ["routing_prompts.jsonl", "routing_heldout.jsonl"])
def test_accuracy_on_the_labelled_prompts(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    router = Router()
    rows = labelled(name)
    right = 0
    for row in rows:
        route = router.decide("auto", [user(row["prompt"])], "up").route
        right += (route == "edge") == (row["label"] == "edge")
    accuracy = right / len(rows)
    with capsys.disabled():
        print(f"\nrouter accuracy on {name}: {right}/{len(rows)} = {accuracy:.1%}")
    assert accuracy >= 0.7  # a regression guard, not the target; see the bench's router suite


def test_explicit_modes_and_no_cloud() -> None:
    router = Router()
    hard = [user("Prove that there are infinitely many primes, step by step.")]
    assert router.decide("edge", hard, "up").route == "edge"
    assert router.decide("cloud", hard, "up").route == "cloud"
    assert router.decide("speculative", [user("hi")], "up").route == "speculative"
    decision = router.decide("auto", hard, "none")
    assert decision.route == "edge"
    assert "no cloud" in decision.reason


def test_thresholds_pick_edge_speculative_and_cloud() -> None:
    router = Router(RouterConfig(edge_max=0.2, cloud_min=0.9))
    assert router.decide("auto", [user("hi")], "up").route == "edge"
    middle = [user("Explain why the sky is blue.")]
    assert 0.2 <= complexity(middle[0]["content"]).score < 0.9
    assert router.decide("auto", middle, "up").route == "speculative"
    hard = [
        user(
            "Design an architecture and explain the trade-offs, then implement it in Python: "
            "def f(): return 1; compare it step by step with the integral of x^2."
        )
    ]
    decision = router.decide("auto", hard, "up")
    assert decision.route == "cloud"
    assert decision.reason.startswith("auto: complexity")


def test_circuit_open_answers_on_the_edge_and_wants_the_cloud() -> None:
    router = Router()
    hard = [
        user("Explain step by step how TCP congestion control works and compare CUBIC and BBR.")
    ]
    decision = router.decide("auto", hard, "open")
    assert decision.route == "edge"
    assert decision.wants_cloud
    assert "circuit is open" in decision.reason
    assert not router.decide("auto", [user("hi")], "open").wants_cloud


def test_momentum_keeps_follow_ups_with_the_cloud_unless_trivial() -> None:
    router = Router(RouterConfig(momentum_turns=2))
    hard = "Explain step by step how TCP congestion control works and compare CUBIC and BBR."
    conversation = [user(hard), {"role": "assistant", "content": "It works like this."}]
    follow_up = router.decide("auto", [*conversation, user("and for UDP?")], "up")
    assert follow_up.route == "speculative"
    assert "follows a cloud turn 1 back" in follow_up.reason
    thanks = router.decide("auto", [*conversation, user("thanks!")], "up")
    assert thanks.route == "edge"
    # Two plain turns later the momentum has run out.
    later = [
        *conversation,
        *(user("ok so?"), {"role": "assistant", "content": "Yes."}),
        *(user("and then?"), {"role": "assistant", "content": "Done."}),
        user("what now?"),
    ]
    assert router.decide("auto", later, "up").route == "edge"
    assert (
        Router(RouterConfig(momentum_turns=0))
        .decide("auto", [*conversation, user("and for UDP?")], "up")
        .route
        == "edge"
    )


def test_trivial() -> None:
    assert is_trivial("Thanks!")
    assert is_trivial("ok")
    assert is_trivial("good night")
    assert not is_trivial("ok, now explain the proof")


def test_privacy_keep_on_device_overrides_every_mode() -> None:
    router = Router()
    private = [user("Explain in depth why my card 4111 1111 1111 1111 was declined")]
    for mode in ("auto", "speculative", "cloud"):
        decision = router.decide(mode, private, "up")  # type: ignore[arg-type]
        assert decision.route == "edge"
        assert not decision.wants_cloud
        assert decision.reason == "privacy: payment card number kept on the device"
        assert "4111" not in decision.reason


def test_privacy_redact_sends_placeholders() -> None:
    router = Router(RouterConfig(privacy_policy="redact"))
    private = [user("Write a polite reminder to jane@example.com about the invoice")]
    decision = router.decide("speculative", private, "up")
    assert decision.route == "speculative"
    assert decision.redact
    assert decision.private_kinds == ("email",)
    assert "e-mail address redacted" in decision.reason
    off = Router(RouterConfig(privacy_policy="off")).decide("speculative", private, "up")
    assert not off.redact
    assert off.route == "speculative"


def test_verify_when_the_cloud_can_score_and_nothing_is_private() -> None:
    router = Router(RouterConfig(privacy_policy="redact"))
    plain = [user("Explain why the sky is blue.")]
    assert router.decide("verify", plain, "up", can_verify=True).route == "verify"
    cannot = router.decide("verify", plain, "up", can_verify=False)
    assert cannot.route == "speculative"
    assert "cannot score" in cannot.reason
    private = [user("Write to jane@example.com about the sky")]
    redacted = router.decide("verify", private, "up", can_verify=True)
    assert redacted.route == "speculative"  # the draft would carry the personal data out
    assert "personal data" in redacted.reason
    preferring = Router(RouterConfig(prefer_verify=True))
    assert preferring.decide("auto", plain, "up", can_verify=True).route == "verify"
