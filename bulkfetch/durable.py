"""Durable writes: the only code in bulkfetch that writes state files.

Pure standard library and synchronous. Three recipes, each the one the trusted systems use:

``atomic_write(path, data)``
    Write ``.{name}.tmp-{random}`` in the same directory, ``fsync`` it, ``os.replace`` it over
    ``path``, ``fsync`` the directory (without that the rename itself can be lost on power
    failure). Readers see the old file or the new one, never a mix. The temporary file is
    removed on any error; its mode follows the umask.

``Journal``
    An append-only file of JSON lines, one record per line::

        {"seq":12,"crc":3735928559,"rec":<payload>}\\n

    ``seq`` strictly increases; ``crc`` is the CRC-32 of the exact payload bytes (the text
    between ``"rec":`` and the final ``}``), so it is checked on the raw bytes without
    re-serialising, and the line stays plain JSON for ``jq``. ``orjson`` never emits a raw
    newline, so a record is exactly one line. Each ``append``/``append_many`` is one ``write``
    and one ``fsync``, so a crash can only tear the *last* line. On reading, a bad last line
    (no newline, bad JSON, bad CRC) is that trace of a crash and is dropped; a bad line
    anywhere else, or a ``seq`` that does not increase, raises :class:`LedgerCorrupt` naming
    the file and line.

``FileLock``
    ``fcntl.flock(LOCK_EX | LOCK_NB)`` on a lock file, holding the holder's pid and start time
    for the error message. The kernel drops the lock when its holder dies, so there is never
    a stale lock; the file itself is never deleted (deleting lock files races).

Errors: any ``OSError`` while writing becomes :class:`StorageError` with a message naming the
file ("disk full while writing ... at PATH: ..."). A failed ``fsync`` is never retried (see
PostgreSQL's "fsyncgate"): after any write error a ``Journal`` refuses further appends, so the
run stops and the next run recovers from what is on disk.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import secrets
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson

from bulkfetch.errors import LedgerCorrupt, LedgerLocked, StorageError

__all__ = ["FileLock", "Journal", "JournalScan", "atomic_write", "fsync_directory", "write_all"]

log = logging.getLogger(__name__)

_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}
_LINE = re.compile(rb'\{"seq":(\d{1,19}),"crc":(\d{1,10}),"rec":(.*)\}', re.DOTALL)


def _storage_error(what: str, path: Path, exc: OSError) -> StorageError:
    reason = exc.strerror or str(exc)
    if exc.errno in _DISK_FULL:
        return StorageError(f"disk full while writing {what} at {path}: {reason}")
    return StorageError(f"could not write {what} at {path}: {reason}")


def write_all(fd: int, data: bytes | memoryview) -> None:
    """Write every byte of ``data`` to ``fd``.

    A regular-file write is short only on ENOSPC or a signal; loop so neither loses bytes.
    """
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _parse_line(line: bytes) -> tuple[int, Any] | str:
    """``(seq, payload)`` of a journal line, or what is wrong with it."""
    match = _LINE.fullmatch(line)
    if match is None:
        return "not a journal record"
    if zlib.crc32(match[3]) != int(match[2]):
        return "checksum mismatch"
    try:
        return int(match[1]), orjson.loads(match[3])
    except orjson.JSONDecodeError:
        return "bad JSON"


def fsync_directory(path: Path) -> None:
    """Make the directory entries in ``path`` (creations, renames) durable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise _storage_error("the directory", path, exc) from exc


