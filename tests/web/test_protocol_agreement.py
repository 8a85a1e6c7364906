"""One protocol, two languages: recorded event streams replayed through the Python
(``speculate.core``) and the browser (``web/protocol.js``, ``web/text.js``) shown-text
code must agree event by event: text, committed length, how the stream stands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page

from speculate.core.protocol import Sequence, decode_event
from speculate.core.text import ShownText
from tests.web.conftest import ScriptedServer

FIXTURES = Path(__file__).resolve().parent / "fixtures"
STREAMS = sorted(path.stem for path in FIXTURES.glob("*.json"))


def python_states(events: list[dict[str, Any]]) -> list[Any]:
    sequence, shown, states = Sequence(), ShownText(), []
    for raw in events:
        event = decode_event(json.dumps(raw))
        if not sequence.accept(event):
            states.append("replay")
            continue
        shown.apply(event)
        states.append(
            [
                shown.text,
                shown.committed,
                shown.provisional is not None,
                shown.done is not None,
                shown.fatal is not None,
            ]
        )
    return states


JS_STATES = """async (events) => {
  const { Sequence } = await import('/protocol.js');
  const { ShownText } = await import('/text.js');
  const sequence = new Sequence();
  const shown = new ShownText();
  return events.map((event) => {
    if (!sequence.accept(event)) return 'replay';
    shown.apply(event, 0);
    return [shown.text, shown.committed, shown.provisional !== null,
            shown.done !== null, shown.fatal !== null];
  });
}"""


def test_there_is_a_fixture_of_every_kind() -> None:
    assert set(STREAMS) == {
        "ordinary",
        "queued-then-refined",
        "resumed-with-duplicates",
        "cancelled",
        "failed",
    }


@pytest.mark.parametrize("stream", STREAMS)
def test_python_and_browser_agree_event_by_event(
    page: Page, scripted_server: ScriptedServer, stream: str
) -> None:
    events = json.loads((FIXTURES / f"{stream}.json").read_text(encoding="utf-8"))
    expected = python_states(events)
    page.goto(scripted_server.url)
    got = page.evaluate(JS_STATES, events)
    assert got == expected
    last = expected[-1]
    assert last != "replay"
    assert last[3] or last[4]  # every fixture ends its stream


def test_both_refuse_a_gap_and_an_event_after_the_end(
    page: Page, scripted_server: ScriptedServer
) -> None:
    events = json.loads((FIXTURES / "cancelled.json").read_text(encoding="utf-8"))
    broken = {
        "a gap": [events[0], events[2]],
        "after the stream ended": [*events, {**events[1], "seq": 4}],
    }
    page.goto(scripted_server.url)
    for name, stream in broken.items():
        with pytest.raises(ValueError, match=name):
            python_states(stream)
        refused = page.evaluate(
            """async (events) => {
              const { Sequence } = await import('/protocol.js');
              const { ShownText } = await import('/text.js');
              const sequence = new Sequence(), shown = new ShownText();
              try { for (const e of events) if (sequence.accept(e)) shown.apply(e, 0); }
              catch (error) { return true; }
              return false;
            }""",
            stream,
        )
        assert refused, name


def test_the_draft_versus_final_diff_takes_linear_memory(
    page: Page, scripted_server: ScriptedServer
) -> None:
    """20,000 words on each side: an n×m table would need 800 MB; the diff must finish and
    give back both texts exactly."""
    page.goto(scripted_server.url)
    result = page.evaluate(
        """async () => {
          const { wordDiff } = await import('/diff.js');
          const words = Array.from({length: 20000}, (_, i) => `word${i % 997}`);
          const before = words.join(' ');
          const after = words.map((w, i) => (i % 50 === 0 ? 'changed' : w)).join(' ');
          const parts = wordDiff(before, after);
          const left = parts.filter((p) => p.kind !== 'ins').map((p) => p.text).join('');
          const right = parts.filter((p) => p.kind !== 'del').map((p) => p.text).join('');
          return {ok: left === before && right === after,
                  changed: parts.filter((p) => p.kind === 'ins').length};
        }"""
    )
    assert result["ok"]
    assert result["changed"] == 400


def test_a_final_answer_unlike_its_draft_is_shown_whole_not_diffed(
    page: Page, scripted_server: ScriptedServer
) -> None:
    """Two unrelated 20,000-word texts: past MAX_EDITS edits the diff stops (its work and
    memory are bounded by the cap) and shows the draft struck through, then the final."""
    page.goto(scripted_server.url)
    result = page.evaluate(
        """async () => {
          const { wordDiff, MAX_EDITS } = await import('/diff.js');
          const before = Array.from({length: 20000}, (_, i) => `draft${i}`).join(' ');
          const after = Array.from({length: 20000}, (_, i) => `final${i}`).join(' ');
          const parts = wordDiff(before, after);
          return {kinds: parts.map((p) => p.kind), exact: parts[0].text === before &&
                  parts[1].text === after, cap: MAX_EDITS};
        }"""
    )
    assert result["kinds"] == ["del", "ins"]
    assert result["exact"]
    assert result["cap"] == 1000
