"""Tests for bulkfetch.durable: atomic replace, the journal's recovery rules, the lock."""

from __future__ import annotations

import errno
import logging
import os
import signal
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import orjson
import pytest

from bulkfetch.durable import FileLock, Journal, atomic_write, fsync_directory
from bulkfetch.errors import LedgerCorrupt, LedgerLocked, StorageError

REPO = Path(__file__).resolve().parents[1]


def _enospc(*args: Any) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _line(seq: int, payload: Any) -> bytes:
    body = orjson.dumps(payload)
    return b'{"seq":%d,"crc":%d,"rec":%b}\n' % (seq, zlib.crc32(body), body)


# -- atomic_write -----------------------------------------------------------------------------


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    atomic_write(target, b"one")
    atomic_write(target, b"two")
    assert target.read_bytes() == b"two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]
    fsync_directory(tmp_path)


def test_atomic_write_mode_follows_umask(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        atomic_write(tmp_path / "f", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o640


def test_atomic_write_failure_keeps_old_file_and_removes_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "state.json"
    target.write_bytes(b"old")
    monkeypatch.setattr(os, "fsync", _enospc)
    with pytest.raises(StorageError, match=r"disk full while writing state\.json at .*state\.json"):
        atomic_write(target, b"new")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


# -- Journal ----------------------------------------------------------------------------------


def test_journal_round_trip_and_seq(tmp_path: Path) -> None:
    path = tmp_path / "j"
    journal = Journal.open(path)
    assert journal.append({"a": 1}) == 1
    assert journal.append_many([{"b": [2]}, "three", None]) == 4
    assert journal.append_many([]) == 4
    journal.close()
    journal.close()  # idempotent
    assert Journal.read(path) == ([{"a": 1}, {"b": [2]}, "three", None], 4)
    first = path.read_bytes().split(b"\n")[0]
    assert orjson.loads(first) == {"seq": 1, "crc": zlib.crc32(b'{"a":1}'), "rec": {"a": 1}}


def test_journal_truncate_keeps_seq_increasing(tmp_path: Path) -> None:
    path = tmp_path / "j"
    journal = Journal.open(path)
    journal.append_many([1, 2, 3])
    journal.truncate()
    assert path.read_bytes() == b""
    assert journal.append(4) == 4
    journal.close()
    assert Journal.read(path) == ([4], 4)
    # A reopened journal continues after the snapshot's seq when the journal is empty.
    path.write_bytes(b"")
    again = Journal.open(path, base_seq=10)
    assert again.append("x") == 11
    again.close()


def test_journal_cut_at_every_offset_of_last_line_loads_previous(tmp_path: Path) -> None:
    payloads: list[Any] = [{"k": i, "text": "é\n" * i} for i in range(4)]
    full = b"".join(_line(i + 1, p) for i, p in enumerate(payloads))
    previous = len(full) - len(_line(4, payloads[3]))
    path = tmp_path / "j"
    for cut in range(previous, len(full) + 1):
        path.write_bytes(full[:cut])
        got, last = Journal.read(path)
        if cut == len(full):
            assert (got, last) == (payloads, 4)
        else:
            assert (got, last) == (payloads[:3], 3), cut


def test_journal_open_cuts_torn_tail_so_appends_start_on_a_fresh_line(tmp_path: Path) -> None:
    path = tmp_path / "j"
    path.write_bytes(_line(1, "a") + _line(2, "b")[:9])
    journal = Journal.open(path)
    assert path.read_bytes() == _line(1, "a")
    journal.append("c")
    journal.close()
    assert Journal.read(path) == (["a", "c"], 2)


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        (b'{"seq":3,"crc":1,"rec":"c"}\n', "checksum"),
        (b'{"seq":3,"crc":%d,"rec":"c}\n' % zlib.crc32(b'"c'), "bad JSON"),
        (b"\x00\x00\x00\x00\n", "not a journal record"),
    ],
)
def test_journal_bad_last_line_is_dropped_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, bad: bytes, why: str
) -> None:
    path = tmp_path / "j"
    path.write_bytes(_line(1, "a") + _line(2, "b") + bad)
    with caplog.at_level(logging.INFO, logger="bulkfetch.durable"):
        assert Journal.read(path) == (["a", "b"], 2)
    assert why in caplog.text
    assert "line 3" in caplog.text


