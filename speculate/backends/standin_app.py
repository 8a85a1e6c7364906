"""The cloud stand-in's program: ``llama_cpp.server`` asked the way a vLLM server is asked.

Run as ``python -m speculate.backends.standin_app`` with ``llama_cpp.server``'s own flags.
In front of its routes sits a small ASGI layer that gives the stand-in what vLLM has and
``llama_cpp.server`` lacks, so verify mode takes the same request path against it as
against a vLLM deployment:

- ``POST /v1/chat/completions`` with ``prompt_logprobs``: the final (assistant) message is
  scored in one forward pass over the tokens not already in the KV cache; each position's
  top choice is the argmax of its logits row (no sort of the vocabulary), answered in
  vLLM's shape (per prompt token ``{token_id: {logprob, rank, decoded_token}}``).  Only the
  positions of the final message are filled (vLLM fills every prompt position); ``usage``
  carries ``prompt_tokens_details.cached_tokens``, as vLLM does.
- ``continue_final_message`` (with ``add_generation_prompt: false``): the open assistant
  message is continued, streamed as completion chunks.
- every other request gets vLLM's sampling defaults: no repetition penalty unless asked
  (``llama_cpp.server`` applies 1.1 even at temperature 0, so "greedy" would not be the
  argmax).
- ``stream_options.include_usage``: a streamed answer ends with a ``usage`` chunk, as
  vLLM's does (``llama_cpp.server`` sends none), so prompt and completion tokens are known.
  The prompt is counted as the answer ends, not before it starts, and a prompt counted
  before is not counted again: vLLM's count costs it nothing, and counting (the chat
  template, the tokenizer; first under the model's lock) held back the first token, or
  the last, by up to a millisecond that a client asking for usage would pay and one not
  asking would not.

``--reuse_prefix False`` starts every request from an empty KV cache.  llama.cpp's answer
then depends on its tokens alone: with a reused prefix it also depends on the request
before (where the cached tokens sit in the cache changes the order in which attention sums,
and a cache hit re-evaluates the prompt's last token alone instead of inside a batch), so a
repeated greedy call can part from the first on a near-tie.  Exactness tests run so, with
``--n_batch 1`` (prompts evaluated like generated tokens).
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import functools
import json
import os
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio

from speculate.backends.kv_states import common_prefix

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_BODY_BYTES = 16 << 20
COUNTS_KEPT = 256  # prompts whose token count is remembered
# Fields a continuation passes on to /v1/completions (sampling and limits).
CONTINUE_FIELDS = (
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "seed",
    "stop",
    "stream",
    "repeat_penalty",
    "presence_penalty",
    "frequency_penalty",
)


def score_final_message(
    llama: Any, prompt: Any, messages: list[dict[str, str]], *, reuse_prefix: bool = True
) -> dict[str, Any]:
    """vLLM's answer to ``prompt_logprobs: 1`` with ``max_tokens: 1`` at temperature 0, for
    the chat whose last (assistant) message is the continuation to score.

    The tokens of the chat text are evaluated after the longest prefix already in the KV
    cache (at least the last one, for fresh logits), in batches of ``n_batch``.
    """
    import numpy as np

    head = prompt.render(messages[:-1])
    text = head + str(messages[-1].get("content") or "")
    tokens: list[int] = llama.tokenize(text.encode("utf-8"), add_bos=True, special=True)
    head_tokens: list[int] = llama.tokenize(head.encode("utf-8"), add_bos=True, special=True)
    first = common_prefix(head_tokens, tokens)  # the final message's tokens start here
    cached = 0
    if reuse_prefix:
        cached = common_prefix(list(llama.input_ids[: llama.n_tokens]), tokens)
        cached = min(cached, len(tokens) - 1)
    else:
        forget(llama)
    llama.n_tokens = min(llama.n_tokens, cached)
    llama.eval(tokens[cached:])

    first = max(1, first)
    rows = llama.scores[first - 1 : len(tokens) - 1]
    own = np.asarray(tokens[first:], dtype=np.intp)
    best = rows.argmax(axis=1)
    peak = rows[np.arange(len(own)), best]
    norm = peak + np.log(np.exp(rows - peak[:, None]).sum(axis=1))
    own_logit = rows[np.arange(len(own)), own]
    rank = (rows > own_logit[:, None]).sum(axis=1) + 1

    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    decoder.decode(llama.detokenize(tokens[:first]))
    entries: list[dict[str, dict[str, Any]] | None] = [None] * first
    for i, token in enumerate(own.tolist()):
        entry = {
            str(token): {
                "logprob": float(own_logit[i] - norm[i]),
                "rank": int(rank[i]),
                "decoded_token": decoder.decode(llama.detokenize([token])),
            }
        }
        top = int(best[i])
        if top != token:
            entry[str(top)] = {
                "logprob": float(peak[i] - norm[i]),
                "rank": 1,
                "decoded_token": _piece(llama, top),
            }
        entries.append(entry)

    following = int(llama.scores[len(tokens) - 1].argmax())
    ends = bool(_is_end(llama, following))
    content = "" if ends else decoder.decode(llama.detokenize([following]))
    return {
        "object": "chat.completion",
        "model": "",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop" if ends else "length",
            }
        ],
        "prompt_logprobs": entries,
        "usage": {
            "prompt_tokens": len(tokens),
            "completion_tokens": 1,
            "total_tokens": len(tokens) + 1,
            "prompt_tokens_details": {"cached_tokens": cached},
        },
    }


def _json_mode(response_format: Any) -> Any:
    """OpenAI's (and vLLM's) ``json_schema`` format as llama-cpp-python's server takes
    it (``json_object`` with a ``schema``); anything else as it is."""
    if not isinstance(response_format, dict) or response_format.get("type") != "json_schema":
        return response_format
    schema = (response_format.get("json_schema") or {}).get("schema")
    return {"type": "json_object", **({"schema": schema} if schema else {})}


def _pieces_in(data: bytes) -> int:
    """How many SSE chunks in ``data`` carry text (``llama_cpp.server``: one per token)."""
    count = 0
    for line in data.splitlines():
        if line.startswith(b"data: {"):
            for choice in json.loads(line[6:]).get("choices") or []:
                count += bool(choice.get("text") or (choice.get("delta") or {}).get("content"))
    return count


def forget(llama: Any) -> None:
    """Empty the KV cache: the next evaluation starts from nothing, in cache order."""
    llama.reset()
    llama._ctx.kv_cache_clear()


def without_prefix_reuse(llama: Any) -> None:
    """Make every generation of ``llama`` start from an empty KV cache."""
    generate = llama.generate

    def fresh_generate(tokens: Any, *args: Any, **kwargs: Any) -> Any:
        forget(llama)
        return generate(tokens, *args, **kwargs)

    llama.generate = fresh_generate


def _piece(llama: Any, token: int) -> str:
    return bytes(llama.detokenize([token])).decode("utf-8", errors="replace")


def _is_end(llama: Any, token: int) -> bool:
    import llama_cpp

    return bool(llama_cpp.llama_vocab_is_eog(llama._model.vocab, token))


class VLLMShapes:
    """ASGI layer in front of ``llama_cpp.server``'s app (see the module docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        model: Callable[[], Any],
        *,
        tokenizer: Callable[[], Any],
        reuse_prefix: bool = True,
    ) -> None:
        """``model()``: an async context manager that holds the server's model lock and
        gives the ``Llama``, so scoring takes its turn with generation; ``tokenizer()``:
        the same ``Llama`` without the lock, for what reads only its vocabulary and chat
        template (counting a prompt), which generation does not change."""
        self.app = app
        self.model = model
        self.tokenizer = tokenizer
        self._counts: OrderedDict[str, int] = OrderedDict()  # prompt -> tokens, recent last
        self.reuse_prefix = reuse_prefix
        self._prompt: Any = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"] == "/v1/chat/completions"
        ):
            await self.app(scope, receive, send)
            return
        raw = await _read_body(receive)
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            await self._replay(scope, receive, send, raw)  # its own 4xx
            return
        if body.get("prompt_logprobs") is not None:
            await self._score(body, send)
            return
        usage = body.get("stream") and (body.get("stream_options") or {}).get("include_usage")
        continuing = bool(body.get("continue_final_message"))
        messages = body.get("messages") or []
        if usage:
            send = _with_usage(send, functools.partial(self._count_prompt, messages, continuing))
        if continuing:
            prompt = await self._prompt_of(messages, continuing)
            completion = {key: body[key] for key in CONTINUE_FIELDS if key in body}
            completion.update(model=body.get("model"), prompt=prompt)
            completion.setdefault("repeat_penalty", 1.0)
            scope = dict(scope, path="/v1/completions", raw_path=b"/v1/completions")
            await self._replay(scope, receive, send, json.dumps(completion).encode())
            return
        body.setdefault("repeat_penalty", 1.0)
        body["response_format"] = _json_mode(body.get("response_format"))
        await self._replay(scope, receive, send, json.dumps(body).encode())

    async def _prompt_of(self, messages: list[Any], continuing: bool) -> str:
        """The prompt text llama.cpp evaluates for this chat (an open assistant message
        continued, or a new one begun)."""
        async with self.model() as llama:
            return self._render(llama, messages, continuing)

    def _render(self, llama: Any, messages: list[Any], continuing: bool) -> str:
        chat = self._chat_prompt(llama)
        if continuing and messages:
            return str(chat.render(messages[:-1]) + str(messages[-1].get("content") or ""))
        return str(chat.render(messages))

    def _count_prompt(self, messages: list[Any], continuing: bool) -> int:
        """The prompt's length in tokens, as llama.cpp evaluated it; a conversation
        counted before is not counted again (the benchmarks ask the same one often)."""
        key = json.dumps([messages, continuing], sort_keys=True)
        count = self._counts.get(key)
        if count is None:
            llama = self.tokenizer()
            text = self._render(llama, messages, continuing)
            count = len(llama.tokenize(text.encode("utf-8"), add_bos=True, special=True))
            self._counts[key] = count
            if len(self._counts) > COUNTS_KEPT:
                self._counts.popitem(last=False)
        else:
            self._counts.move_to_end(key)
        return count

    async def _score(self, body: dict[str, Any], send: Send) -> None:
        messages = body.get("messages")
        if (
            not messages
            or not isinstance(messages, list)
            or messages[-1].get("role") != "assistant"
        ):
            problem = "prompt_logprobs needs an open assistant message last"
            await _json(send, 400, {"error": {"message": problem, "type": "invalid_request_error"}})
            return
        async with self.model() as llama:
            prompt = self._chat_prompt(llama)
            answer = await anyio.to_thread.run_sync(
                functools.partial(
                    score_final_message, llama, prompt, messages, reuse_prefix=self.reuse_prefix
                )
            )
        answer["model"] = body.get("model") or ""
        await _json(send, 200, answer)

    def _chat_prompt(self, llama: Any) -> Any:
        if self._prompt is None:
            from speculate.backends.chat_prompt import ChatPrompt

            self._prompt = ChatPrompt(llama)
        return self._prompt

    async def _replay(self, scope: Scope, receive: Receive, send: Send, body: bytes) -> None:
        headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(dict(scope, headers=headers), replay, send)


