"""What a run says when it ends: one summary, on a terminal and under cron alike.

Jobs done (downloaded now, or already there), failed and left; requests and 429s per
lane; bytes and elapsed time; the exit code and what it means; failures grouped by
reason. After Ctrl-C, SIGTERM or a time box or quota: what was saved (files, and created
tasks kept in the ledger for the next run to poll) and the exact command to carry on.

Pure functions over plain data: :func:`make_summary` from a run's result,
:func:`summary_lines` for people (plain lines to stderr), :func:`summary_fields` for
``--log-format json`` (one event), :func:`failure_lines` for the groups (also used by
``bulkfetch status``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bulkfetch.units import counted, duration_text, size_text

__all__ = [
    "EXIT_MEANINGS",
    "Summary",
    "failure_lines",
    "make_summary",
    "summary_fields",
    "summary_lines",
]

#: What each exit code means, as the summary says it.
EXIT_MEANINGS: Mapping[int, str] = {
    0: "every job of the manifest is done",
    1: "the run ended with jobs failed or not finished",
    2: "bad usage or an invalid manifest: nothing was sent",
    3: "the API refused the key, or the URL is not the task API: the run stopped",
    4: "a local storage problem (disk full, unwritable folder, damaged ledger)",
    5: "another run holds the ledger's lock",
    75: "stopped with work left by the time box or a creation quota: run again later",
    130: "interrupted by SIGINT (Ctrl-C): everything is saved; run again to carry on",
    143: "interrupted by SIGTERM: everything is saved; run again to carry on",
}
#: Exit codes after which the same command carries on where the run stopped.
CARRY_ON = frozenset({75, 130, 143})


@dataclass(frozen=True, slots=True)
class Summary:
    """A run's end, as plain data."""

    jobs: int
    done: int
    downloaded: int  # by this run
    already_there: int  # done before this run, file still there
    failed: int
    left: int  # neither done nor failed
    tasks_kept: int  # created on EOS, recorded in the ledger: the next run polls them
    requests: Mapping[str, int]
    rate_limited: Mapping[str, int]
    bytes: int
    elapsed: float
    exit_code: int
    outcome: str
    out: str
    carry_on: str = ""  # the command to carry on, when the run stopped with work left
    failure_groups: Sequence[Mapping[str, Any]] = field(default_factory=list)

    @property
    def meaning(self) -> str:
        return EXIT_MEANINGS.get(self.exit_code, "")


def make_summary(
    counters: Mapping[str, Any],
    rows: Iterable[Mapping[str, Any]],
    *,
    exit_code: int,
    outcome: str,
    out: str,
    command: str,
    failure_groups: Sequence[Mapping[str, Any]] = (),
) -> Summary:
    """The summary of a run from its counters (``Counters.to_json()``), its job rows
    (``RunResult.jobs``) and the command line it was started with."""
    states = Counter(str(row["state"]) for row in rows)
    jobs = int(counters["jobs"])
    done, failed = int(counters["done"]), int(counters["failed"])
    return Summary(
        jobs=jobs,
        done=done,
        downloaded=done - int(counters["skipped_done"]),
        already_there=int(counters["skipped_done"]),
        failed=failed,
        left=max(0, jobs - done - failed),
        tasks_kept=states.get("created", 0),
        requests={"create": counters["create_calls"], "status": counters["status_calls"]},
        rate_limited={"create": counters["create_429"], "status": counters["status_429"]},
        bytes=int(counters["bytes"]),
        elapsed=max(0.0, float(counters["finished"]) - float(counters["started"])),
        exit_code=exit_code,
        outcome=outcome,
        out=out,
        carry_on=command if exit_code in CARRY_ON else "",
        failure_groups=failure_groups,
    )


def _lanes(s: Summary) -> str:
    return ", ".join(
        f"{lane} {n} ({s.rate_limited.get(lane, 0)} answered 429)" for lane, n in s.requests.items()
    )


def summary_lines(s: Summary) -> list[str]:
    """The summary for people: plain lines, the failures grouped after them."""
    lines = [
        f"summary: {s.jobs} jobs: {s.done} done ({s.downloaded} downloaded, "
        f"{s.already_there} already there), {s.failed} failed, {s.left} left",
        f"requests: {_lanes(s)}; {size_text(s.bytes)} in {duration_text(s.elapsed)}",
    ]
    if s.carry_on:
        lines.append(
            f"saved: {s.downloaded} files downloaded by this run are in {s.out}; "
            f"{s.tasks_kept} created tasks are kept in the ledger (the next run polls them, "
            f"it does not create them again); {s.left - s.tasks_kept} jobs not started"
        )
    # The outcome says more than the meaning (which jobs, what stopped it), except after
    # a signal, where it says the same.
    said = "" if s.exit_code in (130, 143) or not s.outcome else f" ({s.outcome})"
    lines.append(f"exit {s.exit_code}: {s.meaning}{said}")
    lines += failure_lines(s.failure_groups, jobs_per_group=5)
    lines.append(f"files in {s.out}")
    if s.carry_on:
        lines.append(f"to carry on: {s.carry_on}")
    return lines


def summary_fields(s: Summary) -> dict[str, Any]:
    """The summary as the fields of one JSON event."""
    return {
        "event": "summary",
        "jobs": s.jobs,
        "done": s.done,
        "downloaded": s.downloaded,
        "already_there": s.already_there,
        "failed": s.failed,
        "left": s.left,
        "tasks_kept": s.tasks_kept,
        "requests": dict(s.requests),
        "rate_limited": dict(s.rate_limited),
        "bytes": s.bytes,
        "elapsed_seconds": round(s.elapsed, 3),
        "exit_code": s.exit_code,
        "exit_meaning": s.meaning,
        "outcome": s.outcome,
        "out": s.out,
        "carry_on": s.carry_on,
        "failures_by_reason": {g["reason"]: g["count"] for g in s.failure_groups},
    }


def failure_lines(
    groups: Sequence[Mapping[str, Any]], *, jobs_per_group: int = 3, max_groups: int = 10
) -> list[str]:
    """Failure groups (``report.failure_groups``) as lines: the count and reason, then
    a few of its jobs (key, view_id, bm_type)."""
    if not groups:
        return []
    total = sum(int(g["count"]) for g in groups)
    n = len(groups)
    lines = [f"failures by reason ({counted(total, 'job')}, {counted(n, 'reason')}):"]
    for group in groups[:max_groups]:
        lines.append(f"  {group['count']} x {group.get('title') or group['reason']}")
        jobs = list(group["jobs"])
        for job in jobs[:jobs_per_group]:
            tag = " ".join(str(job.get(k, "")) for k in ("view_id", "bm_type")).strip()
            lines.append(f"      {str(job['key'])[:12]} {tag}".rstrip())
        if len(jobs) > jobs_per_group:
            lines.append(f"      ... and {len(jobs) - jobs_per_group} more")
    if n > max_groups:
        lines.append(f"  ... and {n - max_groups} more reasons ('bulkfetch status --json')")
    return lines
