"""A job's state: the one record a run reads and changes, and its transitions.

During a run a job's state lives in one place, its :class:`JobRecord` (held by the ledger,
which persists it); the engine changes it only through the transitions below, pure
functions that take the record, what happened and ``now`` and return the new record.
Each says which states it leaves from; any other is a bug in the caller
(:class:`BadTransition`). The states::

    new_job -> PENDING -begin_create-> CREATING -task_created-> CREATED -file_written-> DONE

    back to PENDING:  undo_create (CREATING: a 429, not counted)
                      recover_lost (CREATING found on load: the answer was lost)
                      requeue (CREATING cut off by an outage or a stop; CREATED or DONE
                               whose task expired or is gone)
                      retry (FAILED, when tried again)
    begin_create also leaves CREATED and DONE (a task found expired, a file and task gone);
    file_written also leaves DONE (its file gone, its task polled again);
    transient_failure counts a failure (CREATING goes back to PENDING, a poll keeps its task);
    fail leaves any state for FAILED.

Two counters exist only for the run (not persisted, not compared): ``run_creates``, the
creations this run (the per-job creation cap), and ``run_errors``, the transient failures
this run (the retry budget). The rest is what the ledger persists (``to_json``).
"""

from __future__ import annotations

import dataclasses
import enum
import typing
from dataclasses import dataclass, field
from typing import Any

from bulkfetch.errors import LedgerCorrupt
from bulkfetch.policy import retry_delay

__all__ = [
    "BadTransition",
    "JobRecord",
    "JobState",
    "begin_create",
    "check_json",
    "fail",
    "file_written",
    "new_job",
    "recover_lost",
    "requeue",
    "retry",
    "task_created",
    "transient_failure",
    "undo_create",
]


class JobState(enum.StrEnum):
    PENDING = "pending"  # known, nothing sent (or to be created again)
    CREATING = "creating"  # intent recorded before the POST; it may or may not have reached EOS
    CREATED = "created"  # a task exists: task_id, req_id, created_at, deadline
    DONE = "done"  # the file is complete: path, size, sha256
    FAILED = "failed"  # reason, retryable


@dataclass(frozen=True, slots=True)
class JobRecord:
    """One job's state. Immutable: derive new states with the transitions (or :meth:`replace`)."""

    key: str
    state: JobState = JobState.PENDING
    path: str = ""  # result path, posix, relative to the output dir
    slot: str = ""  # the job's identity (view_id, bm_type, AOI): a changed job keeps it
    task_id: str = ""
    req_id: str = ""
    created_at: float = 0.0  # unix time the task was created
    deadline: float = 0.0  # unix time: created_at + task_timeout
    size: int = 0
    sha256: str = ""
    reason: str = ""  # why it failed (or the last transient error)
    retryable: bool = False  # whether the failure may pass if tried again later
    creates: int = 0  # POSTs sent for this job, over all runs
    lost_creates: int = 0  # POSTs whose answer never arrived (found CREATING on load)
    errors: int = 0  # transient failures counted against the job
    failures: int = 0  # times the job ended failed, over all runs
    retry_at: float = 0.0  # unix time from which a retryable failure is tried again
    updated_at: float = 0.0
    # This run only: neither persisted nor compared (a reloaded record starts at 0).
    run_creates: int = field(default=0, compare=False)  # creations this run
    run_errors: int = field(default=0, compare=False)  # transient failures this run

    def to_json(self) -> dict[str, Any]:
        """The persisted fields that differ from their defaults (``key`` always)."""
        out: dict[str, Any] = {"key": self.key}
        for name, default in _DEFAULTS:
            value = getattr(self, name)
            if value != default:
                out[name] = value
        if "state" in out:
            out["state"] = str(out["state"])  # a plain str, as a reload gives
        return out

    @classmethod
    def from_json(cls, data: Any, *, where: str) -> JobRecord:
        """Build a record from :meth:`to_json` output; :class:`LedgerCorrupt` names ``where``."""
        problem = check_json(data)
        if problem:
            raise LedgerCorrupt(f"{where}: bad job record: {problem}")
        return cls.from_checked(data)

    @classmethod
    def from_checked(cls, data: dict[str, Any]) -> JobRecord:
        """The record for ``data``, which :func:`check_json` passed."""
        if "state" in data:
            data = {**data, "state": _STATES[data["state"]]}
        return cls(**data)

    def replace(self, **changes: Any) -> JobRecord:
        """A copy with ``changes``; ``updated_at`` is left as it is unless given."""
        if "state" in changes and not isinstance(changes["state"], JobState):
            changes["state"] = _STATES[changes["state"]]  # a caller passed state="done"
        return dataclasses.replace(self, **changes)


_RUN_ONLY = frozenset({"run_creates", "run_errors"})
_DEFAULTS = tuple(
    (f.name, f.default)
    for f in dataclasses.fields(JobRecord)
    if f.name != "key" and f.name not in _RUN_ONLY
)
_STATES = {str(s): s for s in JobState}
_KINDS: dict[str, type] = {  # persisted field name -> str, float, ...
    name: kind for name, kind in typing.get_type_hints(JobRecord).items() if name not in _RUN_ONLY
}


