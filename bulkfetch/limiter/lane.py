"""A pacing rate limiter for one API lane, that learns the server's limit from its 429s.

EOS counts requests per key and per endpoint (10 a minute), in a way nobody outside knows:
a sliding log, a calendar window, a token bucket, strict spacing. Evenly spaced requests
at the limit pass all of them, so ``Limiter`` hands out one slot every ``interval``
seconds, FIFO, to whoever waits in ``acquire()``. Every request of the lane, whichever
job it serves, takes a slot: the limit is shared by the whole process.

``interval`` is the server's interval as believed (``limit_interval``, the configured
rate's at first) plus a small relative ``margin`` plus the **jitter** measured on the
connection (``pacing.jitter_margin``), and two slots are never closer than the server's
interval plus that jitter, whatever the timer did: a server judges arrival times, and a
strict-spacing limiter refuses two requests that arrive closer than its interval.

The server is the authority on its limit. A 429 tells the limit (``pacing.limit_after_429``:
the requests it accepted in the window before), and the lane pauses as ``Retry-After``
says within sane bounds (``retry_after.bounded_pause``), or, without one, until the new
limit leaves room (``pacing.pause_without_retry_after``: at most a window, never an
exponential back-off). A 429 for a request sent before the last change of pace is an
echo of the old pace and changes nothing. With ``learn`` the lane searches faster than the
configured rate (``search.Search``: ×1.1 every request, up to 4×) until the first 429,
which then tells the limit; without it the lane never goes faster than configured.

Whatever the pace, a slot waits until the window has room at the limit believed
(``pacing.room_at``): after a burst (a search, a rate set too high) that followed slower
sends, a sliding log makes room only as fast as those leave it.

With ``burst`` (the create lane, whose work is all known up front), the lane spends its
window's allowance as fast as the server answers: a slot is handed out at once while
nothing of the lane is on its way and the window has room at the limit believed, so a run
starts with a window's worth of requests where even pacing would take a window to send
them, and a sliding log, a calendar window or a token bucket (burst = its rate) accepts
them all. One request at a time, so the first 429 stops it: with two or more accepted
back to back the server counts in a window and its count is the limit
(``pacing.lesson_of_429``); refused the second of a pair, it spaces requests, and the
lane paces evenly from then on. With ``learn`` the burst goes past the configured rate
(``search.Search``'s cap) until that first 429; the second of a burst refused, the
search goes on evenly paced. Not while other processes share the key.

The clock is injectable (``clock`` and ``sleep``) so the pacing is tested without time
passing. ``acquire()`` returns the time the slot was granted: hand it back to
``succeeded`` or ``rate_limited_by_server`` as ``sent_at``, so round trips are measured
and a 429 is placed among the requests the server accepted.
"""

from __future__ import annotations

import bisect
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import anyio

from bulkfetch.config import Rate
from bulkfetch.limiter.burst import Burst, ServerKind
from bulkfetch.limiter.pacing import (
    KEEP_WINDOWS,
    Refusal,
    lesson_of_429,
    pause_without_retry_after,
    room_at,
)
from bulkfetch.limiter.retry_after import bounded_pause
from bulkfetch.limiter.round_trips import RoundTrips
from bulkfetch.limiter.search import Search
from bulkfetch.limiter.shared_pace import late_shift

if TYPE_CHECKING:
    from bulkfetch.limiter.shared_lane import SharedLane

__all__ = ["Limiter"]


