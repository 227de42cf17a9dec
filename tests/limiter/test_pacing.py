"""Tests for bulkfetch.limiter.pacing: the limiter's decisions, pure functions over plain data."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bulkfetch.limiter.pacing import (
    MAX_SLOWDOWN,
    MIN_SLOWDOWN,
    Refusal,
    calendar_limit,
    counted_in_window,
    jitter_margin,
    kth_latest,
    lesson_of_429,
    limit_after_429,
    located_count,
    pause_without_retry_after,
    room_at,
    spaced_interval,
    window_count_tells,
)
from bulkfetch.simulator.limits import LimiterKind, make_limit

W = 60.0  # 10/min
T = 6.0


def test_jitter_needs_a_few_round_trips_and_ignores_one_outlier() -> None:
    assert jitter_margin([0.1, 0.5, 0.2], interval=T) == 0.0
    assert jitter_margin([0.10, 0.12, 0.15, 0.11, 3.0], interval=T) == pytest.approx(0.05)
    assert jitter_margin([0.1, 0.1, 0.1, 0.1], interval=T) == 0.0
    typical = jitter_margin([0.10, 0.11, 0.12, 0.13, 0.5, 0.9], interval=T, typical=True)
    assert typical == pytest.approx(0.03)  # the third quartile (0.13) less the least


@given(st.lists(st.floats(0, 100), min_size=4, max_size=40), st.floats(1e-3, 100))
def test_jitter_is_never_negative_nor_over_a_quarter_slot(
    lat: list[float], interval: float
) -> None:
    for typical in (False, True):
        j = jitter_margin(lat, interval=interval, typical=typical)
        assert 0.0 <= j <= 0.25 * interval


def sends(start: float, gap: float, n: int) -> list[float]:
    return [start + i * gap for i in range(n)]


def test_a_full_window_before_a_refusal_is_the_limit() -> None:
    """A sliding log of 10 a minute, a lane at twice that for over a window."""
    accepted = sends(0.0, 3.0, 10) + sends(60.0, 3.0, 10)
    refusal = Refusal(
        sent_at=90.0, limit_interval=3.0, pace=3.0, window=W, accepted=accepted, first_sent=0.0
    )
    assert window_count_tells(refusal)
    assert limit_after_429(refusal) == pytest.approx(T)


def test_a_young_lane_s_first_refusal_is_taken_for_jitter() -> None:
    """Half a window in, a spacing limiter's stray refusal and a window's limit look alike:
    a small step, not a halved pace for the rest of the run."""
    accepted = sends(0.0, 3.0, 10)
    refusal = Refusal(
        sent_at=30.0, limit_interval=3.0, pace=3.0, window=W, accepted=accepted, first_sent=0.0
    )
    assert not window_count_tells(refusal)
    assert limit_after_429(refusal) == pytest.approx(3.0 * MIN_SLOWDOWN)


def _refused_again(
    *, sent_at: float = 33.0, limit_interval: float = 3.03, pace: float = 3.05, jitter: float = 0.0
) -> Refusal:
    """A lane twice too fast for 10/min: 10 accepted 3 s apart from 0, refused at 30 s,
    and again at ``sent_at`` (33 s) with nothing let through between."""
    return Refusal(
        sent_at=sent_at,
        limit_interval=limit_interval,
        pace=pace,
        window=W,
        accepted=sends(0.0, 3.0, 10),
        previous=30.0,
        first_sent=0.0,
        jitter=jitter,
    )


def test_a_refusal_hard_on_the_heels_of_another_tells_even_a_young_lane() -> None:
    refusal = _refused_again()
    assert window_count_tells(refusal)
    assert limit_after_429(refusal) == pytest.approx(T)  # 10 in the window before
    refusal = Refusal(
        sent_at=33.0,
        limit_interval=1.0,
        pace=1.01,
        window=W,
        accepted=sends(23.0, 1.0, 10),
        previous=32.5,
        first_sent=0.0,
    )
    assert limit_after_429(refusal) == pytest.approx(1.01 * MAX_SLOWDOWN)  # at most x2


def test_a_well_spaced_lane_at_its_rate_takes_a_refusal_for_jitter() -> None:
    accepted = sends(0.0, 6.1, 30)
    refusal = Refusal(
        sent_at=183.0,
        limit_interval=6.0,
        pace=6.1,
        window=W,
        accepted=accepted,
        first_sent=0.0,
        strict=True,
    )
    assert not window_count_tells(refusal)
    assert limit_after_429(refusal) == pytest.approx(6.0 * MIN_SLOWDOWN)


def test_a_dry_bucket_is_read_from_what_it_let_through_between_refusals() -> None:
    """A bucket refills one token every 6 s: between two refusals it let through 10
    requests in 60 s, though the window before held 20 (its burst)."""
    accepted = sends(0.0, 3.0, 20) + sends(62.0, 6.0, 10)
    refusal = Refusal(
        sent_at=121.0,
        limit_interval=3.0,
        pace=3.0,
        window=W,
        accepted=accepted,
        previous=61.0,
        first_sent=0.0,
    )
    assert limit_after_429(refusal) == pytest.approx(6.0)


def test_a_refusal_from_before_the_kept_requests_is_not_counted_from() -> None:
    """The previous refusal was 9 windows ago, the lane keeps the last 8 of accepted
    requests: the 80 kept over 590 s are not all it let through since (they read 7.4 s a
    request, against the 6 s the window shows)."""
    accepted = sends(120.0, 6.06, 80)
    refusal = Refusal(
        sent_at=600.0,
        limit_interval=6.0,
        pace=6.06,
        window=W,
        accepted=accepted,
        previous=10.0,
        first_sent=0.0,
    )
    assert limit_after_429(refusal) > 7.0  # what the truncated count says
    kept = replace(refusal, kept_since=120.0)
    assert limit_after_429(kept) == pytest.approx(6.0 * MIN_SLOWDOWN)
    assert limit_after_429(replace(kept, first_refusal=10.0)) == pytest.approx(6.0 * MIN_SLOWDOWN)


@given(
    belief=st.floats(0.01, 100),
    pace_over=st.floats(1.0, 2.0),
    n=st.integers(0, 60),
    young=st.booleans(),
    previous=st.none() | st.floats(0, 100),
)
def test_the_new_belief_is_bounded(
    belief: float, pace_over: float, n: int, young: bool, previous: float | None
) -> None:
    sent = 200.0
    accepted = sorted(sent - 1 - i * 2.0 for i in range(n))
    refusal = Refusal(
        sent_at=sent,
        limit_interval=belief,
        pace=belief * pace_over,
        window=W,
        accepted=accepted,
        previous=previous,
        first_sent=sent - 30.0 if young else -math.inf,
    )
    new = limit_after_429(refusal)
    assert new >= min(belief * MIN_SLOWDOWN, max(W, belief)) * (1 - 1e-12)
    assert new <= max(belief * MIN_SLOWDOWN, belief * pace_over * MAX_SLOWDOWN) + 1e-9
    assert new <= max(W, belief) + 1e-9


def test_without_retry_after_the_lane_waits_for_the_oldest_to_leave() -> None:
    accepted = sends(0.0, 3.0, 10) + sends(60.0, 3.0, 10)
    refusal = Refusal(
        sent_at=90.0, limit_interval=3.0, pace=3.0, window=W, accepted=accepted, first_sent=0.0
    )
    # 10 a window now: the one sent at 60 must leave first, at 120.
    assert pause_without_retry_after(refusal, 6.0) == pytest.approx(30.0)


def test_without_retry_after_a_refusal_taken_for_jitter_costs_a_slot() -> None:
    accepted = sends(0.0, 3.0, 10)
    refusal = Refusal(
        sent_at=30.0, limit_interval=3.0, pace=3.0, window=W, accepted=accepted, first_sent=0.0
    )
    assert pause_without_retry_after(refusal, 3.03) == pytest.approx(3.03)


def test_refused_again_after_a_slot_the_lane_waits_for_room_for_half_not_a_window() -> None:
    """Twice too fast: 10 accepted 3 s apart, refused at 30 s (too young to read: one
    slot), and again at 33 s with nothing let through. The count now says 10 a window, but
    a calendar window straddled holds up to twice its limit: room for 5 is certain once the
    one sent at 15 has left, jitter included (a sliding log has room 15 s sooner). Not a
    window after the first refusal (90 s)."""
    refusal = _refused_again(jitter=0.2)
    assert pause_without_retry_after(refusal, 6.0) == pytest.approx(15.0 + W + 0.2 - 33.0)


def test_refused_again_with_room_by_the_count_the_lane_waits_a_window() -> None:
    """Refused at 80 s, right after a refusal at 30 s: the count shows room for half of 10
    a window already, so it misleads here (a calendar window ends later than it says), and
    the lane waits until a window after that refusal."""
    refusal = _refused_again(sent_at=80.0, limit_interval=6.0, pace=6.0)
    assert pause_without_retry_after(refusal, 6.0) == pytest.approx(30.0 + W - 80.0)


@given(
    gaps=st.lists(st.floats(0.01, 30), max_size=60),
    new=st.floats(0.01, 120),
)
def test_the_pause_is_at_least_a_slot_and_at_most_a_window(gaps: list[float], new: float) -> None:
    accepted: list[float] = []
    t = 0.0
    for gap in gaps:
        t += gap
        accepted.append(t)
    refusal = Refusal(sent_at=t + 0.5, limit_interval=new, pace=new, window=W, accepted=accepted)
    pause = pause_without_retry_after(refusal, new)
    assert min(new, W) <= pause <= max(W, new)


def test_a_window_s_count_shows_a_window_server_but_jitter_does_not() -> None:
    window_limit = Refusal(
        sent_at=90.0,
        limit_interval=3.0,
        pace=3.0,
        window=W,
        accepted=sends(0.0, 3.0, 10) + sends(60.0, 3.0, 10),
        first_sent=0.0,
        strict=True,
    )
    assert counted_in_window(window_limit)  # 10 in a window the lane thought held 20
    stray = Refusal(
        sent_at=183.0,
        limit_interval=6.0,
        pace=6.1,
        window=W,
        accepted=sends(0.0, 6.1, 30),
        first_sent=0.0,
        strict=True,
    )
    assert not counted_in_window(stray)
    young = Refusal(
        sent_at=30.0,
        limit_interval=3.0,
        pace=3.0,
        window=W,
        accepted=sends(0.0, 3.0, 10),
        first_sent=0.0,
    )
    assert not counted_in_window(young)


def _refused_after(k: int, *, first_sent: float) -> Refusal:
    """A 429 at t=10 for a lane that believed 10/s, after ``k`` accepted in the last 1 s."""
    accepted = [9.0 + (i + 1) / (k + 1) for i in range(k)]
    return Refusal(
        sent_at=10.0,
        limit_interval=0.1,
        pace=0.1,
        window=1.0,
        accepted=accepted,
        first_sent=first_sent,
    )


def test_a_429_with_the_window_half_full_reads_a_window_limit() -> None:
    lesson = lesson_of_429(_refused_after(5, first_sent=0.0), searching=False, search_speedup=1.1)
    assert lesson.strict is False  # a window counter: the jitter need not fit between two
    assert lesson.limit_interval == pytest.approx(0.2)  # 5 per window


def test_a_429_to_a_lane_younger_than_a_window_suspects_spacing() -> None:
    young = _refused_after(3, first_sent=9.5)
    lesson = lesson_of_429(young, searching=False, search_speedup=1.1)
    assert lesson.strict is True  # too young to read the count: the server may space
    assert lesson.limit_interval >= 0.1


def test_a_searching_lane_slows_one_step_whatever_its_count_says() -> None:
    searched = replace(_refused_after(5, first_sent=0.0), accepted=sends(9.5, 0.1, 5))
    lesson = lesson_of_429(searched, searching=True, search_speedup=1.1)
    assert lesson.limit_interval == pytest.approx(0.11)
    # Its count was short of its pace all the search long, whatever the server: no sign.
    assert lesson.strict is None


def test_a_searching_lane_steps_back_from_the_gap_it_was_refused() -> None:
    """Its sends lagged the grid (1/6 s apart at a pace of 0.1 s): a server that spaces
    requests refused a gap of 1/6 s, so one step back from the grid would be refused too."""
    lesson = lesson_of_429(_refused_after(5, first_sent=0.0), searching=True, search_speedup=1.1)
    assert lesson.limit_interval == pytest.approx(1.1 / 6)


def test_a_searching_lane_whose_retry_after_locates_the_window_learns_the_limit() -> None:
    """A sliding log's exact wait points at its oldest request: the 10 accepted from there
    are the limit, well slower than one search step back (the lane overshot)."""
    refusal = replace(_young_refusal(30.0), limit_interval=4.0, pace=4.0)
    lesson = lesson_of_429(refusal, searching=True, search_speedup=1.1)
    assert lesson.limit_interval == pytest.approx(6.0)
    assert lesson.strict is False


@given(
    st.integers(min_value=0, max_value=30),
    st.floats(min_value=0.0, max_value=9.9),
    st.booleans(),
)
def test_a_lesson_never_speeds_a_lane_up(k: int, first_sent: float, burst: bool) -> None:
    refusal = replace(_refused_after(k, first_sent=first_sent), burst=burst)
    for searching in (False, True):
        lesson = lesson_of_429(refusal, searching=searching, search_speedup=1.1)
        assert lesson.limit_interval >= refusal.limit_interval


# -- a 429 to a burst -------------------------------------------------------------------------


def _refused_in_burst(k: int, *, limit_interval: float = 0.1) -> Refusal:
    """A lane 0.5 s old, believing ``limit_interval`` in a 1 s window, that sent ``k``
    requests back to back (2 ms apart, each once the one before was answered) and was
    refused the next."""
    accepted = sends(9.5, 0.002, k)
    return Refusal(
        sent_at=9.5 + 0.002 * k,
        limit_interval=limit_interval,
        pace=limit_interval,
        window=1.0,
        accepted=accepted,
        first_sent=9.5,
        burst=True,
    )


def test_a_burst_refused_at_its_second_request_shows_a_server_that_spaces() -> None:
    lesson = lesson_of_429(_refused_in_burst(1), searching=False, search_speedup=1.1)
    assert lesson.strict is True
    # Nothing about the rate: the refusal is the burst's, not the configured pace's.
    assert lesson.limit_interval == pytest.approx(0.1)


@pytest.mark.parametrize("k", [10, 14, 20])
def test_a_burst_refused_after_a_run_accepted_reads_the_window_s_limit(k: int) -> None:
    """The lane believed 20 a window (a rate twice too high, or a fixed window straddled):
    ``k`` accepted back to back, where no spacing limiter lets two through, are the limit
    of a window counter, however young the lane; at most twice slower than the pace."""
    lesson = lesson_of_429(
        _refused_in_burst(k, limit_interval=0.05), searching=False, search_speedup=1.1
    )
    assert lesson.strict is False
    assert lesson.limit_interval == pytest.approx(max(1.0 / k, 0.05 * MIN_SLOWDOWN))
    assert lesson.limit_interval <= 0.05 * MAX_SLOWDOWN


def test_a_young_lane_told_the_server_counts_in_a_window_reads_the_count() -> None:
    """``windowed``: another lane's burst showed a window counter, so the count of a lane
    younger than a window is its limit, not a pair bunched on the way."""
    young = _refused_after(5, first_sent=9.5)
    assert lesson_of_429(young, searching=False, search_speedup=1.1).strict is True
    lesson = lesson_of_429(replace(young, windowed=True), searching=False, search_speedup=1.1)
    assert lesson.strict is False
    assert lesson.limit_interval == pytest.approx(0.2)  # 5 per window


def test_a_server_a_burst_showed_spacing_refusing_a_bunched_pair_costs_one_step() -> None:
    """A burst's second request refused at t=0 (spacing), the lane paused a whole window
    (Retry-After: 1 s) and then sent 80 at its pace: a refusal at 5 s is a pair bunched on
    the way. Read from the previous refusal, the rate between them, the pause included,
    would be 4.7 s / 80, a limit a fifth slower than the server's for the rest of the run.
    """
    refusal = Refusal(
        sent_at=5.05,
        limit_interval=0.05,
        pace=0.0503,
        window=1.0,
        accepted=[0.0, *sends(1.0, 0.0503, 80)],
        previous=0.002,
        first_sent=0.0,
        strict=True,
        windowed=False,
    )
    assert not window_count_tells(refusal)
    lesson = lesson_of_429(refusal, searching=False, search_speedup=1.1)
    assert lesson.limit_interval == pytest.approx(0.05 * MIN_SLOWDOWN)
    assert lesson.strict is True
    # Hard on the heels of another (the lane above the server's rate): the count tells.
    hot = replace(refusal, accepted=[0.0, 0.05], sent_at=0.1, previous=0.002, pace=0.025)
    assert window_count_tells(hot)


def test_a_burst_refused_well_short_of_half_the_believed_window_keeps_the_rate() -> None:
    """A bucket with a small burst refuses as soon whatever its rate: 3 of 20 tells the
    burst, not the rate, and the lane keeps the one configured (paced evenly now)."""
    lesson = lesson_of_429(
        _refused_in_burst(3, limit_interval=0.05), searching=False, search_speedup=1.1
    )
    assert lesson.strict is None
    assert lesson.limit_interval == pytest.approx(0.05)


# -- what an exact Retry-After locates --------------------------------------------------------


def _young_refusal(retry_after: float | None, *, start: float = 0.0) -> Refusal:
    """A lane configured at twice a 10/min server's rate, 30 s old: 10 accepted 3 s apart
    from ``start``, the 11th refused at ``start + 30``."""
    return Refusal(
        sent_at=start + 30.0,
        limit_interval=3.0,
        pace=3.0,
        window=W,
        accepted=sends(start, 3.0, 10),
        first_sent=start,
        retry_after=retry_after,
    )


def test_a_sliding_logs_exact_retry_after_locates_its_limit_at_the_first_429() -> None:
    """The oldest request leaves at 60 s: the wait (30 s) points at it, and the 10 from it
    to the refusal are the limit, although the lane is younger than a window."""
    refusal = _young_refusal(30.0)
    assert not counted_in_window(refusal)  # the window's count alone cannot be read yet
    assert located_count(refusal) == 10
    assert limit_after_429(refusal) == pytest.approx(T)
    lesson = lesson_of_429(refusal, searching=False, search_speedup=1.1)
    assert lesson.limit_interval == pytest.approx(T)
    assert lesson.strict is False


def test_rounded_up_to_whole_seconds_it_locates_the_same_limit() -> None:
    assert located_count(_young_refusal(30.4)) == 10
    assert located_count(_young_refusal(31.0)) == 10


def test_a_calendar_windows_retry_after_counts_from_the_window_start() -> None:
    """A fixed window from 0 to 60 s; the lane sent 5 in the window before (at 3 s apart
    from -15) and 10 in this one: its last 60 s hold 15, its window 10."""
    refusal = dataclasses.replace(
        _young_refusal(30.0), accepted=sends(-15.0, 3.0, 15), first_sent=-15.0
    )
    assert located_count(refusal) == 10  # from 0 (= 30 + 30 - 60) to the refusal
    assert limit_after_429(refusal) == pytest.approx(T)


@pytest.mark.parametrize(
    "retry_after",
    [
        None,  # absent
        W,  # a whole window whatever the wait: its start is the refusal itself
        1.0,  # a spacing limiter's: less than an interval
        3.0,  # a token bucket's: about one interval
        W + 1.0,  # more than a window: no window count explains it
    ],
)
def test_a_retry_after_that_locates_nothing_is_not_read(retry_after: float | None) -> None:
    assert located_count(_young_refusal(retry_after)) is None


def test_a_located_window_needs_two_requests_in_it() -> None:
    """A spacing limiter at a third of the lane's rate refuses its second request with a
    wait of two of the lane's intervals: one request in the window located, not a limit."""
    refusal = Refusal(
        sent_at=2.0,
        limit_interval=2.0,
        pace=2.0,
        window=W,
        accepted=[0.0],
        first_sent=0.0,
        retry_after=4.0,
    )
    assert located_count(refusal) is None


