"""The decisions of a run, as pure functions over plain data: no I/O, no clock.

The engine feeds these the current time and what the API said, and carries out what they
decide. Three decisions live here:

* **what a run does with each job** (``resume_action``): given the manifest's job, its
  ledger record and whether its file is still there, skip it, poll its live task, or
  create it (again);
* **which task to poll next** (``Poller``): every created task waits in one queue, ordered
  by the time it becomes worth a status call. The status budget is the scarcest thing in
  a run (a call spent on a task still processing is a call not spent downloading another),
  so a task is first polled when the learned processing-time distribution says it is
  probably done, and after each "not ready" the next poll waits until that is probable
  again given the task's age. A task is never polled within ``margin`` seconds of its
  deadline: it is handed back as expired, to be created again;
* **how many tasks to keep in flight** (``window_size``): enough that the status lane always
  has a task that is probably ready (Little's law over the learned processing time), few
  enough that none waits long enough to expire.

``ProcessingModel`` learns the processing-time distribution online, as a log-normal over the
ages at which tasks were found ready, starting from a prior so the first polls are sane.
"""

from __future__ import annotations

import enum
import heapq
import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

from .ledger import JobRecord, JobState

__all__ = [
    "Action",
    "Poller",
    "ProcessingModel",
    "TaskTiming",
    "resume_action",
    "retry_backoff",
    "safety_margin",
    "window_size",
]


class Action(enum.StrEnum):
    """What a run does with one job of the manifest."""

    SKIP_DONE = "skip-done"  # done, and its file is there with the recorded size
    SKIP_FAILED = "skip-failed"  # failed for good (quarantined) until --retry-failed
    WAIT_RETRY = "wait-retry"  # failed for a reason that may pass; retried after retry_at
    RETRY = "retry"  # failed for a reason that may pass, and its back-off is over
    POLL = "poll"  # its task is alive: poll it, do not create it again
    CREATE = "create"  # nothing alive for it: create a task
    RECREATE_EXPIRED = "recreate-expired"  # its task is past its deadline: create again
    RECREATE_LOST = "recreate-lost"  # a creation's answer was lost in a crash
    REFETCH = "refetch"  # done, but the file is gone: fetch it again


def resume_action(
    record: JobRecord | None,
    *,
    now: float,
    file_ok: bool,
    retry_failed: bool,
    margin: float,
) -> Action:
    """Decide what a run must do with a job, from its ledger record.

    ``file_ok`` says whether the recorded result file exists with the recorded size.
    A done job whose file is gone is fetched again from its task while the task is alive
    (a status call is cheaper than a creation), and created again otherwise. A failed job
    is retried when asked, or by itself when its failure may pass (server errors, expiry)
    and its back-off across runs (``retry_backoff``) is over; a failure that will not pass
    (EOS refused the parameters, the task errored) waits for ``--retry-failed``.
    """
    if record is None:
        return Action.CREATE
    alive = bool(record.task_id) and now < record.deadline - margin
    match record.state:
        case JobState.PENDING:
            return Action.CREATE
        case JobState.CREATING:
            return Action.RECREATE_LOST
        case JobState.CREATED:
            return Action.POLL if alive else Action.RECREATE_EXPIRED
        case JobState.DONE:
            if file_ok:
                return Action.SKIP_DONE
            return Action.POLL if alive else Action.REFETCH
        case JobState.FAILED:
            if retry_failed:
                return Action.CREATE
            if not record.retryable:
                return Action.SKIP_FAILED
            return Action.RETRY if now >= record.retry_at else Action.WAIT_RETRY


def retry_backoff(failures: int, *, base: float = 3600.0, cap: float = 7 * 86400.0) -> float:
    """Seconds before a job that failed ``failures`` times (for a reason that may pass) is
    tried again by a later run: an hour, then 2, 4, 8 ... hours, at most a week."""
    return min(cap, base * 2.0 ** max(0, min(failures, 30) - 1))


