"""``speculate ask``: watch a draft appear and turn into the final answer in a terminal.

Draft text is dim, text the cloud just spliced in is bold for a moment, and the
final answer ends with its timings.  Uses the same wire protocol as every client.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
from rich.console import Console
from rich.live import Live
from rich.text import Text

from speculate.client import stream_sse, stream_ws
from speculate.core.protocol import Done, Error, Event, Patch, Queued, Start
from speculate.core.text import ShownText


def _render(shown: ShownText, fresh: list[tuple[int, int]], final: bool) -> Text:
    text = Text(shown.text, style="" if final else "dim")
    for start, end in fresh:
        text.stylize("bold green", start, end)
    return text


def ask(
    prompt: str,
    *,
    url: str,
    mode: str = "auto",
    transport: str = "ws",
    max_tokens: int | None = None,
) -> int:
    body: dict[str, object] = {"messages": [{"role": "user", "content": prompt}], "mode": mode}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    console = Console()

    async def run() -> int:
        events: AsyncIterator[Event] = (
            stream_ws(url, body) if transport == "ws" else stream_sse(url, body)
        )
        shown = ShownText()
        patches = 0
        with Live(Text(""), console=console, refresh_per_second=30, transient=False) as live:
            async for event in events:
                shown.apply(event)
                fresh: list[tuple[int, int]] = []
                if isinstance(event, Start):
                    console.print(f"[cyan]route {event.route}[/]: {event.reason}")
                elif isinstance(event, Patch):
                    patches += 1
                    fresh = [(op.at, op.at + len(op.insert)) for op in event.ops]
                elif isinstance(event, Error):
                    console.print(f"[yellow]{event.source} {event.code}[/]: {event.message}")
                elif isinstance(event, Queued):
                    console.print(
                        f"[yellow]queued[/]: {event.reason}; the refined answer will be at "
                        f"{url.rstrip('/')}/v1/requests/{event.request_id}"
                    )
                live.update(_render(shown, fresh, isinstance(event, Done)))
        done = shown.done or shown.provisional
        if done is None:
            return 1
        s = done.stats
        console.print(
            f"[cyan]final from {done.final_source}[/] · first draft "
            f"{s.get('draft_first_ms')} ms · first cloud {s.get('cloud_first_ms')} ms · final "
            f"{s.get('final_ms')} ms · {patches} corrections · edit distance "
            f"{s.get('edit_distance')} · cost ${s.get('cost_usd')}"
        )
        return 0

    return anyio.run(run)
