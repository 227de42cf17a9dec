"""What a run would do, decided without sending anything: ``bulkfetch plan`` / ``run --dry-run``.

The same decision the engine makes at start (``scheduler.resume_action``) for every job of
the manifest, set against the ledger: jobs to create, to poll, to fetch again, done,
failed (quarantined, or waiting out a back-off before a retry), jobs changed since the
last run (another job's file at the same place), and ledger jobs no longer in the
manifest. Then what that costs: requests per lane, and the wall time at the configured
rates with the processing times and polls per job seen in earlier runs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from bulkfetch.config import RunConfig
from bulkfetch.ledger import JobRecord, JobState, Ledger
from bulkfetch.manifest.jobs import Manifest
from bulkfetch.processing import ProcessingModel
from bulkfetch.scheduler import Action, resume_action, safety_margin

__all__ = ["ACTION_TEXT", "FETCH_AGAIN", "Plan", "make_plan"]

#: The plan's word for a done job whose file is gone and whose task is alive (the engine
#: polls it, and the answer is the file again); ``refetch`` is the same with the task
#: expired, created again.
FETCH_AGAIN = "fetch-again"
#: How the text plan names its actions, where the action's value would not say it.
ACTION_TEXT = {FETCH_AGAIN: "fetch again", "refetch": "fetch again (new task)"}
#: Status calls per job assumed until earlier runs say otherwise.
DEFAULT_POLLS_PER_JOB = 1.2
_CREATES = {
    Action.CREATE,
    Action.RECREATE_EXPIRED,
    Action.RECREATE_LOST,
    Action.REFETCH,
    Action.RETRY,
}


@dataclass(slots=True)
class Plan:
    jobs: int
    actions: dict[str, int]
    changed: list[str] = field(default_factory=list)  # paths whose job's parameters changed
    removed: int = 0  # ledger jobs no longer in the manifest
    creates: int = 0
    polls: int = 0
    status_calls: int = 0
    seconds: float = 0.0
    polls_per_job: float = DEFAULT_POLLS_PER_JOB
    median_processing: float | None = None
    limited_by: str = ""  # the run's quota or time box, when it will stop short

    def to_json(self) -> dict[str, Any]:
        return {
            "jobs": self.jobs,
            "actions": self.actions,
            "changed": self.changed,
            "removed": self.removed,
            "requests": {"create": self.creates, "status": self.status_calls},
            "estimated_seconds": round(self.seconds, 1),
            "polls_per_job": round(self.polls_per_job, 3),
            "median_processing_seconds": self.median_processing,
            "limited_by": self.limited_by,
        }


def make_plan(
    manifest: Manifest,
    ledger: Ledger,
    config: RunConfig,
    *,
    file_ok: Callable[[JobRecord], bool],
    now: float | None = None,
    found: Iterable[JobRecord] = (),
) -> Plan:
    """Decide every job's action and estimate what the run costs.

    ``found``: done jobs the destination holds that the ledger does not know of (a bucket
    after a lost ledger), as the run's start would record them."""
    now = time.time() if now is None else now
    margin = safety_margin(config.deadline_margin, ledger.meta.task_timeout)
    records = {**ledger.records(), **{record.key: record for record in found}}
    actions: dict[str, int] = {}
    wanted = {job.key for job in manifest.jobs}
    for job in manifest.jobs:
        record = records.get(job.key)
        action = resume_action(
            record,
            now=now,
            file_ok=record is not None and record.state is JobState.DONE and file_ok(record),
            retry_failed=config.retry_failed,
            margin=margin,
        )
        label = action.value
        if action is Action.POLL and record is not None and record.state is JobState.DONE:
            label = FETCH_AGAIN  # done, file gone, task alive: polled for its file again
        actions[label] = actions.get(label, 0) + 1
    # Changed: a ledger job no longer wanted, at the same place (file) or in the same
    # slot (view_id, bm_type, AOI) as a job of the manifest: same job, other parameters.
    unwanted = [r for k, r in records.items() if k not in wanted]
    changed: list[str] = []
    if unwanted:  # (a path and a sha256 per job: only worth it when there is something to match)
        paths = {job.relative_path().as_posix().lower() for job in manifest.jobs}
        slots = {job.slot for job in manifest.jobs}
        changed = sorted(
            r.path for r in unwanted if r.path.lower() in paths or (r.slot and r.slot in slots)
        )
    plan = Plan(
        jobs=len(manifest.jobs),
        actions=dict(sorted(actions.items())),
        changed=changed,
        removed=len(unwanted) - len(changed),
    )
    plan.creates = sum(actions.get(a.value, 0) for a in _CREATES)
    plan.polls = actions.get(Action.POLL.value, 0) + actions.get(FETCH_AGAIN, 0)
    _estimate(plan, ledger, config)
    return plan


def _estimate(plan: Plan, ledger: Ledger, config: RunConfig) -> None:
    runs = ledger.meta.runs
    status = sum(r.requests.get("status", 0) for r in runs)
    downloaded = sum(r.downloaded for r in runs)
    if downloaded >= 10:
        plan.polls_per_job = max(1.0, status / downloaded)
    model = ProcessingModel()
    model.load(ledger.meta.processing)
    if model.n:
        plan.median_processing = round(model.quantile(0.5), 3)
    creates = plan.creates
    if config.max_creates is not None and creates > config.max_creates:
        creates = config.max_creates
        plan.limited_by = f"--max-creates {config.max_creates}"
    plan.creates = creates
    plan.status_calls = math.ceil((creates + plan.polls) * plan.polls_per_job)
    processing = plan.median_processing or 0.0
    plan.seconds = max(
        creates * config.create_rate.interval,
        plan.status_calls * config.status_rate.interval,
    ) + (processing if plan.status_calls else 0.0)
    if config.max_duration is not None and plan.seconds > config.max_duration:
        plan.limited_by = plan.limited_by or f"--max-duration {config.max_duration:g}s"
        plan.seconds = config.max_duration
