"""Tests for bulkfetch.policy: back-off, retries, outages, quotas and expiry, without sockets."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from bulkfetch.policy import (
    OUTAGE_PAUSE_CAP,
    OUTAGE_STREAK,
    RETRY_BASE,
    RETRY_CAP,
    LaneHealth,
    backoff,
    count_creates,
    expiry,
    quota_block,
    retry_delay,
    retry_in,
    today,
)

NOW = 1_700_000_000.0
attempts = st.integers(min_value=-5, max_value=10_000)
bases = st.floats(min_value=1e-3, max_value=1e4)
caps = st.floats(min_value=1e-3, max_value=1e7)
draws = st.floats(min_value=0.0, max_value=1.0)

# -- back-off ---------------------------------------------------------------------------------


def test_backoff_doubles_from_base_up_to_cap() -> None:
    assert [backoff(n, base=2.0, cap=60.0) for n in range(1, 8)] == [2, 4, 8, 16, 32, 60, 60]
    assert backoff(3, base=2.0, cap=60.0, draw=0.0) == 4.0  # jitter: never under half
    assert backoff(0, base=2.0, cap=60.0) == backoff(1, base=2.0, cap=60.0) == 2.0


@given(attempts, bases, caps, draws)
def test_backoff_is_bounded_and_finite(attempt: int, base: float, cap: float, draw: float) -> None:
    wait = backoff(attempt, base=base, cap=cap, draw=draw)
    ceiling = backoff(attempt, base=base, cap=cap)
    assert math.isfinite(wait)
    assert ceiling / 2 <= wait <= ceiling <= cap
    assert ceiling >= min(base, cap)


@given(attempts, bases, caps, draws)
def test_backoff_never_shrinks_as_failures_add_up(
    attempt: int, base: float, cap: float, draw: float
) -> None:
    assert backoff(attempt, base=base, cap=cap, draw=draw) <= backoff(
        attempt + 1, base=base, cap=cap, draw=draw
    )


@given(st.integers(min_value=1, max_value=40), draws)
def test_one_formula_gives_what_the_three_old_ones_gave(failures: int, draw: float) -> None:
    # The engine's retry and outage back-off: base * 2**(n-1), capped, jitter U(0.5, 1).
    old_engine = min(300.0, 6.0 * 2.0 ** (failures - 1)) * (0.5 + 0.5 * draw)
    assert backoff(failures, base=6.0, cap=300.0, draw=draw) == pytest.approx(old_engine)
    # The search client's: min(60, 2 * 2**(n-1)) * U(0.5, 1).
    old_search = min(60.0, 2.0 * 2 ** (failures - 1)) * (0.5 + 0.5 * draw)
    assert backoff(failures, base=2.0, cap=60.0, draw=draw) == pytest.approx(old_search)
    # A failed job's wait for a later run: no jitter.
    old_retry = min(RETRY_CAP, RETRY_BASE * 2.0 ** max(0, min(failures, 30) - 1))
    assert retry_delay(failures) == old_retry


def test_retry_delay_is_an_hour_doubling_to_a_week() -> None:
    assert [retry_delay(n) / 3600 for n in (0, 1, 2, 3)] == [1, 1, 2, 4]
    assert retry_delay(10_000) == 7 * 86400


@given(st.integers(min_value=0, max_value=50), st.integers(min_value=0, max_value=20), draws)
def test_retry_in_gives_up_only_when_the_budget_is_spent(
    errors: int, max_errors: int, draw: float
) -> None:
    delay = retry_in(errors, max_errors=max_errors, base=1.0, cap=300.0, draw=draw)
    if errors > max_errors:
        assert delay is None
    else:
        assert delay == backoff(errors, base=1.0, cap=300.0, draw=draw)


# -- outages ----------------------------------------------------------------------------------


def test_one_job_failing_again_and_again_is_no_outage() -> None:
    health = LaneHealth()
    for i in range(10):
        health, pause = health.failed("a", now=NOW + i, max_outage=1800, interval=6, draw=1)
        assert pause is None
    assert health.streak == 10 and health.since is None


def test_failures_across_jobs_pause_the_lane_with_back_off_until_max_outage() -> None:
    health = LaneHealth()
    pauses = []
    for i in range(OUTAGE_STREAK + 4):
        health, pause = health.failed(f"k{i % 2}", now=NOW + i, max_outage=3.5, interval=6, draw=1)
        pauses.append(pause)
    first = OUTAGE_STREAK - 1
    assert pauses[:first] == [None] * first
    assert pauses[first:] == [12.0, 24.0, 48.0, OUTAGE_PAUSE_CAP, None]  # 4 s since: over
    assert health.since == NOW + first and health.was_down
    assert health.answered() == LaneHealth()


class LaneHealthMachine(RuleBasedStateMachine):
    """LaneHealth against a plain model: a streak, its jobs and when the outage began."""

    MAX_OUTAGE = 100.0

    def __init__(self) -> None:
        super().__init__()
        self.health = LaneHealth()
        self.now = NOW
        self.streak = 0
        self.jobs: set[str] = set()
        self.since: float | None = None

    @rule(key=st.sampled_from("abc"), dt=st.floats(min_value=0, max_value=60), draw=draws)
    def fail(self, key: str, dt: float, draw: float) -> None:
        self.now += dt
        self.health, pause = self.health.failed(
            key, now=self.now, max_outage=self.MAX_OUTAGE, interval=6.0, draw=draw
        )
        self.streak += 1
        self.jobs.add(key)
        outage = self.streak >= OUTAGE_STREAK and len(self.jobs) >= 2
        if outage and self.since is None:
            self.since = self.now
        if outage and self.now - (self.since or self.now) <= self.MAX_OUTAGE:
            assert pause is not None
            attempt = self.streak - OUTAGE_STREAK + 1
            assert pause == backoff(attempt, base=12.0, cap=OUTAGE_PAUSE_CAP, draw=draw)
        else:
            assert pause is None

    @rule()
    def answered(self) -> None:
        self.health = self.health.answered()
        self.streak, self.jobs, self.since = 0, set(), None

    @invariant()
    def matches_model(self) -> None:
        assert self.health.streak == self.streak
        assert self.health.jobs == self.jobs
        assert self.health.since == self.since
        assert self.health.was_down == (self.streak >= OUTAGE_STREAK)


TestLaneHealthMachine = LaneHealthMachine.TestCase

# -- quotas -----------------------------------------------------------------------------------

optional_counts = st.none() | st.integers(min_value=0, max_value=20)


def _block(**changes: object) -> str:
    args: dict[str, object] = {
        "launched": 0,
        "max_creates": None,
        "created_today": 0,
        "max_creates_per_day": None,
        "now": NOW,
        "time_box": None,
        "turnaround": 10.0,
    }
    args.update(changes)
    return quota_block(**args)  # type: ignore[arg-type]


def test_quota_block_says_which_quota_stops_creation() -> None:
    assert _block() == ""
    assert _block(launched=5, max_creates=5) == "the run's creation quota (5) is used"
    assert _block(created_today=3, max_creates_per_day=3) == "today's creation quota (3) is used"
    assert _block(time_box=NOW + 9) == "the time box leaves no room to see another task through"
    assert _block(time_box=NOW + 10) == ""


@given(
    st.integers(min_value=0, max_value=20),
    optional_counts,
    st.integers(min_value=0, max_value=20),
    optional_counts,
    st.none() | st.floats(min_value=NOW - 100, max_value=NOW + 100),
    st.floats(min_value=0, max_value=200),
)
def test_quota_block_allows_a_creation_exactly_when_every_limit_has_room(
    launched: int,
    max_creates: int | None,
    today_count: int,
    max_per_day: int | None,
    time_box: float | None,
    turnaround: float,
) -> None:
    room = (
        (max_creates is None or launched < max_creates)
        and (max_per_day is None or today_count < max_per_day)
        and (time_box is None or NOW + turnaround <= time_box)
    )
    why = quota_block(
        launched=launched,
        max_creates=max_creates,
        created_today=today_count,
        max_creates_per_day=max_per_day,
        now=NOW,
        time_box=time_box,
        turnaround=turnaround,
    )
    assert (why == "") == room


def test_today_is_the_utc_day() -> None:
    assert today(0) == "1970-01-01"
    assert today(86400 * 365 - 1) == "1970-12-31"


@given(
    st.dictionaries(
        st.integers(min_value=0, max_value=20).map(lambda d: today(NOW - d * 86400)),
        st.integers(min_value=0, max_value=1000),
    ),
    st.integers(min_value=0, max_value=50),
)
def test_count_creates_adds_today_and_keeps_a_week(by_day: dict[str, int], n: int) -> None:
    counted = count_creates(by_day, now=NOW, n=n)
    assert counted[today(NOW)] == by_day.get(today(NOW), 0) + n
    week_ago = today(NOW - 7 * 86400)
    assert all(day >= week_ago for day in counted)
    assert {d: c for d, c in by_day.items() if d >= week_ago and d != today(NOW)} == {
        d: c for d, c in counted.items() if d != today(NOW)
    }


# -- expiry -----------------------------------------------------------------------------------


def test_an_expired_task_is_created_again_after_its_deadline_until_the_cap() -> None:
    why = "the task expired before it could be fetched"
    again = expiry(why, creates=1, max_creates_per_job=4, now=NOW, deadline=NOW + 30)
    assert (again.give_up, again.not_before, again.reason) == (False, NOW + 30, why)
    past = expiry(why, creates=1, max_creates_per_job=4, now=NOW, deadline=NOW - 30)
    assert past.not_before == NOW
    gone = expiry("gone", creates=3, max_creates_per_job=4, now=NOW, deadline=NOW + 99, gone_at=NOW)
    assert gone.not_before == NOW  # EOS said it forgot the task: no need to wait for its deadline
    spent = expiry(why, creates=4, max_creates_per_job=4, now=NOW, deadline=NOW + 30)
    assert spent.give_up and spent.reason == f"{why}, 4 times"
