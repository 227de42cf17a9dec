"""The decisions of a run, as pure functions over plain data: no I/O, no clock.

The engine feeds these the current time and what the API said, and carries out what they
decide. Three decisions live here:

* **what a run does with each job** (``resume_action``): given the manifest's job, its
  ledger record and whether its file is still there, skip it, poll its live task, or
  create it (again);
* **which task to poll next** (``Poller``): every created task waits in one queue, ordered
  by the time its odds of being ready (from the learned processing-time distribution,
  given its age and its last "not ready") reach ``target``. Makespan is the objective,
  and under a rate limit a status slot left unused is lost for good, while a poll that
  finds a task not ready in a slot nothing else wanted costs nothing. So every free slot
  goes to the head of the queue, the task most likely to be ready (``next_for_slot``),
  whether or not its odds have reached the target yet; a call-saving mode
  (``eager=False``, for plans that count requests) polls a task only once they have. A
  task is never polled within ``margin`` seconds of its deadline: it is handed back as
  expired, to be created again;
* **how many tasks to keep in flight** (``window_size``): enough that the status lane always
  has a task that is probably ready (Little's law over the learned processing time), few
  enough that none waits long enough to expire.

The odds and the tail come from the processing-time model
(:class:`~bulkfetch.processing.ProcessingModel`), learned online as tasks answer.
"""

from __future__ import annotations

import enum
import heapq
import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

from bulkfetch.processing import ProcessingModel
from bulkfetch.records import JobRecord, JobState

