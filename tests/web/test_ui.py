"""The browser chat UI in a real Chromium."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from speculate.core.protocol import SpliceOp
from speculate.core.text import apply_ops
from tests.servers import ServerProcess
from tests.web.conftest import DropProxy, ScriptedServer

WATCH = """() => {
  window.__snaps = [];
  const record = () => {
    const a = document.querySelector('article.answer:last-of-type');
    if (a) window.__snaps.push({state: a.dataset.state, text: a.querySelector('.text').textContent,
      draft: !!a.querySelector('.text .draft'), fresh: !!a.querySelector('.text .fresh')});
  };
  new MutationObserver(record).observe(document.querySelector('main'),
    {subtree: true, childList: true, characterData: true, attributes: true});
}"""


def ask(page: Page, prompt: str, *, mode: str = "speculative", transport: str = "ws") -> None:
    page.select_option("#mode", mode)
    page.select_option("#transport", transport)
    page.fill("#prompt", prompt)
    page.press("#prompt", "Enter")


def last_answer(page: Page) -> Any:
    return page.locator("article.answer").last


def wait_settled(page: Page, state: str = "done", timeout_ms: int = 120_000) -> str:
    answer = last_answer(page)
    expect(answer).to_have_attribute("data-state", state, timeout=timeout_ms)
    return str(answer.get_attribute("data-request-id"))


def model_text(page: Page, request_id: str) -> str:
    return str(page.evaluate("id => window.speculate.answers.get(id).shown.text", request_id))


def server_text(url: str, request_id: str) -> dict[str, Any]:
    result: dict[str, Any] = httpx.get(f"{url}/v1/requests/{request_id}", timeout=10).json()
    return result


@pytest.mark.slow
def test_real_models_draft_first_then_exactly_the_final_answer(
    page: Page, server: ServerProcess
) -> None:
    page.goto(server.url)
    page.evaluate(WATCH)
    ask(page, "What is the capital of France? Answer in two sentences.")
    request_id = wait_settled(page)
    snaps = page.evaluate("window.__snaps")
    streaming = [s for s in snaps if s["state"] == "streaming" and s["text"]]
    assert streaming, "no text was visible before the final answer"
    result = server_text(server.url, request_id)
    assert result["state"] == "done"
    assert model_text(page, request_id) == result["text"]
    badge = last_answer(page).locator(".badge")
    expect(badge).to_contain_text("final from cloud")
    expect(last_answer(page).locator(".chip")).to_have_count(6)
    expect(page.locator("#cloud-state")).to_contain_text("cloud: up")


@pytest.mark.parametrize("transport", ["ws", "sse"])
def test_both_transports_end_with_the_server_text(
    page: Page, scripted_server: ScriptedServer, transport: str
) -> None:
    page.goto(scripted_server.url)
    page.evaluate(WATCH)
    ask(page, "Tell me about the Eiffel Tower", transport=transport)
    request_id = wait_settled(page)
    snaps = [s for s in page.evaluate("window.__snaps") if s["state"] == "streaming"]
    assert any(s["draft"] for s in snaps), "the draft was never shown in draft style"
    assert any(s["fresh"] for s in snaps), "no correction was highlighted"
    expected = server_text(scripted_server.url, request_id)["text"]
    assert expected.startswith("The Eiffel Tower is in Paris. It was completed in 1889")
    assert model_text(page, request_id) == expected
    # After completion the draft can be compared with the final answer.
    page.get_by_role("button", name="Show draft vs final").click()
    diff = last_answer(page).locator(".diff")
    expect(diff.locator("del").first).to_be_visible()
    expect(diff.locator("ins").first).to_be_visible()
    expect(diff).to_contain_text("1899")


@pytest.mark.parametrize("transport", ["ws", "sse"])
def test_a_queued_refinement_arrives_later_on_the_same_answer(
    page: Page, scripted_server: ScriptedServer, transport: str
) -> None:
    """The cloud refuses the first call: the draft stands provisionally ("queued"), the
    queue runs the refinement at once (the circuit is still closed) and the page, still
    connected, patches the same answer into the cloud's text."""
    page.goto(scripted_server.url)
    page.evaluate(WATCH)
    ask(page, "Offline please", transport=transport)
    request_id = wait_settled(page)
    states = [s["state"] for s in page.evaluate("window.__snaps")]
    assert "queued" in states, states
    queued = next(s for s in page.evaluate("window.__snaps") if s["state"] == "queued")
    assert queued["text"] == "The draft answers while the cloud is away."
    assert model_text(page, request_id) == "The cloud's refined answer, delivered later."
    result = server_text(scripted_server.url, request_id)
    assert (result["text"], result["final_source"]) == (model_text(page, request_id), "cloud")
    expect(last_answer(page).locator(".badge")).to_have_text("speculative · final from cloud")
    # The refined answer is what the next turn is asked with.
    history = page.evaluate("window.speculate.history")
    assert history[-1] == {"role": "assistant", "content": result["text"]}


