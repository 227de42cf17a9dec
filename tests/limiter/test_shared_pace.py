"""The shared pacing's decisions, without sockets or clocks: slots, leases, fallback."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from bulkfetch.limiter.shared_pace import (
    BLOCK_SPAN,
    FORGET_AFTER,
    MAX_BLOCK,
    LaneState,
    StoreClock,
    block_size,
    fallback_interval,
    give_back,
    live_leases,
    others_since,
    refused,
    renew_lease,
    sent_late,
    slot_still_good,
    take_slot,
)

HORIZON = 300.0
gaps = st.lists(st.floats(min_value=0.0, max_value=5.0), min_size=1, max_size=60)
intervals = st.floats(min_value=0.05, max_value=10.0)


@given(gaps, intervals, st.floats(min_value=0.0, max_value=1.0))
def test_slots_are_never_closer_than_the_interval_nor_in_the_past(
    gaps: list[float], interval: float, slack_share: float
) -> None:
    """Whoever asks, whenever: two slots are at least an interval apart, and a slot is
    never more than ``slack`` before the asking (an idle lane makes up nothing)."""
    slack = slack_share * interval
    state, now, last = LaneState(), 1000.0, -math.inf
    for gap in gaps:
        now += gap
        state, grant = take_slot(state, now, interval=interval, slack=slack, horizon=HORIZON)
        assert grant.at - last >= interval * (1 - 1e-9)
        assert grant.at >= now - slack - 1e-9
        last = grant.at


@given(
    st.integers(min_value=2, max_value=5),
    st.lists(st.floats(min_value=0.001, max_value=0.99), min_size=5, max_size=5),
)
def test_busy_processes_share_slots_fairly(processes: int, thinks: list[float]) -> None:
    """Each process asks again a little after its slot (its own ``think`` time, less than
    a slot): their reservations interleave, so none gets more than one slot more than
    any other, and together they never go faster than the lane's rate."""
    interval = 1.0
    state = LaneState()
    asks = dict.fromkeys(range(processes), 0.0)  # when each asks next
    counts = dict.fromkeys(range(processes), 0)
    slots: list[float] = []
    while min(asks.values()) < 100.0:
        who = min(asks, key=lambda p: (asks[p], p))
        now = asks[who]
        state, grant = take_slot(state, now, interval=interval, slack=0.0, horizon=HORIZON)
        counts[who] += 1
        slots.append(grant.at)
        asks[who] = grant.at + thinks[who]
    assert max(counts.values()) - min(counts.values()) <= 1
    assert all(b - a >= interval - 1e-9 for a, b in itertools.pairwise(slots))


@given(st.floats(min_value=0.0, max_value=100.0), intervals)
def test_an_unused_slot_is_given_back_only_if_still_the_last(gap: float, interval: float) -> None:
    state, first = take_slot(LaneState(), 50.0, interval=interval, slack=0.0, horizon=HORIZON)
    state, unused = take_slot(state, 50.0, interval=interval, slack=0.0, horizon=HORIZON)
    back = give_back(state, unused)
    _, again = take_slot(back, 50.0, interval=interval, slack=0.0, horizon=HORIZON)
    assert again.at == unused.at  # nobody reserved after it: the next asker gets it
    # Someone reserved after it: giving it back changes nothing (only ever slower).
    later, _ = take_slot(state, 50.0 + gap, interval=interval, slack=0.0, horizon=HORIZON)
    assert give_back(later, unused) == later
    assert first.at < unused.at


@given(
    intervals,
    st.floats(min_value=0.0, max_value=60.0),
    st.floats(min_value=0.0, max_value=10.0),
)
def test_a_429_pauses_and_slows_every_process(
    interval: float, pause: float, taught_share: float
) -> None:
    now = 500.0
    state, _ = take_slot(LaneState(), now, interval=interval, slack=0.0, horizon=HORIZON)
    state, ahead = take_slot(state, now, interval=interval, slack=0.0, horizon=HORIZON)
    taught = interval * (1 + taught_share)
    after = refused(state, now, limit_interval=taught, strict=True, pause=pause)
    assert after.refusals == state.refusals + 1
    assert after.strict
    # A slot reserved before the 429 and falling in its pause is not used (re-reserved).
    assert slot_still_good(after, ahead.at) == (ahead.at >= now + pause)
    _, grant = take_slot(after, now, interval=interval, slack=0.0, horizon=HORIZON)
    assert grant.at >= now + pause
    assert grant.spacing >= taught  # every process slows to what one was taught
    # A process that believes a faster limit does not speed the lane up.
    again = refused(after, now, limit_interval=interval / 2, strict=False, pause=0.0)
    assert again.limit_interval == after.limit_interval
    assert again.strict