def _with_usage(send: Send, count_prompt: Callable[[], int]) -> Send:
    """``send`` with a usage chunk put before ``data: [DONE]`` (one token a chunk); the
    prompt is counted then."""
    chunks = 0

    async def send_with_usage(message: Message) -> None:
        nonlocal chunks
        data = message.get("body", b"") if message["type"] == "http.response.body" else b""
        if b"data: [DONE]" in data:
            prompt_tokens = count_prompt()
            usage = {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": chunks,
                "total_tokens": prompt_tokens + chunks,
            }
            line = json.dumps({"object": "chat.completion.chunk", "choices": [], "usage": usage})
            data = data.replace(b"data: [DONE]", f"data: {line}\n\ndata: [DONE]".encode())
            message = dict(message, body=data)
        else:
            chunks += _pieces_in(data)
        await send(message)

    return send_with_usage


async def _read_body(receive: Receive) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if size > MAX_BODY_BYTES or not message.get("more_body"):
            break
    return b"".join(chunks)


async def _json(send: Send, status: int, payload: dict[str, Any]) -> None:
    data = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


def main() -> None:
    import uvicorn
    from llama_cpp.server import app as server_app
    from llama_cpp.server.cli import add_args_from_model, parse_model_from_args
    from llama_cpp.server.settings import ModelSettings, ServerSettings, Settings

    parser = argparse.ArgumentParser(description="speculate's cloud stand-in")
    add_args_from_model(parser, Settings)
    parser.add_argument(
        "--reuse_prefix",
        type=lambda v: v.lower() == "true",
        default=True,
        help="False: every request starts from an empty KV cache",
    )
    args = parser.parse_args()
    reuse_prefix: bool = args.__dict__.pop("reuse_prefix")
    # (llama_cpp's annotations say it returns the class; it returns an instance)
    server_settings: Any = parse_model_from_args(ServerSettings, args)
    model_settings: Any = parse_model_from_args(ModelSettings, args)
    app = server_app.create_app(server_settings=server_settings, model_settings=[model_settings])
    alias = model_settings.model_alias or model_settings.model

    @contextlib.asynccontextmanager
    async def model() -> Any:
        async with contextlib.asynccontextmanager(server_app.get_llama_proxy)() as proxy:
            yield proxy(alias)

    def tokenizer() -> Any:  # the one model, loaded by create_app; no lock taken
        assert server_app._llama_proxy is not None
        return server_app._llama_proxy(alias)

    if not reuse_prefix:  # before serving: the one model, loaded by create_app
        assert server_app._llama_proxy is not None
        without_prefix_reuse(server_app._llama_proxy(alias))
    uvicorn.run(
        VLLMShapes(
            app,
            model,
            tokenizer=tokenizer,
            reuse_prefix=reuse_prefix,
        ),
        host=os.getenv("HOST", server_settings.host),
        port=int(os.getenv("PORT", str(server_settings.port))),
        log_level="warning",
    )


if __name__ == "__main__":
    main()