class Limiter:
    """Hands out request slots for one lane at a learned, evenly spaced rate."""

    __slots__ = (
        "_accepted",
        "_burst",
        "_clock",
        "_first_sent",
        "_granted",
        "_kept_since",
        "_last_change",
        "_last_refusal",
        "_last_send",
        "_next_at",
        "_paused_until",
        "_refusals",
        "_sleep",
        "configured",
        "kind",
        "limit_interval",
        "name",
        "pauses",
        "rate_limited",
        "round_trips",
        "search",
        "shared",
        "strict",
    )

    #: Relative headroom on the server's interval, beside the measured jitter: a timer's
    #: and a clock's small errors.
    margin = 0.005
    #: Round trips kept for the jitter estimate.
    keep_latencies = 32
    #: Jitter, as a share of the interval, up to which the lane spaces every two requests
    #: by it before any 429 asks: cheap insurance against a spacing limiter (on the
    #: internet at 10/min, 50 ms of jitter is 0.8% of a slot). Beyond it (loopback at
    #: 50 ms slots) the lane pays it only once a 429 shows the server spaces requests.
    cheap_jitter = 0.02
    #: A round trip, as a share of the interval, beyond which a lane does not burst.
    burst_trip = 0.25

    def __init__(
        self,
        name: str,
        rate: Rate,
        *,
        learn: bool = False,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        shared: SharedLane | None = None,
        burst: bool = False,
        kind: ServerKind | None = None,
    ) -> None:
        #: The lane's name, for logs.
        self.name = name
        #: Where slots come from when other processes share the key (``rate_share``):
        #: None, the lane's own pacing here.
        self.shared = shared
        #: The rate the user configured.
        self.configured = rate
        #: Seconds per request the server is believed to allow.
        self.limit_interval = rate.interval
        #: Requests on their way, and the spread of round trips and send times measured.
        self.round_trips = RoundTrips(self.keep_latencies)
        #: 429s seen on this lane.
        self.rate_limited = 0
        #: The server spaces requests (a 429 came with fewer in the window than it allows).
        self.strict = False
        #: Seconds spent paused by 429s.
        self.pauses = 0.0
        #: ``--learn-rates``: the search above the configured rate, until the first 429.
        self.search = Search(rate.interval, learn=learn)
        # Spend the window's allowance as fast as the server answers, until a 429 shows
        # a server that does not count in a window (see the module's docstring).
        self._burst = Burst(burst)
        #: How the server counts, as the run's lanes learned it (shared between them).
        self.kind = kind if kind is not None else ServerKind()
        self._accepted: list[float] = []  # send times the server accepted, ascending
        self._kept_since = -math.inf  # ``_accepted`` holds every one sent since
        self._first_sent = math.inf  # when the lane first sent
        self._last_change = -math.inf  # when the pace last changed on a 429
        self._last_refusal: float | None = None  # send time of the 429 that changed it
        self._refusals: deque[float] = deque()  # send times of the 429s that taught
        self._clock = clock
        self._sleep = sleep
        self._next_at = -math.inf
        self._granted: list[float] = []  # slots handed out and not yet sent, ascending
        self._last_send = -math.inf
        self._paused_until = -math.inf

    def __repr__(self) -> str:
        return (
            f"<Limiter {self.name} interval={self.interval:.4g}s "
            f"configured={self.configured} 429s={self.rate_limited} "
            f"limit={self.limit_interval:.4g}s{' spacing' if self.spacing else ''} "
            f"jitter={self.jitter * 1000:.3g}ms "
            f"wait={max(0.0, self.ready_at() - self._clock()):.3g}s>"
        )

    @property
    def jitter(self) -> float:
        """The spread of the delay from send to answer, measured (seconds)."""
        return self.round_trips.jitter

    @property
    def bunching(self) -> float:
        """``jitter`` plus the spread of how late requests went out after their slot."""
        return self.round_trips.bunching

    @property
    def interval(self) -> float:
        """Seconds between slots now: the believed limit, the margin and the jitter.

        A server that counts in a window absorbs bunching over the window: requests that
        arrive bunched by ``bunching`` need only that much more in a whole window, a share
        of it per slot. One that spaces requests (``strict``, learned from a 429 the window
        count does not explain) needs the jitter between every two.
        """
        pace = self.limit_interval * (1 + self.margin)
        if self.spacing:
            return pace + self.jitter
        # Twice the bunching per window: half the headroom may go to catching up late
        # slots (``_slack``), the other half is what keeps the window's count.
        return pace + 2 * self.bunching / self._per_window()

    @property
    def spacing(self) -> bool:
        """Whether two sends are kept the server's interval plus the jitter apart: once
        a 429 showed the server spaces requests (``strict``), or while that is cheap."""
        known = self.round_trips.known >= 4
        cheap = known and self.jitter <= self.cheap_jitter * self.limit_interval
        spaces = self.strict or self.kind.windowed is False
        return spaces or (cheap and not self.bursting)

    @property
    def burst(self) -> bool:
        """Whether the lane bursts (see the module's docstring): until a 429 showed a
        server that does not count in a window."""
        return self._burst.on

    @property
    def bursting(self) -> bool:
        """Whether the lane may hand out a slot before it is due (``burst``), now: not
        where a request's round trip is more than a share of a slot (thousands a second),
        and sending one at a time would be no faster than the pace, and cost each request
        a commit of its own."""
        if not self._burst.on or self.round_trips.latency > self.burst_trip * self.limit_interval:
            return False
        return self.shared is None or self.shared.alone

    def _per_window(self) -> float:
        return max(1.0, self.configured.period / self.limit_interval)

    def _slack(self) -> float:
        """How late a slot may be taken and still be counted from when it was due: half
        the headroom a window of slots has over the limit, so any run of slots still
        spans a window plus the other half."""
        return 0.5 * (self.interval - self.limit_interval) * self._per_window()

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

    async def acquire(self) -> float:
        """Wait for the lane's next slot and take it; returns the time it was due.

        Re-checks after each sleep, because a 429 elsewhere in the lane may have paused it
        meanwhile. Call ``sending`` right before the request goes out.
        """
        if self.shared is not None:
            return await self._acquire_shared(self.shared)
        while True:
            now = self._clock()
            bursting, extra = self.bursting, self._burst_extra()
            room = self._room_at(now, extra=extra) if bursting else math.inf
            if self._burst_open(now, room):
                self._next_at = max(self._next_at, now + self.interval)
                self._grant(now, early=True)
                return now
            at = self._room_at(self.ready_at(), extra=extra)
            if now >= at:
                # Count the next slot from when this one was due, not from when the caller
                # woke: a timer oversleeps by a millisecond or so, and counted from "now"
                # that piles up (300 slots of 50 ms lost 5 slots). ``sending`` keeps two
                # sends apart all the same where the server needs it. Lateness beyond a
                # slot (an idle lane, a pause) is not made up.
                base = at if now - at <= self._slack() else now
                self._next_at = base + self.interval
                self._grant(base)
                return base
            if bursting and (room := max(self._paused_until, room)) > now:
                at = min(at, room)
            await self._wait(at - now)

    def _on_the_way(self, now: float) -> bool:
        """Whether a slot handed out is not sent yet, or a request sent in the last window
        is not answered (an older one, whose answer never came, is not waited for)."""
        outstanding = self.round_trips.outstanding
        return bool(self._granted) or (
            bool(outstanding) and outstanding[-1] > now - self.configured.period
        )

    def _burst_open(self, now: float, room: float | None = None) -> bool:
        """Whether a slot may be handed out now, before it is due (``burst``): nothing
        of the lane on its way, no pause, and room in the window at the limit believed,
        with the margin and the bunching measured, as a sliding log judges arrivals
        (``room``: when it has, if the caller knows)."""
        if not self.bursting or now < self._paused_until or self._on_the_way(now):
            return False
        if room is None:
            room = self._room_at(now, extra=self._burst_extra())
        return room <= now

    def _burst_extra(self) -> float:
        """What a bursting lane keeps beyond a window between a request and the one a
        window's allowance later: sent back to back, they are judged at the edge of a
        sliding log's window, so the margin and the bunching measured, as even pacing
        keeps them over a window."""
        if not self.bursting:
            return 0.0
        return self.bunching + self.margin * self.configured.period

    async def _wait(self, seconds: float) -> None:
        """Sleep ``seconds``, or less: while bursting, until the request on its way is
        answered, when the next may go."""
        now = self._clock()
        if not (self.bursting and now >= self._paused_until and self._on_the_way(now)):
            await self._sleep(seconds)
            return
        await self._burst.wait_for_answer(seconds)

    def _grant(self, due: float, *, early: bool = False) -> None:
        """Note a slot handed out: until ``sending``, it is a request on its way too."""
        # A slot handed out and never sent (its job cancelled) ages out of the count by
        # itself; here it is only kept from piling up.
        horizon = due - 2 * self.configured.period
        if early:
            self._burst.granted(due, horizon=horizon)
        if self._granted and self._granted[0] < horizon:
            del self._granted[: bisect.bisect_left(self._granted, horizon)]
        bisect.insort(self._granted, due)

    def _room_at(self, at: float, *, extra: float = 0.0) -> float:
        """``at``, or later where a slot then would put more requests in a window than
        the limit believed (``pacing.room_at``), counting those accepted, on their way,
        and handed out but not yet sent, and ``extra`` seconds more than a window apart.
        Not while searching evenly faster than it (a burst's search stops at its cap).
        """
        if self.search.active and not self.bursting:
            return at
        window = self.configured.period
        return room_at(
            at,
            self._accepted,
            self.round_trips.outstanding,
            self._granted,
            window=window,
            # What evenly paced sends at the limit put in a window, rounded up: a belief
            # a hair slower than the server's (6.06 s a request at 10 a minute, a 429's
            # smallest step past 6 s) must not cost a whole request a window.
            allowed=max(1, math.ceil(window / self.limit_interval - 1e-6)),
            jitter=self.jitter + extra,
        )

    def _held_until(self) -> float:
        """Until when this lane's own state holds it, before it takes a shared slot: a
        pause, or a window without room."""
        now = self._clock()
        return max(self._paused_until, self._room_at(now, extra=self._burst_extra()))

    async def _acquire_shared(self, shared: SharedLane) -> float:
        """A slot from the store other processes on the key share, after any pause of
        this lane's own (a server failing every request) and once its window has room
        (``_room_at``); adopts what the store was taught by another process's 429: its
        limit, and that the server spaces requests. Alone on the key, a burst takes the
        store's next slot and uses it now (``SharedLane.take``'s ``early``)."""
        waited = False
        while True:
            while (wait := self._held_until() - self._clock()) > 0:
                await self._wait(wait)
            if not waited and self.bursting and self._on_the_way(self._clock()):
                # The store's next slot is a slot away at most: the answer on its way
                # (a millisecond or a round trip) may open the burst before it.
                waited = True
                await self._wait(self.interval)
                continue
            early = self._burst_open(self._clock())
            due = await self._take_shared(shared, early=early)
            if early:
                due = min(due, self._clock())
            if due >= self._paused_until:
                break
            shared.give_back()  # this lane was paused (its own 429) while it waited
        if shared.others:
            # What the other processes sent: the server counted them with this lane's own
            # when it refuses, and a 429 read from this process's share alone would take
            # the limit for a fraction of what it is.
            for t in shared.others:
                bisect.insort(self._accepted, t)
            self._first_sent = min(self._first_sent, shared.others[0])
            shared.others.clear()
        taught = shared.taught
        if taught is not None:
            if taught.limit_interval > self.limit_interval * (1 + 1e-9):
                self.limit_interval = taught.limit_interval
                self.search.end()
                # Answers to requests sent before now were paced the old way: echoes.
                self._last_change = self._clock()
            self.strict = self.strict or taught.strict
            self._burst.on = self._burst.on and not self.strict
        self._next_at = due + self.interval
        self._grant(due, early=early)
        return due

    async def _take_shared(self, shared: SharedLane, *, early: bool) -> float:
        return await shared.take(
            interval=self.interval,
            slack=self._slack(),
            # A shared slot further ahead than this is a stale state or a clock that
            # jumped: no pause or queue of processes is ever that long.
            horizon=4 * self.configured.period + 60.0,
            # What the others sent is read, on a 429, in the window before it.
            history=2 * self.configured.period,
            clock=self._clock,
            sleep=self._sleep,
            early=early,
        )

    def release_unused(self) -> None:
        """Give back the slot just taken when no request was sent with it."""
        self._next_at -= self.interval
        if self._granted:
            self._burst.answered(self._granted.pop())
        self._burst.wake()
        if self.shared is not None:
            self.shared.give_back()

    def _gap(self) -> float:
        """Seconds two sends must be apart where the server spaces requests (``strict``):
        its interval plus the jitter, even when a late slot is caught up. Elsewhere the
        pace and its slack (``acquire``) keep the window's count, and a request that
        waited for the ledger's fsync may go right away.

        While fewer than 4 round trips are known (the first connections are being set up,
        the slowest of a run), the lane is spaced by the slowest seen so far, or a tenth
        of a slot before any: a spacing limiter would refuse the second request of a run
        otherwise, and no window limiter minds a few slots spaced a little wider. Not a
        bursting lane: its second request is the probe (a 429 that shows spacing ends the
        burst, and makes the lane ``strict``).
        """
        if self.round_trips.known < 4 and not self.bursting:
            return self.limit_interval + self.round_trips.slowest(0.1 * self.limit_interval)
        return self.limit_interval + self.jitter if self.spacing else 0.0

    async def sending(self, due: float | None = None) -> float:
        """Called right before a request goes out; returns its send time for ``succeeded``
        or ``rate_limited_by_server``. ``due`` is what ``acquire`` returned.

        Where the server spaces requests, waits until the last send is the server's
        interval plus the jitter ago: between ``acquire`` and here the request may have
        waited (for the ledger's fsync, for a connection), and two requests bunched on
        the way are refused by such a server even when their slots were far apart.
        """
        while True:
            now = self._clock()
            at = self._last_send + self._gap()
            if now >= at:
                break
            await self._sleep(at - now)
        self._last_send = now
        if due is not None:
            i = bisect.bisect_left(self._granted, due)
            if i < len(self._granted) and self._granted[i] == due:
                del self._granted[i]
            self._burst.sent(due, now)
        if due is not None and (late := now - due) > self._slack():
            self._sent_late(late)
        self.round_trips.sent(now, due)
        self._first_sent = min(self._first_sent, now)
        return now

    def _sent_late(self, late: float) -> None:
        """A request goes out ``late`` seconds after its slot, more than the slack the
        pace keeps for catching up: it arrives where the grid put a later slot, and the
        window it lands in would hold one request too many. The slots to come move on
        by the lateness, at most one slot (``shared_pace.sent_late``): here, or in the
        store every process on the key takes its slots from."""
        if self.shared is not None:
            self.shared.sent_late(late, self.interval)
        else:
            self._next_at += late_shift(late, self.interval)

    def _answered(self, sent_at: float | None) -> tuple[float, float]:
        """The clock now and the send time (now if unknown); learns the round trip."""
        now = self._clock()
        self._burst.wake()
        if sent_at is None:
            return now, now
        self.round_trips.answered(sent_at, now, interval=self.limit_interval)
        return now, sent_at

    def succeeded(self, sent_at: float | None = None) -> None:
        """Record a request the server accepted (any answer but 429), sent at ``sent_at``."""
        now, sent = self._answered(sent_at)
        self._burst.answered(sent)
        bisect.insort(self._accepted, sent)
        horizon = now - KEEP_WINDOWS * self.configured.period
        self._kept_since = max(self._kept_since, horizon)
        if self._accepted[0] < horizon:
            del self._accepted[: bisect.bisect_left(self._accepted, horizon)]
        self.limit_interval = self.search.accepted(self.limit_interval)

    def _first_kept_refusal(self, sent: float) -> float | None:
        """The earliest refusal whose accepted requests since are all still kept."""
        horizon = sent - KEEP_WINDOWS * self.configured.period
        while self._refusals and self._refusals[0] < horizon:
            self._refusals.popleft()
        return self._refusals[0] if self._refusals else None

    def pause(self, seconds: float) -> None:
        """Hold the whole lane for ``seconds`` (the server seems down), pace unchanged."""
        self._paused_until = max(self._paused_until, self._clock() + max(0.0, seconds))

    def rate_limited_by_server(
        self, retry_after: float | None, sent_at: float | None = None, *, resolution: float = 0.0
    ) -> float:
        """Record a 429 for a request sent at ``sent_at``: learn the limit and pause the
        whole lane. ``retry_after`` is the server's header in seconds (None if absent),
        ``resolution`` how far off it may be (``retry_after_resolution``).
        Returns the pause from now, in seconds."""
        now, sent = self._answered(sent_at)
        self.rate_limited += 1
        burst = self._burst.answered(sent)
        # Requests sent before this one and not answered yet reached the server first:
        # counted as accepted (the 429s among them will be echoes).
        earlier = self.round_trips.sent_before(sent)
        accepted = sorted(self._accepted + earlier) if earlier else self._accepted
        refusal = Refusal(
            sent_at=sent,
            limit_interval=self.limit_interval,
            pace=self.interval,
            window=self.configured.period,
            accepted=accepted,
            previous=self._last_refusal,
            first_sent=min(self._first_sent, sent),
            strict=self.spacing,
            first_refusal=self._first_kept_refusal(sent),
            retry_after=retry_after,
            retry_after_resolution=resolution,
            kept_since=self._kept_since,
            jitter=self.jitter,
            after_search=self._last_refusal is not None
            and self._last_refusal == self.search.ended_at,
            burst=burst,
            windowed=self.kind.windowed,
            refusals=tuple(self._refusals),
        )
        echo = sent < self._last_change
        if not echo:
            lesson = lesson_of_429(
                refusal, searching=self.search.active, search_speedup=self.search.speedup
            )
            if lesson.strict is not None:
                self.strict = lesson.strict
            # Only a window's count, read from a burst, leaves the lane bursting.
            self._burst.on = self._burst.on and lesson.strict is False
            if burst and lesson.strict is not None:
                self.kind.windowed = not lesson.strict
            self.limit_interval = lesson.limit_interval
            self._last_change = now
            self._refusals.append(sent)
            if not (burst and lesson.strict):
                # (The second of a burst refused by a server that spaces requests tells
                # nothing of its rate: the search goes on, evenly paced.)
                self.search.end(sent)
            self._last_refusal = sent
        pause = bounded_pause(retry_after, interval=self.interval, window=self.configured.period)
        if pause is not None:
            until = now + pause
        elif echo:
            until = now + self.interval
        else:
            until = sent + pause_without_retry_after(refusal, self.limit_interval)
        until = max(until, now)
        self.pauses += max(0.0, until - max(now, self._paused_until))
        self._paused_until = max(self._paused_until, until)
        if self.shared is not None and not echo:
            # Every process on the key pauses with this one and learns its limit (none
            # while the search goes on: the store's limit would end it at the next slot).
            taught = 0.0 if self.search.active else self.limit_interval
            self.shared.refused(limit_interval=taught, strict=self.strict, pause=until - now)
        return until - now