def atomic_write(path: Path, data: bytes, *, sync: bool = True) -> None:
    """Replace ``path`` with ``data`` so that it is the old or the new file at every instant.

    Durable when it returns. Raises :class:`StorageError`; the temporary file is then gone.
    ``sync=False`` skips both fsyncs, for a cache: after a crash the file may be the old
    one, the new one, or empty or torn, which its reader must take as a miss.
    """
    tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(6)}")
    fd = -1
    replaced = False
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        write_all(fd, data)
        if sync:
            os.fsync(fd)
        os.close(fd)
        fd = -1
        tmp.replace(path)
        replaced = True
        if sync:
            fsync_directory(path.parent)
    except OSError as exc:
        raise _storage_error(path.name, path, exc) from exc
    finally:
        # Runs on success too (then does nothing), and on KeyboardInterrupt: no temp left behind.
        if fd >= 0:
            os.close(fd)
        if not replaced:
            with contextlib.suppress(OSError):
                tmp.unlink()


def remove_stale_temps(path: Path) -> None:
    """Delete temporaries a crashed :func:`atomic_write` of ``path`` left; call under a lock."""
    for tmp in path.parent.glob(f".{path.name}.tmp-*"):
        with contextlib.suppress(OSError):
            tmp.unlink()


@dataclass(slots=True)
class JournalScan:
    """What a journal file holds: the readable entries and where the good bytes end."""

    entries: list[tuple[int, int, Any]] = field(default_factory=list)  # (line number, seq, rec)
    last_seq: int = 0  # seq of the last good line; 0 when there is none
    valid_length: int = 0  # bytes of whole good lines; the rest is a torn tail
    torn: str = ""  # why the last line was dropped, or "" if it was not


class Journal:
    """An append-only JSON-lines journal, opened for appending (see the module docstring).

    Not thread-safe: one writer, holding the ledger lock.
    """

    __slots__ = ("_broken", "_fd", "count", "last_seq", "path")

    def __init__(self, path: Path, fd: int, last_seq: int, count: int) -> None:
        self.path = path
        self._fd = fd
        self.last_seq = last_seq  # seq of the last line written; the next one gets + 1
        self.count = count  # lines in the file now
        self._broken = ""

    @staticmethod
    def scan(path: Path) -> JournalScan:
        """Read and check every line of ``path`` (missing file: empty). Writes nothing."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return JournalScan()
        except OSError as exc:
            raise StorageError(f"cannot read the ledger journal at {path}: {exc}") from exc
        result = JournalScan()
        lines = data.split(b"\n")
        # After the final newline split() leaves b""; anything else there is a torn write.
        tail = lines.pop()
        if tail:
            result.torn = f"{len(tail)} bytes without a newline"
        offset = 0
        for index, line in enumerate(lines):
            number = index + 1
            parsed = _parse_line(line)
            if isinstance(parsed, str):
                if index == len(lines) - 1 and not tail:
                    result.torn = f"line {number}: {parsed}"
                    break
                raise LedgerCorrupt(
                    f"the ledger journal at {path} is corrupt at line {number}: {parsed}; "
                    "only a damaged last line is expected after a crash"
                )
            seq, rec = parsed
            if seq <= result.last_seq:
                raise LedgerCorrupt(
                    f"the ledger journal at {path} is corrupt at line {number}: "
                    f"seq {seq} does not follow {result.last_seq}"
                )
            result.entries.append((number, seq, rec))
            result.last_seq = seq
            offset += len(line) + 1
        result.valid_length = offset
        return result

    @classmethod
    def read(cls, path: Path) -> tuple[list[Any], int]:
        """Return the payloads in order and the last seq; a torn last line is logged and dropped."""
        scan = cls.scan(path)
        if scan.torn:
            log.info("dropped the torn last line of the journal at %s (%s)", path, scan.torn)
        return [rec for _, _, rec in scan.entries], scan.last_seq

    @classmethod
    def open(cls, path: Path, *, base_seq: int = 0, scan: JournalScan | None = None) -> Journal:
        """Open ``path`` for appending, first cutting off a torn tail so appends start clean.

        ``scan`` is a :meth:`scan` of the file taken under the same lock (to avoid reading it
        twice); ``base_seq`` is the snapshot's seq, below which new seqs never go.
        """
        if scan is None:
            scan = cls.scan(path)
        existed = path.exists()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            raise _storage_error("the ledger journal", path, exc) from exc
        journal = cls(path, fd, max(base_seq, scan.last_seq), len(scan.entries))
        try:
            if scan.torn:
                log.info("dropped the torn last line of the journal at %s (%s)", path, scan.torn)
                journal._sync(lambda: os.ftruncate(fd, scan.valid_length))
            if not existed:
                fsync_directory(path.parent)
        except BaseException:
            journal.close()
            raise
        return journal

    def _sync(self, action: Callable[[], object]) -> None:
        """Run ``action`` then fsync; on any OSError, refuse every later write."""
        if self._broken:
            raise StorageError(
                f"the ledger journal at {self.path} failed earlier ({self._broken}); "
                "not writing again: run again to recover from what is on disk"
            )
        if self._fd < 0:
            raise StorageError(f"the ledger journal at {self.path} is closed")
        try:
            action()
            os.fsync(self._fd)
        except OSError as exc:
            # Never retry: after a failed fsync the kernel may have dropped the dirty pages.
            self._broken = exc.strerror or str(exc)
            raise _storage_error("the ledger journal", self.path, exc) from exc

    def append(self, payload: Any) -> int:
        """Append one record durably; return its seq."""
        return self.append_many([payload])

    def append_many(self, payloads: Iterable[Any]) -> int:
        """Append records with one write and one fsync; return the last seq."""
        seq = self.last_seq
        parts = []
        for payload in payloads:
            seq += 1
            body = orjson.dumps(payload)
            parts.append(b'{"seq":%d,"crc":%d,"rec":%b}\n' % (seq, zlib.crc32(body), body))
        if parts:
            self._sync(lambda: write_all(self._fd, b"".join(parts)))
            self.count += len(parts)
            self.last_seq = seq
        return seq

    def truncate(self) -> None:
        """Empty the journal (after a snapshot holds its records). Seqs keep increasing."""
        self._sync(lambda: os.ftruncate(self._fd, 0))
        self.count = 0

    def close(self) -> None:
        """Close the file; idempotent."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)


