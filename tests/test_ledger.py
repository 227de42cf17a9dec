"""Tests for bulkfetch.ledger: records, recovery, refusal to touch foreign files, crashes."""

from __future__ import annotations

import contextlib
import errno
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from bulkfetch import durable
from bulkfetch.errors import (
    LedgerCorrupt,
    LedgerError,
    LedgerLocked,
    LedgerVersionError,
    StorageError,
)
from bulkfetch.ledger import JobRecord, JobState, Ledger

REPO = Path(__file__).resolve().parents[1]
State = tuple[dict[str, JobRecord], dict[str, Any]]


def crash(ledger: Ledger) -> None:
    """Drop ``ledger`` as a killed process would: descriptors closed, nothing compacted."""
    if ledger._journal is not None:
        ledger._journal.close()
    ledger._lock.release()
    ledger._closed = True


def state(ledger: Ledger) -> State:
    return dict(ledger.records()), dict(ledger.raw_meta)


def files(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.parent.iterdir()) if p.is_file()}


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "out" / "bulkfetch-ledger.json"


# -- JobRecord --------------------------------------------------------------------------------

texts = st.text(max_size=8)
times = st.floats(min_value=0, max_value=4e9, allow_nan=False)
counts = st.integers(min_value=0, max_value=2**63 - 1)
records = st.builds(
    JobRecord,
    key=st.sampled_from(["a", "b", "c", "d"]) | st.text(min_size=1, max_size=6),
    state=st.sampled_from(JobState),
    path=texts,
    task_id=texts,
    req_id=texts,
    created_at=times,
    deadline=times,
    size=counts,
    sha256=texts,
    reason=texts,
    retryable=st.booleans(),
    creates=counts,
    lost_creates=counts,
    errors=counts,
    updated_at=times,
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | times | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=6,
)


@given(records)
def test_record_json_round_trip(record: JobRecord) -> None:
    data = orjson.loads(orjson.dumps(record.to_json()))
    back = JobRecord.from_json(data, where="here")
    assert back == record
    assert type(back.state) is JobState


def test_record_json_is_compact_and_replace_keeps_updated_at() -> None:
    assert JobRecord("k").to_json() == {"key": "k"}
    done = JobRecord("k", JobState.DONE, size=3, updated_at=5.0)
    assert done.to_json() == {"key": "k", "state": "done", "size": 3, "updated_at": 5.0}
    assert done.replace(size=4) == JobRecord("k", JobState.DONE, size=4, updated_at=5.0)


@pytest.mark.parametrize(
    "data",
    [
        [],
        {"state": "done"},
        {"key": ""},
        {"key": "a", "state": "weird"},
        {"key": "a", "state": ["done"]},
        {"key": "a", "size": -1},
        {"key": "a", "size": True},
        {"key": "a", "created_at": "noon"},
        {"key": "a", "retryable": 1},
        {"key": "a", "bogus": 1},
    ],
)
def test_record_from_bad_json_is_corrupt_naming_where(data: Any) -> None:
    with pytest.raises(LedgerCorrupt, match=r"^somewhere: bad job record"):
        JobRecord.from_json(data, where="somewhere")


# -- opening, writing, reading ----------------------------------------------------------------


def test_create_put_close_reopen(path: Path) -> None:
    with Ledger.open(path) as ledger:
        assert path.exists()  # created at once, parent directory too
        ledger.put(JobRecord("a"))
        ledger.put_many([JobRecord("b", JobState.CREATING, creates=1), JobRecord("a", size=2)])
        ledger.put_many([])
        ledger.set_meta("runs", (1, {"x": 2.5}))
        assert ledger.get("a") == JobRecord("a", size=2)
        assert ledger.get("zzz") is None
        assert ledger.raw_meta["runs"] == [1, {"x": 2.5}]
        expected = state(ledger)
        with pytest.raises(TypeError):
            ledger.records()["c"] = JobRecord("c")  # type: ignore[index]
    ledger.close()  # idempotent
    assert path.with_name(path.name + ".journal").read_bytes() == b""  # compacted on close
    snapshot = orjson.loads(path.read_bytes())
    assert snapshot["format"] == "bulkfetch-ledger"
    assert snapshot["version"] == 1
    assert snapshot["jobs"]["b"] == {"key": "b", "state": "creating", "creates": 1}
    with Ledger.open(path, readonly=True) as again:
        assert state(again) == expected
        assert again.seq == snapshot["seq"] == 3


