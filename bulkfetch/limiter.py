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
faster: ×1.05 every 5 requests until the first 429, carefully after it) and never to
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
        "_clock",
        "_floor",
        "_next_at",
        "_ok_streak",
        "_paused_until",
        "_sleep",
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
    #: With ``learn`` and no 429 seen yet: faster probing (×1.05 every 5 requests).
    search_after = 5
    search_speedup = 1.05
    max_speedup = 4.0
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
        self._ok_streak = 0
        self._backoff = 0
        self._clock = clock
        self._sleep = sleep
        self._next_at = -math.inf
        self._paused_until = -math.inf

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

    async def acquire(self) -> None:
        """Wait for the lane's next slot and take it.

        Re-checks after each sleep, because a 429 elsewhere in the lane may have paused it
        meanwhile.
        """
        while True:
            now = self._clock()
            at = self.ready_at()
            if now >= at:
                self._next_at = now + self.interval
                return
            await self._sleep(at - now)

    def release_unused(self) -> None:
        """Give back the slot just taken when no request was sent with it."""
        self._next_at -= self.interval

    def succeeded(self) -> None:
        """Record a request the server accepted (any answer but 429)."""
        self._backoff = 0
        self._ok_streak += 1
        # Searching for an unknown limit (learning, no 429 yet): probe briskly; once the
        # server has said where its limit is, approach it carefully.
        searching = self._floor < self.configured.interval and not self._too_fast
        if self._ok_streak < (self.search_after if searching else self.probe_after):
            return
        self._ok_streak = 0
        speedup = self.search_speedup if searching else self.speedup
        target = max(self._floor, self.interval / speedup)
        if self._too_fast:
            target = max(target, self._too_fast * 1.02)
        self.interval = min(self.interval, target)

    def pause(self, seconds: float) -> None:
        """Hold the whole lane for ``seconds`` (the server seems down), pace unchanged."""
        self._paused_until = max(self._paused_until, self._clock() + max(0.0, seconds))

    def rate_limited_by_server(self, retry_after: float | None) -> float:
        """Record a 429: pause the whole lane and slow down. Returns the pause in seconds."""
        self.rate_limited += 1
        first_of_streak = self._backoff == 0
        self._ok_streak = 0
        if first_of_streak:
            # Only the pace that ran into the limit says anything about the limit: the
            # 429s that follow in the same storm come while paused, whatever the pace.
            self._too_fast = max(self._too_fast, self.interval)
            ceiling = max(self.max_backoff, self.configured.interval)
            self.interval = max(self.interval, min(self.interval * self.slowdown, ceiling))
        if retry_after is not None and retry_after >= 0:
            pause = min(retry_after, self.max_backoff)
        else:
            pause = min(self.interval * self.first_backoff * 2**self._backoff, self.max_backoff)
        self._backoff = min(self._backoff + 1, 30)
        until = self._clock() + pause
        self._paused_until = max(self._paused_until, until)
        self.pauses += pause
        return pause
