"""Tests for bulkfetch.scheduler: the pure decisions of a run (resume, when to poll, window).

The processing-time model they rely on is tested in tests/test_processing.py."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    rule,
)

from bulkfetch.ledger import JobRecord, JobState
from bulkfetch.processing import ProcessingModel
from bulkfetch.scheduler import (
    Action,
    Poller,
    resume_action,
    safety_margin,
    window_size,
)

NOW = 1_700_000_000.0
MARGIN = 60.0


# -- resume_action ----------------------------------------------------------------------------


def record(state: JobState, *, task_id: str = "t-1", deadline: float = NOW + 3600) -> JobRecord:
    return JobRecord(
        key="k", state=state, task_id=task_id, created_at=deadline - 172800, deadline=deadline
    )


ALIVE = NOW + 3600
DEAD = NOW + 30  # inside the margin: not worth a poll any more
GONE = NOW - 10


@pytest.mark.parametrize(
    ("rec", "file_ok", "retry_failed", "expected"),
    [
        (None, False, False, Action.CREATE),
        (None, True, True, Action.CREATE),
        (record(JobState.PENDING, task_id=""), False, False, Action.CREATE),
        (record(JobState.PENDING, task_id=""), True, True, Action.CREATE),
        (record(JobState.CREATING, task_id=""), False, False, Action.RECREATE_LOST),
        (record(JobState.CREATING, task_id=""), False, True, Action.RECREATE_LOST),
        (record(JobState.CREATED, deadline=ALIVE), False, False, Action.POLL),
        (record(JobState.CREATED, deadline=DEAD), False, False, Action.RECREATE_EXPIRED),
        (record(JobState.CREATED, deadline=GONE), False, False, Action.RECREATE_EXPIRED),
        (
            record(JobState.CREATED, task_id="", deadline=ALIVE),
            False,
            False,
            Action.RECREATE_EXPIRED,
        ),
        (record(JobState.DONE, deadline=ALIVE), True, False, Action.SKIP_DONE),
        (record(JobState.DONE, deadline=GONE), True, True, Action.SKIP_DONE),
        (record(JobState.DONE, deadline=ALIVE), False, False, Action.POLL),
        (record(JobState.DONE, deadline=DEAD), False, False, Action.REFETCH),
        (record(JobState.DONE, deadline=GONE), False, False, Action.REFETCH),
        (record(JobState.DONE, task_id="", deadline=ALIVE), False, False, Action.REFETCH),
        (record(JobState.FAILED), False, False, Action.SKIP_FAILED),
        (record(JobState.FAILED), True, False, Action.SKIP_FAILED),
        (record(JobState.FAILED), False, True, Action.CREATE),
    ],
)
def test_resume_action(
    rec: JobRecord | None, file_ok: bool, retry_failed: bool, expected: Action
) -> None:
    action = resume_action(rec, now=NOW, file_ok=file_ok, retry_failed=retry_failed, margin=MARGIN)
    assert action is expected


def test_resume_action_deadline_margin_boundary() -> None:
    edge = NOW + MARGIN  # now == deadline - margin: no longer alive
    for state, dead in (
        (JobState.CREATED, Action.RECREATE_EXPIRED),
        (JobState.DONE, Action.REFETCH),
    ):
        at_edge = resume_action(
            record(state, deadline=edge), now=NOW, file_ok=False, retry_failed=False, margin=MARGIN
        )
        just_alive = resume_action(
            record(state, deadline=edge + 0.001),
            now=NOW,
            file_ok=False,
            retry_failed=False,
            margin=MARGIN,
        )
        assert at_edge is dead
        assert just_alive is Action.POLL


def test_every_state_has_an_action() -> None:
    for state in JobState:
        for file_ok in (False, True):
            for retry_failed in (False, True):
                action = resume_action(
                    record(state), now=NOW, file_ok=file_ok, retry_failed=retry_failed, margin=0
                )
                assert isinstance(action, Action)


@pytest.mark.parametrize(
    ("configured", "timeout", "margin"),
    [(60.0, 172800.0, 60.0), (60.0, 100.0, 10.0), (60.0, 600.0, 60.0), (0.0, 100.0, 0.0)],
)
def test_safety_margin(configured: float, timeout: float, margin: float) -> None:
    assert safety_margin(configured, timeout) == pytest.approx(margin)


@settings(max_examples=200, deadline=None)
@given(st.floats(0, 1e4), st.floats(1e-3, 1e6))
def test_safety_margin_leaves_most_of_the_life_to_use(configured: float, timeout: float) -> None:
    margin = safety_margin(configured, timeout)
    assert 0.0 <= margin <= configured
    assert margin <= 0.1 * timeout + 1e-12


# -- Poller -----------------------------------------------------------------------------------


def poller(**kwargs: Any) -> Poller:
    """A poller whose first poll of a task is 20 s after its creation."""
    model = ProcessingModel(prior_median=20.0, prior_sigma=0.5)
    kwargs.setdefault("margin", MARGIN)
    kwargs.setdefault("min_gap", 6.0)
    kwargs.setdefault("target", 0.5)  # even odds: the first poll at the median
    return Poller(model, **kwargs)


def test_first_poll_is_when_the_task_is_probably_done() -> None:
    p = poller()
    p.add("a", created_at=NOW, deadline=NOW + 172800)
    assert len(p) == 1
    assert "a" in p
    assert p.earliest_due() == pytest.approx(NOW + 20.0)
    assert p.next_due(NOW) is None
    assert p.next_due(NOW + 19.9) is None
    assert p.next_due(NOW + 20.0) == "a"
    # In the caller's hands now: not handed out twice, and not "due" any more.
    assert p.next_due(NOW + 1000) is None
    assert p.earliest_due() == math.inf
    assert "a" in p


def test_not_ready_pushes_the_next_poll_later() -> None:
    p = poller(min_gap=6.0)
    p.add("a", created_at=NOW, deadline=NOW + 172800)
    t = NOW + 20.0
    assert p.next_due(t) == "a"
    p.not_ready("a", now=t)
    due = p.earliest_due()
    assert due >= t + 6.0
    assert due == pytest.approx(NOW + p.model.next_poll_age(20.0, target=p.target))
    assert p.next_due(due - 0.01) is None
    assert p.next_due(due) == "a"


def test_not_ready_respects_min_gap_when_the_model_says_now() -> None:
    model = ProcessingModel(prior_median=10.0, prior_sigma=0.05, prior_weight=1e6)
    p = Poller(model, margin=MARGIN, min_gap=30.0)
    p.add("a", created_at=NOW, deadline=NOW + 172800)
    t = NOW + 500.0  # far past anything the model expects
    assert p.next_due(t) == "a"
    p.not_ready("a", now=t)
    assert p.earliest_due() >= t + 30.0


def test_gaps_between_polls_grow_for_a_slow_task() -> None:
    p = poller(min_gap=0.0)
    p.add("a", created_at=NOW, deadline=NOW + 172800)
    polls = []
    for _ in range(10):
        t = p.earliest_due()
        assert p.next_due(t) == "a"
        polls.append(t)
        p.not_ready("a", now=t)
    gaps = [b - a for a, b in itertools.pairwise(polls)]
    assert all(g > 1.0 for g in gaps)  # never hammered, even with no min_gap
    assert gaps[-1] > gaps[1]  # the longer it takes, the less often it is asked


@pytest.mark.parametrize("age", [500.0, 1000.0, 1e5])
def test_next_poll_age_keeps_waiting_for_a_very_late_task(age: float) -> None:
    model = ProcessingModel(prior_median=20.0, prior_sigma=0.5)
    assert model.next_poll_age(age) > age * 1.01


def test_remove() -> None:
    p = poller()
    p.add("a", created_at=NOW, deadline=NOW + 172800)
    p.add("b", created_at=NOW, deadline=NOW + 172800)
    p.remove("a")
    p.remove("a")  # twice is fine
    p.remove("never-added")
    assert "a" not in p
    assert len(p) == 1
    assert p.next_due(NOW + 1000) == "b"
    assert p.next_due(NOW + 1000) is None
    assert p.take_expired() == []


def test_removed_while_in_hand_is_never_returned() -> None:
    p = poller()
    p.add("a", created_at=NOW, deadline=NOW + 172800)
    assert p.next_due(NOW + 100) == "a"
    p.remove("a")
    p.not_ready("a", now=NOW + 100)  # a late answer for a removed task is ignored
    p.retry_later("a", at=NOW + 200)
    assert p.next_due(NOW + 1e6) is None
    assert p.earliest_due() == math.inf
    assert p.take_expired() == []
    assert len(p) == 0


def test_earliest_due_is_the_minimum() -> None:
    p = poller()
    p.add("late", created_at=NOW + 100, deadline=NOW + 172800)
    p.add("early", created_at=NOW, deadline=NOW + 172800)
    p.add("mid", created_at=NOW + 50, deadline=NOW + 172800)
    assert p.earliest_due() == pytest.approx(NOW + 20.0)
    p.remove("early")
    assert p.earliest_due() == pytest.approx(NOW + 70.0)
    order = [p.next_due(NOW + 1000), p.next_due(NOW + 1000), p.next_due(NOW + 1000)]
    assert order == ["mid", "late", None]
    assert Poller().earliest_due() == math.inf


def test_retry_later() -> None:
    p = poller()
    p.add("a", created_at=NOW, deadline=NOW + 172800)
    assert p.next_due(NOW + 20) == "a"
    p.retry_later("a", at=NOW + 100)
    assert p.earliest_due() == NOW + 100
    assert p.next_due(NOW + 99) is None
    assert p.next_due(NOW + 100) == "a"
    p.retry_later("unknown", at=NOW)  # ignored
    assert len(p) == 1


def test_task_is_never_returned_past_its_deadline_margin() -> None:
    p = poller()
    deadline = NOW + 70.0  # last useful moment: NOW + 10, before the first poll (NOW + 20)
    p.add("a", created_at=NOW, deadline=deadline)
    assert p.earliest_due() < deadline - MARGIN
    assert p.next_due(deadline - MARGIN) is None
    assert p.take_expired() == ["a"]
    assert p.take_expired() == []
    assert "a" not in p
    assert len(p) == 0


def test_a_last_look_is_allowed_just_before_the_margin() -> None:
    p = poller()
    deadline = NOW + 70.0
    p.add("a", created_at=NOW, deadline=deadline)
    due = p.earliest_due()
    assert due < deadline - MARGIN
    assert p.next_due(due) == "a"


def test_task_polled_near_its_deadline_still_expires() -> None:
    p = poller(min_gap=6.0)
    p.add("a", created_at=NOW, deadline=NOW + 1000)  # last useful moment: NOW + 940
    assert p.next_due(NOW + 20) == "a"
    p.not_ready("a", now=NOW + 936)  # next poll would fall after NOW + 940
    p.next_due(NOW + 5000)
    assert p.take_expired() == ["a"]
    assert len(p) == 0


class PollerMachine(RuleBasedStateMachine):
    """Random add/poll/not-ready/remove/retry/advance sequences keep the poller's promises."""

    keys = Bundle("keys")

    def __init__(self) -> None:
        super().__init__()
        self.now = NOW
        self.serial = 0
        self.live: dict[str, tuple[float, float]] = {}  # key -> (created_at, deadline)
        self.not_before: dict[str, float] = {}
        self.removed: set[str] = set()
        self.returned: set[str] = set()
        self.expired: set[str] = set()
        self.poller = Poller()

    @initialize(
        median=st.floats(0.5, 200),
        margin=st.floats(0, 100),
        min_gap=st.floats(0, 60),
    )
    def start(self, median: float, margin: float, min_gap: float) -> None:
        self.poller = Poller(ProcessingModel(prior_median=median), margin=margin, min_gap=min_gap)

    def last_useful(self, key: str) -> float:
        return self.live[key][1] - self.poller.margin

    @rule(target=keys, lifetime=st.floats(1, 600), offset=st.floats(-50, 0))
    def add(self, lifetime: float, offset: float) -> str:
        key = f"k{self.serial}"
        self.serial += 1
        created = self.now + offset
        self.poller.add(key, created_at=created, deadline=created + lifetime)
        self.live[key] = (created, created + lifetime)
        self.not_before[key] = min(created + self.poller.model.quantile(0.5), self.last_useful(key))
        return key

    @rule(dt=st.floats(0, 100))
    def advance(self, dt: float) -> None:
        self.now += dt

    @rule(key=keys, early=st.floats(0, 10))
    def advance_to_near_deadline(self, key: str, early: float) -> None:
        """Jump to just before a task's last useful moment: the edge where bugs live."""
        if key in self.live:
            self.now = max(self.now, self.last_useful(key) - early)

    @rule(
        answer=st.sampled_from(["not_ready", "done", "retry"]),
        retry_in=st.floats(0, 500),
    )
    def poll(self, answer: str, retry_in: float) -> None:
        key = self.poller.next_due(self.now)
        self.collect_expired()
        if key is None:
            return
        assert key in self.live, f"{key} handed out after it was removed or expired"
        assert key not in self.removed
        assert self.now < self.last_useful(key), "handed out past its deadline margin"
        assert self.now >= self.not_before[key] - 1e-5, "handed out before it was due"
        self.returned.add(key)
        if answer == "not_ready":
            self.poller.not_ready(key, now=self.now)
            gap_end = self.now + self.poller.min_gap
            self.not_before[key] = min(gap_end, self.last_useful(key))
        elif answer == "retry":
            at = self.now + retry_in
            self.poller.retry_later(key, at=at)
            self.not_before[key] = min(at, self.last_useful(key))
        else:
            self.poller.remove(key)
            self.forget(key)

    @rule(key=consumes(keys))
    def remove(self, key: str) -> None:
        self.poller.remove(key)
        if key in self.live:
            self.forget(key)
        self.removed.add(key)

    def forget(self, key: str) -> None:
        del self.live[key]
        self.removed.add(key)

    def collect_expired(self) -> None:
        for key in self.poller.take_expired():
            assert key in self.live, f"{key} expired twice, or after removal"
            assert self.now >= self.last_useful(key) - 1e-5
            self.expired.add(key)
            del self.live[key]

    @invariant()
    def consistent(self) -> None:
        assert len(self.poller) == len(self.live)
        assert all(key in self.poller for key in self.live)
        assert not any(key in self.poller for key in self.removed)
        earliest = min((self.not_before[k] for k in self.live), default=math.inf)
        assert self.poller.earliest_due() >= earliest - 1e-5

    def teardown(self) -> None:
        """Every live task comes out in the end: handed out once more, or expired."""
        seen: set[str] = set()
        t = self.now
        for _ in range(2 * len(self.live) + 2):
            due = self.poller.earliest_due()
            if math.isinf(due):
                break
            t = max(t, due)
            key = self.poller.next_due(t)
            if key is not None:
                assert t < self.last_useful(key)
                seen.add(key)
                self.poller.remove(key)
            seen.update(self.poller.take_expired())
        # next_due() and take_expired() alone drain the poller: nothing is parked forever
        # (the engine never calls expire_overdue()).
        assert set(self.live) <= seen
        assert len(self.poller) == 0


