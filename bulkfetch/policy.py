"""A run's policy: back-off, retries, outages, quotas and task expiry, as pure decisions.

Every function here takes plain data and, where time matters, ``now`` (unix seconds), and
returns a decision; none reads a clock, the ledger or a limiter, none draws a random number
(the caller passes its jitter ``draw``), so each is tested without sockets or sleeps. The
engine feeds them what happened and carries out what they decide.

* **back-off** (``backoff``): the one formula every wait after a failure uses, a job's
  retry within a run, a lane's pause in an outage, a search page's retry and a failed job's
  wait for a later run (``retry_delay``);
* **a job's retries** (``retry_in``): wait and try again, or give up;
* **outages** (``LaneHealth``): failures in a row across jobs are the server's, not the
  jobs': the lane pauses and the jobs keep their budgets, for a while;
* **quotas** (``quota_block``): the per-run and per-day creation quotas and the time box;
  ``count_creates`` keeps the per-day tally;
* **expiry** (``expiry``): a task that expired or that EOS forgot is created again, after
  its deadline, unless the job used its creations.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "OUTAGE_PAUSE_CAP",
    "OUTAGE_STREAK",
    "RETRY_BASE",
    "RETRY_CAP",
    "Expiry",
    "LaneHealth",
    "backoff",
    "count_creates",
    "expiry",
    "quota_block",
    "retry_delay",
    "retry_in",
    "today",
]

#: Failures in a row on a lane, across jobs, that are taken for an outage.
OUTAGE_STREAK = 4
#: The longest pause of a lane in an outage, seconds.
OUTAGE_PAUSE_CAP = 60.0
#: A failed job's wait before a later run retries it: an hour, doubling, at most a week.
RETRY_BASE, RETRY_CAP = 3600.0, 7 * 86400.0
#: Days of creation counts the ledger keeps (for the per-day quota).
DAYS_KEPT = 7
#: Attempts past this add nothing (``base * 2**62`` exceeds any sane cap): no overflow.
_MAX_EXPONENT = 62


def backoff(attempt: int, *, base: float, cap: float, draw: float = 1.0) -> float:
    """Seconds to wait after the ``attempt``-th failure in a row (1, 2, ...)::

        ceiling = min(cap, base * 2 ** (attempt - 1))
        wait    = ceiling * (0.5 + 0.5 * draw)

    Exponential, capped at ``cap``; ``draw`` in [0, 1] is the jitter: a uniform random draw
    spreads clients that failed together over the upper half of the ceiling (never less
    than half, so a back-off is never wasted), 1.0 (the default) waits the ceiling itself.
    Bounded: ``attempt`` below 1 counts as 1, and the exponent stops at 62, so a huge
    attempt number neither overflows nor exceeds ``cap``.
    """
    exponent = max(0, min(attempt - 1, _MAX_EXPONENT))
    ceiling = min(cap, base * 2.0**exponent)
    return ceiling * (0.5 + 0.5 * min(1.0, max(0.0, draw)))


def retry_delay(failures: int) -> float:
    """Seconds before a job that failed ``failures`` times (for a reason that may pass) is
    tried again by a later run: an hour, then 2, 4, 8 ... hours, at most a week."""
    return backoff(failures, base=RETRY_BASE, cap=RETRY_CAP)


def retry_in(errors: int, *, max_errors: int, base: float, cap: float, draw: float) -> float | None:
    """After a job's ``errors``-th transient failure in this run: seconds until it is tried
    again, or None when its ``max_errors`` retries are spent and it fails."""
    if errors > max_errors:
        return None
    return backoff(errors, base=base, cap=cap, draw=draw)


@dataclass(frozen=True, slots=True)
class LaneHealth:
    """One lane's failures in a row, across jobs: whether the server seems down.

    ``streak``: requests in a row that failed; ``jobs``: the jobs they were for; ``since``:
    when the outage began (None while there is none). Immutable: each event returns the new
    health.
    """

    streak: int = 0
    jobs: frozenset[str] = frozenset()
    since: float | None = None

    def answered(self) -> LaneHealth:
        """The server answered: no outage."""
        return _HEALTHY

    @property
    def was_down(self) -> bool:
        """Whether the failures so far made an outage (the lane logs its end)."""
        return self.streak >= OUTAGE_STREAK

    def failed(
        self, key: str, *, now: float, max_outage: float, interval: float, draw: float
    ) -> tuple[LaneHealth, float | None]:
        """A request for job ``key`` failed transiently: the new health, and the seconds the
        lane pauses if this is an outage (None if the failure counts against the job).

        Several failures in a row across jobs say the server (or the network) is down, not
        that these jobs are bad: the lane waits with back-off (base twice its ``interval``,
        at most ``OUTAGE_PAUSE_CAP``) and the jobs keep their retry budgets, for up to
        ``max_outage`` seconds in all. One job failing again and again is that job's
        problem, not an outage.
        """
        health = LaneHealth(self.streak + 1, self.jobs | {key}, self.since)
        if health.streak < OUTAGE_STREAK or len(health.jobs) < 2:
            return health, None
        if health.since is None:
            health = LaneHealth(health.streak, health.jobs, now)
            since = now
        else:
            since = health.since
        if now - since > max_outage:
            return health, None
        attempt = health.streak - OUTAGE_STREAK + 1
        return health, backoff(attempt, base=2 * interval, cap=OUTAGE_PAUSE_CAP, draw=draw)


_HEALTHY = LaneHealth()


def today(when: float) -> str:
    """The UTC day of ``when``, ``YYYY-MM-DD``: the per-day quota's day."""
    return time.strftime("%Y-%m-%d", time.gmtime(when))


