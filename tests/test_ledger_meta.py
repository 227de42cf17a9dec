"""Tests for bulkfetch.ledger_meta: the ledger's metadata as a typed record, and its storage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bulkfetch.ledger import Ledger
from bulkfetch.ledger_meta import DEFAULT_TASK_TIMEOUT, LedgerMeta, RunSummary

counts = st.integers(min_value=0, max_value=10**9)
times = st.floats(min_value=0, max_value=4e9)
texts = st.text(max_size=20)
lanes = st.dictionaries(st.sampled_from(["create", "status"]), counts)
summaries = st.builds(
    RunSummary,
    started=times,
    finished=times,
    outcome=texts,
    exit_code=st.sampled_from([0, 1, 2, 3, 4, 5, 75, 130, 143]),
    requests=lanes,
    rate_limited=lanes,
    bytes=counts,
    downloaded=counts,
    done=counts,
    failed=counts,
    jobs=counts,
    manifest=texts,
)
metas = st.builds(
    LedgerMeta,
    runs=st.lists(summaries, max_size=3).map(tuple),
    manifest=texts,
    task_timeout=st.floats(min_value=1, max_value=1e7),
    creates_by_day=st.dictionaries(st.dates().map(str), counts, max_size=3),
    processing=st.none() | st.fixed_dictionaries({"n": counts, "mean": times, "m2": times}),
)


@given(metas)
def test_meta_json_round_trip(meta: LedgerMeta) -> None:
    assert LedgerMeta.from_json(orjson.loads(orjson.dumps(meta.to_json()))) == meta
    assert meta.changes(meta) == {}


def test_an_empty_ledger_has_the_defaults() -> None:
    meta = LedgerMeta.from_json({})
    assert meta == LedgerMeta()
    assert meta.task_timeout == DEFAULT_TASK_TIMEOUT == 48 * 3600
    assert (meta.runs, meta.manifest, meta.processing, meta.created_on("2024-01-01")) == (
        (),
        "",
        None,
        0,
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"task_timeout": "soon"}, LedgerMeta()),
        ({"task_timeout": -5}, LedgerMeta()),
        ({"task_timeout": True}, LedgerMeta()),
        ({"task_timeout": 600}, LedgerMeta(task_timeout=600.0)),
        ({"manifest": 3}, LedgerMeta()),
        ({"runs": {"a": 1}}, LedgerMeta()),
        ({"runs": [1, "x", None]}, LedgerMeta()),
        ({"creates_by_day": [1]}, LedgerMeta()),
        ({"creates_by_day": {"2024-01-01": "many"}}, LedgerMeta(creates_by_day={"2024-01-01": 0})),
        ({"unknown": 1}, LedgerMeta()),
    ],
)
def test_junk_reads_as_defaults(raw: dict[str, Any], expected: LedgerMeta) -> None:
    assert LedgerMeta.from_json(raw) == expected


def test_a_run_summary_reads_leniently() -> None:
    junk = {"started": "yesterday", "requests": {"create": True, "status": 4.0}, "done": None}
    assert RunSummary.from_json(junk) == RunSummary(requests={"create": 0, "status": 4})
    assert RunSummary.from_json([1]) is None


def test_save_meta_writes_what_changed_and_keeps_unknown_keys(tmp_path: Path) -> None:
    path = tmp_path / "bulkfetch-ledger.json"
    with Ledger.open(path) as ledger:
        ledger.set_meta("from_a_newer_version", {"x": 1})
        seq = ledger.seq
        ledger.save_meta(ledger.meta)  # nothing changed: nothing written
        assert ledger.seq == seq
        run = RunSummary(started=1.0, finished=2.0, requests={"create": 3}, manifest="/m.jsonl")
        meta = ledger.meta.replace(runs=(run,), manifest="/m.jsonl", task_timeout=600.0)
        ledger.save_meta(meta)
        assert ledger.seq == seq + 3  # one journal line per key, in one write
        assert ledger.meta == meta
        journal = [orjson.loads(line) for line in ledger.journal_path.read_bytes().splitlines()]
        assert [entry["rec"]["meta"][0] for entry in journal[-3:]] == [
            "runs",
            "manifest",
            "task_timeout",
        ]
    with Ledger.open(path, readonly=True) as again:
        assert again.meta == meta
        assert again.raw_meta["from_a_newer_version"] == {"x": 1}  # compacted, still there