def check_json(data: Any) -> str:
    """Why ``data`` is not a valid record in JSON form, or "" if it is.

    Hot when loading 100,000 records, hence exact ``type() is`` tests (no bool for int).
    """
    if type(data) is not dict:
        return f"expected an object, got {type(data).__name__}"
    key = data.get("key")
    if type(key) is not str or not key:
        return "missing or empty key"
    for name, value in data.items():
        kind = _KINDS.get(name)
        if kind is str or kind is bool:
            ok = type(value) is kind
        elif kind is float:
            # JSON has no NaN or infinity (orjson would write null): x - x is 0 only if finite.
            ok = type(value) in (float, int) and value - value == 0
        elif kind is int:
            ok = type(value) is int and value >= 0
        elif kind is JobState:
            ok = isinstance(value, str) and value in _STATES
        else:
            return f"unknown field {name!r}"
        if not ok:
            return f"bad value for {name!r}: {value!r}"
    return ""


# -- transitions ---------------------------------------------------------------------------


class BadTransition(ValueError):
    """A transition asked of a record in a state it does not leave from: a caller's bug."""


_ANY = frozenset(JobState)
_IN_FLIGHT = frozenset({JobState.CREATED, JobState.DONE})  # a task to poll (DONE: refetch)


def _move(record: JobRecord, name: str, sources: frozenset[JobState], **changes: Any) -> JobRecord:
    if record.state not in sources:
        raise BadTransition(f"job {record.key!r}: {name} from {record.state}")
    return dataclasses.replace(record, **changes)


def new_job(key: str, *, path: str, slot: str, now: float = 0.0) -> JobRecord:
    """A job the ledger does not know yet: PENDING, nothing sent."""
    return JobRecord(key, path=path, slot=slot, updated_at=now)


def begin_create(record: JobRecord, *, now: float) -> JobRecord:
    """The intent to create the job's task, recorded before the POST leaves (a job found
    with an expired task, or done with its file and task gone, is created again)."""
    return _move(
        record,
        "begin_create",
        _IN_FLIGHT | {JobState.PENDING},  # CREATED, DONE: its task expired before the run
        state=JobState.CREATING,
        creates=record.creates + 1,
        run_creates=record.run_creates + 1,
        updated_at=now,
    )


def undo_create(record: JobRecord, *, now: float) -> JobRecord:
    """The POST was refused by a rate limit: no task, and the creation does not count."""
    return _move(
        record,
        "undo_create",
        frozenset({JobState.CREATING}),
        state=JobState.PENDING,
        creates=record.creates - 1,
        run_creates=record.run_creates - 1,
        updated_at=now,
    )


def task_created(
    record: JobRecord, *, now: float, task_id: str, req_id: str, task_timeout: float
) -> JobRecord:
    """EOS answered the POST with a task, alive until ``now + task_timeout``."""
    return _move(
        record,
        "task_created",
        frozenset({JobState.CREATING}),
        state=JobState.CREATED,
        task_id=task_id,
        req_id=req_id,
        created_at=now,
        deadline=now + task_timeout,
        reason="",
        updated_at=now,
    )


def file_written(record: JobRecord, *, now: float, path: str, size: int, sha256: str) -> JobRecord:
    """The task's file is complete at ``path`` (fsynced, renamed)."""
    return _move(
        record,
        "file_written",
        _IN_FLIGHT,
        state=JobState.DONE,
        path=path,
        size=size,
        sha256=sha256,
        reason="",
        updated_at=now,
    )


def transient_failure(record: JobRecord, *, now: float, reason: str) -> JobRecord:
    """A failure that may pass, counted against the job: a creation goes back to PENDING
    (no task was made), a poll keeps its task."""
    state = JobState.PENDING if record.state is JobState.CREATING else record.state
    return _move(
        record,
        "transient_failure",
        _IN_FLIGHT | {JobState.CREATING},
        state=state,
        errors=record.errors + 1,
        run_errors=record.run_errors + 1,
        reason=reason,
        updated_at=now,
    )


def requeue(record: JobRecord, *, now: float, reason: str) -> JobRecord:
    """To be created (again), not counted against the job: its creation was cut off (an
    outage, a stop) or its task expired or is gone."""
    return _move(
        record,
        "requeue",
        _IN_FLIGHT | {JobState.CREATING, JobState.PENDING},
        state=JobState.PENDING,
        reason=reason,
        updated_at=now,
    )


def recover_lost(record: JobRecord, *, now: float) -> JobRecord:
    """Found CREATING on load: the answer to its POST was lost; it is created again."""
    return _move(
        record,
        "recover_lost",
        frozenset({JobState.CREATING}),
        state=JobState.PENDING,
        lost_creates=record.lost_creates + 1,
        reason="a creation's answer was lost when the last run stopped",
        updated_at=now,
    )


def retry(record: JobRecord, *, now: float) -> JobRecord:
    """A failed job tried again (``--retry-failed``, or its back-off is over)."""
    return _move(
        record, "retry", frozenset({JobState.FAILED}), state=JobState.PENDING, updated_at=now
    )


def fail(record: JobRecord, *, now: float, reason: str, retryable: bool) -> JobRecord:
    """The job failed: for good until ``--retry-failed``, or, ``retryable``, until a later
    run after its back-off (``policy.retry_delay`` of its failures so far)."""
    failures = record.failures + 1
    return _move(
        record,
        "fail",
        _ANY,
        state=JobState.FAILED,
        reason=reason,
        retryable=retryable,
        failures=failures,
        retry_at=now + retry_delay(failures) if retryable else 0.0,
        updated_at=now,
    )