@given(
    k=st.integers(0, 30),
    retry_after=st.one_of(st.none(), st.floats(0.0, 200.0)),
    first_sent=st.floats(0.0, 29.0),
)
def test_what_retry_after_locates_never_speeds_a_lane_up(
    k: int, retry_after: float | None, first_sent: float
) -> None:
    accepted = sorted(first_sent + (30.0 - first_sent) * i / (k + 1) for i in range(k))
    refusal = dataclasses.replace(
        _young_refusal(retry_after), accepted=accepted, first_sent=first_sent
    )
    lesson = lesson_of_429(refusal, searching=False, search_speedup=1.1)
    assert refusal.limit_interval <= lesson.limit_interval <= max(W, 2 * refusal.pace)


def test_a_coarse_retry_after_at_a_fast_rate_locates_nothing() -> None:
    """An HTTP date (whole seconds) from a server allowing 20 a second could point anywhere
    in its one-second window: a spacing limiter's refusal would read as a limit."""
    refusal = Refusal(
        sent_at=10.5,
        limit_interval=0.05,
        pace=0.05,
        window=1.0,
        accepted=sends(10.0, 0.05, 10),
        first_sent=10.0,
        retry_after=0.5,
        retry_after_resolution=1.0,
    )
    assert located_count(refusal) is None
    # The same wait said exactly places the window: ten requests in it.
    assert located_count(dataclasses.replace(refusal, retry_after_resolution=0.0)) == 10


