"""Suite 6: bytes on the wire for a speculative answer, against full-text snapshots.

The same session events are counted twice: as the SSE frames speculate sends
(appends and splices), and as a naive protocol that resends the whole shown text
after every change.
"""

from __future__ import annotations

import json
import re
from typing import Any

from speculate.bench.diffcost import texts
from speculate.core.protocol import Event, encode_sse
from speculate.core.session import Session
from speculate.core.text import ShownText


def measure(words: int) -> dict[str, Any]:
    draft, cloud = texts(words, seed=11)
    session = Session("bench", route="speculative", reason="", edge_model="e", cloud_model="c")
    events: list[Event] = session.start()
    draft_words = re.findall(r"\S+\s*", draft)
    cloud_words = re.findall(r"\S+\s*", cloud)
    now = 0.0
    # The edge starts first and runs about twice as fast as the cloud, as on a device.
    for i in range(max(len(draft_words), 2 * len(cloud_words))):
        now += 0.01
        if i < len(draft_words):
            events += session.receive_draft(draft_words[i], now)
        if i % 2 == 0 and i >= 10 and (i - 10) // 2 < len(cloud_words):
            events += session.receive_cloud(cloud_words[(i - 10) // 2], now)
        if session.next_flush_at is not None and session.next_flush_at <= now:
            events += session.flush(now)
    events += session.cloud_finished(now)
    ours = sum(len(encode_sse(event)) for event in events)
    shown, snapshots = ShownText(), 0
    for event in events:
        shown.apply(event)
        payload = json.dumps({"seq": event.seq, "text": shown.text}, ensure_ascii=False)
        snapshots += len(f"id: {event.seq}\nevent: snapshot\ndata: {payload}\n\n".encode())
    return {
        "words": words,
        "events": len(events),
        "speculate_bytes": ours,
        "snapshot_bytes": snapshots,
        "ratio": round(ours / snapshots, 4),
        "final_text_bytes": len(cloud.encode()),
    }


def run(sizes: tuple[int, ...] = (100, 1000, 3000)) -> list[dict[str, Any]]:
    return [measure(words) for words in sizes]