TestPollerMachine = PollerMachine.TestCase
TestPollerMachine.settings = settings(max_examples=150, stateful_step_count=50, deadline=None)


def test_first_poll_waits_for_the_target_odds() -> None:
    model = ProcessingModel(prior_median=20.0, prior_sigma=0.5)
    p = Poller(model, margin=MARGIN, min_gap=6.0, target=0.9)
    p.add("a", created_at=NOW, deadline=NOW + 172800)
    assert p.earliest_due() == pytest.approx(NOW + model.quantile(0.9))
    assert model.quantile(0.9) > model.quantile(0.5)


def test_found_ready_removes_the_task_and_teaches_an_interval() -> None:
    p = poller()
    p.add("a", created_at=NOW, deadline=NOW + 172800)
    assert p.next_due(NOW + 20.0) == "a"
    p.not_ready("a", now=NOW + 20.0)
    assert p.next_due(p.earliest_due()) == "a"
    p.found_ready("a", now=NOW + 40.0)
    assert "a" not in p
    assert p.model.pending_intervals == 1
    p.found_ready("a", now=NOW + 50.0)  # unknown by now: ignored
    assert p.model.pending_intervals == 1


def test_answers_retime_the_queue_with_what_they_teach() -> None:
    # The prior says 1 s; every task is still processing at 8 s: the model learns it
    # is slower and the tasks waiting for their first poll are put back accordingly.
    model = ProcessingModel(prior_median=1.0, prior_sigma=0.5)
    p = Poller(model, margin=MARGIN, min_gap=1.0, target=0.5)
    for i in range(20):
        p.add(f"k{i}", created_at=NOW, deadline=NOW + 172800)
    first = p.earliest_due()
    for _ in range(8):
        key = p.next_due(NOW + 8.0)
        assert key is not None
        p.not_ready(key, now=NOW + 8.0)
    assert model.quantile(0.5) > 2.0
    # The twelve never polled are now due where the new fit puts their odds.
    assert p.earliest_due() == pytest.approx(NOW + model.quantile(0.5))
    assert p.earliest_due() > first + 1.0


