"""Tests for bulkfetch.records: a job's record and its transitions, without sockets."""

from __future__ import annotations

from collections.abc import Callable

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from bulkfetch import records
from bulkfetch.policy import retry_delay
from bulkfetch.records import BadTransition, JobRecord, JobState

NOW = 1_700_000_000.0
S = JobState
Transition = Callable[[JobRecord], JobRecord]

# Each transition with fixed arguments, and the states it leaves from.
TRANSITIONS: dict[str, tuple[Transition, frozenset[JobState]]] = {
    "begin_create": (
        lambda r: records.begin_create(r, now=NOW),
        frozenset({S.PENDING, S.CREATED, S.DONE}),
    ),
    "undo_create": (lambda r: records.undo_create(r, now=NOW), frozenset({S.CREATING})),
    "task_created": (
        lambda r: records.task_created(r, now=NOW, task_id="t", req_id="q", task_timeout=60.0),
        frozenset({S.CREATING}),
    ),
    "file_written": (
        lambda r: records.file_written(r, now=NOW, path="a.tif", size=3, sha256="00" * 32),
        frozenset({S.CREATED, S.DONE}),
    ),
    "transient_failure": (
        lambda r: records.transient_failure(r, now=NOW, reason="503"),
        frozenset({S.CREATING, S.CREATED, S.DONE}),
    ),
    "requeue": (
        lambda r: records.requeue(r, now=NOW, reason="expired"),
        frozenset({S.PENDING, S.CREATING, S.CREATED, S.DONE}),
    ),
    "recover_lost": (lambda r: records.recover_lost(r, now=NOW), frozenset({S.CREATING})),
    "retry": (lambda r: records.retry(r, now=NOW), frozenset({S.FAILED})),
    "fail": (
        lambda r: records.fail(r, now=NOW, reason="400", retryable=False),
        frozenset(JobState),
    ),
}


@pytest.mark.parametrize("name", sorted(TRANSITIONS))
@pytest.mark.parametrize("state", list(JobState))
def test_each_transition_leaves_only_from_its_states(name: str, state: JobState) -> None:
    move, sources = TRANSITIONS[name]
    record = JobRecord("k", state, creates=1, run_creates=1)
    if state in sources:
        after = move(record)
        assert after.key == "k" and after.updated_at == NOW
    else:
        with pytest.raises(BadTransition, match=rf"job 'k': {name} from {state}"):
            move(record)


def test_a_job_from_pending_to_done() -> None:
    record = JobRecord("k", path="k.tif", slot="s")
    creating = records.begin_create(record, now=NOW)
    assert (creating.state, creating.creates, creating.run_creates) == (S.CREATING, 1, 1)
    created = records.task_created(creating, now=NOW + 1, task_id="t", req_id="q", task_timeout=60)
    assert created.state is S.CREATED
    assert (created.task_id, created.req_id, created.created_at, created.deadline) == (
        "t",
        "q",
        NOW + 1,
        NOW + 61,
    )
    done = records.file_written(created, now=NOW + 5, path="k.tif", size=9, sha256="ab" * 32)
    assert (done.state, done.size, done.reason, done.updated_at) == (S.DONE, 9, "", NOW + 5)
    assert done.slot == "s" and done.creates == 1


def test_a_rate_limited_creation_does_not_count() -> None:
    creating = records.begin_create(JobRecord("k", creates=2), now=NOW)
    undone = records.undo_create(creating, now=NOW)
    assert (undone.state, undone.creates, undone.run_creates) == (S.PENDING, 2, 0)


def test_a_transient_failure_counts_and_a_creation_goes_back_to_pending() -> None:
    creating = records.begin_create(JobRecord("k"), now=NOW)
    failed = records.transient_failure(creating, now=NOW, reason="503 busy")
    assert (failed.state, failed.errors, failed.run_errors, failed.reason) == (
        S.PENDING,
        1,
        1,
        "503 busy",
    )
    polled = records.transient_failure(JobRecord("k", S.CREATED, errors=4), now=NOW, reason="x")
    assert (polled.state, polled.errors, polled.run_errors) == (S.CREATED, 5, 1)


def test_failing_sets_the_back_off_for_a_later_run_only_when_it_may_pass() -> None:
    gone = records.fail(JobRecord("k", failures=2), now=NOW, reason="expired", retryable=True)
    assert (gone.state, gone.failures, gone.retryable) == (S.FAILED, 3, True)
    assert gone.retry_at == NOW + retry_delay(3)
    refused = records.fail(JobRecord("k"), now=NOW, reason="400", retryable=False)
    assert (refused.retry_at, refused.retryable, refused.reason) == (0.0, False, "400")


def test_a_lost_creation_is_counted_and_said() -> None:
    lost = records.recover_lost(JobRecord("k", S.CREATING, creates=1), now=NOW)
    assert (lost.state, lost.lost_creates, lost.creates) == (S.PENDING, 1, 1)
    assert "lost" in lost.reason