def safety_margin(configured: float, task_timeout: float) -> float:
    """Seconds before a task's deadline after which it is treated as expired.

    The configured margin (a minute by default) guards against clock skew and a slow
    last download on a 48-hour task; a short-lived task gets a tenth of its life instead.
    """
    return max(0.0, min(configured, 0.1 * task_timeout))


@dataclass(slots=True)
class ProcessingModel:
    """An online log-normal estimate of task processing time, in seconds.

    Observations are the ages at which tasks were found ready: an upper bound on the true
    processing time, biased by at most the polling gap, which is what matters for deciding
    when to poll. The prior counts as ``prior_weight`` observations.
    """

    prior_median: float = 30.0
    prior_sigma: float = 0.75
    prior_weight: float = 3.0
    n: int = 0
    _mean: float = 0.0
    _m2: float = 0.0

    def observe(self, seconds: float) -> None:
        x = math.log(max(seconds, 1e-3))
        self.n += 1
        delta = x - self._mean
        self._mean += delta / self.n
        self._m2 += delta * (x - self._mean)

    @property
    def mu(self) -> float:
        w = self.prior_weight
        return (w * math.log(self.prior_median) + self.n * self._mean) / (w + self.n)

    @property
    def sigma(self) -> float:
        w = self.prior_weight
        var = (w * self.prior_sigma**2 + self._m2) / (w + self.n)
        return max(math.sqrt(var), 0.05)

    def cdf(self, age: float) -> float:
        if age <= 0:
            return 0.0
        z = (math.log(age) - self.mu) / (self.sigma * math.sqrt(2))
        return 0.5 * (1 + math.erf(z))

    def quantile(self, p: float) -> float:
        """The age by which a fraction ``p`` of tasks is done."""
        p = min(max(p, 1e-9), 1 - 1e-9)
        return math.exp(self.mu + self.sigma * math.sqrt(2) * _erfinv(2 * p - 1))

    def next_poll_age(self, last_age: float, *, target: float = 0.5) -> float:
        """The age at which a task found not ready at ``last_age`` is ready with odds ``target``.

        Solves ``(F(a) - F(last)) / (1 - F(last)) = target`` for ``a``.
        """
        f_last = self.cdf(last_age)
        # Far in the tail the quantile saturates; keep widening the gap geometrically
        # there so a very late task is not polled in every slot.
        return max(self.quantile(f_last + target * (1 - f_last)), last_age * 1.1)

    def to_json(self) -> dict[str, float]:
        return {"n": self.n, "mean": self._mean, "m2": self._m2}

    def load(self, data: object) -> None:
        """Carry over what earlier runs learned; anything malformed is ignored."""
        if isinstance(data, dict):
            try:
                n, mean, m2 = int(data["n"]), float(data["mean"]), float(data["m2"])
            except (KeyError, TypeError, ValueError, OverflowError):
                return
            # Plausible only: log-seconds within ±30 (a micro-second to centuries) and a
            # spread below e^10, so a damaged ledger cannot make the model overflow.
            if 0 <= n < 10**12 and abs(mean) <= 30 and 0 <= m2 <= 100 * max(n, 1):
                self.n, self._mean, self._m2 = n, mean, m2


def _erfinv(y: float) -> float:
    # Winitzki's approximation refined by two Newton steps: plenty for scheduling.
    a = 0.147
    ln = math.log(1 - y * y)
    t = 2 / (math.pi * a) + ln / 2
    x = math.copysign(math.sqrt(math.sqrt(t * t - ln / a) - t), y)
    for _ in range(2):
        err = math.erf(x) - y
        x -= err / (2 / math.sqrt(math.pi) * math.exp(-x * x))
    return x


@dataclass(slots=True)
class TaskTiming:
    """What the poller knows of one live task (times are unix seconds)."""

    key: str
    created_at: float
    deadline: float
    due: float = 0.0
    polls: int = 0
    last_poll: float = 0.0