def end_game_poller() -> Poller:
    # A heavy tail: a task not ready late in its life is next polled much later.
    model = ProcessingModel(prior_median=60.0, prior_sigma=1.0)
    return Poller(model, margin=MARGIN, min_gap=1.0, target=0.9, watch_last=2)


def test_the_last_tasks_are_watched_in_the_end_game() -> None:
    p = end_game_poller()
    p.add("first", created_at=NOW, deadline=NOW + 172800)
    p.add("slow", created_at=NOW + 100, deadline=NOW + 172800)
    p.remove("first")
    t = NOW + 1000.0
    assert p.next_due(t) == "slow"
    p.not_ready("slow", now=t)
    far = p.earliest_due()
    assert far - t > 300.0  # at 90% odds, a long wait in the tail
    p.set_draining(True)  # nothing left to create: it may be the one that ends the batch
    assert p.earliest_due() == pytest.approx(t + p.watch_share * (t - NOW))
    assert p.next_due(p.earliest_due()) == "slow"
    p.not_ready("slow", now=t + 50.0)
    assert p.earliest_due() == pytest.approx(t + 50.0 + p.watch_share * (t + 50.0 - NOW))


def test_no_watch_while_tasks_remain_to_be_created_or_many_are_running() -> None:
    p = end_game_poller()
    for i in range(3):
        p.add(f"k{i}", created_at=NOW + i, deadline=NOW + 172800)
    t = NOW + 1000.0
    for _ in range(3):
        key = p.next_due(t)
        assert key is not None
        p.not_ready(key, now=t)
    far = p.earliest_due()
    assert far - t > 300.0
    p.set_draining(True)  # three running, two watched at most: odds still rule
    assert p.earliest_due() == far
    p.set_draining(False)
    p.remove("k0")
    assert p.earliest_due() - t > 300.0  # two left, but still creating: no end game yet


