"""A chat as the exact prompt text llama.cpp would build for it.

Verify mode and edge re-drafting continue an assistant message from a given prefix,
which chat endpoints cannot do; the raw completion endpoint can, given the prompt the
chat endpoint would have built.  This renders it the way llama-cpp-python does (the
GGUF's Jinja template, else the named chat format), so a continuation scored or
generated through ``/v1/completions`` sees the same tokens as ``/v1/chat/completions``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, cast

from speculate.core.chat import Message
from speculate.core.trim import Window
from speculate.errors import ConfigError

MEMO_S = 1.0  # how long the last rendering is reused for the same chat


class ChatPrompt:
    def __init__(self, llama: Any) -> None:
        """``llama``: a ``llama_cpp.Llama`` (``vocab_only=True`` is enough)."""
        from llama_cpp import llama_chat_format

        self._format = llama_chat_format
        self._llama = llama
        self.chat_format = str(llama.chat_format)
        model = llama._model
        bos, eos = llama.token_bos(), llama.token_eos()
        self.bos_text = model.token_get_text(bos) if bos != -1 else ""
        self.eos_text = model.token_get_text(eos) if eos != -1 else ""
        self.adds_bos = bool(model.add_bos_token())
        # The last chat rendered, when, and its rendering: a request's prompt is rendered
        # on the event loop to fit it to the window, then on the decoding thread to run
        # it, moments later (a memo for that, not a cache: some templates write the date).
        self._last: tuple[tuple[object, ...], float, tuple[str, list[str]]] | None = None
        template = llama.metadata.get("tokenizer.chat_template")
        self._jinja = None
        if self.chat_format == "chat_template.default" and template:
            self._jinja = llama_chat_format.Jinja2ChatFormatter(
                template=template,
                eos_token=self.eos_text,
                bos_token=self.bos_text,
                stop_token_ids=[eos],
            )
        elif not hasattr(llama_chat_format, self._function_name()):
            raise ConfigError(f"no prompt renderer for the chat format {self.chat_format!r}")

    @classmethod
    def of_model(cls, path: Path) -> ChatPrompt:
        from llama_cpp import Llama

        return cls(Llama(model_path=str(path), vocab_only=True, verbose=False))

    def _function_name(self) -> str:
        return "format_" + self.chat_format.replace("-", "").replace(".", "_")

    def starts_with_bos(self, prompt: str) -> bool:
        """Does the tokenized ``prompt`` begin with the BOS token (added or written)?"""
        return bool(self.bos_text) and (self.adds_bos or prompt.startswith(self.bos_text))

    def count_tokens(self, messages: list[Message]) -> int:
        """How many tokens the model reads for this chat (its own tokenizer, BOS and the
        template's special tokens included)."""
        prompt = self.render(messages).encode("utf-8")
        return len(self._llama.tokenize(prompt, add_bos=True, special=True))

    def window(self, tokens: int, name: str) -> Window:
        """A window of ``tokens`` counted with this model's tokenizer and template."""
        return Window(tokens, self.count_tokens, name, self.token_bound)

    def token_bound(self, messages: list[Message]) -> int:
        """Never fewer than :meth:`count_tokens`, without tokenizing: no token of a
        byte-level BPE or of SentencePiece with byte fallback is shorter than one byte
        of the rendered prompt, except BOS and SentencePiece's leading space."""
        return len(self.render(messages).encode("utf-8")) + 2

    def render(self, messages: list[Message]) -> str:
        """The prompt text for ``/v1/completions`` (which adds BOS itself if the model
        wants one), ending where the assistant's answer begins."""
        return self.render_with_stops(messages)[0]

    def render_with_stops(self, messages: list[Message]) -> tuple[str, list[str]]:
        """The prompt text and the stop strings the chat endpoint would add for this
        format (a turn's end written as text, where it is not the model's EOS token)."""
        key, now = _plain_key(messages), time.monotonic()
        last = self._last  # (read once: the decoding thread and the event loop both render)
        if key is not None and last is not None and last[0] == key and now - last[1] < MEMO_S:
            prompt, stops = last[2]
            return prompt, list(stops)
        prompt, stops = self._render(messages)
        if key is not None:
            self._last = (key, now, (prompt, stops))
        return prompt, list(stops)

    def _render(self, messages: list[Message]) -> tuple[str, list[str]]:
        if self._jinja is not None:
            result = self._jinja(messages=cast(Any, messages))  # llama_cpp's TypedDicts
        else:
            result = getattr(self._format, self._function_name())(messages=messages)
        prompt = str(result.prompt)
        # The chat path adds BOS unless the text has it; completions adds it when the
        # model wants one. Never twice.
        if result.added_special and self.adds_bos and prompt.startswith(self.bos_text):
            prompt = prompt[len(self.bos_text) :]
        stop = result.stop
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        return prompt, stops


def _plain_key(messages: list[Message]) -> tuple[object, ...] | None:
    """Every field of every message, when all are text (None when one is not): what a
    rendering depends on, compared by value."""
    key = []
    for message in messages:
        fields = tuple(message.items())
        for _, value in fields:
            if value is not None and not isinstance(value, str):
                return None
        key.append(fields)
    return tuple(key)
