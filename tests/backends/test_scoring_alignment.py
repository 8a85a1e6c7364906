"""Reading llama_cpp.server's echo when the prompt does not begin with a BOS token: its
log-probabilities are then one position late (checked against the real server, with a
prompt that does begin with BOS, in tests/integration/test_scoring.py)."""

from __future__ import annotations

from typing import Any, cast

from speculate.backends.chat_prompt import ChatPrompt
from speculate.backends.scoring import LlamaCppScoring

PROMPT = "Q: hi\nA:"


class NoBosPrompt:
    """The prompt text of a model without a BOS token (Qwen-like)."""

    def render(self, messages: list[dict[str, str]]) -> str:
        return PROMPT

    def starts_with_bos(self, prompt: str) -> bool:
        return False


def echo(tokens: list[str], tops: list[dict[str, float] | None]) -> dict[str, Any]:
    values = [
        None if top is None else top.get(token) for token, top in zip(tokens, tops, strict=True)
    ]
    return {
        "choices": [
            {
                "text": "".join(tokens),
                "finish_reason": "length",
                "logprobs": {
                    "tokens": tokens,
                    "token_logprobs": values,
                    "top_logprobs": tops,
                    "text_offset": [0] * len(tokens),
                },
            }
        ],
        "usage": {"prompt_tokens": 5},
    }


def test_without_bos_each_tokens_distribution_is_the_previous_entry() -> None:
    # Echo of "Q: hi\nA:" + " Hello" + generated " there"; entry i holds the
    # distribution computed at token i, i.e. the one that chose token i + 1.
    tokens = ["Q:", " hi", "\n", "A:", " Hello", " there"]
    tops: list[dict[str, float] | None] = [
        None,
        {" hi": -0.1},
        {"\n": -0.2},
        {"A:": -0.1},
        {" Hello": -0.3, " Hi": -1.2},
        {" there": -0.4, "!": -1.0},
    ]
    # As served: shifted one late, so the entry at " Hello" is really about " there".
    served = [None, *tops[2:], {"<eos>": -0.1}]
    scoring = LlamaCppScoring(cast(ChatPrompt, NoBosPrompt()))
    scored = scoring.parse_score(echo(tokens, served), [], " Hello")
    [hello] = scored.tokens
    assert (hello.text, hello.top[0]) == (" Hello", (" Hello", -0.3))
    assert hello.is_top
    assert scored.next_text == " there"