# -- window_size ------------------------------------------------------------------------------


def window(median: float, *, status: float = 6.0, timeout: float = 172800) -> int:
    return window_size(
        status_interval=status,
        model=ProcessingModel(prior_median=median),
        task_timeout=timeout,
        margin=MARGIN,
    )


def test_window_shrinks_as_the_processing_tail_eats_the_lifetime() -> None:
    sizes = [window(m, timeout=86400.0) for m in (1, 10, 30, 100, 1000, 10000)]
    assert sizes == sorted(sizes, reverse=True)
    assert sizes[-1] < sizes[0]


def test_window_follows_the_status_lane() -> None:
    assert window(100, status=60.0) < window(100, status=6.0)


def test_window_holds_back_creation_only_for_expiry() -> None:
    # 48-hour tasks at 10/min: thousands may be in flight, far beyond any batch's need.
    assert window(30) > 10_000
    size = window(60, timeout=3600.0)
    assert size * 6.0 <= 3600.0 - MARGIN


def test_window_is_at_least_one() -> None:
    assert window(1e6, status=1e4, timeout=10.0) == 1
    assert window(0.01, status=1e-3) >= 1


@settings(max_examples=300, deadline=None)
@given(
    median=st.floats(0.01, 1e6),
    create=st.floats(1e-3, 3600),
    status=st.floats(1e-3, 3600),
    timeout=st.floats(1, 1e6),
    margin=st.floats(0, 1000),
)
def test_window_bounds(
    median: float, create: float, status: float, timeout: float, margin: float
) -> None:
    size = window_size(
        status_interval=status,
        model=ProcessingModel(prior_median=median),
        task_timeout=timeout,
        margin=margin,
    )
    assert size >= 1
    if size > 1:
        # Every task of a full window is fetched, one status slot each, before the deadline.
        assert size * status <= max(timeout - margin, status) + 1e-9


