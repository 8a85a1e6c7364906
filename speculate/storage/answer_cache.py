"""Exact-match cache of cloud answers, in SQLite: offline, a stored cloud answer to the
same conversation beats a fresh draft (route ``cache``).

The key is a SHA-256 of the normalised messages (Unicode NFC, case-folded, runs of
whitespace collapsed), the cloud model and the parameters that shape an answer
(``max_tokens``, temperature), so trivial differences in typing still hit.  Entries
expire after ``ttl_s``; the oldest are dropped beyond ``max_entries``.
Only answers the cloud finished are stored, and never those of requests holding
personal data.
"""

from __future__ import annotations

import hashlib
import json
import time
import unicodedata
from pathlib import Path
from typing import Any

from speculate.core.chat import Message
from speculate.storage.db import open_private

SCHEMA = """
CREATE TABLE IF NOT EXISTS answer_cache (
    key TEXT PRIMARY KEY,
    stored_at REAL NOT NULL,
    text TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS answer_cache_stored_at ON answer_cache (stored_at);
"""


def normalise(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).casefold().split())


def variant(
    model: str, max_tokens: int, temperature: float, shaping: dict[str, Any] | None = None
) -> str:
    """What besides the conversation shapes an answer: the model and its parameters
    (``shaping``: any further ones the request set, such as stop or tools)."""
    key = f"{model}|max_tokens={max_tokens}|temperature={temperature:g}"
    if shaping:
        key += "|" + json.dumps(shaping, sort_keys=True, separators=(",", ":"), default=str)
    return key


def cache_key(messages: list[Message], variant: str) -> str:
    canonical = [[m["role"], normalise(m["content"])] for m in messages]
    blob = json.dumps([variant, canonical], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


class AnswerCache:
    def __init__(self, path: Path, ttl_s: float, max_entries: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._db = open_private(path, SCHEMA)

    def get(self, messages: list[Message], variant: str) -> str | None:
        row = self._db.execute(
            "SELECT text FROM answer_cache WHERE key = ? AND stored_at > ?",
            (cache_key(messages, variant), time.time() - self.ttl_s),
        ).fetchone()
        return None if row is None else str(row[0])

    def put(self, messages: list[Message], variant: str, text: str) -> None:
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO answer_cache (key, stored_at, text) VALUES (?, ?, ?)",
                (cache_key(messages, variant), time.time(), text),
            )
            self._db.execute(
                "DELETE FROM answer_cache WHERE key IN (SELECT key FROM answer_cache"
                " ORDER BY stored_at DESC LIMIT -1 OFFSET ?) OR stored_at <= ?",
                (self.max_entries, time.time() - self.ttl_s),
            )

    def size(self) -> int:
        (count,) = self._db.execute("SELECT COUNT(*) FROM answer_cache").fetchone()
        return int(count)

    def close(self) -> None:
        self._db.close()
