"""``--learn-rates``: a lane's search above its configured rate, until the first 429.

429s only ever slow a lane down, so a lane configured below the server's limit would never
learn it. With ``learn`` the lane speeds up ×``speedup`` every ``every`` accepted requests,
up to ``max_speedup`` times the configured rate, until the server refuses one: that 429
(``pacing.lesson_of_429``, ``searching``) tells the limit, and the search ends for good.
"""

from __future__ import annotations

__all__ = ["Search"]


class Search:
    """Whether a lane still searches, how fast it may go, and the 429 that ended it."""

    __slots__ = ("_floor", "_streak", "active", "ended_at")

    #: ×1.1 every request, so a lane configured at half the limit reaches it in 8
    #: requests. Every 5 (until issue 11's last sessions) lost some 20 slots of a 150-job
    #: run to the climb. A search that fast overshoots a window counter far before it is
    #: refused; what made that costly (a sliding log refusing the even pace after the
    #: burst, read as a slower limit) is what the lane's room check (``pacing.room_at``)
    #: and ``Refusal.after_search`` take care of.
    every = 1
    speedup = 1.1
    max_speedup = 4.0

    def __init__(self, interval: float, *, learn: bool) -> None:
        #: The lane searches: ``learn``, and no 429 (nor another process's lesson) yet.
        self.active = learn
        #: Send time of the 429 that ended the search, if one did.
        self.ended_at: float | None = None
        self._floor = interval / self.max_speedup
        self._streak = 0

    def __repr__(self) -> str:
        return f"<Search active={self.active} ended_at={self.ended_at}>"

    def accepted(self, limit_interval: float) -> float:
        """A request was accepted: the interval to believe now, one step faster every
        ``every`` of them while the search goes on."""
        if not self.active:
            return limit_interval
        self._streak += 1
        if self._streak < self.every:
            return limit_interval
        self._streak = 0
        return max(self._floor, limit_interval / self.speedup)

    def end(self, refused_at: float | None = None) -> None:
        """The search is over: a 429 for a request sent at ``refused_at`` ended it, or
        (None) another process on the key learned the limit."""
        if self.active and refused_at is not None:
            self.ended_at = refused_at
        self.active = False
