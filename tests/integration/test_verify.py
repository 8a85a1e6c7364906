"""Verify mode is lossless: at temperature 0 its answer is the cloud's own greedy answer.

Ten fixed prompts each, SmolLM2 edge against a SmolLM2 and against a Gemma stand-in
(another tokenizer), compared with a direct greedy call to the same server.  The
stand-ins run with ``n_batch 1`` so that a scored prompt and a generated answer go
through the same arithmetic (batched prefill differs from one-token decoding by up to
~0.2 in log-probability on these Q4 CPU models, which flips near-ties either way).
A mismatch would be accepted only where the cloud's top two choices at the divergence
are within 1e-3; every one is printed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from speculate.backends import models
from speculate.backends.chat_prompt import ChatPrompt
from speculate.backends.scoring import LlamaCppScoring
from speculate.client import stream_sse
from speculate.core.text import ShownText
from tests.servers import ServerProcess, start_server

pytestmark = pytest.mark.slow

CONFIGS = Path(__file__).resolve().parent.parent.parent / "configs"
MAX_TOKENS = 24
NEAR_TIE = 1e-3
CHAT_PROMPTS = [
    "Name three colours.",
    "What is the capital of France?",
    "Give me two tips for sleeping well.",
    "Write a haiku about rain.",
    "Explain what a CPU does in one sentence.",
    "List three fruits.",
    "How do plants make food?",
    "Say hello in French.",
    "What is 12 times 12?",
    "Describe a cat in one sentence.",
]
# Gemma 3 270M is a base model: it continues text (and ends at once on many questions).
BASE_PROMPTS = [
    "The three primary colours are",
    "Paris is the capital of",
    "Dogs are loyal animals that",
    "The capital of Italy is",
    "The sun rises in the",
    "Mount Everest is the",
    "Photosynthesis is the process by which",
    "The Eiffel Tower was built in",
    "Cats are popular pets because",
    "A haiku is a short poem that",
]
# The stand-in computes every answer alike: prompts token by token (n_batch 1) and from an
# empty KV cache (no prefix reuse), so an answer depends on its tokens alone.
ENV = {
    "SPECULATE_CLOUD__STANDIN__N_BATCH": "1",
    "SPECULATE_CLOUD__STANDIN__REUSE_PREFIX": "false",
    "SPECULATE_EDGE__MAX_TOKENS": str(MAX_TOKENS),
}


@pytest.fixture(scope="module")
def smollm_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = start_server(str(tmp_path_factory.mktemp("verify-smollm")), ENV)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def gemma_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = start_server(
        str(tmp_path_factory.mktemp("verify-gemma")),
        ENV,
        "--config",
        str(CONFIGS / "gemma-cloud.yaml"),
    )
    yield proc
    proc.stop()


def messages(prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}]


async def answer(server: ServerProcess, prompt: str, mode: str = "verify") -> ShownText:
    shown = ShownText()
    body = {"messages": messages(prompt), "mode": mode, "max_tokens": MAX_TOKENS, "temperature": 0}
    async for event in stream_sse(server.url, body):
        shown.apply(event)  # every invariant, event by event
    return shown


async def greedy(cloud: dict[str, Any], prompt: str) -> str:
    async with httpx.AsyncClient(timeout=120) as client:
        response = await client.post(
            f"{cloud['base_url']}/chat/completions",
            json={
                "model": cloud["model"],
                "messages": messages(prompt),
                "max_tokens": MAX_TOKENS,
                "temperature": 0,
                "repeat_penalty": 1.0,  # greedy: the argmax
            },
        )
    return str(response.json()["choices"][0]["message"]["content"])


async def margin_at_divergence(
    cloud: dict[str, Any], model: str, prompt: str, ours: str, expected: str
) -> float:
    """Top-1 minus top-2 log-probability of the cloud where the two texts part."""
    common = 0
    while common < min(len(ours), len(expected)) and ours[common] == expected[common]:
        common += 1
    scoring = LlamaCppScoring(ChatPrompt.of_model(models.resolve(model)))
    path, body = scoring.score_request(cloud["model"], messages(prompt), expected)
    async with httpx.AsyncClient(timeout=120) as client:
        answer = (await client.post(f"{cloud['base_url']}{path}", json=body)).json()
    scored = scoring.parse_score(answer, messages(prompt), expected)
    token = next(t for t in scored.tokens if t.end > common)
    return token.top[0][1] - token.top[1][1]


def check_lossless(server: ServerProcess, model: str, prompts: list[str]) -> dict[str, Any]:
    cloud = httpx.get(f"{server.url}/readyz", timeout=10).json()["cloud"]

    async def main() -> dict[str, Any]:
        report: dict[str, Any] = {"mismatches": [], "accepted": 0, "rejected": 0, "texts": []}
        for prompt in prompts:
            with anyio.fail_after(180):
                shown = await answer(server, prompt)
                expected = await greedy(cloud, prompt)
            assert shown.done is not None, prompt
            stats = shown.done.stats
            assert shown.done.final_source == "cloud"
            report["accepted"] += stats["accepted_tokens"]
            report["rejected"] += stats["rejected_tokens"]
            report["texts"].append(shown.text)
            if shown.text != expected:
                margin = await margin_at_divergence(cloud, model, prompt, shown.text, expected)
                report["mismatches"].append((prompt, shown.text, expected, margin))
        return report

    report = anyio.run(main)
    scored = report["accepted"] + report["rejected"]
    print(
        f"\nverify against {model}: {len(prompts) - len(report['mismatches'])}/{len(prompts)} "
        f"equal to greedy; draft tokens accepted {report['accepted']}/{scored}"
    )
    for prompt, ours, expected, margin in report["mismatches"]:
        print(
            f"  mismatch on {prompt!r} (top-2 margin {margin:.2e}):\n    {ours!r}\n    {expected!r}"
        )
    assert all(margin < NEAR_TIE for *_, margin in report["mismatches"]), report["mismatches"]
    return report


def test_verify_equals_greedy_with_a_smollm2_cloud(smollm_cloud: ServerProcess) -> None:
    report = check_lossless(smollm_cloud, "smollm2-135m", CHAT_PROMPTS)
    assert report["accepted"] > 0  # the same model family: much of the draft is kept


def test_verify_equals_greedy_with_a_gemma_cloud_and_another_tokenizer(
    gemma_cloud: ServerProcess,
) -> None:
    report = check_lossless(gemma_cloud, "gemma3-270m", BASE_PROMPTS)
    # Drafts in SmolLM2's tokens were scored by Gemma in its own: something was judged ...
    assert report["accepted"] + report["rejected"] > 0
    # ... and the continuations are real answers (a base model may end at once on a few).
    assert sum(1 for text in report["texts"] if text.strip()) >= len(BASE_PROMPTS) // 2


def test_verify_cloud_and_speculative_end_with_the_same_text_at_temperature_0(
    smollm_cloud: ServerProcess,
) -> None:
    """One definition of greedy: whichever way the cloud is asked (chat, scoring,
    continuation), temperature 0 means its argmax, so the three modes agree."""

    async def main() -> list[tuple[str, dict[str, str]]]:
        finals = []
        for prompt in CHAT_PROMPTS[:6]:
            by_mode = {}
            for mode in ("cloud", "speculative", "verify"):
                with anyio.fail_after(120):
                    shown = await answer(smollm_cloud, prompt, mode)
                assert shown.done is not None, mode
                assert shown.done.final_source == "cloud", mode
                by_mode[mode] = shown.text
            finals.append((prompt, by_mode))
        return finals

    for prompt, by_mode in anyio.run(main):
        assert by_mode["cloud"], prompt
        assert by_mode["speculative"] == by_mode["cloud"], prompt
        assert by_mode["verify"] == by_mode["cloud"], prompt