def test_a_lane_left_alone_or_far_ahead_starts_afresh() -> None:
    state = refused(LaneState(), 0.0, limit_interval=9.0, strict=True, pause=1.0)
    state, _ = take_slot(state, 0.0, interval=1.0, slack=0.0, horizon=HORIZON)
    # Used a moment ago: the limit taught still holds.
    _, grant = take_slot(state, 10.0, interval=1.0, slack=0.0, horizon=HORIZON)
    assert grant.spacing == 9.0
    # Last week's 429 does not slow today's run.
    _, grant = take_slot(state, FORGET_AFTER + 1, interval=1.0, slack=0.0, horizon=HORIZON)
    assert grant.spacing == 1.0
    assert grant.at == FORGET_AFTER + 1
    # A clock that went back an hour: the stored slot lies beyond any real queue.
    _, grant = take_slot(state, -3600.0, interval=1.0, slack=0.0, horizon=HORIZON)
    assert grant.at == -3600.0


@given(st.lists(st.floats(min_value=0.1, max_value=30.0), min_size=1, max_size=8))
def test_leases_run_out_unless_renewed(ttls: list[float]) -> None:
    leases: dict[str, float] = {}
    for i, ttl in enumerate(ttls):
        leases = renew_lease(leases, f"p{i}", 0.0, ttl)
    assert live_leases(leases, 0.0) == len(ttls)
    # One renews late; the others (killed) stop counting once their lease is over.
    late = max(ttls) + 1
    leases = renew_lease(leases, "p0", late, 5.0)
    assert leases == {"p0": late + 5.0}
    assert live_leases(leases, late) == 1
    assert live_leases({}, 0.0) == 1  # the one asking, always


@given(intervals, st.integers(min_value=1, max_value=50))
def test_the_fallback_pace_keeps_the_processes_last_seen_under_the_rate(
    interval: float, processes: int
) -> None:
    each = fallback_interval(interval, processes)
    assert processes / each <= 1 / interval * (1 + 1e-9)
    assert fallback_interval(interval, 0) == interval


@given(st.lists(st.sampled_from("abc"), min_size=1, max_size=40))
def test_each_process_learns_every_other_slot_before_its_own_and_once(order: list[str]) -> None:
    """A 429 is read from what the whole key sent: a process must know each of the other
    processes' slots before its own next one goes out, and count none twice."""
    state, since = LaneState(), dict.fromkeys("abc", -math.inf)
    told: dict[str, list[float]] = {p: [] for p in "abc"}
    mine: dict[str, list[float]] = {p: [] for p in "abc"}
    for i, who in enumerate(order):
        now = i * 0.3
        state, grant = take_slot(
            state, now, interval=1.0, slack=0.0, horizon=HORIZON, owner=who, history=HORIZON
        )
        told[who] += others_since(state, who, since[who], grant.at)
        since[who] = grant.at
        mine[who].append(grant.at)
    everyone = sorted(at for slots in mine.values() for at in slots)
    for p in "abc":
        if not mine[p]:
            continue
        before_last = [at for at in everyone if at < mine[p][-1] and at not in mine[p]]
        assert sorted(told[p]) == before_last


def test_slots_are_remembered_for_the_history_asked_only() -> None:
    state = LaneState()
    for i in range(10):
        state, _ = take_slot(
            state, float(i), interval=1.0, slack=0.0, horizon=HORIZON, owner="a", history=3.0
        )
    assert [at for at, _ in state.recent] == [7.0, 8.0, 9.0]