def count_creates(by_day: Mapping[str, int], *, now: float, n: int) -> dict[str, int]:
    """``by_day`` with ``n`` more creations today, and only the last week of days kept."""
    day, oldest = today(now), today(now - DAYS_KEPT * 86400)
    kept = {d: count for d, count in by_day.items() if d >= oldest}
    kept[day] = kept.get(day, 0) + n
    return kept


def quota_block(
    *,
    launched: int,
    max_creates: int | None,
    created_today: int,
    max_creates_per_day: int | None,
    now: float,
    time_box: float | None,
    turnaround: float,
) -> str:
    """Why no more task may be created, or "" when one may.

    ``launched``: creations this run; ``created_today``: creations counted today (this run
    and earlier ones); ``turnaround``: seconds a task created now would take to be seen
    through (its processing and its place in the status lane's queue), against the
    ``time_box`` (a unix time, or None).
    """
    if max_creates is not None and launched >= max_creates:
        return f"the run's creation quota ({max_creates}) is used"
    if max_creates_per_day is not None and created_today >= max_creates_per_day:
        return f"today's creation quota ({max_creates_per_day}) is used"
    if time_box is not None and now + turnaround > time_box:
        return "the time box leaves no room to see another task through"
    return ""


@dataclass(frozen=True, slots=True)
class Expiry:
    """What becomes of a job whose task expired: created again from ``not_before``
    (unix time), or failed (``give_up``) with ``reason``."""

    give_up: bool
    not_before: float
    reason: str


def expiry(
    why: str,
    *,
    creates: int,
    max_creates_per_job: int,
    now: float,
    deadline: float,
    gone_at: float | None = None,
) -> Expiry:
    """The decision for a job whose task expired (``why``), after ``creates`` creations in
    this run. Created again, but not before its ``deadline`` (until then the old task may
    still be alive on EOS), or, when EOS said it no longer knows the task, from ``gone_at``;
    failed once it was created ``max_creates_per_job`` times.
    """
    if creates >= max_creates_per_job:
        return Expiry(True, now, f"{why}, {creates} times")
    return Expiry(False, max(now, deadline if gone_at is None else gone_at), why)
