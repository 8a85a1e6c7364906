"""One error path: every error that ends a request before its stream is an exception
carrying its status, and one handler gives it the shape its route's clients expect."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from speculate import errors
from speculate.engine.context import Backends
from speculate.server import create_app
from speculate.server.errors import error_response
from speculate.settings import Settings
from tests.scripted import BookBackend, Script, ScriptBook
from tests.servers import serve_in_thread

OPENAI_SHAPE = {"message", "type", "param", "code"}
SPECULATE_SHAPE = {"code", "message"}


def every_error_class() -> list[type[errors.SpeculateError]]:
    found, todo = [], [errors.SpeculateError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


@pytest.mark.parametrize("cls", every_error_class(), ids=lambda cls: cls.__name__)
def test_every_error_has_a_status_and_both_shapes(cls: type[errors.SpeculateError]) -> None:
    exc = cls("what went wrong", 503) if cls is errors.CloudHTTPError else cls("what went wrong")
    assert 400 <= exc.http_status < 600
    openai = error_response(exc, "/v1/chat/completions")
    ours = error_response(exc, "/v1/speculate")
    assert openai.status_code == ours.status_code == exc.http_status
    assert b'"code":"' + exc.code.encode() + b'"' in openai.body
    assert b'"type":' in openai.body
    assert b'"type":' not in ours.body


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    book = ScriptBook({}, Script(draft="ok", cloud="ok"))
    backends = Backends(edge=BookBackend(book, "edge"), cloud=BookBackend(book, "cloud"))
    settings = Settings(
        server={"rate_per_minute": 60, "rate_burst": 2, "api_keys": ["k"]},
        store={"request_log": False},
    )  # type: ignore[arg-type]
    with serve_in_thread(create_app(settings, backends), settings) as base:
        yield base


def test_each_status_in_the_shape_of_its_route(url: str) -> None:
    key = {"Authorization": "Bearer k"}
    chat = {"model": "speculate", "messages": [{"role": "user", "content": "x"}]}
    with httpx.Client(base_url=url, timeout=10) as client:
        cases = [
            (client.post("/v1/speculate", content=b"{", headers=key), 400, SPECULATE_SHAPE),
            (client.post("/v1/chat/completions", content=b"{", headers=key), 400, OPENAI_SHAPE),
            (client.post("/v1/speculate", json={"messages": []}), 401, SPECULATE_SHAPE),
            (client.post("/v1/chat/completions", json=chat), 401, OPENAI_SHAPE),
            (client.get("/v1/speculate/nothing/events", headers=key), 404, SPECULATE_SHAPE),
            (client.get("/v1/requests/nothing", headers=key), 404, SPECULATE_SHAPE),
            (
                client.post("/v1/chat/completions", json={**chat, "model": "gpt"}, headers=key),
                404,
                OPENAI_SHAPE,
            ),
        ]
        for response, status, shape in cases:
            assert response.status_code == status, response.text
            assert set(response.json()["error"]) >= shape, response.text
            assert ("type" in response.json()["error"]) == (shape is OPENAI_SHAPE)
        assert cases[2][0].headers["www-authenticate"] == "Bearer"
        assert cases[6][0].json()["error"]["param"] == "model"
        limited = [
            client.post(
                "/v1/speculate",
                json={"messages": [{"role": "user", "content": "x"}], "mode": "edge"},
                headers=key,
            )
            for _ in range(4)
        ][-1]
        limited_openai = client.post("/v1/chat/completions", json=chat, headers=key)
    for response, shape in ((limited, SPECULATE_SHAPE), (limited_openai, OPENAI_SHAPE)):
        assert response.status_code == 429, response.text
        assert set(response.json()["error"]) >= shape
        assert int(response.headers["retry-after"]) >= 1


def test_the_error_a_task_group_wrapped_is_found() -> None:
    edge = errors.EdgeError("edge generation failed: the window is full")
    wrapped = ExceptionGroup("outer", [ExceptionGroup("inner", [ValueError("x"), edge])])
    assert errors.speculate_error_in(wrapped) is edge
    assert errors.speculate_error_in(ExceptionGroup("bug", [ValueError("x")])) is None


def test_a_task_groups_one_exception_is_given_back_as_itself() -> None:
    edge = errors.EdgeError("gone")
    with pytest.raises(errors.EdgeError) as raised, errors.unwrapped():
        raise ExceptionGroup("outer", [ExceptionGroup("inner", [edge])])
    assert raised.value is edge
    several = ExceptionGroup("two", [ValueError("a"), edge])
    with pytest.raises(ExceptionGroup) as kept, errors.unwrapped():
        raise several
    assert kept.value is several  # more than one: nothing to choose, raised as it is
