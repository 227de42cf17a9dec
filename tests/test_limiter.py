"""Tests for bulkfetch.limiter: evenly spaced slots, lane-wide pauses on 429, learned pacing."""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Coroutine
from typing import Any

import anyio
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from bulkfetch.config import Rate
from bulkfetch.limiter import Limiter

TEN_A_MINUTE = Rate(10, 60.0)
INTERVAL = 6.0 * (1 + Limiter.margin)  # what 10/min paces at before any 429


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


def run_now(coro: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine that never really suspends (its sleeps only move a FakeClock)."""
    try:
        coro.send(None)
    except StopIteration:
        return
    coro.close()
    raise AssertionError("acquire() suspended on something other than the fake sleep")


def make(rate: Rate = TEN_A_MINUTE, *, learn: bool = False) -> tuple[Limiter, FakeClock]:
    clock = FakeClock()
    return Limiter("status", rate, learn=learn, clock=clock, sleep=clock.sleep), clock


def take(limiter: Limiter, clock: FakeClock) -> float:
    """Acquire a slot; return the clock time it was granted at."""
    run_now(limiter.acquire())
    return clock.now


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
    assert second - first == pytest.approx(0.05 * 1.01)


def test_a_late_caller_is_served_at_once() -> None:
    limiter, clock = make()
    take(limiter, clock)
    clock.now += INTERVAL * 3
    before = len(clock.sleeps)
    take(limiter, clock)
    assert len(clock.sleeps) == before


def test_oversleeping_does_not_slow_the_lane() -> None:
    # A timer that wakes a little late (less than the slack) must not push every later
    # slot later: counted from when each slot was due, 100 slots take 99 intervals.
    rate = Rate(20, 1.0)
    clock = FakeClock()
    late = 0.001  # 1 ms late at every wake-up; the slack is 0.5% of the 1 s window

    async def oversleep(seconds: float) -> None:
        await clock.sleep(seconds + late)

    limiter = Limiter("status", rate, clock=clock, sleep=oversleep)
    times = [take(limiter, clock) for _ in range(100)]
    interval = rate.interval * (1 + Limiter.margin)
    assert times[-1] - times[0] == pytest.approx(99 * interval + late)
    # And any run of slots still spans its intervals less at most the slack.
    slack = 0.5 * Limiter.margin * rate.count * interval
    for k in range(80):
        assert times[k + 20] - times[k] >= (20 * interval - slack) * (1 - 1e-9)


def test_a_caller_much_later_than_the_slack_starts_a_new_grid() -> None:
    limiter, clock = make(Rate(20, 1.0))
    take(limiter, clock)
    clock.now += 0.0505 + 0.5  # far later than the slack: no catching up
    first = take(limiter, clock)
    assert take(limiter, clock) - first == pytest.approx(0.0505)


def test_release_unused_gives_the_slot_back() -> None:
    limiter, clock = make()
    t0 = take(limiter, clock)
    limiter.release_unused()
    assert take(limiter, clock) == t0  # the same moment: the slot was never spent
    assert take(limiter, clock) == pytest.approx(t0 + INTERVAL)


def test_release_unused_gives_back_one_slot_only() -> None:
    limiter, clock = make()
    t0 = take(limiter, clock)
    t1 = take(limiter, clock)
    limiter.release_unused()
    t2 = take(limiter, clock)
    assert t2 == t1  # the released slot, at once
    assert take(limiter, clock) == pytest.approx(t2 + INTERVAL)
    assert t1 - t0 == pytest.approx(INTERVAL)


# -- 429s -------------------------------------------------------------------------------------


def test_429_with_retry_after_pauses_the_whole_lane_for_that_long() -> None:
    limiter, clock = make()
    take(limiter, clock)
    at = clock.now
    assert limiter.rate_limited_by_server(30.0) == 30.0
    assert limiter.ready_at() == pytest.approx(at + 30.0)
    assert take(limiter, clock) == pytest.approx(at + 30.0)
    assert limiter.rate_limited == 1
    assert limiter.pauses == pytest.approx(30.0)


def test_retry_after_is_capped() -> None:
    limiter, clock = make()
    assert limiter.rate_limited_by_server(1e9) == Limiter.max_backoff
    assert limiter.ready_at() == pytest.approx(clock.now + Limiter.max_backoff)


def test_retry_after_zero_is_obeyed_but_pacing_still_slows() -> None:
    limiter, clock = make()
    t0 = take(limiter, clock)
    assert limiter.rate_limited_by_server(0.0) == 0.0
    assert limiter.interval == pytest.approx(INTERVAL * Limiter.slowdown)
    # The slot already scheduled stands; the pause adds nothing.
    assert take(limiter, clock) == pytest.approx(t0 + INTERVAL)


def test_a_shorter_pause_never_cuts_a_longer_one() -> None:
    limiter, clock = make()
    at = clock.now
    limiter.rate_limited_by_server(100.0)
    limiter.rate_limited_by_server(5.0)
    assert limiter.ready_at() == pytest.approx(at + 100.0)
    assert limiter.pauses == pytest.approx(105.0)


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


def test_429_without_retry_after_backs_off_exponentially_and_is_capped() -> None:
    limiter, _ = make()
    pauses = []
    for _ in range(12):
        pauses.append(limiter.rate_limited_by_server(None))
        # The pause doubles per 429 in a row; the pacing slows once per storm.
    assert pauses[0] == pytest.approx(INTERVAL * Limiter.slowdown * Limiter.first_backoff)
    for k in (1, 2, 3):
        expected = INTERVAL * Limiter.slowdown * Limiter.first_backoff * 2**k
        assert pauses[k] == pytest.approx(expected)
        assert pauses[k] >= 2 * pauses[k - 1]
    assert all(b >= a for a, b in itertools.pairwise(pauses))
    assert max(pauses) == Limiter.max_backoff
    assert pauses[-1] == Limiter.max_backoff


def test_a_success_resets_the_backoff() -> None:
    limiter, _ = make()
    limiter.rate_limited_by_server(None)
    limiter.rate_limited_by_server(None)
    limiter.succeeded()
    pause = limiter.rate_limited_by_server(None)
    assert pause == pytest.approx(limiter.interval * Limiter.first_backoff)


@pytest.mark.parametrize("value", [-1.0, math.nan])
def test_unusable_retry_after_falls_back_to_backoff(value: float) -> None:
    limiter, _ = make()
    pause = limiter.rate_limited_by_server(value)
    assert pause == pytest.approx(limiter.interval * Limiter.first_backoff)
    assert pause > 0


# -- learning ---------------------------------------------------------------------------------


def succeed(limiter: Limiter, n: int) -> None:
    for _ in range(n):
        limiter.succeeded()


def test_429_slows_the_pacing() -> None:
    limiter, clock = make()
    take(limiter, clock)
    limiter.rate_limited_by_server(1.0)
    assert limiter.interval == pytest.approx(INTERVAL * Limiter.slowdown)
    t0 = take(limiter, clock)
    assert take(limiter, clock) - t0 == pytest.approx(INTERVAL * Limiter.slowdown)


def test_recovery_needs_a_full_streak_of_successes() -> None:
    limiter, _ = make()
    limiter.rate_limited_by_server(1.0)
    slowed = limiter.interval
    succeed(limiter, Limiter.probe_after - 1)
    assert limiter.interval == slowed
    limiter.succeeded()
    # Half-way back to just short of the pace that drew the 429 (a bisection).
    assert limiter.interval == pytest.approx((slowed + INTERVAL * 1.02) / 2)
    # A 429 in the middle of a streak starts it over.
    succeed(limiter, Limiter.probe_after - 1)
    limiter.rate_limited_by_server(1.0)
    again = limiter.interval
    succeed(limiter, Limiter.probe_after - 1)
    assert limiter.interval == again


def limit_again(limiter: Limiter, clock: FakeClock) -> float:
    """A 429 past the echo of the last one, after a few clean requests; returns the pace
    that drew it."""
    clock.now += limiter.configured.period
    succeed(limiter, 3)
    drawn = limiter.interval
    limiter.rate_limited_by_server(1.0)
    return drawn


def test_recovery_stops_short_of_the_interval_that_drew_the_429() -> None:
    limiter, clock = make()
    limiter.rate_limited_by_server(1.0)
    drawn = limit_again(limiter, clock)  # twice: the limit, not jitter
    succeed(limiter, Limiter.probe_after * 200)
    assert limiter.interval == pytest.approx(drawn * 1.02)


def test_a_single_429_is_forgiven_after_a_long_clean_run() -> None:
    limiter, _ = make()
    limiter.rate_limited_by_server(1.0)
    succeed(limiter, Limiter.lone_after - 1)
    assert limiter.interval >= INTERVAL * 1.02  # suspected meanwhile
    succeed(limiter, Limiter.probe_after * 2)
    assert limiter.interval == pytest.approx(INTERVAL)  # back to the configured pace


def test_a_lone_429_after_a_long_clean_run_only_eases_off() -> None:
    limiter, clock = make()
    succeed(limiter, Limiter.lone_after)
    limiter.rate_limited_by_server(None)
    assert limiter.interval == pytest.approx(INTERVAL * Limiter.speedup)
    succeed(limiter, Limiter.probe_after)
    assert limiter.interval == pytest.approx(INTERVAL)  # nothing marked
    # Soon followed by another (past its echo): the limit. Back to the last pace that
    # passed a clean streak, and that pace is suspected from now on.
    before = limit_again(limiter, clock)
    assert limiter.interval == pytest.approx(before * Limiter.speedup)
    succeed(limiter, Limiter.lone_after - 1)
    assert limiter.interval >= before * 1.02


def test_a_429_within_a_window_of_a_slowdown_is_its_echo() -> None:
    limiter, clock = make()
    limiter.rate_limited_by_server(None)
    slowed = limiter.interval
    succeed(limiter, 2)  # a request sent before the slowdown came back fine...
    clock.now += TEN_A_MINUTE.period / 2
    limiter.rate_limited_by_server(None)  # ...and this one was counted with the old pace
    assert limiter.interval == slowed


def test_recovery_after_a_storm_bisects_towards_the_limit() -> None:
    limiter, clock = make()
    limiter.rate_limited_by_server(1.0)
    drawn = limit_again(limiter, clock)
    slowed = limiter.interval
    succeed(limiter, Limiter.probe_after * 4)
    # Four streaks close at least 15/16 of the gap (half of it each, or one ×1.03 step
    # when that is more); ×1.03 a streak alone would have closed about half of it.
    gap = slowed - drawn * 1.02
    assert drawn * 1.02 * (1 - 1e-12) <= limiter.interval <= drawn * 1.02 + gap / 16


def test_a_storm_marks_only_the_pace_that_drew_it() -> None:
    limiter, clock = make()
    limiter.rate_limited_by_server(1.0)
    drawn = limit_again(limiter, clock)
    for _ in range(3):  # one storm: the later 429s come while paused
        limiter.rate_limited_by_server(1.0)
    assert limiter.interval == pytest.approx(drawn * Limiter.slowdown)
    succeed(limiter, Limiter.probe_after * 200)
    assert limiter.interval == pytest.approx(drawn * 1.02)


def test_without_learning_never_faster_than_configured() -> None:
    limiter, _ = make()
    succeed(limiter, Limiter.probe_after * 200)
    assert limiter.interval >= TEN_A_MINUTE.interval


def test_without_learning_the_margin_is_kept() -> None:
    limiter, _ = make()
    succeed(limiter, Limiter.probe_after * 200)
    assert limiter.interval >= INTERVAL * (1 - 1e-12)


def test_learning_probes_faster_up_to_the_cap() -> None:
    limiter, clock = make(learn=True)
    succeed(limiter, Limiter.probe_after * 500)
    fastest = limiter.interval
    # max_speedup times faster than the configured pace (its margin kept or not), no more.
    assert TEN_A_MINUTE.interval / Limiter.max_speedup <= fastest <= INTERVAL / Limiter.max_speedup
    succeed(limiter, Limiter.probe_after * 10)
    assert limiter.interval == fastest
    t0 = take(limiter, clock)
    assert take(limiter, clock) - t0 == pytest.approx(fastest)


def test_learning_stops_short_of_a_429() -> None:
    limiter, clock = make(learn=True)
    succeed(limiter, Limiter.probe_after * 20)
    assert limiter.interval < INTERVAL
    # After so many clean requests the first 429 is taken for jitter; the server's limit
    # shows as more of them soon after (each past the echo of the last).
    limiter.rate_limited_by_server(None)
    limit_again(limiter, clock)
    drawn_at = limit_again(limiter, clock)
    succeed(limiter, Limiter.probe_after * 500)
    assert limiter.interval == pytest.approx(drawn_at * 1.02)


def test_interval_stays_finite_after_very_many_429s() -> None:
    limiter, _ = make()
    for _ in range(4000):
        limiter.rate_limited_by_server(1.0)
        limiter.rate_limited_by_server(None)
    assert math.isfinite(limiter.interval)
    assert limiter.interval <= Limiter.max_backoff
    assert limiter.rate_limited_by_server(None) == Limiter.max_backoff


def test_a_429_never_speeds_up_a_slow_learning_lane() -> None:
    limiter, _ = make(Rate(1, 3600.0), learn=True)
    before = limiter.interval
    limiter.rate_limited_by_server(None)
    assert limiter.interval >= before


@pytest.mark.parametrize("learn", [False, True])
def test_a_429_never_speeds_up_the_lane(learn: bool) -> None:
    for rate in (Rate(10, 60.0), Rate(50, 1.0), Rate(10, 3600.0)):
        limiter, _ = make(rate, learn=learn)
        for retry_after in (None, 1.0, None, None, 5.0, *([None] * 40)):
            before = limiter.interval
            limiter.rate_limited_by_server(retry_after)
            assert limiter.interval >= before


# -- repr -------------------------------------------------------------------------------------


def test_repr_shows_live_state() -> None:
    limiter, clock = make()
    assert repr(limiter) == "<Limiter status interval=6.06s configured=10/min 429s=0 wait=0s>"
    take(limiter, clock)
    assert "wait=6.06s" in repr(limiter)
    limiter.rate_limited_by_server(30.0)
    shown = repr(limiter)
    assert "interval=7.575s" in shown
    assert "429s=1" in shown
    assert "wait=30s" in shown
    clock.now += 1000
    assert "wait=0s" in repr(limiter)


# -- real time --------------------------------------------------------------------------------


def test_concurrent_waiters_share_the_lane_at_its_pace() -> None:
    rate = Rate(50, 1.0)
    last_read = [0.0]

    def clock() -> float:
        last_read[0] = time.monotonic()
        return last_read[0]

    limiter = Limiter("status", rate, clock=clock)
    granted: list[float] = []

    async def worker() -> None:
        await limiter.acquire()
        granted.append(last_read[0])  # acquire() returns right after the clock read

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for _ in range(6):
                tg.start_soon(worker)

    started = time.monotonic()
    anyio.run(main)
    granted.sort()
    gaps = [b - a for a, b in itertools.pairwise(granted)]
    assert len(granted) == 6
    interval = rate.interval * (1 + Limiter.margin)
    # A slot taken a little late does not push the next one later (no drift), so two
    # slots may be closer than the interval by the slack; any run of them never is.
    slack = 0.5 * Limiter.margin * rate.count * interval
    assert min(gaps) >= (interval - slack) * (1 - 1e-9)
    assert granted[-1] - granted[0] >= (5 * interval - slack) * (1 - 1e-9)
    assert time.monotonic() - started < 5.0


# -- any sequence of events -------------------------------------------------------------------


class LimiterMachine(RuleBasedStateMachine):
    """Random acquire/succeed/429/release/idle sequences keep every promise of the limiter."""

    limiter: Limiter
    clock: FakeClock

    def __init__(self) -> None:
        super().__init__()
        self.grants: list[float] = []
        self.interval_at_grant = 0.0
        self.released_since_grant = False
        self.can_release = False
        self.paused_until = -math.inf
        self.in_streak = False
        self.clean = 0  # successes since the last 429
        self.suspect = 0.0  # the limiter's first evidence, until forgiven
        self.hard = 0.0  # a pace that drew 429s more than once
        self.slowed_at = -math.inf
        self.period = 0.0
        self.count = 0.0
        self.n429 = 0
        self.floor = 0.0
        self.start_interval = 0.0

    @initialize(
        count=st.sampled_from([1.0, 10.0, 20.0, 50.0]),
        period=st.sampled_from([1.0, 60.0, 3600.0]),
        learn=st.booleans(),
    )
    def start(self, count: float, period: float, learn: bool) -> None:
        self.clock = FakeClock(start=12345.0)
        rate = Rate(count, period)
        self.limiter = Limiter("x", rate, learn=learn, clock=self.clock, sleep=self.clock.sleep)
        self.floor = rate.interval / (Limiter.max_speedup if learn else 1.0)
        self.start_interval = self.limiter.interval
        self.period, self.count = period, count

    @rule()
    def acquire(self) -> None:
        before = self.clock.now
        granted = take(self.limiter, self.clock)
        assert granted >= before
        assert granted >= self.paused_until - 1e-9
        if self.grants and not self.released_since_grant:
            # A slot taken late by up to the slack keeps the grid: the next one may come
            # sooner after it by that much (and a run of slots never loses it twice).
            slack = 0.5 * Limiter.margin * self.interval_at_grant * max(1.0, self.count)
            gap = granted - self.grants[-1]
            assert gap >= (self.interval_at_grant - slack) * (1 - 1e-9)
        self.grants.append(granted)
        self.interval_at_grant = self.limiter.interval
        self.released_since_grant = False
        self.can_release = True

    @precondition(lambda self: self.can_release)
    @rule()
    def release(self) -> None:
        self.limiter.release_unused()
        self.released_since_grant = True
        self.can_release = False

    @rule(n=st.integers(1, 60))
    def succeed(self, n: int) -> None:
        before = self.limiter.interval
        succeed(self.limiter, n)
        self.in_streak = False
        self.clean += n
        if self.clean >= Limiter.lone_after:
            self.suspect = 0.0  # forgiven
        after = self.limiter.interval
        assert after <= before  # successes never slow the lane
        if self.hard:
            # Recovery never comes within 2% of an interval that drew 429s twice.
            assert after >= min(before, self.hard * 1.02) * (1 - 1e-12)
        self.can_release = False

    @rule(retry_after=st.none() | st.floats(0, 2000, allow_nan=False))
    def rate_limited(self, retry_after: float | None) -> None:
        # The first 429 of a streak says something of the pace, unless it comes within a
        # window of the last slowdown (the server still counts the old pace: an echo).
        telling = not self.in_streak and self.clock.now - self.slowed_at >= self.period
        lone = self.clean >= Limiter.lone_after
        self.in_streak = True
        self.n429 += 1
        self.clean = 0
        if telling and not lone:
            if self.suspect or self.hard:
                self.hard = max(self.hard, self.suspect, self.limiter.interval)
                self.suspect = 0.0
            else:
                self.suspect = self.limiter.interval
        if telling:
            self.slowed_at = self.clock.now
        before = self.limiter.interval
        pause = self.limiter.rate_limited_by_server(retry_after)
        assert 0 <= pause <= Limiter.max_backoff
        if retry_after is not None:
            assert pause == min(retry_after, Limiter.max_backoff)
        # A telling 429 slows by `slowdown` (less when a slower pace passed a clean
        # streak since the last 429: back to that one; by one `speedup` step if lone
        # after a long clean run: jitter), less only where capped; the rest leave the
        # pace alone.
        after = self.limiter.interval
        assert before <= after <= before * Limiter.slowdown * (1 + 1e-12)
        if not telling:
            assert after == before
        elif lone:
            assert after == pytest.approx(before * Limiter.speedup) or (
                after >= Limiter.max_backoff
            )
        else:
            assert after >= min(before * Limiter.speedup, Limiter.max_backoff) * (1 - 1e-12)
        self.paused_until = max(self.paused_until, self.clock.now + pause)
        self.can_release = False

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
        assert interval <= max(Limiter.max_backoff, self.start_interval)
        assert self.limiter.ready_at() >= self.paused_until - 1e-9
        assert self.limiter.pauses >= 0
        assert self.limiter.rate_limited == self.n429


TestLimiterMachine = LimiterMachine.TestCase
TestLimiterMachine.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)


def test_a_429_storm_does_not_leave_the_lane_crawling() -> None:
    limiter, _ = make()
    for _ in range(30):
        limiter.rate_limited_by_server(None)
    assert limiter.interval == pytest.approx(INTERVAL * Limiter.slowdown)
    for _ in range(Limiter.probe_after * 40):
        limiter.succeeded()
    # Back at the configured pace (with its margin) after the storm.
    assert limiter.interval == pytest.approx(INTERVAL * (1 + Limiter.margin), rel=0.03)


def test_learning_searches_briskly_until_the_first_429_then_carefully() -> None:
    limiter, _ = make(learn=True)
    succeed(limiter, Limiter.search_after * 10)
    assert limiter.interval == pytest.approx(INTERVAL / Limiter.search_speedup**10)
    # Twice the configured rate within 75 requests (10/min: under 8 minutes).
    succeed(limiter, Limiter.search_after * 5)
    assert limiter.interval < 6.0 / 2
    drawn = limiter.interval
    limiter.rate_limited_by_server(None)
    after_429 = limiter.interval
    # Back to the last pace that passed its streak clean: one search step slower at most.
    assert drawn < after_429 <= drawn * Limiter.search_speedup * (1 + 1e-12)
    succeed(limiter, Limiter.search_after * 4)  # no longer searching: nothing yet
    assert limiter.interval == after_429
    succeed(limiter, Limiter.probe_after - Limiter.search_after * 4)
    limit = drawn * 1.02
    step = min(after_429 / Limiter.speedup, (after_429 + limit) / 2)
    assert limiter.interval == pytest.approx(max(limit, step))


def test_without_learning_there_is_no_search() -> None:
    limiter, _ = make()
    succeed(limiter, Limiter.search_after * 10)
    assert limiter.interval == pytest.approx(INTERVAL)