# -- room in the window -------------------------------------------------------------------


def test_evenly_paced_requests_at_the_limit_never_wait_for_room() -> None:
    """At the lane's pace, the limit plus its margin: at the limit itself, a request would
    wait for the jitter (sent a window after another, it may arrive less than one after)."""
    accepted = sends(0.0, 6.03, 30)
    assert room_at(30 * 6.03, accepted, [], window=W, allowed=10, jitter=0.05) == 30 * 6.03


def test_after_a_burst_that_followed_slower_sends_room_comes_as_they_leave() -> None:
    """Five sends 12 s apart, then five 1 s apart (a search's burst): a sliding log of 10 a
    minute is full, and makes room only as the slow ones leave it, 12 s apart."""
    slow, burst = sends(0.0, 12.0, 5), sends(49.0, 1.0, 5)
    accepted = slow + burst
    assert room_at(54.0, accepted, [], window=W, allowed=10, jitter=0.05) == pytest.approx(60.05)
    after = [*accepted, 60.05]
    assert room_at(61.0, after, [], window=W, allowed=10, jitter=0.05) == pytest.approx(72.05)


def test_requests_on_their_way_count_for_room() -> None:
    """Nine accepted and one not answered yet (or handed out, not sent): the window is full."""
    accepted = sends(0.0, 6.0, 9)
    assert room_at(54.0, accepted, [], window=W, allowed=10, jitter=0.0) == 54.0
    assert room_at(54.0, accepted, [53.0], window=W, allowed=10, jitter=0.0) == 60.0


