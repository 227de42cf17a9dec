"""A lane's requests on their way, and how much their round trips and send times spread.

The limiter pays for that spread in its pace: a server that spaces requests needs the
jitter between every two, one that counts in a window a share of it per slot. Kept here,
apart from the pacing, as the one thing the limiter measures rather than decides.
"""

from __future__ import annotations

import bisect
from collections import deque

from bulkfetch.limiter.pacing import jitter_margin

__all__ = ["RoundTrips"]


class RoundTrips:
    """Send times not yet answered, and the jitter and bunching measured so far."""

    __slots__ = ("_latencies", "_lateness", "bunching", "jitter", "latency", "outstanding")

    def __init__(self, keep: int) -> None:
        self._latencies: deque[float] = deque(maxlen=keep)  # send to answer, seconds
        self._lateness: deque[float] = deque(maxlen=keep)  # slot to send, seconds
        #: Send times of requests not yet answered, ascending.
        self.outstanding: list[float] = []
        #: The spread of the delay from send to answer (seconds).
        self.jitter = 0.0
        #: ``jitter`` plus the spread of how late requests went out after their slot.
        self.bunching = 0.0
        #: The median round trip (seconds; 0 before any).
        self.latency = 0.0

    def __repr__(self) -> str:
        return (
            f"<RoundTrips known={self.known} on_the_way={len(self.outstanding)} "
            f"jitter={self.jitter * 1000:.3g}ms>"
        )

    @property
    def known(self) -> int:
        """Round trips measured (the last ``keep`` of them)."""
        return len(self._latencies)

    def slowest(self, default: float) -> float:
        """The longest round trip measured, or ``default`` before any."""
        return max(self._latencies, default=default)

    def sent(self, at: float, due: float | None) -> None:
        """A request went out at ``at``, for the slot that was due at ``due`` (if known)."""
        self.outstanding.append(at)
        if due is not None:
            self._lateness.append(max(0.0, at - due))

    def answered(self, sent_at: float, now: float, *, interval: float) -> None:
        """The request sent at ``sent_at`` was answered at ``now``; ``interval`` is the
        server's, which the spreads are measured against."""
        i = bisect.bisect_left(self.outstanding, sent_at)
        if i < len(self.outstanding) and self.outstanding[i] == sent_at:
            del self.outstanding[i]
        self._latencies.append(max(0.0, now - sent_at))
        # Strict spacing pays the jitter between every two requests; a window pays a
        # share of it, and of how late requests went out, once per window.
        ordered = sorted(self._latencies)
        self.jitter = jitter_margin(ordered, interval=interval)
        self.latency = ordered[len(ordered) // 2]
        self.bunching = self.jitter + jitter_margin(self._lateness, interval=interval)

    def sent_before(self, at: float) -> list[float]:
        """Requests sent before ``at`` and not answered yet (they reached the server first)."""
        return self.outstanding[: bisect.bisect_left(self.outstanding, at)]