def test_put_rejects_values_json_cannot_hold(path: Path) -> None:
    with Ledger.open(path) as ledger:
        with pytest.raises(ValueError, match="created_at"):
            ledger.put(JobRecord("a", created_at=float("nan")))
        with pytest.raises(ValueError, match="size"):
            ledger.put(JobRecord("a", size=-1))
        assert ledger.records() == {}


def test_put_appends_one_line_and_rewrites_nothing_else(path: Path) -> None:
    with Ledger.open(path) as ledger:
        ledger.put_many(JobRecord(f"k{i}") for i in range(100))
        ledger.compact()
        before = path.stat()
        ledger.put(JobRecord("k5", JobState.DONE))
        after = path.stat()
        assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)
        assert ledger.journal_path.read_bytes().count(b"\n") == 1


def _on_disk(path: Path) -> State:
    with Ledger.open(path, readonly=True) as reader:
        return state(reader)


def test_put_soon_is_seen_at_once_and_written_by_flush(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Ledger.open(path) as ledger:
        ledger.put(JobRecord("a"))
        journal = ledger.journal_path.read_bytes()
        for i in range(5):
            ledger.put_soon(JobRecord(f"s{i}", JobState.CREATED, task_id=f"t{i}"))
        ledger.put_soon(JobRecord("a", JobState.DONE, size=3))
        assert ledger.get("a") == JobRecord("a", JobState.DONE, size=3)
        assert ledger.unflushed == 6
        assert ledger.journal_path.read_bytes() == journal  # nothing written yet
        assert _on_disk(path) == ({"a": JobRecord("a")}, {})
        fsyncs: list[int] = []
        real_fsync = os.fsync

        def counting_fsync(fd: int) -> None:
            fsyncs.append(fd)
            real_fsync(fd)

        monkeypatch.setattr(os, "fsync", counting_fsync)
        ledger.flush()
        assert len(fsyncs) == 1  # one group commit for all six
        assert ledger.unflushed == 0
        assert ledger.journal_path.read_bytes().count(b"\n") == journal.count(b"\n") + 1
        assert _on_disk(path) == state(ledger)
        ledger.flush()  # nothing waiting: nothing written
        assert len(fsyncs) == 1


def test_a_durable_call_writes_what_put_soon_left_first(path: Path) -> None:
    with Ledger.open(path) as ledger:
        ledger.put_soon(JobRecord("a", JobState.CREATED, task_id="t"))
        ledger.put_soon(JobRecord("b"))
        ledger.put(JobRecord("c", JobState.CREATING, creates=1))  # e.g. before a request
        assert ledger.unflushed == 0
        assert _on_disk(path) == state(ledger)
        ledger.put_soon(JobRecord("a", JobState.DONE))
        ledger.set_meta("n", 1)
        assert _on_disk(path) == state(ledger)
        ledger.put_soon(JobRecord("b", JobState.DONE))
        expected = state(ledger)
    assert _on_disk(path) == expected  # close writes them too


def test_a_crash_loses_only_what_put_soon_left_unwritten(path: Path) -> None:
    ledger = Ledger.open(path)
    ledger.put(JobRecord("a"))
    ledger.put_soon(JobRecord("b"))
    ledger.flush()
    durable_state = state(ledger)
    ledger.put_soon(JobRecord("a", JobState.DONE))
    ledger.put_soon(JobRecord("c"))
    crash(ledger)
    with Ledger.open(path) as again:
        assert state(again) == durable_state


def test_put_soon_in_a_compaction_is_not_written_again(path: Path) -> None:
    with Ledger.open(path) as ledger:
        ledger.put_soon(JobRecord("a", JobState.DONE))
        ledger.compact()
        assert ledger.unflushed == 0
        assert ledger.journal_path.read_bytes() == b""
        assert _on_disk(path) == state(ledger)


def test_put_soon_refused_read_only_and_after_close(path: Path) -> None:
    Ledger.open(path).close()
    with Ledger.open(path, readonly=True) as reader, pytest.raises(LedgerError, match="read-only"):
        reader.put_soon(JobRecord("a"))
    ledger = Ledger.open(path)
    ledger.close()
    with pytest.raises(LedgerError, match="closed"):
        ledger.put_soon(JobRecord("a"))
    with Ledger.open(path) as ledger, pytest.raises(ValueError, match="size"):
        ledger.put_soon(JobRecord("a", size=-1))


def test_auto_compaction_bounds_the_journal(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Ledger, "COMPACT_MIN_RECORDS", 8)
    with Ledger.open(path) as ledger:
        for i in range(50):
            ledger.put(JobRecord("same", size=i))
            assert ledger.journal_path.read_bytes().count(b"\n") <= 8
        ledger.put_many(JobRecord(f"k{i}") for i in range(10))
        ledger.compact()
        for i in range(22):  # the bound is now 2 * 11 jobs
            ledger.put(JobRecord("same", size=i))
        assert ledger.journal_path.read_bytes().count(b"\n") == 22
        ledger.put(JobRecord("same", size=22))
        assert ledger.journal_path.read_bytes() == b""
        ledger.put(JobRecord("same", size=23))
        expected = state(ledger)
        crash(ledger)
    with Ledger.open(path) as again:
        assert state(again) == expected


def test_readonly_never_writes(path: Path) -> None:
    with Ledger.open(path, readonly=True) as empty:
        assert empty.records() == {}
        with pytest.raises(LedgerError, match="read-only"):
            empty.put(JobRecord("a"))
    assert not path.parent.exists()
    writer = Ledger.open(path)
    writer.put(JobRecord("a", JobState.DONE))
    with Ledger.open(path, readonly=True) as reader:  # no lock: works during a run
        assert reader.get("a") == JobRecord("a", JobState.DONE)
    crash(writer)
    journal = writer.journal_path
    journal.write_bytes(journal.read_bytes() + b'{"seq":9')  # a torn tail
    before = files(path)
    with Ledger.open(path, readonly=True) as reader:
        assert reader.get("a") == JobRecord("a", JobState.DONE)
    assert files(path) == before


def test_stale_temporaries_are_removed_on_open(path: Path) -> None:
    Ledger.open(path).close()
    stale = path.with_name(f".{path.name}.tmp-0123456789ab")
    stale.write_bytes(b"half a snapshot")
    Ledger.open(path).close()
    assert not stale.exists()


# -- foreign, corrupt and newer files are refused and left alone ------------------------------

FOREIGN = [
    b"garbage \x00\xff",
    b"",
    b'{"hello": 1}',
    b"[1, 2]",
    b'{"format": "bulkfetch-ledger"}',
    b'{"format": "bulkfetch-ledger", "version": "1"}',
    b'{"format": "bulkfetch-ledger", "version": 1}',
    b'{"format": "bulkfetch-ledger", "version": 1, "seq": 0, "meta": {}, "jobs": []}',
    b'{"format": "bulkfetch-ledger", "version": 1, "seq": 0, "meta": {},'
    b' "jobs": {"a": {"key": "b"}}}',
    b'{"format": "bulkfetch-ledger", "version": 1, "seq": 0, "meta": {},'
    b' "jobs": {"a": {"key": "a", "state": "lost"}}}',
]


@pytest.mark.parametrize("content", FOREIGN)
@pytest.mark.parametrize("readonly", [False, True])
def test_not_a_ledger_is_refused_and_untouched(path: Path, content: bytes, readonly: bool) -> None:
    path.parent.mkdir()
    path.write_bytes(content)
    with pytest.raises(LedgerCorrupt, match=str(path)):
        Ledger.open(path, readonly=readonly)
    after = files(path)
    assert after.pop(path.name) == content
    assert set(after) <= {f"{path.name}.lock"}  # no journal, no snapshot: only the lock file


def test_newer_version_is_refused_and_untouched(path: Path) -> None:
    path.parent.mkdir()
    content = b'{"format": "bulkfetch-ledger", "version": 2, "whatever": true}'
    path.write_bytes(content)
    journal = path.with_name(path.name + ".journal")
    journal.write_bytes(b"newer journal, torn")
    for readonly in (False, True):
        with pytest.raises(LedgerVersionError, match=r"format version 2.*upgrade bulkfetch"):
            Ledger.open(path, readonly=readonly)
    assert path.read_bytes() == content
    assert journal.read_bytes() == b"newer journal, torn"


def test_corrupt_middle_journal_line_names_it_and_is_untouched(path: Path) -> None:
    ledger = Ledger.open(path)
    for key in "abc":
        ledger.put(JobRecord(key))
    crash(ledger)
    lines = ledger.journal_path.read_bytes().split(b"\n")
    lines[1] = lines[1].replace(b'"b"', b'"x"')  # the checksum no longer matches
    ledger.journal_path.write_bytes(b"\n".join(lines))
    before = files(path)
    with pytest.raises(LedgerCorrupt, match=r"journal at .* is corrupt at line 2: checksum"):
        Ledger.open(path)
    assert files(path) == before


def test_journal_gap_after_snapshot_is_corrupt(path: Path) -> None:
    ledger = Ledger.open(path)
    ledger.put(JobRecord("a"))
    ledger.put(JobRecord("b"))
    crash(ledger)
    lines = ledger.journal_path.read_bytes().splitlines(keepends=True)
    ledger.journal_path.write_bytes(lines[1])  # seq 2 without seq 1 or a snapshot holding it
    with pytest.raises(LedgerCorrupt, match="line 1: seq 2 follows 0"):
        Ledger.open(path)


# -- crash recovery ---------------------------------------------------------------------------


@pytest.mark.parametrize("compacted", [False, True])
def test_journal_cut_at_every_offset_of_last_line(path: Path, compacted: bool) -> None:
    ledger = Ledger.open(path)
    ledger.put_many([JobRecord("a"), JobRecord("b", JobState.CREATING)])
    ledger.set_meta("m", 1)
    if compacted:
        ledger.compact()
    ledger.put(JobRecord("c", JobState.CREATED, task_id="t"))
    previous = state(ledger)
    ledger.put(JobRecord("a", JobState.DONE, path="a.tif", size=10, sha256="00" * 32))
    last = state(ledger)
    crash(ledger)
    snapshot, journal = path.read_bytes(), ledger.journal_path.read_bytes()
    start = journal.rstrip(b"\n").rfind(b"\n") + 1
    for cut in range(start, len(journal) + 1):
        path.write_bytes(snapshot)
        ledger.journal_path.write_bytes(journal[:cut])
        with Ledger.open(path, readonly=True) as reader:
            assert state(reader) == (last if cut == len(journal) else previous), cut
        with Ledger.open(path) as writer:
            assert state(writer) == (last if cut == len(journal) else previous), cut


def test_crash_between_snapshot_and_truncate_replays_nothing_twice(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = Ledger.open(path)
    ledger.put(JobRecord("a", errors=1))
    ledger.set_meta("n", 1)

    def killed(self: durable.Journal) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(durable.Journal, "truncate", killed)
    with pytest.raises(KeyboardInterrupt):
        ledger.compact()
    monkeypatch.undo()
    expected = state(ledger)
    crash(ledger)
    assert orjson.loads(path.read_bytes())["seq"] == 2  # the journal still holds seqs 1, 2
    with Ledger.open(path) as again:
        assert state(again) == expected
        again.put(JobRecord("b"))
        expected = state(again)
        crash(again)
    with Ledger.open(path) as third:
        assert state(third) == expected


class _Crash(BaseException):
    """Stands for the process dying just before a syscall."""


_SYSCALLS = ("open", "write", "pwrite", "fsync", "ftruncate", "replace")


def _scenario(path: Path, done: list[int]) -> None:
    # Mutating steps are numbered; `done` records those that returned.
    with Ledger.open(path) as ledger:
        ledger.put(JobRecord("a"))
        done.append(1)
        ledger.put_many([JobRecord("b", JobState.CREATING), JobRecord("a", JobState.DONE)])
        done.append(2)
        ledger.compact()
        ledger.set_meta("runs", 1)
        done.append(3)
    with Ledger.open(path) as ledger:
        ledger.put(JobRecord("b", JobState.FAILED, reason="gone"))
        done.append(4)


_STATES: list[State] = [
    ({}, {}),
    ({"a": JobRecord("a")}, {}),
    ({"a": JobRecord("a", JobState.DONE), "b": JobRecord("b", JobState.CREATING)}, {}),
    ({"a": JobRecord("a", JobState.DONE), "b": JobRecord("b", JobState.CREATING)}, {"runs": 1}),
    (
        {"a": JobRecord("a", JobState.DONE), "b": JobRecord("b", JobState.FAILED, reason="gone")},
        {"runs": 1},
    ),
]


@contextlib.contextmanager
def _crash_at(n: int) -> Iterator[list[str]]:
    """Count the mutating syscalls; from the ``n``-th on, each one "kills the process"."""
    calls: list[str] = []
    saved = {name: getattr(os, name) for name in _SYSCALLS}

    def wrap(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            if n and len(calls) >= n:  # a dead process makes no further calls either
                raise _Crash(name)
            return real(*args, **kwargs)

        return call

    for name, real in saved.items():
        setattr(os, name, wrap(name, real))
    try:
        yield calls
    finally:
        for name, real in saved.items():
            setattr(os, name, real)


def test_crash_before_every_syscall_recovers_a_prefix(tmp_path: Path) -> None:
    with _crash_at(0) as calls:
        _scenario(tmp_path / "full" / "l.json", [])
    assert len(calls) > 20
    for n in range(1, len(calls) + 1):
        path = tmp_path / str(n) / "l.json"
        done: list[int] = []
        with _crash_at(n), contextlib.suppress(_Crash):
            _scenario(path, done)
        allowed = _STATES[len(done) : len(done) + 2]  # all that returned, maybe the next too
        with Ledger.open(path, readonly=True) as reader:
            assert state(reader) in allowed, (n, calls[n - 1], done)
        with Ledger.open(path) as writer:  # no stale lock, and recovery writes cleanly
            assert state(writer) in allowed
        with Ledger.open(path, readonly=True) as reader:
            assert state(reader) in allowed


_CHILD = """
import sys
from pathlib import Path
from bulkfetch.ledger import JobRecord, JobState, Ledger
Ledger.COMPACT_MIN_RECORDS = 40
ledger = Ledger.open(Path(sys.argv[1]))
n = ledger.raw_meta.get("n", 0)
while True:
    n += 1
    if n % 5 == 0:
        ledger.put_many(JobRecord(f"k{(n + j) % 23}", JobState.CREATED, size=n) for j in range(3))
    else:
        ledger.put(JobRecord(f"k{n % 23}", JobState.DONE, size=n))
    ledger.set_meta("n", n)
    if n % 97 == 0:
        ledger.compact()
    print(n, flush=True)
"""


def _child_jobs(upto: int) -> dict[str, JobRecord]:
    jobs: dict[str, JobRecord] = {}
    for n in range(1, upto + 1):
        if n % 5 == 0:
            for j in range(3):
                jobs[f"k{(n + j) % 23}"] = JobRecord(f"k{(n + j) % 23}", JobState.CREATED, size=n)
        else:
            jobs[f"k{n % 23}"] = JobRecord(f"k{n % 23}", JobState.DONE, size=n)
    return jobs


def test_sigkill_at_random_times_keeps_every_acknowledged_put(path: Path) -> None:
    rng = random.Random(20240611)
    report = path.with_name("child.out")
    path.parent.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    acknowledged = 0
    for _ in range(6):
        with report.open("w") as out:
            child = subprocess.Popen([sys.executable, "-c", _CHILD, str(path)], stdout=out, env=env)
            try:
                deadline = time.monotonic() + 20
                while report.stat().st_size == 0 and time.monotonic() < deadline:
                    time.sleep(0.005)
                time.sleep(rng.uniform(0.0, 0.15))
            finally:
                child.send_signal(signal.SIGKILL)
                child.wait()
        lines = report.read_text().split()
        assert lines, "the child never reported a put"
        acknowledged = int(lines[-1])
        with Ledger.open(path, readonly=True) as ledger:
            n = ledger.raw_meta["n"]
            assert n >= acknowledged
            # set_meta follows each put: the put of n + 1 may be there without its counter.
            assert dict(ledger.records()) in (_child_jobs(n), _child_jobs(n + 1))
    assert acknowledged > 50


# -- write failures ---------------------------------------------------------------------------


def test_storage_error_stops_writes_and_skips_compaction(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = Ledger.open(path)
    ledger.put(JobRecord("a"))
    snapshot = path.read_bytes()

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(StorageError, match="disk full while writing the ledger journal at"):
        ledger.put(JobRecord("b"))
    monkeypatch.undo()
    with pytest.raises(StorageError, match="failed earlier"):
        ledger.put(JobRecord("c"))
    ledger.close()  # releases the lock, but writes no snapshot from a state in doubt
    assert path.read_bytes() == snapshot
    with Ledger.open(path) as again:
        assert again.get("a") == JobRecord("a")
        assert again.get("c") is None


# -- the lock ---------------------------------------------------------------------------------


def test_second_open_in_the_same_process_is_locked(path: Path) -> None:
    with Ledger.open(path):
        with pytest.raises(LedgerLocked, match=rf"using {path} \(pid {os.getpid()}, started"):
            Ledger.open(path)
        Ledger.open(path, readonly=True).close()
    Ledger.open(path).close()


_HOLDER = """
import sys, time
from pathlib import Path
from bulkfetch.ledger import JobRecord, Ledger
ledger = Ledger.open(Path(sys.argv[1]))
ledger.put(JobRecord("from-child"))
print("open", flush=True)
time.sleep(60)
"""


def test_lock_held_by_another_process_and_released_by_its_death(path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(path)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "open\n"
        with pytest.raises(LedgerLocked, match=rf"\(pid {child.pid}, started "):
            Ledger.open(path)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
    with Ledger.open(path) as ledger:
        assert ledger.get("from-child") == JobRecord("from-child")


# -- a stateful model -------------------------------------------------------------------------


class LedgerMachine(RuleBasedStateMachine):
    """The ledger against a dict model, through puts, group commits, compactions,
    reopenings and crashes."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="ledger-machine-"))
        self.path = self.dir / "bulkfetch-ledger.json"
        self.ledger = Ledger.open(self.path)
        self.model: State = ({}, {})  # what the ledger holds in memory
        self.disk: State = ({}, {})  # what a crash leaves: every durable call, nothing after
        # The disk before the journal's last line: what a torn last line leaves.
        self.before_last: State | None = None
        self.staged = False  # put_soon records wait for the next write

    @staticmethod
    def _copy(model: State) -> State:
        return dict(model[0]), dict(model[1])

    def _written(self, before: State) -> None:
        """The model reached the disk; ``before`` is what the journal's last line held not.

        A durable call writes the staged records (if any) and its own change as two lines
        of one write: a torn last line leaves the staged ones, i.e. the model before it.
        """
        self.before_last = before
        self.disk = self._copy(self.model)
        self.staged = False

    @rule(record=records)
    def put(self, record: JobRecord) -> None:
        before = self._copy(self.model)
        self.ledger.put(record)
        self.model[0][record.key] = record
        self._written(before)

    @rule(batch=st.lists(records, min_size=1, max_size=4))
    def put_many(self, batch: list[JobRecord]) -> None:
        before = self._copy(self.model)
        self.ledger.put_many(batch)
        self.model[0].update((r.key, r) for r in batch)
        self._written(before)

    @rule(record=records)
    def put_soon(self, record: JobRecord) -> None:
        self.ledger.put_soon(record)
        self.model[0][record.key] = record
        self.staged = True
        assert self.ledger.unflushed > 0

    @rule()
    def flush(self) -> None:
        self.ledger.flush()
        if self.staged:
            self._written(self._copy(self.disk))
        assert self.ledger.unflushed == 0

    @rule(key=st.sampled_from(["runs", "stats"]) | texts, value=json_values)
    def set_meta(self, key: str, value: Any) -> None:
        before = self._copy(self.model)
        self.ledger.set_meta(key, value)
        self.model[1][key] = value
        self._written(before)

    @rule()
    def compact(self) -> None:
        self.ledger.compact()
        self.disk = self._copy(self.model)
        self.staged = False
        self.before_last = None

    @rule()
    def close_and_reopen(self) -> None:
        self.ledger.close()
        self.ledger = Ledger.open(self.path)
        self.disk = self._copy(self.model)
        self.staged = False
        self.before_last = None

    @rule(tear=st.integers(min_value=0, max_value=300))
    def crash_and_reopen(self, tear: int) -> None:
        crash(self.ledger)
        journal = self.ledger.journal_path
        if tear and self.before_last is not None:
            data = journal.read_bytes()
            line = len(data) - (data.rstrip(b"\n").rfind(b"\n") + 1)
            os.truncate(journal, len(data) - min(tear, line))
            self.disk = self.before_last
            event("crash tore the last journal line")
        with Ledger.open(self.path, readonly=True) as reader:
            assert state(reader) == self.disk  # staged records not flushed are lost
        self.ledger = Ledger.open(self.path)
        self.model = self._copy(self.disk)
        self.staged = False
        self.before_last = None

    @invariant()
    def matches_model(self) -> None:
        assert state(self.ledger) == self.model

    def teardown(self) -> None:
        self.ledger.close()
        shutil.rmtree(self.dir)


TestLedgerMachine = LedgerMachine.TestCase
TestLedgerMachine.settings = settings(
    max_examples=40,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