@given(
    gaps=st.lists(st.floats(0.0, 20.0), min_size=1, max_size=40),
    allowed=st.integers(1, 12),
    at=st.floats(0.0, 400.0),
)
def test_a_send_when_there_is_room_keeps_every_window_within_the_limit(
    gaps: list[float], allowed: int, at: float
) -> None:
    times = [sum(gaps[: i + 1]) for i in range(len(gaps))]
    at = max(at, times[-1])
    send_at = room_at(at, times, [], window=W, allowed=allowed, jitter=0.0)
    assert send_at >= at
    in_window = [t for t in times if t > send_at - W + 1e-9]  # (rounding)
    assert len(in_window) < allowed


def test_after_a_search_what_was_let_through_between_refusals_is_no_refill() -> None:
    """A sliding log of 20 a second refuses a search, and again 0.2 s later, three let
    through between (the pause after the first among them). Read as a bucket's refill,
    that is 15 a second: a quarter below the limit the window's count shows, for good."""
    refusal = Refusal(
        sent_at=10.0,
        limit_interval=0.05,
        pace=0.05,
        window=1.0,
        accepted=sends(9.01, 0.0475, 17) + sends(9.85, 0.05, 3),
        previous=9.8,
        first_sent=0.0,
    )
    assert limit_after_429(refusal) == pytest.approx(0.2 / 3)  # a refill, after a refusal
    after_search = replace(refusal, after_search=True)
    assert limit_after_429(after_search) == pytest.approx(0.05 * MIN_SLOWDOWN)