# -- every slot used (eager) -------------------------------------------------------------------


def eager_poller(**kw: Any) -> Poller:
    return Poller(ProcessingModel(prior_median=10.0, prior_sigma=0.5), margin=5.0, **kw)


def test_a_free_slot_goes_to_the_likeliest_task_before_its_odds_are_good() -> None:
    poller = eager_poller()
    poller.add("young", created_at=100.0, deadline=10_000.0)
    poller.add("old", created_at=90.0, deadline=10_000.0)
    assert poller.next_due(91.0) is None  # neither is probably ready yet
    assert poller.wants_slot(91.0) == 91.0
    assert poller.next_for_slot(91.0) == "old"  # the older one: likelier ready
    assert poller.next_for_slot(91.0) == "young"
    assert poller.next_for_slot(91.0) is None  # both in hand
    assert poller.wants_slot(91.0) == math.inf


def test_the_call_saving_mode_waits_for_good_odds() -> None:
    poller = eager_poller(eager=False)
    poller.add("a", created_at=100.0, deadline=10_000.0)
    due = poller.earliest_due()
    assert due > 101.0
    assert poller.wants_slot(101.0) == due
    assert poller.next_for_slot(101.0) is None
    assert poller.next_for_slot(due) == "a"


def test_a_slot_never_cuts_a_back_off_short_nor_polls_past_the_deadline() -> None:
    poller = eager_poller()
    poller.add("failing", created_at=0.0, deadline=10_000.0)
    poller.add("fine", created_at=2.0, deadline=10_000.0)
    assert poller.next_for_slot(3.0) == "failing"
    poller.retry_later("failing", at=50.0)
    assert poller.next_for_slot(8.0) == "fine"
    poller.not_ready("fine", now=8.0)
    assert poller.next_for_slot(8.1) == "fine"  # what is left, however unlikely
    assert poller.wants_slot(8.2) == 50.0  # only the held-back task is left
    poller.not_ready("fine", now=8.2)
    assert poller.wants_slot(8.3) == 8.3
    assert {poller.next_for_slot(50.0), poller.next_for_slot(50.0)} == {"failing", "fine"}

    dying = eager_poller()
    dying.add("dying", created_at=1.0, deadline=12.0)
    assert dying.next_for_slot(7.5) is None  # within the 5 s margin of its deadline
    assert dying.take_expired() == ["dying"]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0, 100), st.sampled_from(["add", "poll", "not_ready", "pin"])),
        min_size=1,
        max_size=40,
    )
)
def test_a_slot_is_used_whenever_a_task_can_be_polled(ops: list[tuple[float, str]]) -> None:
    """Eager: a task comes out of next_for_slot exactly when one is neither in hand, nor held
    back before its time, nor expired; and it is at least as likely to be ready as the
    one due first among those."""
    poller = eager_poller()
    in_hand: set[str] = set()
    pinned: dict[str, float] = {}
    now = 0.0
    for i, (step, op) in enumerate(ops):
        now += step / 10
        if op == "add":
            poller.add(f"t{i}", created_at=now, deadline=now + 1000.0)
        elif op == "pin" and in_hand:
            key = in_hand.pop()
            pinned[key] = now + step
            poller.retry_later(key, at=now + step)
        elif op == "not_ready" and in_hand:
            key = in_hand.pop()
            poller.not_ready(key, now=now)
        elif op == "poll":
            free = [
                k
                for k in poller._tasks
                if k not in in_hand and (k not in pinned or pinned[k] <= now)
            ]
            dues = {k: poller._tasks[k].due for k in free}
            odds = {k: poller.odds_ready(k, now) for k in free}
            chosen = poller.next_for_slot(now)
            assert (chosen is not None) == bool(free)
            if chosen is not None:
                head = min(free, key=lambda k: dues[k])
                assert odds[chosen] >= odds[head]  # the likeliest of the head
                assert poller._tasks[chosen].due == math.inf  # now in the caller's hands
                in_hand.add(chosen)
                pinned.pop(chosen, None)
