"""The simulator's memory: tasks, rate limiters (create, status, search; ``limits``), counters, and
the makespan bound.

Contract:

- No I/O and no hidden clock: every method that needs the time takes ``now``
  (``time.monotonic()`` seconds); counters report times as seconds since the state was made.
- ``SimState`` outlives server restarts (``Simulator.stop``/``start``), like EOS's task store
  outlives a network outage.
- The task RNG draws only processing times, one per creation, so a seed and a creation order
  fix every task's processing time whatever the faults do; faults and task errors draw from a
  separate RNG.
- ``bound_makespan`` is pure: see its docstring for the formula.
"""

from __future__ import annotations

import dataclasses
import math
import random
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bulkfetch.simulator.config import SimConfig
from bulkfetch.simulator.limits import LaneLimit, SlidingWindow, make_limit

__all__ = ["Counters", "SimState", "SlidingWindow", "Task", "bound_makespan"]


def bound_makespan(
    ready_offsets: Sequence[float], create_interval: float, status_interval: float
) -> float:
    """The clairvoyant best makespan for tasks with these processing times, in seconds.

    ``ready_offsets[i]`` is task i's processing time (its ready time minus its creation time).
    Task i is created at ``i * create_interval`` (creations paced at the create rate), so it is
    ready at ``r_i = i * create_interval + ready_offsets[i]``. With the ready times sorted,
    each fetch needs one status call, paced at ``status_interval``::

        fetch_0 = r_(0)
        fetch_k = max(r_(k), fetch_(k-1) + status_interval)
        bound   = fetch_(n-1)          (0.0 when there are no tasks)

    A client that never wastes a status call on a pending task reaches this bound; every
    wasted poll pushes it later.
    """
    ready = sorted(i * create_interval + offset for i, offset in enumerate(ready_offsets))
    fetch = -math.inf
    for r in ready:
        fetch = max(r, fetch + status_interval)
    return fetch if ready else 0.0


@dataclass(slots=True)
class Task:
    """One task the simulator has created. Times are ``time.monotonic()`` seconds."""

    task_id: str
    params: dict[str, Any]
    reference: str | None
    created_at: float
    processing: float
    deadline: float
    #: Decided at creation: once ready, the task answers with an error instead of a result.
    error: bool
    #: A complete result body has been sent at least once.
    fetched: bool = False
    polls: int = 0

    @property
    def ready_at(self) -> float:
        """When the task's result becomes available."""
        return self.created_at + self.processing


@dataclass(slots=True)
class Counters:
    """What the simulator has seen since start or the last reset. Times: s since start."""

    create_calls: int = 0  # every request to the create endpoint, whatever its answer
    status_calls: int = 0  # every request to the status endpoint, whatever its answer
    search_calls: int = 0  # every request to a search endpoint, whatever its answer
    create_429: int = 0
    status_429: int = 0
    search_429: int = 0
    create_5xx: int = 0
    status_5xx: int = 0
    search_5xx: int = 0
    search_results: int = 0  # result objects returned by the search endpoints
    colormap_calls: int = 0  # every request to a colormap endpoint, whatever its answer
    resets: int = 0  # connections aborted without an answer
    truncated: int = 0  # result bodies cut short on purpose
    tasks_created: int = 0
    results_served: int = 0  # complete result bodies sent (status endpoint or redirect target)
    #: Requests for a result on its own URL (a redirect's or JSON's) that carried a key:
    #: a client sending its key to another origin would leak it.
    result_requests_with_key: int = 0
    bytes_sent: int = 0  # result body bytes written, complete or not
    polls_not_ready: int = 0
    polls_expired: int = 0
    duplicate_creations: int = 0
    live_duplicate_creations: int = 0
    first_request_at: float | None = None  # task API requests only (create, status)
    last_request_at: float | None = None
    last_result_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """The counters as a plain dict (JSON-ready)."""
        return dataclasses.asdict(self)


