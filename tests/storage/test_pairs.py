"""Draft/answer pairs: kept only when asked and only what may be kept; exported as chat
fine-tuning JSONL that the datasets library loads."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from speculate.cli.distill import export
from speculate.core.request import SpeculateRequest
from speculate.core.summary import RunSummary
from speculate.policy.privacy import PrivacyGuard
from speculate.storage.pairs import PairStore, read_pairs


def summary(request_id: str, draft: str, text: str, **extra: object) -> RunSummary:
    return RunSummary(
        request_id,
        route=str(extra.get("route", "speculative")),
        outcome="done",
        final_source=str(extra.get("final_source", "cloud")),
        stats={"edit_distance": extra.get("edit_distance", abs(len(text) - len(draft)))},
        edge_model="smollm2-135m",
        cloud_model="standin",
        draft=draft,
        text=text,
    )


def request(request_id: str, content: str) -> SpeculateRequest:
    return SpeculateRequest([{"role": "user", "content": content}], request_id=request_id)


async def keep(
    store: PairStore, rid: str, content: str, draft: str, text: str, **kw: object
) -> None:
    await store.finished(request(rid, content), summary(rid, draft, text, **kw))


async def test_only_cloud_answers_are_kept_and_private_ones_never(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    store = PairStore(db, guard=PrivacyGuard(), policy="keep_on_device")
    await keep(store, "r1", "capital of France?", "Paris is big.", "Paris.")
    await keep(store, "r2", "hi", "Hello!", "Hello!", final_source="edge")  # no cloud answer
    await keep(store, "r3", "mail me at ann@example.com", "ok", "Sure.")  # flagged
    store.close()
    pairs = list(read_pairs(db))
    assert [p.request_id for p in pairs] == ["r1"]
    assert pairs[0].draft == "Paris is big."
    assert pairs[0].final == "Paris."
    assert pairs[0].edge_model == "smollm2-135m"
    raw = db.read_bytes()
    assert b"ann@example.com" not in raw


async def test_under_redact_findings_are_kept_as_their_kind(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    store = PairStore(db, guard=PrivacyGuard(), policy="redact")
    await keep(store, "r1", "mail me at ann@example.com", "I will mail ann@example.com", "Sure.")
    store.close()
    (pair,) = read_pairs(db)
    assert pair.messages[0]["content"] == "mail me at [EMAIL]"
    assert pair.draft == "I will mail [EMAIL]"
    assert b"ann@example.com" not in db.read_bytes()


async def test_retention_by_count_and_age(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    store = PairStore(db, guard=PrivacyGuard(), policy="off", max_pairs=3, max_age_days=1)
    for i in range(5):
        await keep(store, f"r{i}", f"q{i}", "a", "b")
    assert [p.request_id for p in read_pairs(db)] == ["r2", "r3", "r4"]
    with store._db:  # one pair from two days ago: the next insert ages it out
        store._db.execute("UPDATE pairs SET created_at = ? WHERE request_id = 'r2'", (0.0,))
    await keep(store, "r5", "q5", "a", "b")
    store.close()
    assert [p.request_id for p in read_pairs(db)] == ["r3", "r4", "r5"]


async def test_export_writes_chat_jsonl_that_datasets_loads(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    store = PairStore(db, guard=PrivacyGuard(), policy="keep_on_device")
    await keep(store, "r1", "capital of France?", "Paris is big.", "Paris.", edit_distance=8)
    await keep(store, "r2", "capital of France?", "Paris!", "Paris.", edit_distance=1)  # same
    await keep(store, "r3", "two colours", "red", "Red and blue.", edit_distance=11)
    await keep(store, "r4", "hello", "Hello!", "Hello!", edit_distance=0)
    store.close()
    out = tmp_path / "train.jsonl"
    assert export(db, out, largest_first=True) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 3  # r2 duplicates r1's conversation and answer
    assert lines[0]["messages"][-1] == {"role": "assistant", "content": "Red and blue."}
    for line in lines:  # the chat format: roles and string contents, the answer last
        assert set(line) == {"messages"}
        assert all(set(m) == {"role", "content"} for m in line["messages"])
        assert line["messages"][-1]["role"] == "assistant"
    import datasets  # in the dev extra: the loader fine-tuning tools use

    loaded = datasets.load_dataset("json", data_files=str(out), split="train")
    assert loaded.num_rows == 3
    assert loaded[0]["messages"][-1]["content"] == "Red and blue."

    only_corrected = tmp_path / "corrected.jsonl"
    export(db, only_corrected, min_edit_distance=5, since=time.strftime("%Y-%m-%d"))
    assert len(only_corrected.read_text().splitlines()) == 2
    tomorrow = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 86_400))
    export(db, only_corrected, since=tomorrow)
    assert only_corrected.read_text() == ""


def test_a_missing_database_is_a_clear_error(tmp_path: Path) -> None:
    from speculate.errors import ConfigError

    with pytest.raises(ConfigError, match="keep_pairs"):
        export(tmp_path / "none.db", tmp_path / "out.jsonl")
