"""A pacing rate limiter for one API lane, that learns from 429s.

EOS counts requests per key and per endpoint in a window (10 a minute). The cheapest way
never to exceed a sliding window is to space requests evenly, so ``Limiter`` hands out
one slot every ``interval`` seconds, FIFO, to whoever waits in ``acquire()``. Every
request of the lane, whichever job it serves, takes a slot: the limit is shared by the
whole process.

The server is the authority on its limit. On a 429 the whole lane pauses (``Retry-After``
when given, otherwise an exponential back-off), and the pacing slows by ``slowdown``; the
interval that drew the 429 is remembered as too fast. After ``probe_after`` requests in
a row without a 429 the interval shrinks by ``speedup`` again, but never below the
configured rate (unless ``learn`` is set, which lets it probe up to ``max_speedup`` times
faster: ×1.1 every 5 requests until the first 429, carefully after it) and never to
within 2% of an interval known to be too fast. Only the first 429
of a storm slows the pacing and marks it too fast (the rest come while paused and say
nothing of the pace), so a storm never leaves the lane crawling. A wrong
configured rate thus converges on the real one from either side; errors other than 429
are not rate signals and do not touch it.

The clock is injectable (``clock`` and ``sleep``) so the pacing is tested without time
passing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable

import anyio

from .config import Rate

__all__ = ["Limiter"]


class Limiter:
    """Hands out request slots for one lane at a learned, evenly spaced rate."""

    __slots__ = (
        "_backoff",
        "_clean",
        "_clock",
        "_floor",
        "_good",
        "_next_at",
        "_ok_streak",
        "_paused_until",
        "_sleep",
        "_slowed_at",
        "_suspect",
        "_too_fast",
        "configured",
        "interval",
        "name",
        "pauses",
        "rate_limited",
    )

    #: Relative headroom on the configured interval: loopback and network jitter can
    #: bunch requests at the server, which counts arrival times, not send times.
    margin = 0.01
    slowdown = 1.25
    speedup = 1.03
    probe_after = 25
    #: With ``learn`` and no 429 seen yet: faster probing (×1.1 every 5 requests).
    search_after = 5
    search_speedup = 1.1
    max_speedup = 4.0
    #: A 429 after this many clean requests since the last one is taken for jitter: an
    #: even pace above a sliding-window limit is refused again within a window's count.
    lone_after = 100
    #: First pause after a 429 without Retry-After, in intervals; doubles per 429 in a row.
    first_backoff = 2.0
    max_backoff = 600.0

    def __init__(
        self,
        name: str,
        rate: Rate,
        *,
        learn: bool = False,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        #: The lane's name, for logs.
        self.name = name
        #: The rate the user configured.
        self.configured = rate
        #: Seconds between slots now.
        self.interval = rate.interval * (1 + self.margin)
        #: 429s seen on this lane.
        self.rate_limited = 0
        #: Seconds spent paused by 429s.
        self.pauses = 0.0
        self._floor = self.interval / (self.max_speedup if learn else 1.0)
        self._too_fast = 0.0
        self._suspect = 0.0
        self._good = 0.0  # the fastest pace that passed a clean streak since the last 429
        self._ok_streak = 0
        self._clean = 0  # a 429 before the pace has proven itself is not taken for jitter
        self._backoff = 0
        self._clock = clock
        self._sleep = sleep
        self._next_at = -math.inf
        self._paused_until = -math.inf
        self._slowed_at = -math.inf

    def __repr__(self) -> str:
        return (
            f"<Limiter {self.name} interval={self.interval:.4g}s "
            f"configured={self.configured} 429s={self.rate_limited} "
            f"wait={max(0.0, self.ready_at() - self._clock()):.3g}s>"
        )

    @property
    def rate(self) -> Rate:
        """The pace in force now."""
        return Rate(1.0, self.interval)

    def ready_at(self) -> float:
        """The clock time of the next free slot."""
        return max(self._next_at, self._paused_until)

    def paused_for(self) -> float:
        """Seconds the lane stays paused (by a 429 or an outage) from now; 0 if it is not.
        Read-only, for the progress display."""
        return max(0.0, self._paused_until - self._clock())

    async def acquire(self) -> None:
        """Wait for the lane's next slot and take it.

        Re-checks after each sleep, because a 429 elsewhere in the lane may have paused it
        meanwhile.
        """
        while True:
            now = self._clock()
            at = self.ready_at()
            if now >= at:
                # Count the next slot from when this one was due, not from when the caller
                # woke: a timer oversleeps by a millisecond or so, and counted from "now"
                # that piles up (300 slots of 50 ms lost 5 slots). Lateness beyond
                # ``slack`` (an idle lane, a pause) is not made up, so any ``count + 1``
                # requests still span at least the window less ``slack``: half the margin.
                base = at if now - at <= self._slack() else now
                self._next_at = base + self.interval
                return
            await self._sleep(at - now)

    def _slack(self) -> float:
        """How late a slot may be taken and still be counted from when it was due."""
        window = self.interval * max(1.0, self.configured.count)
        return 0.5 * self.margin * window

    def release_unused(self) -> None:
        """Give back the slot just taken when no request was sent with it."""
        self._next_at -= self.interval

    def succeeded(self) -> None:
        """Record a request the server accepted (any answer but 429)."""
        self._backoff = 0
        self._ok_streak += 1
        self._clean += 1
        # Searching for an unknown limit (learning, no 429 yet): probe briskly; once the
        # server has said where its limit is, approach it carefully.
        searching = self._floor < self.configured.interval and not self.rate_limited
        if self._suspect and self._clean >= self.lone_after:
            # One 429, then a long clean run below it: it was jitter after all. Forgiven,
            # or one stray 429 early in a run would cap the lane 2% short for good.
            self._suspect = 0.0
        if self._ok_streak < (self.search_after if searching else self.probe_after):
            return
        self._ok_streak = 0
        speedup = self.search_speedup if searching else self.speedup
        target = max(self._floor, self.interval / speedup)
        too_fast = max(self._too_fast, self._suspect)
        if too_fast:
            # The limit lies between this pace (clean) and the one that drew the 429:
            # close half the gap per clean streak (bisection), at least one ``speedup``
            # step, so a lane slowed by a storm is back near the limit in a few streaks
            # instead of ~8 for ×1.25 at ×1.03 a streak.
            limit = too_fast * 1.02
            target = max(self._floor, limit, min(target, (self.interval + limit) / 2))
        if target < self.interval:
            self._good = self.interval
            self.interval = target

    def pause(self, seconds: float) -> None:
        """Hold the whole lane for ``seconds`` (the server seems down), pace unchanged."""
        self._paused_until = max(self._paused_until, self._clock() + max(0.0, seconds))

    def rate_limited_by_server(self, retry_after: float | None) -> float:
        """Record a 429: pause the whole lane and slow down. Returns the pause in seconds."""
        self.rate_limited += 1
        first_of_streak = self._backoff == 0
        self._ok_streak = 0
        now = self._clock()
        # A window after a slowdown the server still counts requests sent at the old pace:
        # a 429 then is its echo and says nothing about the new pace.
        echo = now - self._slowed_at < self.configured.period
        if first_of_streak and not echo:
            # Only the pace that ran into the limit says anything about the limit: the
            # 429s that follow in the same storm come while paused, whatever the pace.
            ceiling = max(self.max_backoff, self.configured.interval)
            if self._clean >= self.lone_after:
                # A lone 429 after many clean requests: an even pace above a sliding
                # window's limit is refused again within one window, so this was most
                # likely jitter (requests bunched on the way). Ease off one step and mark
                # nothing: a pace marked too fast for good costs a few % for the rest of
                # the run. If it was the limit, the next 429 comes soon and is not lone.
                slowdown = self.speedup
            else:
                # Back to the last pace that passed a clean streak, if there is one
                # slower than this: the limit lies between, and bisection (succeeded())
                # narrows it down; slowing by a fixed ×1.25 would lose more.
                slowdown = self.slowdown
                if self._good > self.interval:
                    slowdown = max(self.speedup, min(slowdown, self._good / self.interval))
                if self._suspect or self._too_fast:
                    # Evidence again: this pace (and the one suspected) is too fast.
                    self._too_fast = max(self._too_fast, self._suspect, self.interval)
                    self._suspect = 0.0
                else:
                    # First evidence: suspected until a long clean run forgives it.
                    self._suspect = self.interval
            self._slowed_at = now
            self._good = 0.0
            self.interval = max(self.interval, min(self.interval * slowdown, ceiling))
        self._clean = 0
        if retry_after is not None and retry_after >= 0:
            pause = min(retry_after, self.max_backoff)
        else:
            pause = min(self.interval * self.first_backoff * 2**self._backoff, self.max_backoff)
        self._backoff = min(self._backoff + 1, 30)
        until = now + pause
        self._paused_until = max(self._paused_until, until)
        self.pauses += pause
        return pause