@given(
    st.lists(
        st.lists(st.floats(min_value=0.0, max_value=100.0), max_size=30).map(sorted),
        min_size=1,
        max_size=3,
    ),
    st.integers(min_value=1, max_value=40),
)
def test_kth_latest_is_the_kth_of_all_sends_merged(sends: list[list[float]], k: int) -> None:
    merged = sorted(t for times in sends for t in times)
    if len(merged) < k:
        return
    assert kth_latest(sends, k) == merged[-k]


# -- a calendar window's boundaries, found from the lane's history ---------------------------


def _history(
    kind: LimiterKind, *, limit: int, pace: float, pause: str, refusals: int, start: float
) -> tuple[list[float], list[float]]:
    """A lane at ``pace`` (a little uneven) against the simulator's limiter of ``kind``
    allowing ``limit`` a minute, pausing after each 429 for ``pause``: "window" (a whole
    window, whatever the wait) or "wait" (what the server said). Send times accepted and
    refused, until ``refusals`` 429s."""
    server = make_limit(kind)
    t, accepted, refused = start, list[float](), list[float]()
    while len(refused) < refusals:
        wait = server.admit("key", t, limit, W)
        if wait is None:
            accepted.append(t)
            t += pace * (1 + 0.02 * math.sin(len(accepted)))
        else:
            refused.append(t)
            t += W if pause == "window" else wait
    return accepted, refused


