"""Logging: plain text for people, JSON lines for machines; never prompt text.

Each finished request gets one line with its id, route, outcome and timings.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from speculate.core.request import SpeculateRequest
from speculate.core.summary import RunSummary
from speculate.storage.request_log import row_for

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def configure(log_format: str, level: int = logging.INFO) -> None:
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("httpx").setLevel(logging.WARNING)


class RequestLogger:
    """A RunObserver that logs one line per finished request (no prompt text)."""

    def __init__(self) -> None:
        self.log = logging.getLogger("speculate.requests")

    def started(self, request: SpeculateRequest) -> None:
        pass

    async def finished(self, request: SpeculateRequest, summary: RunSummary) -> None:
        row = row_for(request, summary, keep_prompt=False)
        del row["prompt"], row["finished_at"]
        self.log.info(
            "request %s %s via %s in %s ms",
            row["request_id"],
            row["outcome"],
            row["route"],
            row.get("final_ms"),
            extra={"request": row, "at": time.time()},
        )
