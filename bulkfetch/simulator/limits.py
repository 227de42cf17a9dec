"""How a server may count requests: the rate limiter kinds the simulator can play.

EOS documents "10 requests per minute" and nothing of how it counts them, so the simulator
can play each common way of enforcing ``limit`` requests per ``window`` seconds per key:

* ``sliding`` (a sliding log): at most ``limit`` admitted requests in any ``window``
  seconds. The strictest reading of "N per minute"; what the simulator always did.
* ``fixed`` (a calendar-window counter): at most ``limit`` in each window aligned to
  multiples of ``window`` (per clock minute); a burst across a boundary gets ``2 * limit``.
* ``bucket`` (a token bucket): ``burst`` tokens (``limit`` when 0), refilled at
  ``limit / window`` per second; a request takes one.
* ``spacing`` (GCRA, a leaky bucket as nginx's ``limit_req``): requests at least
  ``window / limit`` apart, with ``burst`` requests of tolerance (0: strictly spaced, as
  nginx without ``burst=``).

Every kind counts only what it admits (a refused request leaves no trace, as nginx does),
and a refusal says how long until a request would be admitted (``wait``), so the server's
``Retry-After`` can be exact, rounded or the whole window (``app``).

Contract: pure state, no clock: ``admit`` takes ``now`` (monotonic seconds).
"""

from __future__ import annotations

import math
from collections import deque
from typing import Literal, Protocol

__all__ = [
    "LIMITER_KINDS",
    "FixedWindow",
    "LaneLimit",
    "LimiterKind",
    "SlidingWindow",
    "Spacing",
    "TokenBucket",
    "make_limit",
]

LimiterKind = Literal["sliding", "fixed", "bucket", "spacing"]
LIMITER_KINDS: tuple[LimiterKind, ...] = ("sliding", "fixed", "bucket", "spacing")


class LaneLimit(Protocol):
    """One lane's limiter, for every key."""

    def admit(self, key: str, now: float, limit: int, window: float) -> float | None:
        """Record and admit a request (``None``), or return the seconds until one would fit."""


class SlidingWindow:
    """At most ``limit`` admitted requests per key in any ``window`` seconds.

    Rejected requests are not recorded, so a client hammering a closed window does not keep
    it closed: only what the server actually served counts, as the EOS docs imply.
    """

    __slots__ = ("_hits",)

    def __init__(self, burst: int = 0) -> None:
        del burst  # a sliding log has no burst beyond its limit
        #: key -> monotonic times of admitted requests still inside the window, oldest first.
        self._hits: dict[str, deque[float]] = {}

    def admit(self, key: str, now: float, limit: int, window: float) -> float | None:
        hits = self._hits.setdefault(key, deque())
        while hits and hits[0] <= now - window:
            hits.popleft()
        if len(hits) >= limit:
            # The (len - limit + 1)th oldest must leave before there is room; it is usually
            # the oldest, unless the limit was lowered at runtime.
            return max(hits[len(hits) - limit] + window - now, 0.0)
        hits.append(now)
        return None

    def __repr__(self) -> str:
        return f"<SlidingWindow keys={len(self._hits)}>"


class FixedWindow:
    """At most ``limit`` per key in each window ``[k * window, (k + 1) * window)``."""

    __slots__ = ("_counts",)

    def __init__(self, burst: int = 0) -> None:
        del burst
        self._counts: dict[str, tuple[int, int]] = {}  # key -> (window number, admitted)

    def admit(self, key: str, now: float, limit: int, window: float) -> float | None:
        number = math.floor(now / window)
        current, count = self._counts.get(key, (number, 0))
        if current != number:
            count = 0
        if count >= limit:
            return max((number + 1) * window - now, 0.0)
        self._counts[key] = (number, count + 1)
        return None

    def __repr__(self) -> str:
        return f"<FixedWindow keys={len(self._counts)}>"


class TokenBucket:
    """``burst`` tokens per key (``limit`` if 0), refilled at ``limit / window`` a second."""

    __slots__ = ("_buckets", "burst")

    def __init__(self, burst: int = 0) -> None:
        self.burst = burst
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def admit(self, key: str, now: float, limit: int, window: float) -> float | None:
        capacity = float(self.burst or limit)
        rate = limit / window
        tokens, at = self._buckets.get(key, (capacity, now))
        tokens = min(capacity, tokens + max(0.0, now - at) * rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / rate
        self._buckets[key] = (tokens - 1.0, now)
        return None

    def __repr__(self) -> str:
        return f"<TokenBucket burst={self.burst} keys={len(self._buckets)}>"


class Spacing:
    """GCRA: requests ``window / limit`` apart, ``burst`` of them allowed early."""

    __slots__ = ("_tat", "burst")

    def __init__(self, burst: int = 0) -> None:
        self.burst = burst
        self._tat: dict[str, float] = {}  # key -> theoretical arrival time of the next

    def admit(self, key: str, now: float, limit: int, window: float) -> float | None:
        interval = window / limit
        tat = self._tat.get(key, now)
        earliest = tat - self.burst * interval
        if now < earliest:
            return earliest - now
        self._tat[key] = max(tat, now) + interval
        return None

    def __repr__(self) -> str:
        return f"<Spacing burst={self.burst} keys={len(self._tat)}>"


def make_limit(kind: LimiterKind, burst: int = 0) -> LaneLimit:
    """A fresh limiter of ``kind``."""
    if kind == "fixed":
        return FixedWindow(burst)
    if kind == "bucket":
        return TokenBucket(burst)
    if kind == "spacing":
        return Spacing(burst)
    return SlidingWindow(burst)
