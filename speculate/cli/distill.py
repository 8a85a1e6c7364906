"""``speculate distill export``: the kept draft/answer pairs as chat fine-tuning data.

One ``{"messages": [...]}`` object per line: the conversation, then the cloud's answer as
the assistant turn (the format Hugging Face TRL's SFT trainer and OpenAI fine-tuning
read), de-duplicated, with a summary of how often the edge's draft needed correcting.
"""

from __future__ import annotations

import json
import statistics
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from speculate.errors import ConfigError
from speculate.storage.pairs import Pair, read_pairs


def parse_since(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"--since {value!r}: write a date like 2026-11-27") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def training_line(pair: Pair) -> dict[str, list[dict[str, str]]]:
    return {"messages": [*pair.messages, {"role": "assistant", "content": pair.final}]}


def export(
    db: Path,
    out: Path,
    *,
    since: str | None = None,
    min_edit_distance: int = 0,
    limit: int | None = None,
    largest_first: bool = False,
) -> int:
    console = Console(stderr=True)
    if not db.exists():
        raise ConfigError(f"no pairs database at {db}; serve with store.keep_pairs: true first")
    pairs = [
        p
        for p in read_pairs(db, since=parse_since(since))
        if (p.edit_distance or 0) >= min_edit_distance
    ]
    if largest_first:
        pairs.sort(key=lambda p: p.edit_distance or 0, reverse=True)
    seen: set[str] = set()
    written: list[Pair] = []
    duplicates = 0
    for pair in pairs:
        key = json.dumps(training_line(pair), sort_keys=True, ensure_ascii=False)
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        written.append(pair)
        if limit is not None and len(written) >= limit:
            break
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as handle:
        for pair in written:
            handle.write(json.dumps(training_line(pair), ensure_ascii=False) + "\n")
    corrected = [p for p in written if (p.edit_distance or 0) > 0]
    distances = [p.edit_distance or 0 for p in written]
    table = Table(title=f"{out}: chat fine-tuning JSONL")
    for column in ("pairs read", "written", "duplicates", "draft corrected", "median edit"):
        table.add_column(column, justify="right")
    share = f"{len(corrected)} ({len(corrected) / len(written):.0%})" if written else "0"
    table.add_row(
        str(len(pairs)),
        str(len(written)),
        str(duplicates),
        share,
        f"{statistics.median(distances):.0f}" if distances else "-",
    )
    console.print(table)
    if largest_first and written:
        top = Table(title="largest corrections first")
        for column in ("edit distance", "edge model", "draft", "cloud's answer"):
            top.add_column(column)
        for pair in written[:5]:
            top.add_row(
                str(pair.edit_distance),
                pair.edge_model or "-",
                pair.draft[:60],
                pair.final[:60],
            )
        console.print(top)
    return 0
