"""``speculate calibrate PROMPTS.jsonl --cloud-share 0.3``: set the router's thresholds
so that a chosen share of a representative prompt set goes to the cloud.

Like RouteLLM's calibration: score every prompt, then put ``edge_max`` between the
scores that split the set at the wanted share (and ``cloud_min`` likewise for the
share answered by the cloud alone).  Lines are JSON objects with ``prompt`` (a string)
or ``messages`` (a chat), and optionally ``label`` (``edge`` or ``cloud``): with
labels, the accuracy at the new thresholds is printed too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from speculate.core.chat import Message
from speculate.errors import ConfigError
from speculate.policy.router import complexity
from speculate.settings import DEFAULT_CONFIG, Settings


@dataclass(frozen=True, slots=True)
class Sample:
    score: float
    label: str | None


def load(path: Path) -> list[Sample]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    samples = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            messages: list[Message] = row.get("messages") or [
                {"role": "user", "content": str(row["prompt"])}
            ]
            last = next(m["content"] for m in reversed(messages) if m["role"] == "user")
        except (ValueError, KeyError, TypeError, StopIteration, AttributeError):
            raise ConfigError(
                f"{path}:{number}: expected a JSON object with 'prompt' or 'messages'"
            ) from None
        label = row.get("label")
        if label not in (None, "edge", "cloud"):
            raise ConfigError(f"{path}:{number}: label must be 'edge' or 'cloud', not {label!r}")
        samples.append(Sample(complexity(last).score, label))
    if not samples:
        raise ConfigError(f"{path} holds no prompts")
    return samples


def threshold_for(scores: list[float], share: float) -> float:
    """A threshold with (as nearly as ties allow) ``share`` of the scores at or above it."""
    ordered = sorted(scores, reverse=True)
    k = round(len(ordered) * share)
    if k <= 0:
        return min(1.0, ordered[0] + 1e-4)
    if k >= len(ordered):
        return 0.0
    return round((ordered[k - 1] + ordered[k]) / 2, 4)


def accuracy(samples: list[Sample], edge_max: float) -> float | None:
    labelled = [s for s in samples if s.label is not None]
    if not labelled:
        return None
    right = sum((s.score < edge_max) == (s.label == "edge") for s in labelled)
    return right / len(labelled)


def calibrate(
    path: Path,
    *,
    cloud_share: float,
    cloud_only_share: float | None,
    config: str | None,
    write: Path | None,
) -> int:
    if not 0 <= cloud_share <= 1 or not 0 <= (cloud_only_share or 0) <= cloud_share:
        raise ConfigError("need 0 <= --cloud-only-share <= --cloud-share <= 1")
    settings = Settings.load(config)
    samples = load(path)
    scores = [s.score for s in samples]
    edge_max = threshold_for(scores, cloud_share)
    cloud_min = settings.router.cloud_min
    if cloud_only_share is not None:
        cloud_min = threshold_for(scores, cloud_only_share)
    cloud_min = max(cloud_min, edge_max)
    to_cloud = sum(score >= edge_max for score in scores) / len(scores)
    alone = sum(score >= cloud_min for score in scores) / len(scores)
    console = Console()
    table = Table(title=f"{len(samples)} prompts from {path}")
    for column in ("threshold", "value", "share of prompts"):
        table.add_column(column, justify="right")
    table.add_row("edge_max (below: edge alone)", f"{edge_max:.4f}", f"{1 - to_cloud:.1%} edge")
    table.add_row("cloud_min (from: cloud alone)", f"{cloud_min:.4f}", f"{alone:.1%} cloud only")
    console.print(table)
    console.print(
        f"with the cloud (speculative or cloud): {to_cloud:.1%} (asked {cloud_share:.0%})"
    )
    if (score := accuracy(samples, edge_max)) is not None:
        console.print(f"accuracy on the labelled prompts (edge vs cloud): {score:.1%}")
    router = {"edge_max": edge_max, "cloud_min": cloud_min}
    snippet = yaml.safe_dump({"router": router}, sort_keys=False)
    console.print("put this in your config, or set the environment:")
    console.print(snippet.rstrip(), markup=False, highlight=False)
    console.print(f"SPECULATE_ROUTER__EDGE_MAX={edge_max} SPECULATE_ROUTER__CLOUD_MIN={cloud_min}")
    if write is not None:
        write_config(write, Path(config) if config else DEFAULT_CONFIG, router)
        console.print(f"wrote {write}")
    return 0


def write_config(target: Path, base: Path, router: dict[str, Any]) -> None:
    """A new config file: ``base`` with the router section replaced (never overwrites)."""
    if target.exists():
        raise ConfigError(f"{target} exists; choose a new file (calibrate never overwrites)")
    data = yaml.safe_load(base.read_text(encoding="utf-8")) or {}
    data["router"] = {**data.get("router", {}), **router}
    target.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