__all__ = [
    "Action",
    "Poller",
    "TaskTiming",
    "resume_action",
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
    and its back-off across runs (``policy.retry_delay``) is over; a failure that will not pass
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


def safety_margin(configured: float, task_timeout: float) -> float:
    """Seconds before a task's deadline after which it is treated as expired.

    The configured margin (a minute by default) guards against clock skew and a slow
    last download on a 48-hour task; a short-lived task gets a tenth of its life instead.
    """
    return max(0.0, min(configured, 0.1 * task_timeout))


#: Waiting tasks up to which a refit re-times them all (beyond, new timings apply as
#: tasks come up): a bound on the work of one refit.
REKEY_MAX = 2000


@dataclass(slots=True)
class TaskTiming:
    """What the poller knows of one live task (times are unix seconds)."""

    key: str
    created_at: float
    deadline: float
    due: float = 0.0
    polls: int = 0
    last_poll: float = 0.0
    #: Age at the last "not ready" (0: never polled): the lower bound on its processing.
    last_age: float = 0.0
    #: Due at a time set by ``retry_later``, which a refit of the model leaves alone.
    pinned: bool = False


@dataclass(slots=True)
class Poller:
    """The queue of live tasks, ordered by when each is next worth a status call."""

    model: ProcessingModel = field(default_factory=ProcessingModel)
    margin: float = 60.0
    #: Minimum seconds between two polls of one task: the status interval keeps a
    #: "not ready" task from being polled again in the very next slot.
    min_gap: float = 0.0
    #: The odds that a task is ready at which it becomes due (given its last "not ready").
    #: A poll that finds a task not ready takes a slot another task could have used, and
    #: a task polled at odds p takes about 1/p calls: 0.5 spent two calls per task on a
    #: spread-out processing time (2.0 per job with sigma 1). Waiting for high odds costs
    #: little: while the lane has a backlog the tasks at its head are past these odds
    #: anyway, and when it has none, a ready task waiting a little does not delay the
    #: batch, except at its very end (see ``watch_last``).
    target: float = 0.9
    #: In the end game (nothing left to create) the last few tasks decide when the batch
    #: ends, and the status lane has slots to spare: each of the last ``watch_last`` tasks
    #: (or ``watch_fraction`` of all the tasks given, if more) is polled at least every
    #: ``watch_share`` of the run so far, however unlikely the model says it is to be
    #: ready. That bounds what a slow last task adds to the makespan (that share of the
    #: run at worst, half on average) at a few calls for a few tasks, where polling at
    #: good odds only would leave a task in the tail of a heavy distribution unpolled for
    #: long after it was ready (the odds in a log-normal tail build up slowly).
    watch_last: int = 3
    watch_fraction: float = 0.025
    watch_share: float = 0.05
    #: Spend every free status slot on the task most likely to be ready (``next_for_slot``);
    #: False polls a task only once its odds reach ``target`` (saves calls, costs time).
    eager: bool = True
    #: Tasks at the head of the queue compared by their odds for each slot: a bound on
    #: the work per slot.
    choose_among: int = 8
    _tasks: dict[str, TaskTiming] = field(default_factory=dict)
    _heap: list[tuple[float, int, str]] = field(default_factory=list)
    _seq: Iterator[int] = field(default_factory=itertools.count)
    _expired: list[str] = field(default_factory=list)
    _draining: bool = False  # nothing left to create: the end game
    _added: int = 0  # tasks ever added
    _first_created: float = math.inf  # when the run's first task was created
    _events: int = 0  # answers fed to the model
    _since_fit: int = 0  # answers since its last refit

    def __len__(self) -> int:
        return len(self._tasks)

    def __contains__(self, key: object) -> bool:
        return key in self._tasks

    def add(self, key: str, *, created_at: float, deadline: float) -> None:
        task = TaskTiming(key, created_at, deadline)
        self._tasks[key] = task
        self._first_created = min(self._first_created, created_at)
        self._added += 1
        self._schedule(task, self._model_due(task))

    def remove(self, key: str) -> None:
        if self._tasks.pop(key, None) is not None:
            self._end_game_check()

    def set_draining(self, draining: bool) -> None:
        """Whether tasks are still to be created (False) or the queue is all there is."""
        if draining != self._draining:
            self._draining = draining
            self._end_game_check()

    def _watching(self) -> bool:
        last = max(self.watch_last, int(self.watch_fraction * self._added))
        return self._draining and len(self._tasks) <= last

    def _end_game_check(self) -> None:
        # Entering the end game re-times the last tasks, which were timed for good odds.
        if self._watching():
            self._retime()

    def not_ready(self, key: str, *, now: float) -> None:
        """The task answered "not ready" at ``now``: schedule its next poll."""
        task = self._tasks.get(key)
        if task is None:
            return
        task.polls += 1
        task.last_poll = now
        task.last_age = max(task.last_age, now - task.created_at)
        task.pinned = False
        self._learned()
        self._schedule(task, self._model_due(task))

    def found_ready(self, key: str, *, now: float) -> None:
        """The task answered with its file at ``now``: done with it, and learn from it.

        What it teaches is an interval (ready after its last "not ready", by now), not an
        exact time: see ``ProcessingModel``.
        """
        task = self._tasks.pop(key, None)
        if task is None:
            return
        self.model.observe_interval(task.last_age, now - task.created_at)
        self._learned()
        self._end_game_check()

    def _model_due(self, task: TaskTiming) -> float:
        age = task.created_at + self.model.next_poll_age(task.last_age, target=self.target)
        if self._watching():
            since = max(task.last_poll, task.created_at)
            age = min(age, since + self.watch_share * (since - self._first_created))
        if task.polls:
            return max(age, task.last_poll + self.min_gap)
        return age

    def _learned(self) -> None:
        """Refit the model now and then: often while it knows little, rarely once it knows
        much (every ~10% more answers, at most every 100), so the cost per answer stays
        bounded. While the queue is small, re-time every waiting task by the new fit: the
        first tasks were timed by the prior alone."""
        self._events += 1
        self._since_fit += 1
        if self._since_fit < max(4, min(100, self._events // 10)):
            return
        self._since_fit = 0
        self.model.refit([t.last_age for t in self._tasks.values() if t.polls])
        if len(self._tasks) <= REKEY_MAX:
            self._retime()

    def _retime(self) -> None:
        for task in self._tasks.values():
            if task.due != math.inf and not task.pinned:
                self._schedule(task, self._model_due(task))

    def retry_later(self, key: str, *, at: float) -> None:
        """A poll failed transiently: try the task again no sooner than ``at``."""
        task = self._tasks.get(key)
        if task is not None:
            task.pinned = True
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

    def next_for_slot(self, now: float) -> str | None:
        """The task to spend a free status slot on now, or None.

        When ``eager``: of the ``choose_among`` tasks at the head of the queue (due first,
        whether or not their odds have reached the target yet), the one most likely to be
        ready now (``odds_ready``). Ordered by when their odds reach the target, a task
        found not ready once comes back to the head with odds that rise slower than
        those of a task never polled, so the head alone wastes slots on it while ready
        tasks wait. Never a task in the caller's hands, nor one held back by
        ``retry_later`` before its time, nor one past its deadline margin (moved to
        ``take_expired()``). Otherwise the task due now, if any (``next_due``).
        """
        if not self.eager:
            return self.next_due(now)
        held: list[tuple[float, int, str]] = []
        candidates: list[tuple[float, int, str]] = []
        while self._heap and len(candidates) < self.choose_among:
            entry = heapq.heappop(self._heap)
            due, _, key = entry
            task = self._tasks.get(key)
            if task is None or task.due != due:
                continue  # removed, or rescheduled since
            if task.pinned and due > now:
                held.append(entry)  # a transient failure's back-off is not cut short
                continue
            if now >= task.deadline - self.margin:
                del self._tasks[key]
                self._expired.append(key)
                continue
            candidates.append(entry)
        chosen = None
        if candidates:
            best = max(candidates, key=lambda e: (self.odds_ready(e[2], now), -e[0]))
            chosen = best[2]
            self._tasks[chosen].due = math.inf  # in the caller's hands until answered
            held += [e for e in candidates if e is not best]
        for entry in held:
            heapq.heappush(self._heap, entry)
        return chosen

    def odds_ready(self, key: str, now: float) -> float:
        """The model's odds that task ``key`` is ready at ``now``, given its last "not
        ready" (``(F(age) - F(last)) / (1 - F(last))``)."""
        task = self._tasks[key]
        f_last = self.model.cdf(task.last_age)
        if f_last >= 1.0:
            return 1.0
        return max(0.0, self.model.cdf(now - task.created_at) - f_last) / (1.0 - f_last)

    def wants_slot(self, now: float) -> float:
        """When the status lane next has a use for a slot (inf: no task to poll).

        ``now`` (or earlier) whenever a task waits and ``eager`` holds; otherwise when the
        next task becomes due. A task held back by ``retry_later`` counts from its time.
        """
        due = self.earliest_due()
        if not self.eager or due <= now or due == math.inf:
            return due
        if not self._tasks[self._heap[0][2]].pinned:
            return now
        # Rare (transient failures): the head is held back, another task may not be.
        if any(not t.pinned and t.due != math.inf for t in self._tasks.values()):
            return now
        return due

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
