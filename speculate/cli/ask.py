"""``speculate ask``: watch a draft appear and turn into the final answer in a terminal.

Draft text is dim, text the cloud just spliced in is bold for a moment, and the
final answer ends with its timings.  Uses the same wire protocol as every client.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import httpx
import websockets
from rich.console import Console
from rich.live import Live
from rich.text import Text

from speculate.client import stream_sse, stream_ws
from speculate.core.protocol import Done, Error, Event, Patch, Queued, Start
from speculate.core.text import ShownText
from speculate.errors import describe


def duration(ms: float | None) -> str:
    """Milliseconds as a person reads them: "398 ms", "1.2 s", "–" when there were none."""
    if ms is None:
        return "–"
    return f"{ms:.0f} ms" if ms < 1000 else f"{ms / 1000:.1f} s"


def money(usd: float | None) -> str:
    """Dollars to two significant digits, without an exponent: "$0.000012"."""
    if not usd:
        return "$0"
    digits = max(2, 1 - int(f"{abs(usd):e}".split("e")[1]))
    return f"${usd:.{digits}f}"


def _render(shown: ShownText, fresh: list[tuple[int, int]], final: bool) -> Text:
    # The final text ends its line, so what is printed after it starts on a line of its own.
    text = Text(shown.text + ("\n" if final else ""), style="" if final else "dim")
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
    api_key: str | None = None,
) -> int:
    body: dict[str, object] = {"messages": [{"role": "user", "content": prompt}], "mode": mode}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    console = Console()

    async def run() -> int:
        events: AsyncIterator[Event] = (
            stream_ws(url, body, api_key=api_key)
            if transport == "ws"
            else stream_sse(url, body, api_key=api_key)
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
            f"{duration(s.get('draft_first_ms'))} · first cloud "
            f"{duration(s.get('cloud_first_ms'))} · final {duration(s.get('final_ms'))} · "
            f"{patches} corrections · edit distance {s.get('edit_distance')} characters · "
            f"cost {money(s.get('cost_usd'))}"
        )
        return 0

    try:
        return anyio.run(run)
    except (OSError, httpx.TransportError) as exc:
        console.print(f"[red]cannot reach the server at {url}[/]: {describe(exc)}")
    except httpx.HTTPStatusError as exc:
        console.print(f"[red]the server refused the request[/]: {describe(exc)}")
    except websockets.InvalidStatus as exc:
        status = exc.response.status_code
        hint = " (send --api-key or set $SPECULATE_API_KEY)" if status in (401, 403) else ""
        console.print(f"[red]the server refused the connection: HTTP {status}[/]{hint}")
    return 2
