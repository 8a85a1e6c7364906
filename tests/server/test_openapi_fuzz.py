"""schemathesis against the JSON endpoints' OpenAPI schema, on a real in-process server.

Every generated request, valid or not, must get a documented status (never a 5xx
other than the documented 502/503), a documented content type and a body matching
the schema."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from speculate.engine.context import Backends
from speculate.server import create_app
from speculate.server.openapi import build_schema
from speculate.settings import Settings
from tests.scripted import BookBackend, Script, ScriptBook
from tests.servers import serve_in_thread

CONFIG = Settings(
    server={"rate_per_minute": 0, "max_tokens_limit": 64, "max_prompt_chars": 4000},  # type: ignore[arg-type]
    # A schema cannot say "no tools with personal data in the messages" (a 400 by policy,
    # tested in test_openai_fields): the fuzzer's generated text must not trip it.
    privacy={"policy": "off"},  # type: ignore[arg-type]
    store={"request_log": False, "queue": False, "cache": False},  # type: ignore[arg-type]
)
schema = schemathesis.openapi.from_dict(build_schema(CONFIG.server))


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    book = ScriptBook(
        {}, Script(draft="A draft.", cloud="An answer.", draft_delay_s=0.0, cloud_delay_s=0.0)
    )
    backends = Backends(edge=BookBackend(book, "edge"), cloud=BookBackend(book, "cloud"))
    config = CONFIG
    with serve_in_thread(create_app(config, backends), config) as url:
        yield url


def test_the_served_schema_is_the_built_one(base_url: str) -> None:
    assert httpx.get(f"{base_url}/openapi.json").json() == build_schema(CONFIG.server)


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms(case: schemathesis.Case, base_url: str) -> None:
    case.call_and_validate(base_url=base_url, timeout=20)
