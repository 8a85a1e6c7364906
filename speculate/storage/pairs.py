"""SQLite storage: draft/answer pairs for distillation (``store.keep_pairs``, off by default).

For each request the cloud answered, the conversation, the edge's draft and the cloud's
final text, with the route, the edit distance between the two and both models: exactly
the signal a smaller edge model can be fine-tuned on.  Never kept for a request the
privacy guard flags under ``keep_on_device``; under ``redact`` the findings are replaced
by their kind (``[EMAIL]``) in every text kept.  No API key or client address is ever in
a pair.  Kept by age (``store.pairs_max_age_days``) and count (``store.pairs_max``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from speculate.core.chat import Message
from speculate.core.request import SpeculateRequest
from speculate.core.summary import RunSummary
from speculate.policy.privacy import PrivacyGuard
from speculate.storage.db import open_private, upsert

SCHEMA = """
CREATE TABLE IF NOT EXISTS pairs (
    request_id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    messages TEXT NOT NULL,
    draft TEXT NOT NULL,
    final TEXT NOT NULL,
    route TEXT,
    edit_distance INTEGER,
    edge_model TEXT,
    cloud_model TEXT
);
CREATE INDEX IF NOT EXISTS pairs_created_at ON pairs (created_at);
"""


@dataclass(frozen=True, slots=True)
class Pair:
    request_id: str
    created_at: float
    messages: list[Message]
    draft: str
    final: str
    route: str | None
    edit_distance: int | None
    edge_model: str | None
    cloud_model: str | None


class PairStore:
    """A :class:`~speculate.engine.context.RunObserver` keeping draft/answer pairs."""

    def __init__(
        self,
        path: Path,
        *,
        guard: PrivacyGuard,
        policy: str,
        max_age_days: float = 90.0,
        max_pairs: int = 100_000,
    ) -> None:
        self.path = path
        self.guard = guard
        self.policy = policy
        self.max_age_s = max_age_days * 86_400
        self.max_pairs = max_pairs
        self._db = open_private(path, SCHEMA)
        self._lock = anyio.Lock()

    def started(self, request: SpeculateRequest) -> None:
        pass

    def pair_for(self, request: SpeculateRequest, summary: RunSummary) -> dict[str, Any] | None:
        """The row to keep, or None: only answers the cloud gave, never flagged data."""
        if summary.outcome != "done" or summary.final_source != "cloud" or summary.text is None:
            return None
        texts = [m.get("content", "") for m in request.messages]
        flagged = any(self.guard.scan(t) for t in [*texts, summary.draft, summary.text])
        if flagged and self.policy != "redact":
            return None  # keep_on_device (or off, to be safe): private data is never kept

        def clean(text: str) -> str:
            return self.guard.masked(text) if flagged else text

        messages = [{**m, "content": clean(m.get("content", ""))} for m in request.messages]
        return {
            "request_id": request.request_id,
            "created_at": time.time(),
            "messages": json.dumps(messages, ensure_ascii=False),
            "draft": clean(summary.draft),
            "final": clean(summary.text),
            "route": summary.route,
            "edit_distance": summary.stats.get("edit_distance"),
            "edge_model": summary.edge_model,
            "cloud_model": summary.cloud_model,
        }

    async def finished(self, request: SpeculateRequest, summary: RunSummary) -> None:
        row = self.pair_for(request, summary)
        if row is None:
            return
        async with self._lock:
            await anyio.to_thread.run_sync(self._insert, row)

    def _insert(self, row: dict[str, Any]) -> None:
        with self._db:
            upsert(self._db, "pairs", row)
            self._db.execute(
                "DELETE FROM pairs WHERE created_at < ?", (time.time() - self.max_age_s,)
            )
            self._db.execute(
                "DELETE FROM pairs WHERE request_id NOT IN "
                "(SELECT request_id FROM pairs ORDER BY created_at DESC LIMIT ?)",
                (self.max_pairs,),
            )

    def close(self) -> None:
        self._db.close()


def read_pairs(path: Path, *, since: float | None = None) -> Iterator[Pair]:
    """Every kept pair, oldest first (for ``speculate distill export``)."""
    db = open_private(path, SCHEMA)
    try:
        query = "SELECT * FROM pairs WHERE created_at >= ? ORDER BY created_at"
        cursor = db.execute(query, (since or 0.0,))
        names = [c[0] for c in cursor.description]
        for values in cursor:
            row = dict(zip(names, values, strict=True))
            row["messages"] = json.loads(row["messages"])
            yield Pair(**row)
    finally:
        db.close()