def test_run_only_counters_are_neither_persisted_nor_compared() -> None:
    record = JobRecord("k", S.CREATING, creates=1, run_creates=1, run_errors=2)
    data = record.to_json()
    assert data == {"key": "k", "state": "creating", "creates": 1}
    back = JobRecord.from_json(orjson.loads(orjson.dumps(data)), where="here")
    assert back == record and back.run_creates == back.run_errors == 0
    assert records.check_json({"key": "k", "run_creates": 1}) == "unknown field 'run_creates'"


def test_replace_takes_a_state_by_name() -> None:
    assert JobRecord("k").replace(state="done").state is S.DONE


# -- a stateful model -------------------------------------------------------------------------


class RecordMachine(RuleBasedStateMachine):
    """One job's record driven by the events of runs, against counters kept by hand; every
    record reached must also survive the ledger's JSON."""

    def __init__(self) -> None:
        super().__init__()
        self.record = records.new_job("k", path="k.tif", slot="slot", now=NOW)
        self.now = NOW
        self.creates = self.run_creates = self.errors = self.run_errors = 0
        self.failures = self.lost = 0

    def _tick(self, dt: float) -> float:
        self.now += dt
        return self.now

    @precondition(lambda self: self.record.state in {S.PENDING, S.CREATED, S.DONE})
    @rule(dt=st.floats(min_value=0, max_value=100))
    def begin_create(self, dt: float) -> None:
        self.record = records.begin_create(self.record, now=self._tick(dt))
        self.creates += 1
        self.run_creates += 1

    @precondition(lambda self: self.record.state is S.CREATING)
    @rule()
    def rate_limited(self) -> None:
        self.record = records.undo_create(self.record, now=self.now)
        self.creates -= 1
        self.run_creates -= 1

    @precondition(lambda self: self.record.state is S.CREATING)
    @rule(timeout=st.floats(min_value=1, max_value=172800))
    def created(self, timeout: float) -> None:
        self.record = records.task_created(
            self.record, now=self.now, task_id="t", req_id="q", task_timeout=timeout
        )

    @precondition(lambda self: self.record.state in {S.CREATED, S.DONE})
    @rule(size=st.integers(min_value=1, max_value=10**9))
    def written(self, size: int) -> None:
        self.record = records.file_written(
            self.record, now=self.now, path="k.tif", size=size, sha256="ab" * 32
        )

    @precondition(lambda self: self.record.state in {S.CREATING, S.CREATED, S.DONE})
    @rule()
    def transient(self) -> None:
        self.record = records.transient_failure(self.record, now=self.now, reason="503")
        self.errors += 1
        self.run_errors += 1

    @precondition(lambda self: self.record.state is not S.FAILED)
    @rule()
    def requeue(self) -> None:
        self.record = records.requeue(self.record, now=self.now, reason="expired")

    @rule(retryable=st.booleans())
    def fail(self, retryable: bool) -> None:
        self.record = records.fail(self.record, now=self.now, reason="x", retryable=retryable)
        self.failures += 1
        assert self.record.retry_at == (self.now + retry_delay(self.failures) if retryable else 0)

    @precondition(lambda self: self.record.state is S.FAILED)
    @rule()
    def retry(self) -> None:
        self.record = records.retry(self.record, now=self.now)

    @precondition(lambda self: self.record.state is S.CREATING)
    @rule()
    def crash_and_reload(self) -> None:
        """The process died with a POST on its way: the next run loads the record."""
        loaded = JobRecord.from_json(
            orjson.loads(orjson.dumps(self.record.to_json())), where="reload"
        )
        self.record = records.recover_lost(loaded, now=self.now)
        self.lost += 1
        self.run_creates = self.run_errors = 0

    @invariant()
    def counts_match(self) -> None:
        r = self.record
        assert (r.creates, r.run_creates, r.errors, r.run_errors) == (
            self.creates,
            self.run_creates,
            self.errors,
            self.run_errors,
        )
        assert (r.failures, r.lost_creates) == (self.failures, self.lost)
        assert (r.key, r.path, r.slot) == ("k", "k.tif", "slot")

    @invariant()
    def state_has_its_fields(self) -> None:
        r = self.record
        if r.state is S.CREATED:
            assert r.task_id and r.deadline > r.created_at
        if r.state is S.DONE:
            assert r.size > 0 and r.sha256  # (a refetch that failed may say why)

    @invariant()
    def survives_the_ledger(self) -> None:
        data = orjson.loads(orjson.dumps(self.record.to_json()))
        assert records.check_json(data) == ""
        assert JobRecord.from_json(data, where="here") == self.record


TestRecordMachine = RecordMachine.TestCase


@given(st.sampled_from(sorted(TRANSITIONS)), st.sampled_from(list(JobState)))
def test_a_refused_transition_changes_nothing(name: str, state: JobState) -> None:
    move, sources = TRANSITIONS[name]
    record = JobRecord("k", state, creates=2)
    if state not in sources:
        with pytest.raises(BadTransition):
            move(record)
        assert record == JobRecord("k", state, creates=2)