@pytest.mark.parametrize("transport", ["ws", "sse"])
def test_stop_cancels_the_request(
    page: Page, scripted_server: ScriptedServer, transport: str
) -> None:
    page.goto(scripted_server.url)
    ask(page, "Long answer please", transport=transport)
    expect(last_answer(page).locator(".text")).to_contain_text("word3", timeout=10_000)
    page.click("#stop")
    request_id = wait_settled(page, "cancelled", timeout_ms=10_000)
    result = server_text(scripted_server.url, request_id)
    assert result["state"] == "failed"
    assert result["error"]["code"] == "cancelled"
    expect(page.locator("#stop")).to_be_disabled()


def test_new_chat_clears_the_history(page: Page, scripted_server: ScriptedServer) -> None:
    page.goto(scripted_server.url)
    ask(page, "Hello one")
    wait_settled(page)
    ask(page, "Hello two")
    wait_settled(page)
    assert len(scripted_server.book.asked[-1]) == 3  # user, assistant, user
    page.click("#new-chat")
    expect(page.locator("main article")).to_have_count(0)
    assert page.evaluate("window.speculate.history.length") == 0
    ask(page, "Hello three")
    wait_settled(page)
    assert scripted_server.book.asked[-1] == [{"role": "user", "content": "Hello three"}]


def test_typing_the_next_question_sends_the_conversation_ahead(
    page: Page, scripted_server: ScriptedServer
) -> None:
    page.goto(scripted_server.url)
    ask(page, "Hello one")
    wait_settled(page)
    with page.expect_request(lambda r: r.url.endswith("/v1/prewarm"), timeout=10_000) as sent:
        page.locator("#prompt").press_sequentially("And then")
    body = sent.value.post_data_json
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][0]["content"] == "Hello one"
    assert body["messages"][2]["content"].startswith("And")
    response = sent.value.response()
    assert response is not None
    assert response.status == 200
    page.press("#prompt", "Enter")
    wait_settled(page)
    # The next turn goes ahead again, now with five messages.
    with page.expect_request(lambda r: r.url.endswith("/v1/prewarm"), timeout=10_000) as again:
        page.locator("#prompt").press_sequentially("More")
    assert len(again.value.post_data_json["messages"]) == 5


def test_model_and_user_text_stay_inert(page: Page, scripted_server: ScriptedServer) -> None:
    response = page.goto(scripted_server.url)
    assert response is not None
    assert "script-src 'self'" in response.headers["content-security-policy"]
    ask(page, 'Inject <img src=x onerror="window.__pwned=5"><script>window.__pwned=6</script>')
    wait_settled(page)
    assert page.evaluate("window.__pwned") is None
    assert page.locator("main img, main script").count() == 0
    answer = last_answer(page)
    expect(answer.locator(".text")).to_contain_text("<script>window.__pwned=2</script>")
    expect(answer.locator("pre code")).to_have_text("<script>window.__pwned=4</script>")
    expect(answer.locator("li strong")).to_have_text("list")
    expect(page.locator("article.user")).to_contain_text("<img src=x onerror=")
    # The diff view is built from the same untrusted text.
    page.get_by_role("button", name="Show draft vs final").click()
    assert page.evaluate("window.__pwned") is None
    assert page.locator("main img, main script").count() == 0


@pytest.fixture
def proxy(scripted_server: ScriptedServer) -> Iterator[DropProxy]:
    port = int(scripted_server.url.rsplit(":", 1)[1])
    drop = DropProxy(port)
    yield drop
    drop.close()


@pytest.mark.parametrize("transport", ["ws", "sse"])
def test_connection_drop_mid_answer_reconnects_and_resumes(
    page: Page, scripted_server: ScriptedServer, proxy: DropProxy, transport: str
) -> None:
    page.goto(f"http://127.0.0.1:{proxy.port}")
    ask(page, "Tell me about the Eiffel Tower", transport=transport)
    expect(last_answer(page).locator(".text")).to_contain_text("Eiffel", timeout=10_000)
    before = proxy.accepted
    proxy.drop_all()
    request_id = wait_settled(page, timeout_ms=30_000)
    assert proxy.accepted > before  # it came back on a new connection
    assert model_text(page, request_id) == server_text(scripted_server.url, request_id)["text"]