@given(
    st.floats(min_value=1e-4, max_value=10.0),
    st.lists(st.floats(min_value=0.0, max_value=0.2), min_size=1, max_size=20),
)
def test_a_block_holds_the_slots_of_its_span_and_the_next_asker_comes_after_it(
    interval: float, gaps: list[float]
) -> None:
    """A process alone on the key reserves the slots of ``BLOCK_SPAN`` at once: they are
    spaced like single slots, never more than ``MAX_BLOCK``, at least one, and whoever asks
    next (a newcomer) gets a slot no closer than a spacing after the block's last."""
    state, now, last = LaneState(), 100.0, -math.inf
    for gap in gaps:
        now += gap
        state, grant = take_slot(
            state, now, interval=interval, slack=0.0, horizon=HORIZON, block=BLOCK_SPAN
        )
        assert grant.count == block_size(grant.spacing, BLOCK_SPAN)
        assert 1 <= grant.count <= MAX_BLOCK
        assert grant.count == 1 or (grant.count - 1) * grant.spacing <= BLOCK_SPAN
        assert grant.at - last >= interval * (1 - 1e-9)
        last = grant.at + (grant.count - 1) * grant.spacing
        assert state.next_at == grant.end
    _, newcomer = take_slot(state, now, interval=interval, slack=0.0, horizon=HORIZON)
    assert newcomer.at - last >= interval * (1 - 1e-9)
    assert newcomer.count == 1


def test_a_block_is_one_slot_at_eos_rates_and_dozens_at_thousands_a_second() -> None:
    assert block_size(6.0, BLOCK_SPAN) == 1  # 10 a minute
    assert block_size(0.05, BLOCK_SPAN) == 1  # 20 a second: a slot is the block's span
    assert block_size(0.001, BLOCK_SPAN) == 50
    assert block_size(1e-6, BLOCK_SPAN) == MAX_BLOCK
    assert block_size(0.001, 0.0) == 1  # not alone: one slot


@given(st.floats(min_value=1e-3, max_value=0.01), st.integers(min_value=0, max_value=60))
def test_the_rest_of_a_block_is_given_back_only_if_still_the_last(
    interval: float, used: int
) -> None:
    state, block = take_slot(
        LaneState(),
        50.0,
        interval=interval,
        slack=0.0,
        horizon=HORIZON,
        owner="a",
        history=HORIZON,
        block=BLOCK_SPAN,
    )
    used = min(used, block.count - 1)
    rest = replace(block, at=block.at + used * block.spacing, count=block.count - used)
    back = give_back(state, rest)
    assert back.next_at == rest.at
    assert [at for at, _ in back.recent] == [block.at + i * block.spacing for i in range(used)]
    _, again = take_slot(back, 50.0, interval=interval, slack=0.0, horizon=HORIZON)
    assert again.at == rest.at
    # A newcomer reserved after the block: the rest is lost (only ever slower).
    later, _ = take_slot(state, 50.0, interval=interval, slack=0.0, horizon=HORIZON)
    assert give_back(later, rest) == later


@given(
    st.floats(min_value=-100.0, max_value=100.0),
    st.floats(min_value=-1.0, max_value=100.0),
    intervals,
)
def test_a_late_send_moves_the_next_slot_on_by_its_lateness_at_most_a_slot(
    next_at: float, late: float, spacing: float
) -> None:
    """Late by less than a slot, the grid goes on from the send; later, one slot makes
    room for it where it landed. Never earlier, never more than a slot."""
    state = LaneState(next_at=next_at, recent=((next_at - spacing, "a"),))
    moved = sent_late(state, late=late, spacing=spacing)
    assert moved.next_at == next_at + min(max(late, 0.0), spacing)
    assert replace(moved, next_at=next_at) == state


def test_the_store_s_clock_is_read_from_its_fastest_replies() -> None:
    """The local clock is the store's plus 100 s; each change is applied 1 ms after it
    is sent, and its reply comes back after a delay: the slowest replies (a busy
    process) do not move the offset, the fastest set it."""
    clock, offset = StoreClock(), 100.0
    offsets = []
    for i, back in enumerate([0.004, 0.030, 0.001, 0.050, 0.002]):
        store_now = 10.0 * i
        local = store_now + offset
        offsets.append(clock.update(sent=local - 0.001, answered=local + back, store_now=store_now))
    assert offsets[:2] == [offset + 0.004, offset + 0.004]
    assert offsets[2:] == [offset + 0.001] * 3


def test_a_store_clock_that_steps_is_followed_at_once() -> None:
    clock = StoreClock()
    for i in range(5):
        clock.update(sent=100.0 + i, answered=100.001 + i, store_now=float(i))
    # The store's clock steps back 10 s: the old replies contradict the new one.
    assert clock.update(sent=106.0, answered=106.002, store_now=-4.0) == 110.002
    # And forward 20 s.
    assert clock.update(sent=107.0, answered=107.003, store_now=17.0) == 90.003
