"""A chat message as every layer passes it: ``{"role": ..., "content": ...}``.

``content`` is always text.  A conversation with tools also holds what OpenAI's API
adds: ``tool_calls`` on an assistant turn, ``tool_call_id`` (and ``name``) on a
``tool`` turn; a cloud gets them as they are, a text-only model gets :func:`as_text`.
"""

from __future__ import annotations

import json
from typing import Any

Message = dict[str, Any]


def as_text(messages: list[Message]) -> list[Message]:
    """The conversation as a model without tools reads it: a tool's result becomes a
    user turn that says whose result it is, a tool call becomes assistant text; only
    ``role`` and ``content`` are left."""
    if all(m["role"] != "tool" and not m.get("tool_calls") for m in messages):
        return messages
    plain: list[Message] = []
    for message in messages:
        role, content = message["role"], str(message.get("content") or "")
        if role == "tool":
            name = message.get("name") or message.get("tool_call_id") or "a tool"
            plain.append({"role": "user", "content": f"[result of {name}]\n{content}"})
            continue
        calls = [
            f"[calls {c['function']['name']}({json.dumps(c['function']['arguments'])})]"
            for c in message.get("tool_calls") or []
        ]
        plain.append({"role": role, "content": "\n".join(filter(None, [content, *calls]))})
    return plain