class FileLock:
    """An exclusive, non-blocking ``flock`` on ``path``; a context manager.

    ``flock`` locks belong to the open file description, so a second :meth:`acquire` through
    another ``FileLock`` conflicts even inside the same process.
    """

    __slots__ = ("_fd", "path", "target")

    def __init__(self, path: Path, *, target: Path | None = None) -> None:
        self.path = path
        self.target = target if target is not None else path  # what the lock protects, for messages
        self._fd = -1

    @property
    def locked(self) -> bool:
        return self._fd >= 0

    def acquire(self) -> None:
        """Take the lock or raise :class:`LedgerLocked` naming the holder's pid and start."""
        if self._fd >= 0:
            return
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            raise _storage_error("the lock file", self.path, exc) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe_holder(os.pread(fd, 4096, 0))
            os.close(fd)
            raise LedgerLocked(f"another bulkfetch run is using {self.target} ({holder})") from None
        except OSError as exc:
            os.close(fd)
            raise StorageError(f"cannot lock {self.path}: {exc}") from exc
        self._fd = fd
        started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        info = orjson.dumps({"pid": os.getpid(), "started": started})
        try:
            # Only informational, for the message above: no fsync needed.
            os.ftruncate(fd, 0)
            os.pwrite(fd, info + b"\n", 0)
        except BaseException as exc:
            self.release()  # even on KeyboardInterrupt: never keep a lock nobody will release
            if isinstance(exc, OSError):
                raise _storage_error("the lock file", self.path, exc) from exc
            raise

    def release(self) -> None:
        """Release the lock (closing the descriptor); idempotent."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _describe_holder(raw: bytes) -> str:
    try:
        info = orjson.loads(raw)
        return f"pid {int(info['pid'])}, started {info['started']}"
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        # The holder may be between its truncate and its write.
        return "pid unknown"
