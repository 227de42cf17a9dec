"""The limiter's decisions, as pure functions: how much headroom, what limit a 429 shows,
how long to hold a lane when the server does not say. No clock, no I/O.

How the server counts is unknown (a sliding log, a calendar window, a token bucket, strict
spacing like nginx's ``limit_req``: ``eos-api.md``), so each decision must be right for all
of them:

* **headroom** (``jitter_margin``): a server judges requests by when they *arrive*. Sent
  evenly, they arrive bunched by the spread of the delay between send and arrival, and a
  limiter that wants requests at least ``T`` apart refuses any two that arrive closer. So
  two sends are never closer than the server's interval plus that spread, estimated from
  the round trips measured on the connection (larger on the internet than on loopback);
* **the limit a 429 shows** (``limit_after_429``): the requests the server accepted in the
  window before it. For a sliding log that is exactly its limit; for a calendar window it
  is at most twice it (a window may straddle two), for a token bucket the burst plus a
  window's refill, and for strict spacing (which refuses the second request of a lane sent
  too fast) a single request: so the count is trusted only where it explains the refusal,
  and each 429 at most halves the pace. When the count cannot explain it (the lane sent
  no more than the limit believed), the refusals themselves tell the rate: between two of
  them the server let through what it refilled. A history no sliding log explains is a
  calendar window's, whose limit where its boundaries can lie tells (``calendar_limit``);
  a server known to space requests tells its interval in an exact ``Retry-After``
  (``spaced_interval``);
* **the pause without Retry-After** (``pause_without_retry_after``): until the oldest
  request the new limit leaves no room for has left the window, or one slot when the
  count did not tell the limit. Never more than a window: no exponential back-off into a
  long idle pause from a streak of 429s.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "Lesson",
    "Refusal",
    "allowed_in_window",
    "calendar_limit",
    "counted_in_window",
    "jitter_margin",
    "kth_latest",
    "lesson_of_429",
    "limit_after_429",
    "located_count",
    "pause_without_retry_after",
    "room_at",
    "spaced_interval",
    "window_count_tells",
]

#: Windows of accepted requests (and refusals) a lane keeps to read its refusals by.
KEEP_WINDOWS = 8
#: The largest slowdown one 429 may cause: strict spacing refuses the second request of a
#: lane sent at any pace above its rate, so one refusal cannot tell how far above it was.
MAX_SLOWDOWN = 2.0
#: The smallest: any 429 says the lane went too fast, whatever the count says.
MIN_SLOWDOWN = 1.01
#: How much slower than the lane's pace the rate between refusals must be to be the
#: server's rather than the lane's own.
SLOWER = 1.05


def jitter_margin(latencies: Sequence[float], *, interval: float, typical: bool = False) -> float:
    """Seconds by which requests sent evenly may arrive bunched, from recent round trips.

    ``latencies`` are round trips (send to answer). The delay from send to arrival varies
    by at most about their spread: the second-largest minus the smallest (one outlier, a
    GC pause, is not taken as the connection's jitter); with ``typical``, the third
    quartile minus the smallest: what most pairs of requests see (the round trip also
    holds the server's work on the answer, which does not delay the arrival, so the full
    spread overstates it). At most a quarter of the interval.
    """
    if len(latencies) < 4:
        return 0.0
    ordered = sorted(latencies)
    top = ordered[(3 * (len(ordered) - 1)) // 4] if typical else ordered[-2]
    return max(0.0, min(top - ordered[0], 0.25 * interval))


def allowed_in_window(window: float, interval: float) -> int:
    """Requests a window holds at one every ``interval`` seconds: at least one."""
    return max(1, math.floor(window / interval + 1e-9))


def room_at(
    at: float,
    *sends: Sequence[float],
    window: float,
    allowed: int,
    jitter: float,
) -> float:
    """The earliest time from ``at`` a request may go out and leave no window with more
    than ``allowed`` of them, as a sliding log counts arrivals: once the ``allowed``-th
    latest of all ``sends`` (each ascending: requests accepted, on their way, about to
    go) is a window plus the jitter ago.

    Evenly paced requests at the limit never wait here. Uneven ones do: after a burst
    (a search, a pace set too high) that followed slower sends, a sliding log makes room
    only as fast as those slower sends leave it, and paced evenly a lane would be
    refused, and would read the refusal as a slower limit.
    """
    horizon = at - window - jitter
    if sum(len(times) - bisect.bisect_right(times, horizon) for times in sends) < allowed:
        return at
    return max(at, kth_latest(sends, allowed) + window + jitter)


def kth_latest(sends: Sequence[Sequence[float]], k: int) -> float:
    """The ``k``-th latest of all ``sends`` (each ascending; at least ``k`` in all).

    Without merging them: at a high rate (a burst of thousands a window) every slot asks,
    and the requests accepted are thousands where those on their way are a few. So the
    longest run is searched by halves, the others looked through.
    """
    big = max(sends, key=len)
    small = sorted(t for times in sends if times is not big for t in times[-k:])

    def later_or_equal(v: float) -> int:
        return len(big) - bisect.bisect_left(big, v) + len(small) - bisect.bisect_left(small, v)

    best = -math.inf
    # The latest of ``big`` with at least k at or after it: the count falls as i rises.
    lo, hi = max(0, len(big) - k), len(big) - 1
    while lo <= hi:
        mid = (lo + hi) // 2
        if later_or_equal(big[mid]) >= k:
            best, lo = big[mid], mid + 1
        else:
            hi = mid - 1
    for v in reversed(small):
        if v > best and later_or_equal(v) >= k:
            return v
    return best


@dataclass(frozen=True, slots=True)
class Refusal:
    """What a lane knows when a 429 comes. Times are the limiter's clock (seconds).

    ``accepted`` holds the send times of the requests the server accepted (ascending, at
    least those of the last ``window``, all of them since ``kept_since``); ``previous`` the
    send time of the last 429 that changed the pace, if any.
    """

    sent_at: float  # when the refused request was sent
    limit_interval: float  # seconds per request the lane believed the server allows
    pace: float  # seconds between sends the lane kept when it was refused
    window: float  # the configured rate's period (60 s for 10/min)
    accepted: Sequence[float]
    previous: float | None = None
    #: When the lane first sent (-inf: long ago).
    first_sent: float = -math.inf
    #: The lane already keeps its sends a full interval plus the jitter apart.
    strict: bool = False
    #: Send time of the earliest refusal since which ``accepted`` is complete (None: use
    #: ``previous``).
    first_refusal: float | None = None
    #: Seconds the 429's ``Retry-After`` asked for (None: absent or unreadable), and by
    #: how much that may be off (whole seconds or a date: 1).
    retry_after: float | None = None
    retry_after_resolution: float = 0.0
    #: ``accepted`` holds every accepted request sent since this time; older ones were
    #: forgotten. A refusal before it is as good as unknown: counted from it, what the
    #: server let through would be short of what it did (eight windows of a lane refused
    #: twice nine windows apart read as a limit 1.6 times the real one).
    kept_since: float = -math.inf
    #: The spread of the delay from send to arrival measured on the lane (seconds): a
    #: request sent a window after another may arrive less than a window after it.
    jitter: float = 0.0
    #: ``previous`` ended a search (``--learn-rates``): the lane's belief since is a step
    #: back from a refused pace, a guess no run of accepted requests has borne out yet,
    #: and the requests let through since are the search's burst leaving the window.
    after_search: bool = False
    #: The refused request went out in a burst (``Limiter``'s ``burst``): as soon as the
    #: one before it was answered, however soon after the last accepted that was.
    burst: bool = False
    #: How a burst showed the server counts (``burst.ServerKind``), None if none did.
    #: True, a window counter: the count may be read however young this lane is. False,
    #: strict spacing: a refusal to an evenly paced lane is a pair bunched on the way,
    #: unless it comes hard on the heels of another (the lane is above its rate); neither
    #: the window's count nor the rate between refusals (the pause after one included)
    #: is its limit.
    windowed: bool | None = None
    #: Send times of the earlier refusals that taught the lane (ascending, this one not
    #: included): with ``accepted``, where a calendar window's boundaries may lie
    #: (``calendar_limit``).
    refusals: Sequence[float] = ()


def _count_between(times: Sequence[float], lo: float, hi: float) -> int:
    """Times in ``(lo, hi]`` (``times`` ascending)."""
    return bisect.bisect_right(times, hi) - bisect.bisect_right(times, lo)


#: Retry-After, in the lane's intervals, from which it may locate a window's count: a
#: spacing limiter asks for less than one interval, a token bucket for about one.
LOCATES = 2.0
#: Slack on where a located window starts: a Retry-After rounded up to whole seconds
#: starts it up to a second late (at most half an interval, so a fast lane misses nothing).
LOCATE_SLACK = 1.0


def located_count(refusal: Refusal) -> int | None:
    """The limit a window counter's ``Retry-After`` shows, or None where it shows none.

    A server that counts in a window and says when the next request fits points at the
    moment its count drops: a sliding log's oldest request leaving, a calendar window's
    end. Either way the requests it accepted from that moment's window start
    (``sent + retry_after - window``) up to the refusal are exactly what it allows, where
    the count of the last ``window`` (a calendar window straddled, a lane younger than a
    window) is not. Read only from a wait of at least ``LOCATES`` intervals (a spacing
    limiter or a bucket asks for about one) and at most a window (a whole window asked
    whatever the wait locates nothing: its start is the refusal itself), and only where
    it finds at least two requests, and only from a wait said finely enough to place the
    window within half an interval (a date or whole seconds, at a rate of several requests
    a second, could point anywhere).
    """
    r = refusal
    ra = r.retry_after
    if ra is None or not LOCATES * r.limit_interval <= ra <= r.window:
        return None
    if r.retry_after_resolution > 0.5 * r.limit_interval:
        return None
    slack = min(LOCATE_SLACK, 0.5 * r.limit_interval)
    start = r.sent_at + ra - r.window - slack
    k = bisect.bisect_right(r.accepted, r.sent_at) - bisect.bisect_left(r.accepted, start)
    return k if k >= 2 else None


#: Requests accepted since the last refusal below which a new one is "hot on its heels":
#: the limit, not a stray pair of requests bunched on the way (a lane paced above a
#: spacing limiter's rate is refused every other request).
HOT = 2


def _previous(r: Refusal) -> float | None:
    """The last refusal, if the requests accepted since are all known."""
    if r.previous is None or r.previous < r.kept_since:
        return None
    return r.previous


def _since_previous(r: Refusal) -> int | None:
    previous = _previous(r)
    if previous is None or previous >= r.sent_at:
        return None
    return _count_between(r.accepted, previous, r.sent_at)


def _hot(r: Refusal) -> bool:
    """Whether the refusal came hard on the heels of another (fewer than ``HOT`` let
    through between): the lane is above the rate, not a stray pair bunched on the way."""
    since = _since_previous(r)
    return since is not None and since < HOT


def _gap_before(r: Refusal) -> float | None:
    """Seconds from the last accepted request before the refused one, None if none."""
    i = bisect.bisect_left(r.accepted, r.sent_at)
    return r.sent_at - r.accepted[i - 1] if i else None


#: How finely a ``Retry-After`` must be said, as a share of the interval it shows, for
#: ``spaced_interval`` to read it: a wait rounded up is read as said, at most this much
#: slow (read lower, a lane a hair too fast for a spacing limiter is refused at once).
SAID_FINELY = 0.05
#: The least wait, as a share of the interval it shows, that ``spaced_interval`` reads: a
#: request that early was sent too soon, not bunched on the way. (A quarter was too
#: little: an event loop held up 20 ms bunched two requests 50 ms apart that much, read as
#: an interval 45% too slow. A lane twice too fast is refused half an interval early.)
EARLY = 0.4


def spaced_interval(refusal: Refusal, *, early: float = EARLY) -> float | None:
    """The interval a server that spaces requests shows in its ``Retry-After``: from the
    request it let through last until the refused one would have passed (a GCRA's
    interval; a bucket of one, a token's refill). None without a request before it, for a
    wait of a whole window or more, one said too coarsely to read (whole seconds at
    twenty a second, or ten a minute), or one short of ``early`` times the interval
    (``EARLY``; the caller asks for none where the lane is known to be above the rate).
    """
    r = refusal
    gap, ra = _gap_before(r), r.retry_after
    # A whole window (or more) is what some servers say whatever the wait: not a rate.
    if gap is None or ra is None or not 0.0 < ra < r.window:
        return None
    interval = gap + ra
    if r.retry_after_resolution > SAID_FINELY * interval:
        return None
    if ra < early * interval:
        # Sent about an interval after the last one and refused: a pair bunched on the
        # way (the wait is the bunching, and would read the interval that much too slow).
        return None
    return min(interval, r.window)


def _sliding_refuted(r: Refusal, refusals: Sequence[float]) -> bool:
    """Whether the lane's history rules a sliding log out: once, more requests were
    accepted within a window than the window before some refusal held. Counted so that
    the delay from send to arrival cannot make it so: accepted within a window less the
    jitter both ways, refused with a window plus it (whose start is kept)."""
    acc, w, j = r.accepted, r.window, r.jitter
    if not acc:
        return False
    short = w - 2 * j
    most = max(i + 1 - bisect.bisect_right(acc, t - short, 0, i + 1) for i, t in enumerate(acc))
    held = [
        bisect.bisect_left(acc, t) - bisect.bisect_right(acc, t - w - 2 * j)
        for t in refusals
        if t - w - 2 * j >= r.kept_since
    ]
    return bool(held) and most > min(held)


#: The most gaps between sends (modulo the window) ``calendar_limit`` tries a boundary in.
MAX_GAPS = 512
#: A limit this likely (its range of boundaries over the widest) is taken over a smaller
#: likelier one: a limit too low is never refused again to learn better.
LIKELY = 0.75


def calendar_limit(refusal: Refusal) -> int | None:
    """The limit of a calendar window that explains the lane's history, or None.

    A calendar window counts from boundaries a window apart, and a sliding window over
    its requests may hold up to twice its limit: the count before a 429 tells nothing
    then, and the rate between refusals holds the lane's pauses (a whole-second
    ``Retry-After`` at a window of a second pauses the lane past the next window's start,
    and read so, a 20-a-second window was taken for 13). But every accepted request says
    its window had room, every refusal that its window was full: for a boundary placed
    anywhere between two of them (modulo the window), the most a window let through is
    the limit, if no refusal's window let through fewer. Of the limits found so, the
    likeliest (the widest range of boundaries explains it), or a larger one nearly as
    likely: where the history fits several (runs alike, paused a whole window each
    time), one too low would slow the lane for good, and one too high draws a 429 that
    narrows them. (The largest never errs low, but walks down to the limit a request at
    a time, a 429 and a pause each. Offline, a lane 2x too high against calendar
    windows with a whole-window ``Retry-After``, 10 windows' work: 1.097 of the bound on
    average so, 1.123 taking the largest, 1.155 reading the count before each 429.)
    Only where the history rules a sliding log out (``_sliding_refuted``), with two
    refusals or more whose windows are kept, and never where a burst showed the server
    spaces requests.
    """
    r = refusal
    w, acc = r.window, r.accepted
    refusals = [t for t in (*r.refusals, r.sent_at) if t - w >= r.kept_since]
    if r.windowed is False or len(refusals) < 2 or len(acc) < 2:
        return None
    if not _sliding_refuted(r, refusals):
        return None
    # A boundary closer than this to a send may fall on either side of its arrival.
    tol = r.jitter + 1e-3 * w
    phases = sorted({t % w for t in acc} | {t % w for t in refusals})
    gaps = list(zip(phases, [*phases[1:], phases[0] + w], strict=True))
    if len(gaps) > MAX_GAPS:
        # Thousands of requests a window: the widest gaps hold all the measure that
        # matters, and a 429 must not stall the event loop trying every one.
        gaps = sorted(gaps, key=lambda gap: gap[0] - gap[1])[:MAX_GAPS]
    room: dict[int, float] = {}  # the limit a boundary explains: how wide its range
    for lo, hi in gaps:
        phase = (lo + hi) / 2
        first = math.floor((acc[0] - phase) / w) * w + phase
        most = 0
        start = first
        while start <= acc[-1]:
            most = max(most, bisect.bisect_left(acc, start + w) - bisect.bisect_left(acc, start))
            start += w
        full = min(
            bisect.bisect_left(acc, t) - bisect.bisect_left(acc, first + ((t - first) // w) * w)
            for t in refusals
        )
        if 0 < most <= full:
            # A boundary within ``tol`` of a send may be on its other side: such a gap
            # counts for little, but it counts (the true boundary may lie in none wider).
            room[most] = room.get(most, 0.0) + max(hi - lo - 2 * tol, 1e-3 * (hi - lo))
    return _likeliest(room)


def _likeliest(room: dict[int, float]) -> int | None:
    """Of the limits boundaries explain (each with how wide a range of boundaries does),
    the largest that about as wide a range explains as the widest (``LIKELY``)."""
    if not room:
        return None
    widest = max(room.values())
    return max(limit for limit, width in room.items() if width >= LIKELY * widest)


def window_count_tells(refusal: Refusal) -> bool:
    """Whether the requests accepted in the window before a 429 may be read as the limit.

    Not when the lane is younger than a window, unless the refusal came hard on the heels
    of another (fewer than ``HOT`` accepted between): a limiter that counts per window and
    one that spaces requests (refusing one that arrived a little early) look alike then,
    and taking jitter for a limit would halve the pace for the rest of the run. Nor when
    the lane already spaces its requests (``strict``), kept its believed rate over the
    window, the refused one went out a full interval after the last accepted, and the
    last refusal is not recent: that is a pair bunched on the way, not the limit.
    """
    r = refusal
    hot = _hot(r)
    if r.windowed is False and not hot:
        return False
    if r.strict and not hot and not r.after_search:
        gap = _gap_before(r)
        spaced = gap is None or gap >= r.limit_interval * (1 - 1e-9)
        k = _count_between(r.accepted, r.sent_at - r.window, r.sent_at)
        if spaced and k >= 0.8 * r.window / r.limit_interval:
            return False  # at its believed rate, well spaced: a pair bunched on the way
    old = r.first_sent <= r.sent_at - r.window
    return old or hot or r.windowed is True


def counted_in_window(refusal: Refusal) -> bool:
    """Whether a refusal shows a server that counts in a window (not one that spaces
    requests): a lane older than a window, whose count may be read, refused with clearly
    fewer in the window than it believed allowed. Such a server absorbs the jitter over
    its window, so the lane need not pay it between every two requests."""
    r = refusal
    young = r.first_sent > r.sent_at - r.window and r.windowed is not True
    if young or not window_count_tells(r):
        return False
    k = _count_between(r.accepted, r.sent_at - r.window, r.sent_at)
    return k <= 0.9 * r.window / r.limit_interval


def limit_after_429(refusal: Refusal) -> float:
    """The server's interval (seconds per request) to believe after this 429.

    ``k`` accepted in the window before the refusal say the limit is ``k`` per window
    (exact for a sliding log), when the count may be read so (``window_count_tells``).
    When it may not, or says nothing slower than the lane believed already (a bucket that
    ran dry, a window straddling a calendar boundary, a pair bunched on the way), the
    refusals themselves tell the rate: between the previous one and this, the server let
    through what it refilled, ``m`` requests (a bucket is empty at both, give or take a
    token). The result is at least ``MIN_SLOWDOWN`` times the belief and at most
    ``MAX_SLOWDOWN`` times the refused pace.
    """
    r = refusal
    since = _since_previous(r)
    between = 0.0
    # None (no previous refusal) or 0 (right after it) tell nothing, nor the span since a
    # search's refusal: a sliding log lets through what the search sent a window before,
    # and with the lane's pause after that refusal counted in, that reads as a rate
    # slower than the server's, which the lane, never searching again, would keep.
    if since and not r.after_search and r.windowed is not False:
        previous = _previous(r)
        assert previous is not None
        # From the first of a run of refusals: a bucket is empty at each, so what it let
        # through between the first and this one is its refill, give or take a token,
        # which matters less the longer the span.
        first = r.first_refusal
        start = previous if first is None or first < r.kept_since else first
        between = (r.sent_at - start) / max(1, _count_between(r.accepted, start, r.sent_at))
    # Between refusals the lane's own pace shows too (pauses included): only a rate
    # clearly slower than that is the server's (a bucket refilling slower than the lane
    # sends); otherwise the refusal was a pair bunched on the way.
    estimate = between if between > r.pace * SLOWER else 0.0
    located = located_count(r)
    calendar = calendar_limit(r) if located is None else None
    spaced = None
    if r.windowed is False:
        # Refused hard on the heels of another, the lane is above the rate however little
        # it was early (and the window's count, which the lane would read otherwise, says
        # nothing of a server that spaces requests).
        spaced = spaced_interval(r, early=0.0 if _hot(r) else EARLY)
    if spaced is not None:
        estimate = spaced
    elif located is not None:
        estimate = r.window / located
    elif calendar is not None:
        estimate = r.window / calendar
    elif window_count_tells(r):
        k = _count_between(r.accepted, r.sent_at - r.window, r.sent_at)
        estimate = r.window / max(k, 1)
        if estimate <= r.limit_interval:
            estimate = max(estimate, between)
    low = r.limit_interval * MIN_SLOWDOWN
    high = max(low, r.pace * MAX_SLOWDOWN)
    # Never slower than one request a window: a streak of refusals (a quota used up, a
    # server refusing everything) must not double the pace into hours.
    return min(max(estimate, low), high, max(r.window, r.limit_interval))


def _wait_for_room(refusal: Refusal, allowed: int) -> float | None:
    """Seconds from the refusal until the window has room for a server that allows
    ``allowed`` a window, by its count: once the oldest of those has left it (a sliding
    log), and a calendar window's boundary comes no later (it counted at most that many
    since it began), plus the jitter, as the server judges arrivals. None where the count
    does not tell the limit or the window has room already."""
    r = refusal
    if not window_count_tells(r):
        return None
    lo = bisect.bisect_right(r.accepted, r.sent_at - r.window)
    hi = bisect.bisect_right(r.accepted, r.sent_at)
    in_window = r.accepted[lo:hi]
    if len(in_window) < allowed:
        return None
    return in_window[len(in_window) - allowed] + r.window + r.jitter - r.sent_at


def pause_without_retry_after(refusal: Refusal, new_interval: float) -> float:
    """Seconds to hold the lane after a 429 that gave no usable ``Retry-After``.

    Until the window has room at the limit now believed (``_wait_for_room``); one slot at
    the new pace when the count did not tell the limit.

    When the lane was refused again right after its last pause, with nothing let through
    between, that pause was too short, and the count read now may still be too high: a
    calendar window straddled holds up to twice its limit. So until the window has room
    for half of it: exact for a calendar window at worst, and for a sliding log a quarter
    window or so later than it needs, where a window after the last refusal (what is left
    when the count shows no room to wait for, or does not tell) is half a window later.
    At most one window; at least one slot.
    """
    r = refusal
    allowed = allowed_in_window(r.window, new_interval)
    if _since_previous(r) == 0:
        wait = _wait_for_room(r, max(1, math.ceil(allowed / 2)))
        if wait is None or wait <= new_interval:
            assert r.previous is not None
            wait = r.previous + r.window - r.sent_at
    else:
        wait = _wait_for_room(r, allowed)
        if wait is None:
            return new_interval
    return min(max(wait, new_interval), r.window)


@dataclass(frozen=True, slots=True)
class Lesson:
    """What a 429 (not an echo of an earlier one) teaches a lane."""

    #: The seconds per request the server allows, at least what the lane believed.
    limit_interval: float
    #: Whether the server spaces requests: True, False, or None where the 429 cannot tell.
    strict: bool | None


def lesson_of_429(refusal: Refusal, *, searching: bool, search_speedup: float) -> Lesson:
    """The limit and the kind of limiter one 429 shows, for a lane that was ``searching``
    (``--learn-rates`` speeding up before any 429) or not.

    A window's count that explains the refusal says the server counts in a window. Room
    left in the window (or a lane too young to tell) says the server may space requests,
    so the jitter must fit between every two. A search's first 429 is read apart
    (``_lesson_of_search``): its count is short of its pace whatever the server.
    """
    if refusal.burst:
        return _lesson_of_burst(refusal)
    if searching:
        return _lesson_of_search(refusal, search_speedup)
    accepted = refusal.accepted
    in_window = len(accepted) - bisect.bisect_right(accepted, refusal.sent_at - refusal.window)
    allowed = allowed_in_window(refusal.window, refusal.limit_interval)
    strict: bool | None = None
    if (
        located_count(refusal) is not None
        or counted_in_window(refusal)
        or calendar_limit(refusal) is not None
    ):
        strict = False
    elif in_window < allowed or not window_count_tells(refusal):
        strict = True
    return Lesson(max(refusal.limit_interval, limit_after_429(refusal)), strict)


def _lesson_of_search(refusal: Refusal, search_speedup: float) -> Lesson:
    """The first 429 of a search (``--learn-rates``, speeding up ×``search_speedup`` a
    step from below the limit).

    The step before passed, so the limit is about one step slower than the refused pace:
    a limiter that spaces requests refuses as the pace crosses its rate. A window counter
    refuses only once its window has filled, some steps past its limit, and its count
    would tell it; but a spacing limiter's window, filled by a search from below, holds
    fewer than it allows, and read as a limit that count would slow the lane a step or
    two below the server for the rest of the run. One step back at worst draws a second
    429 from a window counter, whose count then tells. A ``Retry-After`` that locates the
    window tells the limit at once, and that the server counts in a window.

    The kind stays unknown otherwise: the lane's count was short of its pace all the
    search long, whatever the server, so it is not taken as a sign of spacing (which
    would make the lane pay the jitter between every two requests, 4-25% of a slot on
    loopback, for the rest of the run).
    """
    r = refusal
    located = located_count(r)
    strict: bool | None = None
    # A step back from the pace refused, and at least from the gap actually refused:
    # sends lag a search's grid (a store's slots handed out ahead, a commit before each),
    # and a limiter that spaces requests refused that gap, not the grid's.
    learned = max(r.limit_interval, _gap_before(r) or 0.0) * search_speedup
    if located is not None:
        strict, learned = False, r.window / located
    return Lesson(max(r.limit_interval, min(learned, r.pace * MAX_SLOWDOWN)), strict)


def _lesson_of_burst(refusal: Refusal) -> Lesson:
    """A 429 for a request sent in a burst: the lane sent one request after another, each
    as soon as the one before was answered, while its window had room at the limit
    believed.

    Refused the second of a pair (one accepted in the window), the server spaces requests:
    the lane paces evenly, and pays the jitter between every two, from then on. Two or more
    accepted back to back, no spacing limiter let them through: the server counts in a
    window (or a bucket), and the ``k`` it accepted in the window are its limit, exact
    for a sliding log, and for a calendar window or a bucket whose burst is its rate,
    whatever ``Retry-After`` says. Unless that is less than half what the lane believed:
    a bucket with a small burst refuses as soon, whatever its rate, and a rate configured
    twice too high is the worst this reading is for; there the lane keeps its belief and
    paces evenly, and the refusals of even pacing tell the rate.
    """
    r = refusal
    k = _count_between(r.accepted, r.sent_at - r.window, r.sent_at)
    if k <= 1:
        # Its wait, said finely, tells the rate too (``spaced_interval``); no slower than
        # the pace refused twice over, as any refusal.
        spaced = spaced_interval(r) or 0.0
        return Lesson(max(r.limit_interval, min(spaced, r.pace * MAX_SLOWDOWN)), strict=True)
    if 2 * k < allowed_in_window(r.window, r.limit_interval):
        return Lesson(r.limit_interval, strict=None)
    low = r.limit_interval * MIN_SLOWDOWN
    return Lesson(min(max(r.window / k, low), r.pace * MAX_SLOWDOWN), strict=False)
