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

``ProcessingModel`` learns the processing-time distribution online, as a log-normal over the
ages at which tasks were found ready, starting from a prior so the first polls are sane.
"""

from __future__ import annotations

import enum
import heapq
import itertools
import math
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from bulkfetch.policy import backoff
from bulkfetch.records import JobRecord, JobState

__all__ = [
    "Action",
    "Poller",
    "ProcessingModel",
    "TaskTiming",
    "prior_median_weight",
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
    return backoff(failures, base=base, cap=cap)


def safety_margin(configured: float, task_timeout: float) -> float:
    """Seconds before a task's deadline after which it is treated as expired.

    The configured margin (a minute by default) guards against clock skew and a slow
    last download on a 48-hour task; a short-lived task gets a tenth of its life instead.
    """
    return max(0.0, min(configured, 0.1 * task_timeout))


#: Censored observations the model keeps (the latest ones): bounds the cost of a refit.
KEEP_INTERVALS = 1000
#: Waiting tasks up to which a refit re-times them all (beyond, new timings apply as
#: tasks come up): a bound on the work of one refit.
REKEY_MAX = 2000
#: EM steps per refit, warm-started from the last fit: a few suffice between refits.
EM_STEPS = 4


@dataclass(slots=True)
class ProcessingModel:
    """An online log-normal estimate of task processing time, in seconds.

    A poll does not see when a task became ready, only that it was or was not ready at the
    poll: "ready at age b, after "not ready" at age a" says a < T <= b (a = 0 if it was never
    polled before), and a task still processing after "not ready" at age a says T > a.
    Taking b as the processing time, as a naive fit would, learns the polling schedule
    rather than the service: when the status lane has a backlog, tasks are found ready long
    after they were, and the model would drift later and later. So ``observe_interval``
    keeps such intervals (the latest ``KEEP_INTERVALS``) and ``refit`` fits the log-normal to
    them by maximum likelihood (EM over the censored log-times, warm-started, a few steps),
    with the tasks still running passed in as right-censored. Exact times (``observe``, and
    what earlier runs learned, ``load``) enter as they are.

    The prior counts as ``prior_weight`` observations, so the first polls are sane and a few
    early answers do not throw the fit about; its median's weight then fades as answers
    come (``prior_median_weight``), because the data cannot correct it: polls at good odds
    mostly find tasks ready, which bounds the processing time from above only, so they say
    little about the lower quantiles and a median with a fixed weight kept dragging the fit
    towards it, with a spread inflated to still match the upper tail. From a prior of 2
    slots the fixed weight fitted a median of 13-14 slots and sigma 0.7-0.85 for a true 20
    and 0.5 (first polls too early: misses), and 40 and 1.45 for a true 60 and 1.0 (polls
    after a "not ready" far too late).
    """

    prior_median: float = 30.0
    prior_sigma: float = 0.75
    prior_weight: float = 3.0
    #: Observations after which the prior median's weight has halved (see
    #: ``prior_median_weight``).
    prior_fade: float = 2.0
    #: Observations behind the estimate (exact ones plus censored ones at the last refit).
    n: int = 0
    _mean: float = 0.0
    _m2: float = 0.0
    # Exact observations (Welford), kept apart so a refit can combine them with the rest.
    _n_exact: int = 0
    _mean_exact: float = 0.0
    _m2_exact: float = 0.0
    # Censored observations as (log lower, log upper) bounds on the log processing time.
    _intervals: deque[tuple[float, float]] = field(
        default_factory=lambda: deque(maxlen=KEEP_INTERVALS)
    )

    def observe(self, seconds: float) -> None:
        """A processing time known exactly."""
        x = math.log(max(seconds, 1e-3))
        self._n_exact += 1
        delta = x - self._mean_exact
        self._mean_exact += delta / self._n_exact
        self._m2_exact += delta * (x - self._mean_exact)
        self.n += 1
        delta = x - self._mean
        self._mean += delta / self.n
        self._m2 += delta * (x - self._mean)

    def observe_interval(self, after: float, at: float) -> None:
        """A task found ready at age ``at``, last found not ready at age ``after`` (0: never).

        Counted at the next ``refit``.
        """
        lo = math.log(after) if after > 1e-3 else -math.inf
        hi = math.log(max(at, 1e-3))
        self._intervals.append((lo, max(lo, hi)))

    @property
    def pending_intervals(self) -> int:
        """Censored observations kept (all of them count at each refit)."""
        return len(self._intervals)

    def refit(self, running: list[float] | None = None) -> None:
        """Fit to the exact times, the kept intervals and ``running`` (ages of tasks found
        not ready and still processing, i.e. T > age)."""
        data = list(self._intervals)
        data.extend((math.log(a), math.inf) for a in running or () if a > 1e-3)
        if not data:
            return
        n_data = len(data)
        for _ in range(EM_STEPS):
            mu, sigma = self.mu, self.sigma
            # E-step: each censored log-time's expected value and square under the current
            # fit, truncated to its bounds; M-step: the same formula as for exact times.
            s1 = self._n_exact * self._mean_exact
            s2 = self._m2_exact + self._n_exact * self._mean_exact**2
            for lo, hi in data:
                m1, m2 = _truncated_moments(mu, sigma, lo, hi)
                s1 += m1
                s2 += m2
            n = self._n_exact + n_data
            self.n = n
            self._mean = s1 / n
            self._m2 = max(0.0, s2 - n * self._mean**2)

    @property
    def mu(self) -> float:
        w = prior_median_weight(self.prior_weight, self.n, fade=self.prior_fade)
        if w + self.n <= 0:
            return math.log(self.prior_median)
        return (w * math.log(self.prior_median) + self.n * self._mean) / (w + self.n)

    @property
    def sigma(self) -> float:
        w = self.prior_weight
        var = (w * self.prior_sigma**2 + self._m2) / (w + self.n)
        return min(max(math.sqrt(var), 0.05), 5.0)

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
                # What earlier runs learned counts as exact times from now on.
                self._n_exact, self._mean_exact, self._m2_exact = n, mean, m2
                self._intervals.clear()


def prior_median_weight(weight: float, n: int, *, fade: float) -> float:
    """How many observations the prior's median counts as once ``n`` are behind the fit:
    ``weight`` at first, half of it after ``fade`` observations, ``weight * fade / n`` in
    the long run (with 300 answers and the defaults, 0.02 against 300)."""
    if fade <= 0:
        return weight
    return weight / (1.0 + max(n, 0) / fade)


_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _truncated_moments(mu: float, sigma: float, lo: float, hi: float) -> tuple[float, float]:
    """E[X] and E[X^2] for X ~ N(mu, sigma) restricted to (lo, hi] (bounds may be infinite)."""
    a = (lo - mu) / sigma
    b = (hi - mu) / sigma
    if a >= b:  # a point
        return lo, lo * lo
    # Work in the tail nearer the mass: Φ(b) - Φ(a) computed as a difference of upper-tail
    # probabilities when both bounds are above the mean, so far-tail intervals keep digits.
    if a > 0:
        mass = 0.5 * (math.erfc(a / _SQRT2) - math.erfc(b / _SQRT2))
    else:
        mass = 0.5 * (math.erfc(-b / _SQRT2) - math.erfc(-a / _SQRT2))
    pa = _INV_SQRT_2PI * math.exp(-0.5 * a * a) if math.isfinite(a) else 0.0
    pb = _INV_SQRT_2PI * math.exp(-0.5 * b * b) if math.isfinite(b) else 0.0
    if mass < 1e-12:
        # Too far in a tail to compute: the nearer bound (or the middle) stands in.
        z = a if math.isfinite(a) and (not math.isfinite(b) or abs(a) < abs(b)) else b
        if math.isfinite(a) and math.isfinite(b):
            z = (a + b) / 2
        x = mu + sigma * z
        return x, x * x
    ez = (pa - pb) / mass
    apa = a * pa if math.isfinite(a) else 0.0
    bpb = b * pb if math.isfinite(b) else 0.0
    ez2 = 1.0 + (apa - bpb) / mass
    m1 = mu + sigma * ez
    m2 = mu * mu + 2 * mu * sigma * ez + sigma * sigma * max(ez2, 0.0)
    return m1, max(m2, m1 * m1)


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