def test_code_point_offsets_match_python(page: Page, scripted_server: ScriptedServer) -> None:
    page.goto(scripted_server.url)
    samples = ["a👋🏽b", "漢字かな", "cafe\u0301 e\u0301", "🇫🇷🇩🇪 x", "plain", ""]
    rng = random.Random(7)
    cases = []
    for base in samples * 20:
        text, ops = base, []
        for _ in range(rng.randint(1, 4)):
            at = rng.randint(0, len(text))
            delete = rng.randint(0, len(text) - at)
            op = SpliceOp(at, delete, rng.choice(["", "🎉", "字", "e\u0301", "xy", "🇫🇷"]))
            text = apply_ops(text, [op])
            ops.append(op)
        cases.append({"base": base, "ops": [o.to_json() for o in ops], "expected": text})
    got = page.evaluate(
        """async (cases) => {
          const { ShownText } = await import('/text.js');
          return cases.map((c) => {
            const t = new ShownText();
            t.apply({event: 'draft', seq: 1, text: c.base});
            t.apply({event: 'patch', seq: 2, ops: c.ops, source: 'cloud'});
            return t.text;
          });
        }""",
        cases,
    )
    assert got == [c["expected"] for c in cases]


def test_unicode_answer_end_to_end(page: Page, scripted_server: ScriptedServer) -> None:
    page.goto(scripted_server.url)
    ask(page, "Unicode please")
    request_id = wait_settled(page)
    expected = server_text(scripted_server.url, request_id)["text"]
    assert "漢字かな" in expected
    assert model_text(page, request_id) == expected
    expect(last_answer(page).locator(".text")).to_contain_text("👋🏽 and 漢字かな")


def test_phone_width_and_keyboard_only(browser: Any, scripted_server: ScriptedServer) -> None:
    context = browser.new_context(viewport={"width": 375, "height": 740}, is_mobile=True)
    page = context.new_page()
    try:
        page.goto(scripted_server.url)
        # Keyboard only: the message box has focus on load, Tab walks the controls.
        assert page.evaluate("document.activeElement.id") == "prompt"
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.id") == "mode"
        page.keyboard.press("Shift+Tab")
        page.keyboard.type("Hello keyboard")
        page.keyboard.press("Shift+Enter")
        page.keyboard.type("second line")
        assert page.input_value("#prompt") == "Hello keyboard\nsecond line"
        page.keyboard.press("Enter")
        wait_settled(page)
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        page.keyboard.press("Shift+Tab")
        outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
        assert outline != "none"  # focus is visible
        assert last_answer(page).locator(".text").get_attribute("aria-live") == "polite"
    finally:
        context.close()


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_screenshots_mid_correction_and_finished(
    browser: Any, scripted_server: ScriptedServer, tmp_path: Path, scheme: str
) -> None:
    """The pictures in the README (scripts/screenshots writes them into docs/)."""
    out = Path(os.environ.get("SPECULATE_SCREENSHOT_DIR", tmp_path))
    suffix = "" if scheme == "light" else "-dark"
    context = browser.new_context(viewport={"width": 1000, "height": 600}, color_scheme=scheme)
    page = context.new_page()
    try:
        page.goto(scripted_server.url)
        ask(page, "Tell me about the Eiffel Tower")
        page.wait_for_selector("article.answer .text .fresh", timeout=15_000)
        page.wait_for_selector("article.answer .text .ghost", timeout=15_000)
        page.screenshot(path=str(out / f"ui-correcting{suffix}.png"))
        wait_settled(page)
        ask(page, "Markdown", mode="cloud")
        wait_settled(page)
        page.set_viewport_size({"width": 1000, "height": 860})
        last_answer(page).locator(".code").scroll_into_view_if_needed()
        page.screenshot(path=str(out / f"ui-finished{suffix}.png"))
    finally:
        context.close()
    assert (out / f"ui-correcting{suffix}.png").stat().st_size > 10_000


def test_a_load_fetches_nothing_missing_and_logs_no_error(
    page: Page, scripted_server: ScriptedServer
) -> None:
    failed: list[str] = []
    errors: list[str] = []
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(scripted_server.url)
    expect(page.locator("#cloud-state")).to_contain_text("cloud: up")
    icon = page.locator("link[rel=icon]").get_attribute("href")
    assert icon is not None
    assert httpx.get(f"{scripted_server.url}/{icon}").status_code == 200
    assert failed == []  # the favicon included: no 404 on load
    assert errors == []


def background(page: Page) -> str:
    return str(page.evaluate("getComputedStyle(document.documentElement).backgroundColor"))


def test_dark_mode_follows_the_system_and_the_toggle_is_kept(
    browser: Any, scripted_server: ScriptedServer
) -> None:
    light_ctx = browser.new_context(color_scheme="light")
    dark_ctx = browser.new_context(color_scheme="dark")
    try:
        light, dark = light_ctx.new_page(), dark_ctx.new_page()
        light.goto(scripted_server.url)
        dark.goto(scripted_server.url)
        assert background(light) != background(dark)  # the system's setting is followed
        system_dark = background(dark)
        light.click("#theme")  # auto -> light
        light.click("#theme")  # light -> dark, whatever the system says
        expect(light.locator("#theme")).to_have_text("Theme: dark")
        assert background(light) == system_dark
        light.reload()  # kept across reloads
        expect(light.locator("#theme")).to_have_text("Theme: dark")
        assert background(light) == system_dark
    finally:
        light_ctx.close()
        dark_ctx.close()