def _last_refusal(accepted: list[float], refused: list[float], **fields: Any) -> Refusal:
    last = refused[-1]
    return Refusal(
        sent_at=last,
        limit_interval=fields.pop("limit_interval", 3.0),
        pace=3.0,
        window=W,
        accepted=[t for t in accepted if t < last],
        previous=refused[-2] if len(refused) > 1 else None,
        first_sent=accepted[0],
        first_refusal=refused[0],
        refusals=tuple(refused[:-1]),
        **fields,
    )


def test_a_calendar_window_straddled_is_read_where_its_boundaries_fit() -> None:
    """10 a minute in calendar minutes, a lane at twice that pausing a whole window after
    each 429: the minute before the third holds 19 (a boundary in it), and the rate
    between refusals holds the pauses; where the boundaries can lie tells 10."""
    accepted, refused = _history(
        "fixed", limit=10, pace=3.0, pause="window", refusals=3, start=5051.0
    )
    refusal = _last_refusal(accepted, refused, retry_after=W)
    in_window = sum(1 for t in refusal.accepted if t > refusal.sent_at - W)
    assert in_window > 10
    assert calendar_limit(refusal) == 10
    assert limit_after_429(refusal) == pytest.approx(T)
    assert lesson_of_429(refusal, searching=False, search_speedup=1.25).strict is False
    # One refusal places no boundary; a server that spaces requests has none.
    assert calendar_limit(_last_refusal(accepted, refused[:1])) is None
    assert calendar_limit(replace(refusal, windowed=False)) is None


