"""The two request shapes verify mode uses, and how to read their answers.

*llama.cpp* (``llama_cpp.server``, started with ``logits_all``): ``/v1/completions`` on
the chat's prompt text plus the continuation, ``echo`` with ``logprobs``.  Its echo
pairs token ``i`` with the logits computed at token ``i`` (which predict the next one)
after dropping a leading BOS token: with a prompt that begins with BOS, as the embedded
models' do, each ``top_logprobs[i]`` is the distribution that chose token ``i`` (a test
pins this against the real server); without one it is off by one, and is shifted back.
Special tokens echo as empty strings, so positions are recovered by walking back from
the end of the echoed text to the continuation.

*vLLM*: ``/v1/chat/completions`` with the continuation as an open assistant message
(``continue_final_message``, ``add_generation_prompt: false``) and ``prompt_logprobs``:
one entry per prompt token (``null`` first), each a map of token id to
``{logprob, rank, decoded_token}`` holding the prompt's own token and, if that was not
the top choice, the rank-1 token too.

Both also generate one token, the cloud's own next one after the continuation.
"Greedy" means the argmax of the model's distribution, which is what prompt
log-probabilities rank, and every request to the cloud means the same by it (``sampling``
is added to chat requests too): ``llama_cpp.server`` applies a repeat penalty of 1.1 by
default even at temperature 0, so its requests ask for 1.0; vLLM's default is already none.
"""

from __future__ import annotations

from typing import Any, Protocol

from speculate.backends.base import GenerationParams
from speculate.backends.chat_prompt import ChatPrompt
from speculate.core.chat import Message
from speculate.core.verify import Scored, ScoredToken
from speculate.errors import CloudProtocolError, describe


class Scoring(Protocol):
    flavor: str
    sampling: dict[str, Any]  # added to every generation request: what greedy means

    def score_request(
        self, model: str, messages: list[Message], continuation: str
    ) -> tuple[str, dict[str, Any]]: ...

    def parse_score(self, body: Any, messages: list[Message], continuation: str) -> Scored: ...

    def continue_request(
        self, model: str, messages: list[Message], prefix: str, params: GenerationParams
    ) -> tuple[str, dict[str, Any]]: ...


def _scored(tokens: list[ScoredToken], generated: str, finish: Any, prompt_tokens: int) -> Scored:
    """Both shapes' verdict: the cloud ends right after the continuation when the one
    token it generated was the end of its answer (nothing generated, finish "stop")."""
    return Scored(
        tuple(tokens),
        generated,
        finished=finish == "stop" and not generated,
        prompt_tokens=prompt_tokens,
    )


def _top(entries: dict[str, float] | None) -> tuple[tuple[str, float], ...]:
    ranked = sorted((entries or {}).items(), key=lambda item: -item[1])
    return tuple((text, float(logprob)) for text, logprob in ranked)


