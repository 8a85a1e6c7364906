"""Conversations that last, in Chromium against a real server: kept in the browser,
listed in the sidebar, restored on reload (a running answer resumed from the server),
asked again, driven from the keyboard, and an API key asked for when the server
wants one."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from speculate.engine.context import Backends
from speculate.server import create_app
from speculate.settings import Settings
from tests.scripted import BookBackend, ScriptBook
from tests.servers import serve_in_thread
from tests.web.conftest import DEFAULT, SCRIPTS, ScriptedServer
from tests.web.test_ui import ask, last_answer, server_text, wait_settled

pytestmark = pytest.mark.slow


def chips(page: Page) -> list[str]:
    return [str(t) for t in last_answer(page).locator(".chip").all_inner_texts()]


def test_a_reload_restores_answers_with_route_timings_and_draft_vs_final(
    page: Page, scripted_server: ScriptedServer
) -> None:
    page.goto(scripted_server.url)
    ask(page, "Tell me about the Eiffel Tower")
    request_id = wait_settled(page)
    badge, timings = last_answer(page).locator(".badge").inner_text(), chips(page)
    text = last_answer(page).locator(".text").inner_text()
    page.reload()
    expect(page.locator("article.user")).to_have_text(["Tell me about the Eiffel Tower"])
    expect(last_answer(page)).to_have_attribute("data-state", "done")
    expect(last_answer(page).locator(".badge")).to_have_text(badge)
    assert chips(page) == timings
    assert last_answer(page).locator(".text").inner_text() == text
    assert text.startswith("The Eiffel Tower is in Paris.")
    page.get_by_role("button", name="Show draft vs final").click()
    expect(last_answer(page).locator(".diff ins").first).to_be_visible()
    expect(last_answer(page).locator(".diff del").first).to_be_visible()
    # The conversation goes on from what was kept: the cloud's answer is the context.
    ask(page, "Hello again")
    wait_settled(page)
    asked = scripted_server.book.asked[-1]
    assert [m["role"] for m in asked] == ["user", "assistant", "user"]
    assert asked[1]["content"] == server_text(scripted_server.url, request_id)["text"]


def test_the_sidebar_lists_switches_renames_and_deletes(
    page: Page, scripted_server: ScriptedServer
) -> None:
    page.goto(scripted_server.url)
    ask(page, "Hello first chat")
    wait_settled(page)
    page.click("#new-chat")
    ask(page, "Hello second chat")
    wait_settled(page)
    chats = page.locator("#chats .chat")
    expect(chats).to_have_text(["Hello second chat", "Hello first chat"])
    chats.nth(1).click()
    expect(page.locator("article.user")).to_have_text(["Hello first chat"])
    expect(page.locator("#chats .chat[aria-current=true]")).to_have_text("Hello first chat")
    page.get_by_role("button", name="Rename “Hello first chat”").click()
    page.locator("#chats .rename-field").fill("Greetings")
    page.keyboard.press("Enter")
    page.reload()
    expect(page.locator("#chats .chat[aria-current=true]")).to_have_text("Greetings")
    expect(page.locator("article.user")).to_have_text(["Hello first chat"])
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete “Hello second chat”").click()
    expect(chats).to_have_text(["Greetings"])
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete “Greetings”").click()
    expect(chats).to_have_count(0)
    expect(page.locator("main article")).to_have_count(0)


@pytest.mark.parametrize("transport", ["ws", "sse"])
def test_an_answer_running_at_reload_is_resumed(
    page: Page, scripted_server: ScriptedServer, transport: str
) -> None:
    page.goto(scripted_server.url)
    ask(page, "Long answer please", transport=transport)
    expect(last_answer(page).locator(".text")).to_contain_text("word5", timeout=10_000)
    page.reload()
    request_id = wait_settled(page, timeout_ms=60_000)
    final = server_text(scripted_server.url, request_id)["text"]
    assert page.evaluate(f"window.speculate.answers.get('{request_id}').shown.text") == final
    page.reload()  # and it is kept finished
    expect(last_answer(page)).to_have_attribute("data-state", "done")


def test_regenerate_asks_the_last_question_again(
    page: Page, scripted_server: ScriptedServer
) -> None:
    page.goto(scripted_server.url)
    ask(page, "Hello there")
    first = wait_settled(page)
    page.get_by_role("button", name="Regenerate").click()
    second = wait_settled(page)
    assert second != first
    expect(page.locator("article.answer")).to_have_count(1)
    assert scripted_server.book.asked[-1] == [{"role": "user", "content": "Hello there"}]
    page.keyboard.press("Control+Shift+Enter")  # the same from the keyboard
    expect(page.locator("article.answer")).to_have_count(1)
    third = wait_settled(page)
    assert third not in (first, second)


def test_keyboard_shortcuts_are_listed_and_work(
    page: Page, scripted_server: ScriptedServer
) -> None:
    page.goto(scripted_server.url)
    page.click("#keys summary")
    expect(page.locator("#keys dl")).to_contain_text("stop the answer")
    page.click("#keys summary")
    ask(page, "Long answer please")
    expect(last_answer(page).locator(".text")).to_contain_text("word3", timeout=10_000)
    page.keyboard.press("Escape")
    wait_settled(page, "cancelled", timeout_ms=10_000)
    page.locator("#theme").focus()
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.id") == "prompt"
    page.keyboard.press("Control+Shift+O")
    expect(page.locator("main article")).to_have_count(0)


@pytest.fixture(scope="module")
def keyed_server() -> Iterator[str]:
    book = ScriptBook(dict(SCRIPTS), DEFAULT)
    backends = Backends(edge=BookBackend(book, "edge"), cloud=BookBackend(book, "cloud"))
    settings = Settings(
        server={"api_keys": ["sk-ui-key-1"], "rate_per_minute": 0},
        store={"request_log": False, "queue": False, "cache": False},
    )  # type: ignore[arg-type]
    with serve_in_thread(create_app(settings, backends), settings) as url:
        yield url


@pytest.mark.parametrize("transport", ["ws", "sse"])
def test_a_server_that_wants_a_key_gets_one_asked_for_and_kept(
    page: Page, keyed_server: str, transport: str
) -> None:
    sockets: list[Any] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    page.goto(keyed_server)
    ask(page, "Hello there", transport=transport)
    expect(page.locator("#key-dialog")).to_be_visible(timeout=10_000)
    page.fill("#key", "sk-ui-key-1")
    page.click("#key-save")
    if transport == "sse":  # the refused request ended; asked again with the key
        ask(page, "Hello there", transport=transport)
    wait_settled(page)
    page.reload()
    ask(page, "Hello again", transport=transport)
    wait_settled(page)
    expect(page.locator("#key-dialog")).to_be_hidden()
    assert all("sk-ui-key" not in url for url in sockets)  # never in a URL