#: A lane 1.1 to 2 times too fast for a limit of 3 to 30 a minute, starting anywhere in it.
LANE_RUNS = {
    "limit": st.integers(3, 30),
    "speedup": st.floats(1.1, 2.0),
    "pause": st.sampled_from(["window", "wait"]),
    "start": st.floats(0.0, 60.0),
}


@given(**LANE_RUNS)
def test_a_sliding_log_is_never_taken_for_a_calendar_window(
    limit: int, speedup: float, pause: str, start: float
) -> None:
    """A sliding log never lets through more in a window than the window before a 429
    held: the history rules no sliding log out, and the count is read as it is."""
    accepted, refused = _history(
        "sliding", limit=limit, pace=W / limit / speedup, pause=pause, refusals=3, start=start
    )
    assert calendar_limit(_last_refusal(accepted, refused)) is None


@given(**LANE_RUNS)
def test_a_calendar_window_s_limit_is_read_from_its_history(
    limit: int, speedup: float, pause: str, start: float
) -> None:
    """Paused until its window ends, a lane's runs tell the boundaries, and the limit
    exactly. Paused a whole window each time at one pace, its runs are alike and fit
    several limits: the guess is never below two thirds of it (the count, up to twice
    it, is the upper bound), and a lane that sped past it learns better at its next 429
    (``test_lane``: a calendar window at twice the rate)."""
    accepted, refused = _history(
        "fixed", limit=limit, pace=W / limit / speedup, pause=pause, refusals=3, start=start
    )
    found = calendar_limit(_last_refusal(accepted, refused))
    if pause == "wait":
        assert found in (None, limit)
    else:
        assert found is None or limit * 0.66 <= found <= 2 * limit