@dataclass(slots=True)
class Poller:
    """The queue of live tasks, ordered by when each is next worth a status call."""

    model: ProcessingModel = field(default_factory=ProcessingModel)
    margin: float = 60.0
    #: Minimum seconds between two polls of one task: the status interval keeps a
    #: "not ready" task from being polled again in the very next slot.
    min_gap: float = 0.0
    _tasks: dict[str, TaskTiming] = field(default_factory=dict)
    _heap: list[tuple[float, int, str]] = field(default_factory=list)
    _seq: Iterator[int] = field(default_factory=itertools.count)
    _expired: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self._tasks)

    def __contains__(self, key: object) -> bool:
        return key in self._tasks

    def add(self, key: str, *, created_at: float, deadline: float) -> None:
        task = TaskTiming(key, created_at, deadline)
        self._tasks[key] = task
        self._schedule(task, created_at + self.model.next_poll_age(0.0))

    def remove(self, key: str) -> None:
        self._tasks.pop(key, None)

    def not_ready(self, key: str, *, now: float) -> None:
        """The task answered "not ready" at ``now``: schedule its next poll."""
        task = self._tasks.get(key)
        if task is None:
            return
        task.polls += 1
        task.last_poll = now
        age = now - task.created_at
        due = task.created_at + self.model.next_poll_age(age)
        self._schedule(task, max(due, now + self.min_gap))

    def retry_later(self, key: str, *, at: float) -> None:
        """A poll failed transiently: try the task again no sooner than ``at``."""
        task = self._tasks.get(key)
        if task is not None:
            self._schedule(task, at)

    def _schedule(self, task: TaskTiming, due: float) -> None:
        last_useful = task.deadline - self.margin
        if due >= last_useful:
            # One last look just before the deadline, unless the last poll was that look;
            # either way the task comes out of next_due() as expired at last_useful.
            due = last_useful - 1e-6 if task.last_poll < last_useful - self.min_gap else last_useful
        task.due = due
        heapq.heappush(self._heap, (due, next(self._seq), task.key))

    def next_due(self, now: float) -> str | None:
        """The task to poll now, or None if none is worth a call yet.

        Tasks found past their deadline on the way are moved to ``take_expired()``.
        """
        while self._heap:
            due, _, key = self._heap[0]
            task = self._tasks.get(key)
            if task is None or task.due != due:
                heapq.heappop(self._heap)  # removed, or rescheduled since
                continue
            if due > now:
                return None
            heapq.heappop(self._heap)
            if now >= task.deadline - self.margin:
                del self._tasks[key]
                self._expired.append(key)
                continue
            task.due = math.inf  # in the caller's hands until not_ready/remove/retry_later
            return key
        return None

    def earliest_due(self) -> float:
        """When the next task becomes worth polling (inf if none)."""
        while self._heap:
            due, _, key = self._heap[0]
            task = self._tasks.get(key)
            if task is None or task.due != due:
                heapq.heappop(self._heap)
                continue
            return due
        return math.inf

    def take_expired(self) -> list[str]:
        expired, self._expired = self._expired, []
        return expired


def window_size(
    *,
    status_interval: float,
    model: ProcessingModel,
    task_timeout: float,
    margin: float,
) -> int:
    """How many tasks to keep created and not yet downloaded: as many as expiry allows.

    Creating ahead costs nothing but lifetime: a task created early is ready early, and
    the poller fetches the likeliest-ready task first however long the queue, so a window
    that holds back the create lane only makes the batch end later. The one limit is the
    deadline: the last task of a full window must still be fetched before it, after the
    tail of the processing time (99th percentile) and with every status slot spent on
    downloads, keeping half the lifetime spare for polls that find tasks not ready.
    """
    lifetime = task_timeout - margin - model.quantile(0.99)
    return max(1, min(math.floor(max(lifetime, 0.0) / status_interval * 0.5), 1_000_000))
