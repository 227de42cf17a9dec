"""A lane's burst: which of its requests went early, and the wake-up when one is answered.

With ``burst`` (``Limiter``), the create lane spends its window's allowance as fast as
the server answers: one request at a time, the next as soon as the one before is
answered. ``Burst`` keeps the bookkeeping apart from the lane's pacing: the slots handed
out early (and then their send times), so a 429 is known as a burst's
(``pacing.Refusal.burst``), and the event an ``acquire`` waits on for that answer.
``ServerKind`` is what a burst showed of how the server counts, shared by a run's lanes.
"""

from __future__ import annotations

import anyio

__all__ = ["Burst", "ServerKind"]


class ServerKind:
    """How the server counts requests, as far as a burst showed it, shared by the lanes
    of a run: the endpoints of one API sit behind one gateway, which counts them alike.

    A burst's 429 (``pacing.Refusal.burst``) tells the kind cleanly, where a 429 to an
    evenly paced lane younger than a window does not (a window's count and a pair bunched
    on the way look alike then). So the other lanes read their first 429 by the window's
    count where a burst showed a window counter, and pay the jitter between every two
    requests from the start where it showed a server that spaces them.
    """

    __slots__ = ("windowed",)

    def __init__(self) -> None:
        #: True: counts in a window (or a bucket); False: spaces requests; None: unknown.
        self.windowed: bool | None = None

    def __repr__(self) -> str:
        return f"<ServerKind windowed={self.windowed}>"


class Burst:
    """The requests a lane sent in a burst, and the wake-up for the next one."""

    __slots__ = ("_answer", "_early", "on")

    def __init__(self, on: bool) -> None:
        #: The lane bursts, until a 429 shows a server that does not count in a window.
        self.on = on
        self._early: set[float] = set()  # slots handed out, then sends, in a burst
        self._answer: anyio.Event | None = None  # set when a request is answered

    def __repr__(self) -> str:
        return f"<Burst on={self.on} early={len(self._early)}>"

    def granted(self, due: float, *, horizon: float) -> None:
        """A slot handed out early, due at ``due``; marks older than ``horizon`` (of
        requests whose answer never came) are dropped."""
        if len(self._early) > 64:
            self._early = {t for t in self._early if t > horizon}
        self._early.add(due)

    def sent(self, due: float, at: float) -> None:
        """The slot due at ``due`` was used at ``at``: its send is the burst's."""
        if due in self._early:
            self._early.discard(due)
            self._early.add(at)

    def answered(self, sent_at: float) -> bool:
        """The request sent at ``sent_at`` was answered: whether it was the burst's."""
        early = sent_at in self._early
        self._early.discard(sent_at)
        return early

    def wake(self) -> None:
        """Wake an ``acquire`` waiting for the answer that opens the burst."""
        if self._answer is not None:
            self._answer.set()
            self._answer = None

    async def wait_for_answer(self, seconds: float) -> None:
        """Until a request is answered (``wake``), ``seconds`` at most (real time)."""
        self._answer = answer = anyio.Event()
        with anyio.move_on_after(seconds):
            await answer.wait()
