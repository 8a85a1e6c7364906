"""The message schema the API publishes and the checks the server runs agree."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
from pydantic import ValidationError

from speculate.server.schemas import MESSAGE_SCHEMA, ChatMessage

CALL = {"id": "c1", "type": "function", "function": {"name": "now", "arguments": "{}"}}
MESSAGES = [
    ({"role": "user", "content": "hi"}, True),
    ({"role": "user", "content": "hi", "tool_calls": []}, True),  # as some SDKs send it
    ({"role": "user", "content": "hi", "tool_calls": [CALL]}, False),
    ({"role": "tool", "content": "12:00", "tool_call_id": "c1", "tool_calls": []}, True),
    ({"role": "tool", "content": "12:00", "tool_call_id": "c1", "tool_calls": [CALL]}, False),
    ({"role": "tool", "content": "12:00"}, False),
    ({"role": "assistant", "tool_calls": [CALL]}, True),
    ({"role": "assistant", "content": None, "tool_calls": [CALL]}, True),
]


@pytest.mark.parametrize(("message", "valid"), MESSAGES)
def test_the_published_schema_and_the_checks_agree(message: dict[str, Any], valid: bool) -> None:
    published = jsonschema.Draft202012Validator(MESSAGE_SCHEMA).is_valid(message)
    try:
        ChatMessage.model_validate(message)
        checked = True
    except ValidationError:
        checked = False
    assert (published, checked) == (valid, valid)