class LlamaCppScoring:
    flavor = "llamacpp"
    sampling: dict[str, Any] = {"repeat_penalty": 1.0}  # noqa: RUF012 - read only

    def __init__(self, prompt: ChatPrompt) -> None:
        self.prompt = prompt

    def score_request(
        self, model: str, messages: list[Message], continuation: str
    ) -> tuple[str, dict[str, Any]]:
        return "/completions", {
            "model": model,
            "prompt": self.prompt.render(messages) + continuation,
            "max_tokens": 1,
            "temperature": 0.0,
            **self.sampling,
            "echo": True,
            "logprobs": 2,
        }

    def parse_score(self, body: Any, messages: list[Message], continuation: str) -> Scored:
        try:
            choice = body["choices"][0]
            text: str = choice["text"]
            logprobs = choice["logprobs"]
            tokens: list[str] = logprobs["tokens"]
            values: list[float | None] = logprobs["token_logprobs"]
            tops: list[dict[str, float] | None] = logprobs["top_logprobs"]
            finish = choice.get("finish_reason")
            prompt_tokens = int((body.get("usage") or {}).get("prompt_tokens") or 0)
        except (KeyError, IndexError, TypeError) as exc:
            raise CloudProtocolError(f"unexpected completions answer: {describe(exc)}") from exc
        prompt = self.prompt.render(messages)
        base = len(prompt)
        scored_end = base + len(continuation)
        if not text.startswith(prompt + continuation):
            raise CloudProtocolError("the echoed text is not the prompt and continuation")
        if not self.prompt.starts_with_bos(prompt):
            # llama-cpp-python pairs token i with the logits computed *at* token i (which
            # predict token i + 1); it only lines up because it drops a leading BOS. Without
            # one, token i's distribution is the previous entry's.
            tops = [None, *tops[:-1]]
            pairs = zip(tokens, tops, strict=True)
            values = [None if top is None else top.get(token) for token, top in pairs]
        # Walk back from the end: special tokens in the prompt have no text in the echo,
        # so only the stretch from the continuation onwards can be (and is) checked.
        out: list[ScoredToken] = []
        end = len(text)
        for token, value, top in reversed(list(zip(tokens, values, tops, strict=True))):
            if end <= base:
                break
            start = end - len(token)
            if not token or text[start:end] != token:
                raise CloudProtocolError("echoed tokens do not spell the text (split characters)")
            if start < scored_end:
                out.append(ScoredToken(start - base, token, value, _top(top)))
            end = start
        out.reverse()
        generated = text[scored_end:]
        return _scored(out, generated, finish, prompt_tokens)

    def continue_request(
        self, model: str, messages: list[Message], prefix: str, params: GenerationParams
    ) -> tuple[str, dict[str, Any]]:
        return "/completions", {
            "model": model,
            "prompt": self.prompt.render(messages) + prefix,
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "stream": True,
            **self.sampling,
        }


class VLLMScoring:
    flavor = "vllm"
    sampling: dict[str, Any] = {}  # noqa: RUF012 - vLLM applies no penalty unless asked

    @staticmethod
    def _open(messages: list[Message], text: str) -> list[Message]:
        return [*messages, {"role": "assistant", "content": text}]

    def score_request(
        self, model: str, messages: list[Message], continuation: str
    ) -> tuple[str, dict[str, Any]]:
        return "/chat/completions", {
            "model": model,
            "messages": self._open(messages, continuation),
            "continue_final_message": True,
            "add_generation_prompt": False,
            "prompt_logprobs": 1,
            "max_tokens": 1,
            "temperature": 0.0,
        }

    def parse_score(self, body: Any, messages: list[Message], continuation: str) -> Scored:
        try:
            entries: list[dict[str, dict[str, Any]] | None] = body["prompt_logprobs"]
            choice = body["choices"][0]
            generated = choice["message"].get("content") or ""
            finish = choice.get("finish_reason")
            prompt_tokens = int((body.get("usage") or {}).get("prompt_tokens") or len(entries))
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise CloudProtocolError(f"unexpected prompt_logprobs answer: {describe(exc)}") from exc
        out: list[ScoredToken] = []
        end = len(continuation)
        for entry in reversed(entries):
            if end <= 0 or entry is None:
                break
            ranked = sorted(entry.values(), key=lambda e: int(e.get("rank") or 1))
            own = ranked[-1] if len(ranked) > 1 else ranked[0]  # the prompt's own token
            token = str(own.get("decoded_token") or "")
            top = tuple((str(e.get("decoded_token") or ""), float(e["logprob"])) for e in ranked)
            start = end - len(token)
            out.append(ScoredToken(start, token, float(own["logprob"]), top))
            end = start
        out.reverse()
        if out and not continuation.endswith("".join(t.text for t in out if t.start >= 0)):
            raise CloudProtocolError("prompt tokens do not spell the continuation")
        return _scored(out, generated, finish, prompt_tokens)

    def continue_request(
        self, model: str, messages: list[Message], prefix: str, params: GenerationParams
    ) -> tuple[str, dict[str, Any]]:
        return "/chat/completions", {
            "model": model,
            "messages": self._open(messages, prefix),
            "continue_final_message": True,
            "add_generation_prompt": False,
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
