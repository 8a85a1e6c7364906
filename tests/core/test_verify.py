"""Verify mode's pure decisions: what is accepted, what is corrected, how to go on."""

from __future__ import annotations

from speculate.core.verify import Planner, Scored, ScoredToken, judge


def tok(
    start: int, text: str, *top: tuple[str, float], logprob: float | None = None
) -> ScoredToken:
    chosen = dict(top).get(text, -9.0) if logprob is None else logprob
    return ScoredToken(start, text, chosen, tuple(top))


def scored(*tokens: ScoredToken, next_text: str = " more", finished: bool = False) -> Scored:
    return Scored(tuple(tokens), next_text, finished)


# "Hello world!" scored as "Hello", " world", "!"
AGREE = (
    tok(0, "Hello", ("Hello", -0.1), ("Hi", -2.0)),
    tok(5, " world", (" world", -0.2), (" there", -1.9)),
    tok(11, "!", ("!", -0.3), (".", -1.5)),
)


def test_the_last_token_is_held_back_until_the_text_after_it_is_known() -> None:
    verdict = judge(scored(*AGREE), budget=100)
    assert (verdict.accepted_chars, verdict.accepted_tokens, verdict.rejected_tokens) == (11, 2, 0)
    assert verdict.held
    assert (verdict.correction, verdict.correction_tokens, verdict.ended) == ("", 0, False)


def test_a_complete_draft_is_accepted_to_its_end_and_the_cloud_goes_on() -> None:
    verdict = judge(scored(*AGREE), budget=100, complete=True)
    assert (verdict.accepted_chars, verdict.accepted_tokens, verdict.held) == (12, 3, False)
    assert (verdict.correction, verdict.ended) == ("", False)


def test_the_first_disagreement_is_replaced_by_the_clouds_choice() -> None:
    tokens = (AGREE[0], tok(5, " word", (" world", -0.2), (" word", -0.25)), AGREE[2])
    verdict = judge(scored(*tokens), budget=100)
    assert (verdict.accepted_chars, verdict.accepted_tokens, verdict.rejected_tokens) == (5, 1, 2)
    assert verdict.correction == " world"
    assert verdict.margin is not None
    assert abs(verdict.margin - 0.05) < 1e-9


def test_end_of_sequence_and_budget() -> None:
    assert judge(scored(*AGREE, next_text="", finished=True), budget=100).ended
    limited = judge(scored(*AGREE), budget=2)
    assert (limited.accepted_chars, limited.accepted_tokens, limited.ended) == (11, 2, True)
    assert limited.correction == ""
    exact = judge(scored(*AGREE), budget=3, complete=True)
    assert (exact.accepted_tokens, exact.ended) == (3, True)


def test_a_tie_with_the_top_choice_counts_as_top() -> None:
    tie = tok(0, "Hi", ("Hello", -0.5), ("Hi", -0.5), logprob=-0.5)
    assert tie.is_top


def test_a_token_reaching_back_into_the_prompt_leaves_it_to_the_cloud() -> None:
    straddling = tok(-1, "\nHi", ("\n", -0.1), ("\nHi", -3.0))
    verdict = judge(scored(straddling, *AGREE[1:]), budget=100)
    assert (verdict.accepted_chars, verdict.correction, verdict.ended) == (0, "", False)


def test_planner_blocks_follow_acceptance_and_round_trips() -> None:
    planner = Planner()
    small = planner.block()
    for _ in range(10):
        planner.saw_verdict(judge(scored(*AGREE), budget=100), rtt_s=0.05)
    assert planner.acceptance > 0.9
    assert planner.block() > small
    planner.saw_edge(tokens=100, seconds=0.5)  # 200 tokens/s
    for _ in range(10):
        planner.saw_verdict(judge(scored(*AGREE), budget=100), rtt_s=0.3)
    assert planner.block() >= 48 or planner.block() == planner.max_block


def test_planner_lets_the_faster_side_go_on() -> None:
    planner = Planner(acceptance=0.9)
    assert planner.strategy() == "cloud"  # nothing measured yet
    planner.saw_edge(tokens=200, seconds=1.0)
    planner.saw_cloud(tokens=30, seconds=1.0)
    assert planner.strategy() == "edge"
    slow_edge = Planner(acceptance=0.9)
    slow_edge.saw_edge(tokens=20, seconds=1.0)
    slow_edge.saw_cloud(tokens=700, seconds=1.0)
    assert slow_edge.strategy() == "cloud"


def test_verify_session_commits_what_the_cloud_vouches_for() -> None:
    from speculate.core.text import ShownText
    from speculate.core.verify_session import VerifySession

    session = VerifySession(
        "r", route="verify", reason="requested: verify", edge_model="e", cloud_model="c"
    )
    events = session.start()
    events += session.receive_draft("Hello wrold, how", 0.0) + session.flush(0.0)
    events += session.verdict(5, " world", 0.1)  # "Hello" accepted, " wrold..." replaced
    events += session.receive_draft(", friend", 0.2) + session.flush(0.2)
    events += session.verdict(len("Hello world, friend"), "!", 0.3)
    events += session.receive_continuation(" Bye.", 0.4)
    events += session.verify_finished(0.5)
    shown = ShownText()
    for event in events:
        shown.apply(event)  # invariants, including "committed text never changes"
    assert shown.done is not None
    assert (shown.text, shown.done.final_source) == ("Hello world, friend! Bye.", "cloud")
    # A correction is committed only once the text after it is judged with it.
    commits = [e.fields()["upto"] for e in events if e.type == "commit"]
    assert commits[:3] == [len("Hello"), len("Hello world, friend"), len(shown.text)]
    assert [e.fields()["source"] for e in events if e.type == "patch"] == ["cloud"] * 3


def test_a_token_across_the_verified_end_hands_over_to_the_cloud_even_if_top() -> None:
    # The cloud generated " A", "im"; the verified text ends after " A" and the edge
    # drafted "im for": the joined text tokenizes as " Aim", " for" — off the cloud's path,
    # so nothing is accepted, even where the merged token happens to rank first.
    tokens = (tok(-2, " Aim", (" Aim", -0.1), (" A", -0.2)), tok(2, " for", (" for", -0.1)))
    verdict = judge(scored(*tokens), budget=100)
    assert verdict.resync
    assert (verdict.accepted_chars, verdict.accepted_tokens, verdict.correction) == (0, 0, "")
    assert not verdict.ended


def test_tokens_that_start_at_the_verified_end_are_judged_as_usual() -> None:
    assert not judge(scored(*AGREE), budget=100).resync
