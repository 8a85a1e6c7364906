"""The one place that opens SQLite: where the file lives, how it is opened.

Every store (request log, refinement queue, answer cache) opens its connection here with
its own schema. Files are created private (0600) and run in WAL mode, so readers (``speculate
report``) never block the server.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

from platformdirs import user_data_dir


def default_path() -> Path:
    return Path(user_data_dir("speculate")) / "speculate.db"


def open_private(path: Path, schema: str) -> sqlite3.Connection:
    """Open (creating it 0600 if new) a SQLite database in WAL mode, with ``schema``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    connection = sqlite3.connect(path, check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.executescript(schema)
    return connection


def upsert(connection: sqlite3.Connection, table: str, row: dict[str, Any]) -> None:
    """Insert ``row`` (column -> value) into ``table``, replacing a row with its key."""
    columns = ", ".join(row)
    marks = ", ".join(f":{name}" for name in row)
    connection.execute(f"INSERT OR REPLACE INTO {table} ({columns}) VALUES ({marks})", row)
