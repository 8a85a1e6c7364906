"""Answers as real Markdown in Chromium: rendered by the vendored markdown-it, highlighted
by highlight.js, sanitised by DOMPurify, progressively while they stream."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.web.conftest import ScriptedServer
from tests.web.test_ui import ask, last_answer, wait_settled

pytestmark = pytest.mark.slow


def test_tables_links_quotes_nested_lists_and_highlighted_code(
    page: Page, scripted_server: ScriptedServer
) -> None:
    page.goto(scripted_server.url)
    ask(page, "Markdown", mode="cloud")
    wait_settled(page)
    text = last_answer(page).locator(".text")
    expect(text.locator("table th")).to_have_text(["tip", "why"])
    expect(text.locator("table td").first).to_have_text("sleep")
    link = text.locator("a", has_text="the docs")
    expect(link).to_have_attribute("href", "https://example.com/docs")
    expect(link).to_have_attribute("target", "_blank")
    expect(link).to_have_attribute("rel", "noopener noreferrer")
    expect(text.locator("blockquote")).to_have_text("quoted line")
    expect(text.locator("ol li ul li")).to_have_text(["inner one", "inner two"])
    code = text.locator("pre code")
    expect(code).to_contain_text("return a + b")
    expect(code.locator(".hljs-keyword").first).to_have_text("def")
    expect(code).to_contain_text("<b>not bold</b>")  # HTML in code stays text
    # A loose numbered list (blank lines between items, as models write) counts 1, 2, 3.
    numbers = page.evaluate(
        """() => [...document.querySelectorAll('article.answer:last-of-type ol')]
             .filter(ol => /tip/.test(ol.textContent))
             .flatMap(ol => [...ol.children].map((li, i) => (ol.start || 1) + i))"""
    )
    assert numbers == [1, 2, 3]


def test_unsafe_markdown_stays_inert(page: Page, scripted_server: ScriptedServer) -> None:
    page.goto(scripted_server.url)
    ask(page, "Markdown", mode="cloud")
    wait_settled(page)
    text = last_answer(page).locator(".text")
    # A javascript: link is not a link; an image is not fetched (shown as its text).
    assert text.locator("a[href^='javascript']").count() == 0
    assert page.locator("main img").count() == 0
    expect(text).to_contain_text("tracker")
    assert page.evaluate("window.__pwned") is None
    for anchor in text.locator("a").all():
        assert anchor.get_attribute("rel") == "noopener noreferrer"


def test_a_code_block_and_an_answer_copy_to_the_clipboard(
    page: Page, scripted_server: ScriptedServer
) -> None:
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.goto(scripted_server.url)
    ask(page, "Markdown", mode="cloud")
    wait_settled(page)
    answer = last_answer(page)
    answer.locator(".code .copy").click()
    expect(answer.locator(".code .copy")).to_have_text("Copied")
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied.startswith("def add(a, b):")
    answer.locator("button.copy-answer").click()
    expect(answer.locator("button.copy-answer")).to_have_text("Copied")
    whole = page.evaluate("navigator.clipboard.readText()")
    assert whole.startswith("| tip | why |")


def test_settled_blocks_render_while_streaming_and_keep_their_node(
    page: Page, scripted_server: ScriptedServer
) -> None:
    """A paragraph that is done is Markdown before the answer ends, and the same DOM
    node from then on: no flicker, a selection in it survives."""
    page.goto(scripted_server.url)
    ask(page, "Blocks", mode="cloud")
    first = last_answer(page).locator(".text .markdown strong", has_text="first")
    expect(first).to_be_visible(timeout=15_000)
    assert last_answer(page).get_attribute("data-state") == "streaming"
    page.evaluate(
        """() => {
          const node = document.querySelector('article.answer:last-of-type .text .markdown');
          node.dataset.marked = 'yes';
          const range = document.createRange();
          range.selectNodeContents(node);
          getSelection().removeAllRanges();
          getSelection().addRange(range);
        }"""
    )
    wait_settled(page)
    kept = last_answer(page).locator(".text .markdown").first
    expect(kept).to_have_attribute("data-marked", "yes")
    assert page.evaluate("getSelection().toString()").startswith("The first paragraph")