@pytest.mark.parametrize(
    "bad",
    [b'{"seq":2,"crc":1,"rec":"b"}\n', b"garbage\n", b"\n"],
)
def test_journal_bad_middle_line_is_corruption_naming_the_line(tmp_path: Path, bad: bytes) -> None:
    path = tmp_path / "j"
    content = _line(1, "a") + bad + _line(3, "c")
    path.write_bytes(content)
    with pytest.raises(LedgerCorrupt, match=r"journal at .*j is corrupt at line 2"):
        Journal.read(path)
    with pytest.raises(LedgerCorrupt):
        Journal.open(path)
    assert path.read_bytes() == content


def test_journal_seq_must_increase(tmp_path: Path) -> None:
    path = tmp_path / "j"
    path.write_bytes(_line(1, "a") + _line(3, "b") + _line(3, "c"))
    with pytest.raises(LedgerCorrupt, match=r"line 3: seq 3 does not follow 3"):
        Journal.read(path)


def test_journal_missing_file_is_empty(tmp_path: Path) -> None:
    assert Journal.read(tmp_path / "nope") == ([], 0)


def test_journal_storage_error_is_clear_and_never_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "j"
    journal = Journal.open(path)
    journal.append("ok")
    calls: list[int] = []

    def failing_fsync(fd: int) -> None:
        calls.append(fd)
        _enospc()

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(StorageError, match=r"disk full while writing the ledger journal at .*j: "):
        journal.append("lost")
    monkeypatch.undo()
    with pytest.raises(StorageError, match="failed earlier"):
        journal.append("again")
    with pytest.raises(StorageError, match="failed earlier"):
        journal.truncate()
    assert len(calls) == 1
    journal.close()
    # The next run recovers what is on disk: the write itself went through here.
    assert Journal.read(path)[0][0] == "ok"


def test_journal_write_error_is_storage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = Journal.open(tmp_path / "j")
    monkeypatch.setattr(os, "write", lambda fd, data: _enospc())
    with pytest.raises(StorageError, match="disk full"):
        journal.append("x")
    monkeypatch.undo()
    journal.close()
    assert Journal.read(tmp_path / "j") == ([], 0)


# -- FileLock ---------------------------------------------------------------------------------


def test_lock_conflicts_within_one_process(tmp_path: Path) -> None:
    first = FileLock(tmp_path / "x.lock", target=tmp_path / "x")
    with first:
        assert first.locked
        # flock belongs to the open file description: a second open() conflicts.
        with pytest.raises(LedgerLocked, match=rf"using .*/x \(pid {os.getpid()}, started "):
            FileLock(tmp_path / "x.lock", target=tmp_path / "x").acquire()
    assert not first.locked
    with FileLock(tmp_path / "x.lock"):
        pass


_HOLDER = """
import sys, time
from pathlib import Path
from bulkfetch.durable import FileLock
lock = FileLock(Path(sys.argv[1]))
lock.acquire()
print("locked", flush=True)
time.sleep(60)
"""


def start_holder(script: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", script, *args], stdout=subprocess.PIPE, text=True, env=env
    )


def test_lock_held_by_other_process_names_it_and_dies_with_it(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    child = start_holder(_HOLDER, str(path))
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "locked\n"
        with pytest.raises(LedgerLocked, match=rf"\(pid {child.pid}, started "):
            FileLock(path).acquire()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
    with FileLock(path):  # the kernel released the dead holder's lock: never stale
        assert f'"pid":{os.getpid()}' in path.read_text()


def test_lock_file_that_cannot_be_created_is_storage_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="lock file"):
        FileLock(tmp_path / "missing-dir" / "x.lock").acquire()