@dataclass(slots=True)
class SimState:
    """Everything the running simulator knows; one per ``Simulator``."""

    config: SimConfig
    started: float
    task_rng: random.Random = field(init=False)
    fault_rng: random.Random = field(init=False)
    live: dict[str, Task] = field(default_factory=dict)
    history: list[Task] = field(default_factory=list)
    by_reference: dict[str, list[Task]] = field(default_factory=dict)
    counters: Counters = field(default_factory=Counters)
    #: lane -> ((kind, burst) it was made for, its limiter); remade when the kind changes.
    limits: dict[str, tuple[tuple[str, int], LaneLimit]] = field(default_factory=dict)
    #: Index into ``history`` of the first task counted by the bound (moved by resets).
    bound_from: int = 0

    def __post_init__(self) -> None:
        self.task_rng = random.Random(self.config.seed)
        # A string seed is hashed with sha512: deterministic across runs, unlike hash().
        self.fault_rng = random.Random(f"faults:{self.config.seed}")

    def lane_limit(self, lane: str) -> LaneLimit:
        """The limiter of ``lane`` (create, status, search), of the configured kind.

        A change of ``limiter`` or ``burst`` starts every lane afresh, as a new server would.
        """
        made_for = (self.config.limiter, self.config.burst)
        kept = self.limits.get(lane)
        if kept is None or kept[0] != made_for:
            kept = (made_for, make_limit(self.config.limiter, self.config.burst))
            self.limits[lane] = kept
        return kept[1]

    def since_start(self, now: float) -> float:
        """``now`` as seconds since the state was made."""
        return now - self.started

    def note_request(self, now: float) -> None:
        """Stamp an API request's arrival in the counters."""
        at = self.since_start(now)
        if self.counters.first_request_at is None:
            self.counters.first_request_at = at
        self.counters.last_request_at = at

    def chance(self, rate: float) -> bool:
        """True with probability ``rate``; draws nothing when the rate is 0 or 1."""
        if rate <= 0.0:
            return False
        return rate >= 1.0 or self.fault_rng.random() < rate

    def create_task(self, params: Mapping[str, Any], now: float) -> Task:
        """Create, store and count a task for ``params``."""
        config = self.config
        drawn = self.task_rng.lognormvariate(
            math.log(config.processing_median), config.processing_sigma
        )
        processing = (
            float(config.processing_time_fn(params)) if config.processing_time_fn else drawn
        )
        reference = params.get("reference")
        reference = str(reference) if reference is not None else None
        task = Task(
            # Truly random, not seeded: a client's ledger may outlive this simulator, and a
            # new simulator with the same seed must not reissue ids that mean other tasks.
            task_id=str(uuid.uuid4()),
            params=dict(params),
            reference=reference,
            created_at=now,
            processing=max(0.0, processing),
            deadline=now + config.task_timeout,
            error=self.chance(config.task_error_rate),
        )
        if reference is not None:
            earlier = self.by_reference.setdefault(reference, [])
            if earlier:
                self.counters.duplicate_creations += 1
            if any(t.deadline > now and not t.fetched for t in earlier):
                self.counters.live_duplicate_creations += 1
            earlier.append(task)
        self.live[task.task_id] = task
        self.history.append(task)
        self.counters.tasks_created += 1
        return task

    def lookup(self, task_id: str, now: float) -> Task | None:
        """The live task ``task_id``, or None if unknown or expired (expired ones are dropped)."""
        task = self.live.get(task_id)
        if task is not None and now >= task.deadline:
            del self.live[task_id]
            self.counters.polls_expired += 1
            return None
        return task

    def note_result(self, task: Task, now: float) -> None:
        """A complete result body for ``task`` went out."""
        task.fetched = True
        self.counters.results_served += 1
        self.counters.last_result_at = self.since_start(now)

    def reset_counters(self) -> None:
        """Zero the counters and restart the bound from the next task; tasks stay."""
        self.counters = Counters()
        self.bound_from = len(self.history)

    def counters_dict(self) -> dict[str, Any]:
        """The counters plus ``bound_seconds`` and ``makespan_seconds`` (None until known)."""
        config = self.config
        out = self.counters.as_dict()
        out["bound_seconds"] = bound_makespan(
            [t.processing for t in self.history[self.bound_from :]],
            config.create_window / config.create_limit,
            config.status_window / config.status_limit,
        )
        first, last = self.counters.first_request_at, self.counters.last_result_at
        out["makespan_seconds"] = last - first if first is not None and last is not None else None
        return out

    def tasks_list(self) -> list[dict[str, Any]]:
        """Every task ever created, oldest first; times in seconds since start."""
        return [
            {
                "task_id": t.task_id,
                "reference": t.reference,
                "created_at": self.since_start(t.created_at),
                "ready_at": self.since_start(t.ready_at),
                "deadline": self.since_start(t.deadline),
                "processing": t.processing,
                "error": t.error,
                "fetched": t.fetched,
                "polls": t.polls,
                "params": t.params,
            }
            for t in self.history
        ]
