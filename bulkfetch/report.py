"""The JSON summary of a run: what happened, per lane and per job.

Built from the ledger (the truth about every job) and the run's counters (what this run
spent). It never holds the API key, headers or URLs with query strings: only job keys,
states, paths, hashes and the reasons jobs failed.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from . import __version__
from .durable import atomic_write
from .ledger import JobState, Ledger
from .manifest import Manifest

__all__ = ["build_report", "job_rows", "write_report"]


def job_rows(manifest: Manifest | None, ledger: Ledger) -> list[dict[str, Any]]:
    """One row per job: the manifest's jobs in order (or every ledger record without one)."""
    records = ledger.records()
    keys = [job.key for job in manifest.jobs] if manifest is not None else sorted(records)
    jobs = {job.key: job for job in manifest.jobs} if manifest is not None else {}
    rows = []
    for key in keys:
        record = records.get(key)
        job = jobs.get(key)
        row: dict[str, Any] = {
            "key": key,
            "state": record.state.value if record else JobState.PENDING.value,
        }
        if job is not None:
            row |= {"view_id": job.view_id, "bm_type": job.bm_type, "where": job.where}
        if record is not None:
            if record.state is JobState.DONE:
                row |= {"path": record.path, "size": record.size, "sha256": record.sha256}
            if record.task_id and record.state is JobState.CREATED:
                row["task_id"] = record.task_id
            if record.reason and record.state is not JobState.DONE:
                row["error"] = record.reason
            row["creates"] = record.creates
        rows.append(row)
    return rows


def build_report(
    *,
    manifest: Manifest | None,
    ledger: Ledger,
    counters: dict[str, Any] | None = None,
    lanes: dict[str, Any] | None = None,
    outcome: str = "",
) -> dict[str, Any]:
    rows = job_rows(manifest, ledger)
    states = Counter(row["state"] for row in rows)
    failures = Counter(row.get("error", "") for row in rows if row["state"] == "failed")
    report: dict[str, Any] = {
        "bulkfetch": __version__,
        "ledger": str(ledger.path),
        "outcome": outcome,
        "jobs": len(rows),
        "states": {state.value: states.get(state.value, 0) for state in JobState},
        "failures_by_reason": dict(failures.most_common()),
    }
    if counters is not None:
        elapsed = max(0.0, counters.get("finished", 0.0) - counters.get("started", 0.0))
        report["run"] = {
            "elapsed_seconds": round(elapsed, 3),
            "requests": {
                "create": counters["create_calls"],
                "status": counters["status_calls"],
            },
            "rate_limited": {"create": counters["create_429"], "status": counters["status_429"]},
            "bytes": counters["bytes"],
            "downloaded": counters["done"] - counters["skipped_done"],
            "not_ready_answers": counters["not_ready"],
            "transient_errors": counters["transient_errors"],
            "expired": counters["expired"],
            "lost_creations": counters["lost_creates"],
        }
    if lanes is not None:
        report["lanes"] = lanes
    report["job_list"] = rows
    return report


def write_report(path: Path, report: dict[str, Any]) -> None:
    """Write the report atomically: a reader never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
