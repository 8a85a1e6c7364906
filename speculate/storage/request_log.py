"""SQLite storage: the request log (what ``speculate report`` reads).

One row per finished request: route, outcome, timings, tokens and cost.  Prompt
text is stored only when ``store.log_prompts`` is on, and then with personal data
replaced by its kind (``[EMAIL]``, ``[CARD]``, ...): raw personal data is never logged.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import anyio

from speculate.core.request import SpeculateRequest
from speculate.core.summary import RunSummary
from speculate.policy.privacy import PrivacyGuard
from speculate.storage.db import open_private, upsert

SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    request_id TEXT PRIMARY KEY,
    finished_at REAL NOT NULL,
    mode TEXT NOT NULL,
    route TEXT,
    outcome TEXT NOT NULL,
    final_source TEXT,
    draft_first_ms REAL,
    cloud_first_ms REAL,
    final_ms REAL,
    prompt_tokens INTEGER,
    draft_tokens INTEGER,
    cloud_tokens INTEGER,
    edit_distance INTEGER,
    cost_usd REAL,
    cost_saved_usd REAL,
    error_code TEXT,
    prompt TEXT,
    edge_model TEXT
);
CREATE INDEX IF NOT EXISTS requests_finished_at ON requests (finished_at);
"""
STAT_COLUMNS = (
    "draft_first_ms",
    "cloud_first_ms",
    "final_ms",
    "prompt_tokens",
    "draft_tokens",
    "cloud_tokens",
    "edit_distance",
    "cost_usd",
    "cost_saved_usd",
)


def masked(guard: PrivacyGuard, messages: list[dict[str, str]]) -> str:
    """The conversation as JSON with every piece of personal data replaced by its kind."""
    out = []
    for message in messages:
        out.append({**message, "content": guard.masked(message["content"])})
    return json.dumps(out, ensure_ascii=False)


def row_for(
    request: SpeculateRequest,
    summary: RunSummary,
    *,
    keep_prompt: bool,
    guard: PrivacyGuard | None = None,
) -> dict[str, Any]:
    stats = summary.stats
    prompt = masked(guard or PrivacyGuard(), request.messages) if keep_prompt else None
    return {
        "request_id": request.request_id,
        "finished_at": time.time(),
        "mode": request.mode,
        "route": summary.route,
        "outcome": summary.outcome,
        "final_source": summary.final_source,
        "error_code": summary.error_code,
        "prompt": prompt,
        "edge_model": summary.edge_model,
        **{key: stats.get(key) for key in STAT_COLUMNS},
    }


class RequestLog:
    """A :class:`~speculate.engine.context.RunObserver` writing one row per request."""

    def __init__(
        self, path: Path, *, keep_prompts: bool = False, guard: PrivacyGuard | None = None
    ) -> None:
        self.path = path
        self.keep_prompts = keep_prompts
        self.guard = guard or PrivacyGuard()
        self._db = open_private(path, SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(requests)")}
        if "edge_model" not in columns:  # a log written before edge models were recorded
            with self._db:
                self._db.execute("ALTER TABLE requests ADD COLUMN edge_model TEXT")
        self._lock = anyio.Lock()

    def started(self, request: SpeculateRequest) -> None:
        pass

    async def finished(self, request: SpeculateRequest, summary: RunSummary) -> None:
        row = row_for(request, summary, keep_prompt=self.keep_prompts, guard=self.guard)
        async with self._lock:
            await anyio.to_thread.run_sync(self._insert, row)

    def _insert(self, row: dict[str, Any]) -> None:
        with self._db:
            upsert(self._db, "requests", row)

    def close(self) -> None:
        self._db.close()
