"""Tests for bulkfetch.limiter.lane: evenly spaced slots, lane-wide pauses on 429, a limit learned
from 429s whatever the server's kind, all on an injected clock (no time passes).

The scenario tests drive a Limiter against the simulator's own limiters
(``bulkfetch.simulator.limits``: pure, no sockets), with requests arriving after a delay
drawn per request, the way they reach a real server.
"""

from __future__ import annotations

import itertools
import math
import random
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from bulkfetch.config import Rate
from bulkfetch.limiter.burst import ServerKind
from bulkfetch.limiter.lane import Limiter
from bulkfetch.limiter.retry_after import MAX_WINDOWS
from bulkfetch.limiter.search import Search
from bulkfetch.simulator.limits import LIMITER_KINDS, make_limit

TEN_A_MINUTE = Rate(10, 60.0)
INTERVAL = 6.0 * (1 + Limiter.margin)  # what 10/min paces at before anything is measured


class FakeClock:
    """A clock and a sleep that moves it: the limiter's time, without time passing."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        assert seconds > 0, "the limiter never sleeps for nothing"
        self.sleeps.append(seconds)
        self.now += seconds


def run_now(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that never really suspends (its sleeps only move a FakeClock)."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise AssertionError("the limiter suspended on something other than the fake sleep")


def make(rate: Rate = TEN_A_MINUTE, *, learn: bool = False) -> tuple[Limiter, FakeClock]:
    clock = FakeClock()
    return Limiter("status", rate, learn=learn, clock=clock, sleep=clock.sleep), clock


def take(limiter: Limiter, clock: FakeClock) -> float:
    """Acquire a slot; return the clock time it was granted at."""
    run_now(limiter.acquire())
    return clock.now


def send(limiter: Limiter) -> float:
    """Acquire a slot and send in it; returns the send time."""
    due = run_now(limiter.acquire())
    return float(run_now(limiter.sending(due)))


# -- pacing -----------------------------------------------------------------------------------


def test_first_slot_is_immediate_then_evenly_spaced_with_margin() -> None:
    limiter, clock = make()
    start = clock.now
    times = [take(limiter, clock) for _ in range(6)]
    assert times[0] == start
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps == pytest.approx([INTERVAL] * 5)
    assert limiter.interval == pytest.approx(INTERVAL)
    assert limiter.rate.interval == pytest.approx(INTERVAL)


def test_idle_time_builds_no_burst() -> None:
    limiter, clock = make(Rate(20, 1.0))
    take(limiter, clock)
    clock.now += 100.0  # a long idle spell
    first = take(limiter, clock)
    second = take(limiter, clock)
    assert second - first == pytest.approx(0.05 * (1 + Limiter.margin))


def test_oversleeping_does_not_slow_the_lane_nor_bunch_a_window() -> None:
    rate = Rate(20, 1.0)
    clock = FakeClock()
    late = 0.0002  # within the slack: half the margin's headroom over a window

    async def oversleep(seconds: float) -> None:
        await clock.sleep(seconds + late)

    limiter = Limiter("status", rate, clock=clock, sleep=oversleep)
    times = [take(limiter, clock) for _ in range(100)]
    interval = rate.interval * (1 + Limiter.margin)
    assert times[-1] - times[0] == pytest.approx(99 * interval + late)
    # Any 21 slots (one more than the limit) still span more than the window.
    for k in range(79):
        assert times[k + 20] - times[k] > rate.period


def test_a_caller_much_later_than_the_slack_starts_a_new_grid() -> None:
    limiter, clock = make(Rate(20, 1.0))
    take(limiter, clock)
    clock.now += 0.0505 + 0.5  # far later than the slack: no catching up
    first = take(limiter, clock)
    assert take(limiter, clock) - first == pytest.approx(0.05 * (1 + Limiter.margin))


def test_release_unused_gives_the_slot_back() -> None:
    limiter, clock = make()
    t0 = take(limiter, clock)
    limiter.release_unused()
    assert take(limiter, clock) == t0  # the same moment: the slot was never spent
    assert take(limiter, clock) == pytest.approx(t0 + INTERVAL)


def test_the_first_sends_are_spaced_by_the_slowest_round_trip_seen() -> None:
    """Before the connection's jitter is known, a spacing server must not see two requests
    closer than its interval: the first connections are the slowest of a run."""
    limiter, clock = make(Rate(20, 1.0))
    first = send(limiter)
    clock.now += 0.02  # a slow first answer (a connection set up)
    limiter.succeeded(first)
    second = send(limiter)
    assert second - first >= (0.05 + 0.02) * (1 - 1e-9)


def test_the_jitter_is_measured_and_widens_the_pace() -> None:
    limiter, clock = make(Rate(20, 1.0))
    rng = random.Random(1)
    for _ in range(40):
        sent = send(limiter)
        clock.now += 0.001 + rng.uniform(0, 0.004)  # round trips of 1 to 5 ms
        limiter.succeeded(sent)
    assert 0.002 < limiter.jitter <= 0.004
    # A window limiter absorbs it over the window: a share per slot.
    assert 0.05 < limiter.interval < 0.05 * (1 + Limiter.margin) + limiter.jitter


# -- 429s: pauses -----------------------------------------------------------------------------


def test_429_with_retry_after_pauses_the_whole_lane_for_that_long() -> None:
    limiter, clock = make()
    sent = send(limiter)
    at = clock.now
    assert limiter.rate_limited_by_server(30.0, sent) == 30.0
    assert limiter.ready_at() == pytest.approx(at + 30.0)
    assert take(limiter, clock) == pytest.approx(at + 30.0)
    assert limiter.rate_limited == 1
    assert limiter.pauses == pytest.approx(30.0)


@pytest.mark.parametrize("asked", [3 * 3600.0, 1e9])
def test_an_absurd_retry_after_is_capped_at_two_windows(asked: float) -> None:
    limiter, clock = make()
    assert limiter.rate_limited_by_server(asked) == MAX_WINDOWS * 60.0
    assert limiter.ready_at() == pytest.approx(clock.now + MAX_WINDOWS * 60.0)


@pytest.mark.parametrize("asked", [0.0, 0.001])
def test_retry_after_zero_still_costs_a_slot(asked: float) -> None:
    limiter, _ = make()
    pause = limiter.rate_limited_by_server(asked)
    assert pause == pytest.approx(limiter.interval)


def test_a_shorter_pause_never_cuts_a_longer_one() -> None:
    limiter, clock = make()
    at = clock.now
    limiter.rate_limited_by_server(100.0)
    limiter.rate_limited_by_server(5.0)
    assert limiter.ready_at() == pytest.approx(at + 100.0)
    assert limiter.pauses == pytest.approx(100.0)


def test_a_429_during_a_wait_is_honoured() -> None:
    """acquire() re-checks after each sleep: a 429 seen elsewhere meanwhile pauses it too."""
    clock = FakeClock()
    limiter: Limiter

    async def sleep_and_get_429(seconds: float) -> None:
        await clock.sleep(seconds)
        if len(clock.sleeps) == 1:
            limiter.rate_limited_by_server(50.0)

    limiter = Limiter("create", TEN_A_MINUTE, clock=clock, sleep=sleep_and_get_429)
    t0 = take(limiter, clock)
    t1 = take(limiter, clock)
    assert t1 == pytest.approx(t0 + INTERVAL + 50.0)
    assert clock.sleeps == pytest.approx([INTERVAL, 50.0])


def test_a_streak_of_429s_without_retry_after_never_backs_off_exponentially() -> None:
    limiter, _clock = make()
    pauses = []
    for _ in range(30):
        sent = send(limiter)
        pauses.append(limiter.rate_limited_by_server(None, sent))
    assert max(pauses) <= 60.0 * 1.02  # never more than a window (and its margin)
    assert limiter.limit_interval <= 60.0  # never slower than one request a window
    assert math.isfinite(limiter.interval)


def test_an_echo_changes_nothing() -> None:
    """A 429 for a request sent before the pace last changed says nothing of the new pace."""
    limiter, clock = make(Rate(20, 1.0))
    early = send(limiter)
    late = send(limiter)
    limiter.rate_limited_by_server(0.0, late)
    after_first = limiter.limit_interval
    clock.now += 0.01
    limiter.rate_limited_by_server(0.0, early)
    assert limiter.limit_interval == after_first
    assert limiter.rate_limited == 2


def test_a_refusal_older_than_what_the_lane_keeps_teaches_nothing_of_the_rate() -> None:
    """Two 429s further apart than the accepted requests kept (8 windows): counting what
    the server let through between them from the kept ones alone would read a limit far
    slower than the lane's (measured: 1.59 times the key's rate, for the rest of a run)."""
    limiter, _clock = make(Rate(20, 1.0))
    limiter.rate_limited_by_server(0.05, send(limiter))
    before = limiter.limit_interval
    for _ in range(250):  # 12.5 windows at the pace, every request accepted
        limiter.succeeded(send(limiter))
    limiter.rate_limited_by_server(0.05, send(limiter))
    assert limiter.limit_interval == pytest.approx(before * 1.01)


def test_a_send_later_than_the_slack_moves_the_next_slots_on() -> None:
    """Within the slack the grid absorbs a late send; beyond it, the next slots move on
    by the lateness, at most a slot: a window must not hold the late one and all the
    slots counted from when it was due."""
    limiter, clock = make(Rate(20, 1.0))
    due = run_now(limiter.acquire())
    clock.now += 0.001  # within the slack (a timer's oversleep)
    run_now(limiter.sending(due))
    assert limiter.ready_at() == pytest.approx(due + limiter.interval)
    due = run_now(limiter.acquire())
    clock.now = due + 0.02
    run_now(limiter.sending(due))
    assert limiter.ready_at() == pytest.approx(due + limiter.interval + 0.02)
    due = run_now(limiter.acquire())
    clock.now = due + 5.0  # waited for something else: one slot makes room for it
    run_now(limiter.sending(due))
    assert limiter.ready_at() == pytest.approx(due + 2 * limiter.interval)


# -- 429s: the limit, against every kind of server --------------------------------------------


@dataclass
class Outcome:
    refused: int
    pace: float  # the lane's interval at the end, over the server's
    span: float  # seconds from the first to the last accepted request


def retry_after(form: str, wait: float, window: float) -> float | None:
    """What a client reads from each Retry-After form the simulator sends."""
    if form == "float":
        return wait
    if form in ("int", "date"):
        return float(math.ceil(wait))
    if form == "window":
        return window
    return None


def drive(
    kind: str,
    *,
    factor: float,
    form: str = "float",
    learn: bool = False,
    n: int = 200,
    jitter: float = 0.0,
    count: int = 10,
    window: float = 60.0,
    seed: int = 0,
    burst: bool = False,
    windowed: bool | None = None,
    start: float = 5000.0,
) -> Outcome:
    """``n`` requests, one at a time, through a Limiter configured at ``factor`` times the
    rate of a server of ``kind``; each reaches the server after 1 ms plus up to ``jitter``
    seconds, and its answer comes back as long after. ``start`` is the clock when the lane
    begins (a calendar window's boundaries fall on whole windows)."""
    rng = random.Random(seed)
    clock = FakeClock(start=start)
    server = make_limit(kind)  # type: ignore[arg-type]
    rate = Rate(count * factor, window)
    limiter = Limiter("create", rate, learn=learn, clock=clock, sleep=clock.sleep, burst=burst)
    limiter.kind.windowed = windowed  # what another lane's burst showed, if anything
    accepted: list[float] = []
    refused = 0
    while len(accepted) < n:
        sent = send(limiter)
        delay = 0.001 + rng.uniform(0.0, jitter)
        arrival = sent + delay
        wait = server.admit("key", arrival, count, window)
        clock.now = arrival + 0.001
        if wait is None:
            accepted.append(arrival)
            limiter.succeeded(sent)
        else:
            refused += 1
            limiter.rate_limited_by_server(
                retry_after(form, wait, window),
                sent,
                resolution=1.0 if form in ("int", "date", "window") else 0.0,
            )
    return Outcome(refused, limiter.interval / (window / count), accepted[-1] - accepted[0])


@pytest.mark.parametrize("kind", LIMITER_KINDS)
def test_at_the_known_rate_no_kind_refuses(kind: str) -> None:
    """50 ms of jitter at 10/min: the lane spaces every two requests by it from the start."""
    outcome = drive(kind, factor=1.0, jitter=0.05)
    assert outcome.refused == 0
    assert outcome.pace < 1.03


@pytest.mark.parametrize("kind", LIMITER_KINDS)
def test_a_jitter_costly_to_pay_in_every_slot_is_paid_once_a_429_asks(kind: str) -> None:
    """Half a second of jitter in 6 s slots: a window pays it once per window and never
    refuses; a spacing server refuses once, and is then given it between every two."""
    outcome = drive(kind, factor=1.0, jitter=0.5)
    assert outcome.refused == (1 if kind == "spacing" else 0)
    assert outcome.pace < (1.1 if kind == "spacing" else 1.03)


@pytest.mark.parametrize("form", ["float", "int", "window", "date", "off"])
@pytest.mark.parametrize("kind", LIMITER_KINDS)
def test_rates_twice_too_high_converge_within_three_429s(kind: str, form: str) -> None:
    """A token bucket is the exception: its burst (a window's worth, here) hides its rate
    until it runs dry, and then each refusal tells only what it refilled since the last."""
    outcome = drive(kind, factor=2.0, form=form, jitter=0.05)
    assert outcome.refused <= (5 if kind == "bucket" else 3)
    assert 0.99 < outcome.pace < 1.6
    # No long idle pause: 200 requests at 10/min take about 199 slots.
    assert outcome.span < 199 * 6.0 * 1.6


@pytest.mark.parametrize("form", ["float", "int", "date"])
@pytest.mark.parametrize("kind", ["sliding", "fixed"])
def test_a_window_counter_whose_retry_after_locates_its_window_costs_one_429(
    kind: str, form: str
) -> None:
    """Its wait points at when its count drops, so the first 429, even to a lane younger
    than a window, tells the limit (``pacing.located_count``)."""
    outcome = drive(kind, factor=2.0, form=form, jitter=0.05)
    assert outcome.refused == 1
    assert 0.99 < outcome.pace < 1.05


@pytest.mark.parametrize(
    ("form", "count", "window"), [("window", 10, 60.0), ("int", 20, 1.0), ("window", 20, 1.0)]
)
def test_a_calendar_window_at_twice_the_rate_is_not_slowed_by_its_pauses(
    form: str, count: int, window: float
) -> None:
    """A calendar window whose ``Retry-After`` locates nothing (a whole window; whole
    seconds at a window of a second), boundaries anywhere: the minute before a 429 holds
    up to twice the limit, and the rate between refusals the pauses. Read from where the
    boundaries fit (``pacing.calendar_limit``), the lane ends near the limit in every
    run, for about one 429 more in two runs: reading the count and that rate, 6 to 9 runs
    in 24 ended over 1.15 of it, the worst at 1.66 (1.5-1.75 429s a run, 1.9-2.1 here)."""
    outcomes = [
        drive(
            "fixed",
            factor=2.0,
            form=form,
            jitter=0.05 * window / 60.0,
            count=count,
            window=window,
            seed=seed,
            windowed=True,
            start=5000.0 + seed * window / 12.3,
        )
        for seed in range(24)
    ]
    assert max(o.pace for o in outcomes) < 1.15
    spans = [o.span / (199 * window / count) for o in outcomes]
    assert sum(spans) / len(spans) < 1.12
    assert sum(o.refused for o in outcomes) / len(outcomes) <= 2.5


# -- a burst (the create lane) ----------------------------------------------------------------


def test_a_burst_sends_the_window_s_allowance_back_to_back_then_waits_a_window() -> None:
    """Ten requests, each as soon as the one before is answered; the eleventh once the
    first has left the window, with the margin kept over it as even pacing keeps it."""
    clock = FakeClock()
    limiter = Limiter("create", TEN_A_MINUTE, clock=clock, sleep=clock.sleep, burst=True)
    start = clock.now
    times = []
    for _ in range(12):
        sent = send(limiter)
        clock.now = sent + 0.002
        limiter.succeeded(sent)
        times.append(sent - start)
    assert times[:10] == pytest.approx([0.002 * i for i in range(10)])
    assert 60.0 < times[10] < 60.0 * (1 + 2 * Limiter.margin)
    assert times[11] == pytest.approx(times[10] + 0.002)


@pytest.mark.parametrize("kind", ["sliding", "fixed", "bucket"])
def test_a_burst_is_never_refused_by_a_window_counter_at_the_known_rate(kind: str) -> None:
    """200 requests at 10/min take 19 windows where even pacing takes 199 slots: the
    last window's worth goes at its start."""
    even = drive(kind, factor=1.0, jitter=0.05)
    burst = drive(kind, factor=1.0, jitter=0.05, burst=True)
    assert burst.refused == 0
    assert burst.span < 19.2 * 60.0 < even.span


@pytest.mark.parametrize("form", ["float", "int", "window", "date", "off"])
def test_a_burst_refused_by_a_server_that_spaces_requests_paces_evenly_after(form: str) -> None:
    outcome = drive("spacing", factor=1.0, form=form, jitter=0.05, burst=True)
    assert outcome.refused == 1  # the second request: its first and last refusal
    assert outcome.pace < 1.03


@pytest.mark.parametrize(("count", "window"), [(10, 60.0), (20, 1.0)])
def test_a_spacing_limiter_s_exact_wait_teaches_its_interval_in_one_or_two_429s(
    count: int, window: float
) -> None:
    """Twice too fast for a GCRA whose ``Retry-After`` is exact: the burst's second request
    is refused with the rest of the interval to wait, which with the gap before it is the
    interval. (Reading only that it spaces requests, two 429s and 3-6% slow.)"""
    for seed in range(6):
        outcome = drive(
            "spacing",
            factor=2.0,
            form="float",
            jitter=0.05 * window / 60.0,
            count=count,
            window=window,
            seed=seed,
            burst=True,
        )
        assert outcome.refused <= 2
        assert 0.99 < outcome.pace < 1.03


@pytest.mark.parametrize("form", ["float", "int", "window", "date", "off"])
@pytest.mark.parametrize("kind", ["sliding", "fixed", "bucket"])
def test_a_burst_at_twice_the_rate_learns_a_window_counter_s_limit_in_one_429(
    kind: str, form: str
) -> None:
    """What the server accepted back to back before its 429 is its limit, whatever the
    Retry-After's form, where even pacing draws one to three (and a token bucket five)."""
    outcome = drive(kind, factor=2.0, form=form, jitter=0.05, burst=True)
    assert outcome.refused == 1
    assert 0.99 < outcome.pace < 1.02
    assert outcome.span < 19.2 * 60.0


@pytest.mark.parametrize("form", ["float", "int", "window", "off"])
@pytest.mark.parametrize("kind", LIMITER_KINDS)
def test_a_burst_learns_a_rate_set_twice_too_low(kind: str, form: str) -> None:
    """With ``--learn-rates`` the burst goes past the rate configured (up to 4x) until the
    server refuses: a window counter's count tells its limit at that first 429. A server
    that spaces requests refuses the second: the search goes on, evenly paced, and its
    refusal tells the rate (a second 429)."""
    outcome = drive(kind, factor=0.5, form=form, jitter=0.05, burst=True, learn=True)
    if kind == "spacing":
        assert outcome.refused == 2
        assert 0.99 < outcome.pace < 1.1
    else:
        assert outcome.refused == 1
        assert 0.99 < outcome.pace < 1.02
        assert outcome.span < 19.2 * 60.0


@pytest.mark.parametrize("form", ["float", "int", "window", "date", "off"])
@pytest.mark.parametrize("kind", ["sliding", "fixed"])
def test_a_lane_told_the_server_counts_in_a_window_reads_its_first_429_by_the_count(
    kind: str, form: str
) -> None:
    """The create lane's burst showed a window counter (``ServerKind``): the status lane,
    evenly paced at twice the rate, takes its first 429 for the window's count, however
    young it is, instead of a pair bunched on the way: one 429, not two or three."""
    outcome = drive(kind, factor=2.0, form=form, jitter=0.05, windowed=True)
    assert outcome.refused == 1
    assert 0.99 < outcome.pace < 1.02


def test_a_lane_told_the_server_spaces_requests_pays_the_jitter_from_the_start() -> None:
    """Half a second of jitter in 6 s slots, which the lane would pay only once a 429 asks
    (``test_a_jitter_costly_to_pay_in_every_slot_is_paid_once_a_429_asks``): told by the
    create lane's burst that the server spaces requests, it is never refused."""
    outcome = drive("spacing", factor=1.0, jitter=0.5, windowed=False)
    assert outcome.refused == 0
    assert outcome.pace < 1.1


def test_a_burst_tells_the_run_s_other_lanes_how_the_server_counts() -> None:
    kind = ServerKind()
    clock = FakeClock()
    create = Limiter("create", TEN_A_MINUTE, clock=clock, sleep=clock.sleep, burst=True, kind=kind)
    status = Limiter("status", TEN_A_MINUTE, clock=clock, sleep=clock.sleep, kind=kind)
    first = send(create)
    clock.now = first + 0.002
    create.succeeded(first)
    second = send(create)
    clock.now = second + 0.002
    create.rate_limited_by_server(5.0, second)  # the second of a pair: spacing
    assert kind.windowed is False
    assert status.spacing


@pytest.mark.parametrize(("trip", "bursts"), [(0.002, True), (0.05, False)])
def test_a_lane_bursts_only_where_a_round_trip_is_a_small_share_of_a_slot(
    trip: float, bursts: bool
) -> None:
    """At ten a second, answers in 50 ms would make one request at a time no faster than
    the pace (and each creation commit alone): the lane paces evenly instead."""
    clock = FakeClock()
    limiter = Limiter("create", Rate(10, 1.0), clock=clock, sleep=clock.sleep, burst=True)
    times = []
    for _ in range(5):
        sent = send(limiter)
        clock.now = sent + trip
        limiter.succeeded(sent)
        times.append(sent)
    assert (times[-1] - times[0] < 0.1) is bursts


def test_a_burst_waits_for_the_answer_not_the_next_slot() -> None:
    """One request at a time: the next slot comes when the one on its way is answered
    (50 ms here), long before the pace's next slot (a second)."""
    limiter = Limiter("create", Rate(10, 10.0), burst=True)
    answered_at = math.inf

    async def main() -> tuple[float, float]:
        nonlocal answered_at
        first = await limiter.sending(await limiter.acquire())

        async def answer() -> None:
            nonlocal answered_at
            await anyio.sleep(0.05)
            answered_at = time.monotonic()
            limiter.succeeded(first)

        async with anyio.create_task_group() as tg:
            tg.start_soon(answer)
            second = await limiter.acquire()
        return first, second

    first, second = anyio.run(main)
    assert answered_at <= second < first + 0.5


@pytest.mark.parametrize(("resolution", "located"), [(0.0, True), (1.0, False)])
def test_a_wait_said_to_the_second_locates_no_window_at_twenty_a_second(
    resolution: float, located: bool
) -> None:
    """Ten requests 50 ms apart, the eleventh refused with "wait 0.5 s". Said exactly, that
    wait places a one-second window holding the ten: the limit. As a date (whole seconds)
    it could point anywhere in that window, so a young lane takes only a small step."""
    clock = FakeClock()
    limiter = Limiter("create", Rate(20, 1.0), clock=clock, sleep=clock.sleep)
    for _ in range(10):
        sent = send(limiter)
        clock.now = sent + 0.001
        limiter.succeeded(sent)
    sent = send(limiter)
    clock.now = sent + 0.001
    limiter.rate_limited_by_server(0.5, sent, resolution=resolution)
    if located:
        assert limiter.limit_interval > 1.5 * 0.05  # ten a second, read at once
    else:
        assert limiter.limit_interval < 1.1 * 0.05  # a small step


@pytest.mark.parametrize("kind", LIMITER_KINDS)
def test_rates_twice_too_low_are_learned(kind: str) -> None:
    """A search ends on a refusal, and a calendar window that straddles it may take one or
    two more to read; no 429 target here, only a bound."""
    outcome = drive(kind, factor=0.5, learn=True, form="int", jitter=0.05)
    assert outcome.refused <= 6
    assert 0.99 < outcome.pace < 1.6


@pytest.mark.parametrize("form", ["float", "int", "off"])
def test_a_search_learns_a_sliding_logs_limit_not_the_pause_after_it(form: str) -> None:
    """A search ramps up from half the rate, past it, and is refused; a step back is still
    too fast, and the next refusal's window tells the limit. Read from what was let
    through between the two (a pause among them) it was a third slower; sent evenly after
    the ramp's burst, the lane was refused again as the ramp's slower sends left the log,
    and halved its pace."""
    outcome = drive("sliding", factor=0.5, learn=True, form=form, jitter=0.05)
    assert outcome.refused <= 2
    assert 0.99 < outcome.pace < 1.03


def test_a_slot_waits_for_room_and_counts_slots_handed_out_and_not_yet_sent() -> None:
    """Five sends 9 s apart, then five 3 s apart (a lane at 20 a minute), and a sliding log
    of 10 a minute refuses the next: it makes room only as the slow five leave it, 9 s
    apart, whatever the pace. A slot handed out takes room as a send does."""
    clock = FakeClock()
    limiter = Limiter("create", Rate(20, 60.0), clock=clock, sleep=clock.sleep)
    start = clock.now + 100
    for at in (-100, 0, 9, 18, 27, 36, 39, 42, 45, 48, 51):  # (older than a window)
        clock.now = max(clock.now, start + at)
        limiter.succeeded(send(limiter))
    sent = send(limiter)
    limiter.rate_limited_by_server(start + 60 - sent, sent)  # when the first leaves
    assert limiter.limit_interval == pytest.approx(6.0)
    first = run_now(limiter.acquire())
    assert first == pytest.approx(start + 60, abs=0.2)  # (a pause is at least a slot)
    second = run_now(limiter.acquire())  # the first not sent yet
    assert second == pytest.approx(start + 69, abs=0.1)  # room as the send at 9 leaves
    limiter.release_unused()  # given back: it takes no room
    assert run_now(limiter.acquire()) == pytest.approx(start + 69, abs=0.1)


def test_without_learning_never_faster_than_configured() -> None:
    outcome = drive("sliding", factor=0.5, learn=False, n=60)
    assert outcome.refused == 0
    assert outcome.pace == pytest.approx(2 * (1 + Limiter.margin), rel=0.01)


@settings(max_examples=40, deadline=None)
@given(
    kind=st.sampled_from(LIMITER_KINDS),
    factor=st.sampled_from([1.0, 1.5, 2.0, 3.0]),
    form=st.sampled_from(["float", "int", "window", "off"]),
    seed=st.integers(0, 1000),
)
def test_any_server_any_configuration_settles(
    kind: str, factor: float, form: str, seed: int
) -> None:
    """Whatever the kind, the Retry-After form and how wrong the rate is: a handful of 429s,
    then a pace no faster than the server's and not far slower."""
    outcome = drive(kind, factor=factor, form=form, jitter=0.05, n=120, seed=seed)
    assert outcome.refused <= 6
    assert 0.99 < outcome.pace < 1.6


# -- learning ---------------------------------------------------------------------------------


def test_learning_searches_briskly_until_the_first_429() -> None:
    limiter, _clock = make(learn=True)
    for _ in range(Search.every * 10):
        limiter.succeeded(send(limiter))
    assert limiter.limit_interval == pytest.approx(6.0 / Search.speedup**10)
    sent = send(limiter)
    limiter.rate_limited_by_server(None, sent)
    after = limiter.limit_interval
    for _ in range(Search.every * 10):
        limiter.succeeded(send(limiter))
    assert limiter.limit_interval == after  # the limit is found: no more searching


def test_a_search_ends_once_and_keeps_the_429_that_ended_it() -> None:
    search = Search(6.0, learn=True)
    assert search.accepted(6.0) == pytest.approx(6.0 / Search.speedup)
    search.end(100.0)
    search.end(200.0)  # an echo, or a later 429: the search had ended already
    assert (search.active, search.ended_at) == (False, 100.0)
    assert search.accepted(5.0) == 5.0  # no faster once ended
    taught = Search(6.0, learn=True)
    taught.end()  # another process on the key learned the limit: no 429 of this lane's
    assert (taught.active, taught.ended_at) == (False, None)
    assert not Search(6.0, learn=False).active


def test_learning_is_capped() -> None:
    limiter, _ = make(learn=True)
    for _ in range(Search.every * 100):
        limiter.succeeded(send(limiter))
    assert limiter.limit_interval == pytest.approx(6.0 / Search.max_speedup)


def test_a_429_never_speeds_up_the_lane() -> None:
    for rate in (Rate(10, 60.0), Rate(50, 1.0), Rate(10, 3600.0)):
        for learn in (False, True):
            limiter, _clock = make(rate, learn=learn)
            for retry in (None, 1.0, None, None, 5.0, *([None] * 40)):
                before = limiter.limit_interval
                limiter.rate_limited_by_server(retry, send(limiter))
                assert limiter.limit_interval >= before


# -- repr -------------------------------------------------------------------------------------


def test_repr_shows_live_state() -> None:
    limiter, clock = make()
    assert repr(limiter) == (
        "<Limiter status interval=6.03s configured=10/min 429s=0 limit=6s jitter=0ms wait=0s>"
    )
    take(limiter, clock)
    assert "wait=6.03s" in repr(limiter)
    limiter.rate_limited_by_server(30.0)
    shown = repr(limiter)
    assert "429s=1" in shown
    assert "wait=30s" in shown
    clock.now += 1000
    assert "wait=0s" in repr(limiter)


# -- real time --------------------------------------------------------------------------------


def test_concurrent_waiters_share_the_lane_at_its_pace() -> None:
    rate = Rate(50, 1.0)
    limiter = Limiter("status", rate)
    granted: list[float] = []

    async def worker() -> None:
        due = await limiter.acquire()
        granted.append(await limiter.sending(due))

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for _ in range(6):
                tg.start_soon(worker)

    started = time.monotonic()
    anyio.run(main)
    granted.sort()
    assert len(granted) == 6
    assert granted[-1] - granted[0] >= 5 * rate.interval * (1 - 0.05)
    assert time.monotonic() - started < 5.0


# -- any sequence of events -------------------------------------------------------------------


class LimiterMachine(RuleBasedStateMachine):
    """Random acquire/send/answer/429/release/idle sequences keep the limiter's promises."""

    limiter: Limiter
    clock: FakeClock

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[float] = []
        self.paused_until = -math.inf
        self.n429 = 0
        self.floor = 0.0
        self.period = 0.0

    @initialize(
        count=st.sampled_from([1.0, 10.0, 20.0, 50.0]),
        period=st.sampled_from([1.0, 60.0, 3600.0]),
        learn=st.booleans(),
    )
    def start(self, count: float, period: float, learn: bool) -> None:
        self.clock = FakeClock(start=12345.0)
        rate = Rate(count, period)
        self.limiter = Limiter("x", rate, learn=learn, clock=self.clock, sleep=self.clock.sleep)
        self.floor = rate.interval / (Search.max_speedup if learn else 1.0)
        self.period = period

    @rule()
    def acquire_and_send(self) -> None:
        before = self.clock.now
        sent = send(self.limiter)
        assert sent >= before
        assert sent >= self.paused_until - 1e-9
        self.sent.append(sent)

    @rule()
    def acquire_and_release(self) -> None:
        run_now(self.limiter.acquire())
        self.limiter.release_unused()

    @rule(latency=st.floats(0, 5, allow_nan=False))
    def answered(self, latency: float) -> None:
        if self.sent:
            self.clock.now += latency
            before = self.limiter.limit_interval
            self.limiter.succeeded(self.sent.pop(0))
            assert self.limiter.limit_interval <= before  # successes never slow the lane

    @rule(
        retry=st.none() | st.floats(-10, 1e6, allow_nan=False),
        latency=st.floats(0, 5, allow_nan=False),
    )
    def refused(self, retry: float | None, latency: float) -> None:
        self.clock.now += latency
        sent = self.sent.pop(0) if self.sent else None
        before = self.limiter.limit_interval
        pause = self.limiter.rate_limited_by_server(retry, sent)
        self.n429 += 1
        assert 0 <= pause <= MAX_WINDOWS * max(self.period, self.limiter.interval) + 1e-9
        assert self.limiter.limit_interval >= before
        self.paused_until = max(self.paused_until, self.clock.now + pause)

    @rule(dt=st.floats(0, 5000, allow_nan=False))
    def idle(self, dt: float) -> None:
        self.clock.now += dt

    @invariant()
    def interval_is_sane(self) -> None:
        if not hasattr(self, "limiter"):
            return
        interval = self.limiter.interval
        assert math.isfinite(interval)
        assert interval >= self.floor * (1 - 1e-12)
        assert self.limiter.ready_at() >= self.paused_until - 1e-9
        assert self.limiter.pauses >= 0
        assert self.limiter.rate_limited == self.n429


TestLimiterMachine = LimiterMachine.TestCase
TestLimiterMachine.settings = settings(max_examples=100, stateful_step_count=50, deadline=None)
