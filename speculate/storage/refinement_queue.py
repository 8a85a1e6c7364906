"""The offline queue: cloud refinements that could not run yet, durable in SQLite.

A row is written (and the write committed, WAL, ``synchronous=FULL`` for this table's
transactions) *before* the client is told ``queued``, so a crash after that point
loses nothing.  A row holds what the cloud needs (messages as they may leave the
device, parameters, placeholders to put back) and the request's events so far, so
the request can be brought back and continued with the same ``seq`` after a restart.
Completing a row stores the final events in the same transaction that marks it done:
a refinement is applied once even if the process dies around it.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from speculate.core.protocol import Event, decode_event, encode_json
from speculate.storage.db import open_private

SCHEMA = """
CREATE TABLE IF NOT EXISTS refinements (
    request_id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    status TEXT NOT NULL,            -- pending, done, abandoned
    attempts INTEGER NOT NULL DEFAULT 0,
    job TEXT NOT NULL,               -- JSON: what the cloud is asked
    events TEXT NOT NULL,            -- JSON list: the stream up to its provisional done
    final_events TEXT,               -- JSON list: what the refinement appended
    finished_at REAL,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS refinements_status ON refinements (status, created_at);
"""


@dataclass(frozen=True, slots=True)
class QueuedRefinement:
    request_id: str
    created_at: float
    status: str
    attempts: int
    job: dict[str, Any]
    events: list[Event]
    final_events: list[Event]

    @property
    def all_events(self) -> list[Event]:
        return self.events + self.final_events


def _encode(events: list[Event]) -> str:
    return "[" + ",".join(encode_json(event) for event in events) + "]"


def _decode(text: str | None) -> list[Event]:
    return [decode_event(item) for item in json.loads(text or "[]")]


class RefinementQueue:
    """Synchronous; the server calls it from a worker thread under one lock."""

    def __init__(self, path: Path, max_pending: int = 1000) -> None:
        self.path = path
        self.max_pending = max_pending
        self._db = open_private(path, SCHEMA)

    def put(self, request_id: str, job: dict[str, Any], events: list[Event]) -> bool:
        """Store a refinement; False when the queue is full."""
        with self._db:
            self._db.execute("PRAGMA synchronous=FULL")
            (pending,) = self._db.execute(
                "SELECT COUNT(*) FROM refinements WHERE status = 'pending'"
            ).fetchone()
            if pending >= self.max_pending:
                return False
            self._db.execute(
                "INSERT OR REPLACE INTO refinements (request_id, created_at, status, job, events)"
                " VALUES (?, ?, 'pending', ?, ?)",
                (request_id, time.time(), json.dumps(job, ensure_ascii=False), _encode(events)),
            )
        return True

    def pending(self, limit: int = 100) -> list[QueuedRefinement]:
        rows = self._db.execute(
            "SELECT * FROM refinements WHERE status = 'pending' ORDER BY created_at LIMIT ?",
            (limit,),
        )
        return [self._row(row) for row in rows.fetchall()]

    def recent(self, limit: int) -> list[QueuedRefinement]:
        """Pending rows and the most recently finished ones (to bring back on start)."""
        rows = self._db.execute(
            "SELECT * FROM refinements WHERE status = 'pending' UNION ALL SELECT * FROM"
            " (SELECT * FROM refinements WHERE status != 'pending' ORDER BY finished_at DESC"
            " LIMIT ?)",
            (limit,),
        )
        return [self._row(row) for row in rows.fetchall()]

    def complete(self, request_id: str, final_events: list[Event], status: str = "done") -> bool:
        """Record the outcome once: False if the row was not pending any more."""
        with self._db:
            self._db.execute("PRAGMA synchronous=FULL")
            cursor = self._db.execute(
                "UPDATE refinements SET status = ?, final_events = ?, finished_at = ?,"
                " attempts = attempts + 1 WHERE request_id = ? AND status = 'pending'",
                (status, _encode(final_events), time.time(), request_id),
            )
        return cursor.rowcount == 1

    def failed_attempt(self, request_id: str, error: str) -> int:
        with self._db:
            self._db.execute(
                "UPDATE refinements SET attempts = attempts + 1, last_error = ?"
                " WHERE request_id = ? AND status = 'pending'",
                (error, request_id),
            )
        row = self._db.execute(
            "SELECT attempts FROM refinements WHERE request_id = ?", (request_id,)
        ).fetchone()
        return int(row[0]) if row else 0

    def counts(self) -> dict[str, int]:
        rows = self._db.execute("SELECT status, COUNT(*) FROM refinements GROUP BY status")
        return {str(status): int(count) for status, count in rows.fetchall()}

    def prune(self, older_than_s: float) -> None:
        with self._db:
            self._db.execute(
                "DELETE FROM refinements WHERE status != 'pending' AND finished_at < ?",
                (time.time() - older_than_s,),
            )

    def close(self) -> None:
        self._db.close()

    @staticmethod
    def _row(row: sqlite3.Row | tuple[Any, ...]) -> QueuedRefinement:
        request_id, created_at, status, attempts, job, events, final, _, _ = row
        return QueuedRefinement(
            request_id,
            created_at,
            status,
            attempts,
            json.loads(job),
            _decode(events),
            _decode(final),
        )
