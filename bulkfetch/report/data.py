"""The JSON summary of a run: what happened, per lane and per job.

Built from the ledger (the truth about every job) and the run's counters (what this run
spent). Plain data only: numbers, strings, lists and objects (a lane's pace as ``"N/s"``
and as a number), never a Python repr. Failures come grouped by reason
(:mod:`bulkfetch.report.failures`), each group with its jobs. It never holds the API key,
headers or URLs with query strings: only job keys, states, paths, hashes and the reasons
jobs failed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from bulkfetch._version import __version__
from bulkfetch.durable import atomic_write
from bulkfetch.errors import ManifestError
from bulkfetch.ledger import JobState, Ledger
from bulkfetch.limiter.lane import Limiter
from bulkfetch.manifest.cache import cache_path, load_manifest_cached
from bulkfetch.manifest.jobs import Manifest
from bulkfetch.report.failures import group_failures

__all__ = [
    "build_report",
    "failure_groups",
    "job_rows",
    "lane_figures",
    "ledger_manifest",
    "write_report",
]

#: What a job row of a failure group carries.
_GROUP_FIELDS = ("key", "view_id", "bm_type", "name", "error")


def ledger_manifest(ledger: Ledger, given: Path | None = None) -> tuple[Manifest | None, str]:
    """The manifest ``given``, else the one the ledger names (its last run's), read
    without writing anything; and a note when the named one cannot be used (moved,
    changed into an invalid file), in which case it is left out.

    A bad ``given`` manifest raises :class:`ManifestError`: the user asked for it.
    """
    cache = cache_path(ledger.path)
    if given is not None:
        return load_manifest_cached(given, cache, write=False), ""
    recorded = ledger.meta.manifest
    if not recorded:
        return None, ""
    try:
        return load_manifest_cached(recorded, cache, write=False), ""
    except ManifestError as exc:
        first = exc.problems[0] if exc.problems else exc
        return None, f"the ledger's manifest could not be used, so it is left out: {first}"


def job_rows(
    manifest: Manifest | None, ledger: Ledger, *, ledger_jobs: bool = False
) -> list[dict[str, Any]]:
    """One row per job: the manifest's jobs in order, or every ledger record (without a
    manifest, or with ``ledger_jobs``: then the manifest only adds view_id, bm_type and
    name to the records it knows)."""
    records = ledger.records()
    if manifest is None or ledger_jobs:
        keys = sorted(records)
    else:
        keys = [job.key for job in manifest.jobs]
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
            row |= {
                "view_id": job.view_id,
                "bm_type": job.bm_type,
                "name": job.relative_path().as_posix(),
                "where": job.where,
            }
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
    ledger_jobs: bool = False,
) -> dict[str, Any]:
    """The report (see the module's docstring); ``ledger_jobs`` as for :func:`job_rows`."""
    rows = job_rows(manifest, ledger, ledger_jobs=ledger_jobs)
    states = Counter(row["state"] for row in rows)
    groups = failure_groups(rows)
    report: dict[str, Any] = {
        "bulkfetch": __version__,
        "ledger": str(ledger.path),
        "outcome": outcome,
        "jobs": len(rows),
        "states": {state.value: states.get(state.value, 0) for state in JobState},
        "failures_by_reason": {group["reason"]: group["count"] for group in groups},
        "failure_groups": groups,
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


def lane_figures(limiter: Limiter) -> dict[str, Any]:
    """A lane's figures as plain data: rates as ``"N/s"`` strings and as numbers."""
    pace = 1.0 / limiter.interval
    return {
        "configured": str(limiter.configured),
        "configured_per_second": round(limiter.configured.per_second, 6),
        "pace": f"{pace:.4g}/s",
        "pace_per_second": round(pace, 6),
        "interval_seconds": round(limiter.interval, 6),
        "rate_limited": limiter.rate_limited,
        "paused_seconds": round(limiter.pauses, 3),
    }


def failure_groups(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The failed rows grouped by reason (job-specific parts out): largest group first,
    each with its reason (the grouping key), title (the reason itself when all its jobs
    say the same, else the key), count, one reason as recorded, and its jobs."""
    failed = ((row.get("error", ""), row) for row in rows if row["state"] == "failed")
    return [
        {
            "reason": group.reason,
            "title": group.title,
            "count": group.count,
            "example": group.example,
            "jobs": [{k: row[k] for k in _GROUP_FIELDS if k in row} for row in group.jobs],
        }
        for group in group_failures(failed)
    ]


def write_report(path: Path, report: dict[str, Any]) -> None:
    """Write the report atomically: a reader never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