# -- a spacing limiter's wait ---------------------------------------------------------------


def _spaced_refusal(gap: float, wait: float | None, **fields: Any) -> Refusal:
    """20 a second believed (twice too fast for a GCRA of 20 a second, interval 50 ms):
    one request accepted at 10 s, the next refused ``gap`` later, told ``wait``."""
    fields = {"limit_interval": 0.025, "pace": 0.0255, **fields}
    return Refusal(
        sent_at=10.0 + gap, window=1.0, accepted=[10.0], first_sent=9.0, retry_after=wait, **fields
    )


def test_a_burst_refused_by_a_spacing_limiter_reads_its_interval_from_an_exact_wait() -> None:
    """The second of a burst, 3 ms after the first, told to wait 47 ms: the server lets a
    request through every 50 ms. The wait of a whole window, or in whole seconds at twenty
    a second, says nothing of it: the lane keeps its belief and paces evenly."""
    exact = lesson_of_429(
        _spaced_refusal(0.003, 0.047, burst=True), searching=False, search_speedup=1.25
    )
    assert exact.limit_interval == pytest.approx(0.05)
    assert exact.strict is True
    for wait, resolution in ((1.0, 0.0), (1.0, 1.0), (0.047, 1.0)):
        refusal = _spaced_refusal(0.003, wait, burst=True, retry_after_resolution=resolution)
        lesson = lesson_of_429(refusal, searching=False, search_speedup=1.25)
        assert lesson.limit_interval == pytest.approx(0.025)


def test_a_lane_known_to_face_spacing_reads_its_interval_from_a_wait_that_early() -> None:
    """Told by a burst that the server spaces requests, a lane sent 27.6 ms after the last
    and told 22.4 ms: twice too fast, read at once (it stepped 1% a 429 before). Told 5 ms
    after 52 ms, a pair bunched on the way: a small step, unless the refusal came hard on
    the heels of another, when the lane is above the rate however little."""
    assert limit_after_429(_spaced_refusal(0.0276, 0.0224, windowed=False)) == pytest.approx(0.05)
    bunched = _spaced_refusal(0.052, 0.005, windowed=False, limit_interval=0.05, pace=0.0505)
    assert spaced_interval(bunched) is None
    assert limit_after_429(bunched) == pytest.approx(0.05 * MIN_SLOWDOWN)
    hot = replace(bunched, previous=9.99, kept_since=0.0)
    assert limit_after_429(hot) == pytest.approx(0.057)
    # Not known to space requests, the wait is not read so: a window counter's says when
    # its window has room, not a rate.
    unknown = replace(_spaced_refusal(0.0276, 0.0224), first_sent=9.5)  # younger than a window
    assert limit_after_429(unknown) == pytest.approx(0.025 * MIN_SLOWDOWN)
