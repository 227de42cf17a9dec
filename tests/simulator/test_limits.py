"""Tests for bulkfetch.simulator.limits: each way a server may count requests, without sockets,
and the kinds as the simulator serves them (config, command line, Retry-After forms)."""

from __future__ import annotations

import email.utils
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bulkfetch.simulator.app import _retry_after
from bulkfetch.simulator.config import SimConfig
from bulkfetch.simulator.limits import (
    LIMITER_KINDS,
    FixedWindow,
    SlidingWindow,
    Spacing,
    TokenBucket,
    make_limit,
)
from bulkfetch.simulator.state import SimState

K = "key"


def admitted(limit: object, times: list[float], n: int = 4, window: float = 1.0) -> list[bool]:
    return [limit.admit(K, t, n, window) is None for t in times]  # type: ignore[attr-defined]


def test_sliding_log_counts_any_window() -> None:
    times = [0.0, 0.1, 0.2, 0.3, 0.4, 1.05, 1.15]
    assert admitted(SlidingWindow(), times) == [True] * 4 + [False, True, True]
    lane = SlidingWindow()
    for t in (0.0, 0.1, 0.2, 0.3):
        assert lane.admit(K, t, 4, 1.0) is None
    assert lane.admit(K, 0.5, 4, 1.0) == pytest.approx(0.5)  # the oldest leaves at 1.0


def test_fixed_window_resets_at_the_boundary_and_lets_a_burst_straddle_it() -> None:
    times = [0.6, 0.7, 0.8, 0.9, 0.95, 1.0, 1.01, 1.02, 1.03, 1.04]
    assert admitted(FixedWindow(), times) == [True] * 4 + [False] + [True] * 4 + [False]
    lane = FixedWindow()
    for t in (2.1, 2.2, 2.3, 2.4):
        assert lane.admit(K, t, 4, 1.0) is None
    assert lane.admit(K, 2.5, 4, 1.0) == pytest.approx(0.5)  # until 3.0


def test_token_bucket_bursts_then_refills_at_the_rate() -> None:
    lane = TokenBucket()
    assert [lane.admit(K, 0.0, 4, 1.0) is None for _ in range(5)] == [True] * 4 + [False]
    assert lane.admit(K, 0.1, 4, 1.0) == pytest.approx(0.15)  # 0.4 token, 0.6 to go at 4/s
    assert lane.admit(K, 0.25, 4, 1.0) is None
    small = TokenBucket(burst=2)
    assert [small.admit(K, 0.0, 4, 1.0) is None for _ in range(3)] == [True, True, False]


def test_spacing_refuses_anything_closer_than_the_interval() -> None:
    lane = Spacing()
    assert lane.admit(K, 0.0, 4, 1.0) is None
    assert lane.admit(K, 0.249, 4, 1.0) == pytest.approx(0.001)
    assert lane.admit(K, 0.25, 4, 1.0) is None
    assert lane.admit(K, 0.6, 4, 1.0) is None  # late: no credit for the lost time
    assert lane.admit(K, 0.8, 4, 1.0) is not None
    tolerant = Spacing(burst=1)
    assert [tolerant.admit(K, 0.0, 4, 1.0) is None for _ in range(3)] == [True, True, False]


@pytest.mark.parametrize("kind", LIMITER_KINDS)
@given(gaps=st.lists(st.floats(0.0, 0.6), min_size=1, max_size=60))
def test_no_kind_admits_more_than_its_long_run_rate(kind: str, gaps: list[float]) -> None:
    """Over any run, admitted <= limit * (span / window) + what the kind allows at once; and a
    refusal's wait is positive and at most a window."""
    lane = make_limit(kind)  # type: ignore[arg-type]
    now, admits = 0.0, 0
    for gap in gaps:
        now += gap
        wait = lane.admit(K, now, 4, 1.0)
        if wait is None:
            admits += 1
        else:
            assert 0.0 <= wait <= 1.0 + 1e-9
    assert admits <= 4 * now + 2 * 4  # a fixed window's straddle is the worst: 2 * limit


@pytest.mark.parametrize("kind", LIMITER_KINDS)
def test_an_evenly_paced_client_at_the_rate_is_never_refused(kind: str) -> None:
    lane = make_limit(kind)  # type: ignore[arg-type]
    assert all(lane.admit(K, 0.3 + i * 0.2501, 4, 1.0) is None for i in range(200))


def test_retry_after_forms() -> None:
    assert _retry_after("int", 2.2, 60.0) == {"Retry-After": "3"}
    assert _retry_after("float", 2.2, 60.0) == {"Retry-After": "2.200000"}
    assert _retry_after("window", 2.2, 60.0) == {"Retry-After": "60"}
    assert _retry_after("off", 2.2, 60.0) == {}
    date = email.utils.parsedate_to_datetime(_retry_after("date", 2.2, 60.0)["Retry-After"])
    assert 2.0 <= date.timestamp() - time.time() <= 4.0


def test_a_change_of_kind_starts_the_lanes_afresh() -> None:
    state = SimState(SimConfig(), started=0.0)
    first = state.lane_limit("status")
    assert isinstance(first, SlidingWindow)
    assert state.lane_limit("status") is first
    state.config.update(limiter="bucket", burst=3)
    bucket = state.lane_limit("status")
    assert isinstance(bucket, TokenBucket)
    assert bucket.burst == 3


def test_config_refuses_an_unknown_kind_or_a_negative_burst() -> None:
    with pytest.raises(ValueError, match="limiter must be one of"):
        SimConfig(limiter="leaky")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="burst"):
        SimConfig(burst=-1)
