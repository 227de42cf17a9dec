"""What every sink is: the small interface the engine writes results through.

A sink puts each result at its final place under one destination, streamed, checked, and
published only whole: a local folder (:class:`~bulkfetch.sink.local.FolderSink`) or a
bucket prefix (:class:`~bulkfetch.sink.bucket.StoreSink`). What the run uses of it:

- :meth:`Sink.prepare` before a run: what crashed runs left is removed, and the done jobs
  found that the ledger does not know of are returned; :meth:`Sink.verify`, the same
  read-only (``plan``);
- :meth:`Sink.file_ok`: whether a done job's result is still there, whole;
- :meth:`Sink.write`: a result streamed into place, or an error.

An implementation supplies those (but ``write``) and :meth:`Sink.open_part`: where one
result goes while it streams, a :class:`Part` (a temporary file, an upload). ``write`` is
the same for every sink: the event loop only receives; a body of at most ``SMALL_BODY``
bytes is checked in memory and then published in one worker-thread call; a bigger one
goes in blocks of about ``WRITE_CHUNK`` through a pipe of ``QUEUE_BLOCKS`` to one worker
thread that hashes and writes each block while the loop receives the next, so memory per
download is bounded whatever the file's size. Only a body that passes
:func:`check_result` (its length against Content-Length, its first bytes against the
format the job asked for, never JSON) is published; anything else is discarded and
reported as a ``TransientError`` (the engine fetches it again).

``sniff()`` and ``check_result()`` are the pure decisions, tested without files.
"""

from __future__ import annotations

import abc
import errno
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Protocol

import anyio

from bulkfetch.client import Ready
from bulkfetch.errors import StorageError, TransientError, first_error
from bulkfetch.sink._pipe import BlockPipe

if TYPE_CHECKING:
    from bulkfetch.ledger import JobRecord
    from bulkfetch.manifest.jobs import Job

__all__ = [
    "QUEUE_BLOCKS",
    "SMALL_BODY",
    "WRITE_CHUNK",
    "Part",
    "Sink",
    "Written",
    "check_result",
    "drain",
    "sniff",
]

#: Bytes gathered before each write: few thread hops per file, bounded memory per download.
WRITE_CHUNK = 1 << 20
#: A body up to this size is checked in memory and written in one thread call; a bigger one
#: is on disk (as a part file) from its first this-many bytes on.
SMALL_BODY = 1 << 16
#: Blocks of ``WRITE_CHUNK`` waiting for the writer thread: with the one being written and the
#: one being received, a download holds at most ``QUEUE_BLOCKS + 2`` blocks in memory.
QUEUE_BLOCKS = 2

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "jpeg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"II+\x00", "tiff"),  # BigTIFF, for large GeoTIFFs
    (b"MM\x00+", "tiff"),
    (b"PK\x03\x04", "zip"),
)


def sniff(head: bytes) -> str | None:
    """The kind of a body from its first bytes: jpeg, png, tiff, zip, json, or None."""
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    if head.lstrip()[:1] in (b"{", b"["):
        return "json"
    return None


def check_result(*, expected: str, head: bytes, size: int, content_length: int | None) -> None:
    """Raise ``TransientError`` unless the body is a complete result of the expected kind."""
    if content_length is not None and size != content_length:
        raise TransientError(f"truncated result: {size} of {content_length} bytes")
    if size == 0:
        raise TransientError("the result is empty")
    kind = sniff(head)
    if kind == "json":
        raise TransientError("the result is JSON where an image was expected")
    if kind != expected:
        raise TransientError(
            f"the result is {kind or 'of an unknown format'} where {expected} was expected"
        )


@dataclass(frozen=True, slots=True)
class Written:
    path: str  # posix, relative to the output folder
    size: int
    sha256: str
    #: Seconds from the first byte received to the last one written (not yet fsynced), and
    #: to the file fsynced under its final name: the download's own speed, for the log.
    stream_seconds: float = field(default=0.0, compare=False)
    seconds: float = field(default=0.0, compare=False)


class Part(Protocol):
    """One result on its way to its final place (a file, an upload): see :class:`Sink`.

    ``drain`` and then ``publish`` run in one worker thread after the other; ``discard``
    runs on the loop once neither runs any more.
    """

    where: str  # the final place, for messages

    def hexdigest(self) -> str: ...

    def drain(self, pipe: BlockPipe) -> None: ...

    def publish(self, blocks: list[bytes]) -> float: ...

    def discard(self) -> None: ...


def drain(pipe: BlockPipe, write: Callable[[list[bytes]], None]) -> None:
    """``write`` every block ``pipe`` hands over, until it is closed or aborted."""
    try:
        while (blocks := pipe.get()) is not None:
            write(blocks)
    except BaseException:
        pipe.abort()  # the loop's next put raises instead of waiting for room
        raise


class Sink(abc.ABC):
    """Writes results under one destination (see the module docstring).

    :meth:`write` streams, checks and publishes through the :class:`Part` that
    :meth:`open_part` gives; the rest is each destination's own.
    """

    #: The destination, as ``--out`` names it (a bucket's URL as a Path: see
    #: :mod:`bulkfetch.sink.destination`).
    out: Path

    @abc.abstractmethod
    async def prepare(
        self, records: Mapping[str, JobRecord], jobs: Iterable[Job], *, own_only: bool = False
    ) -> list[JobRecord]:
        """Before a run: remove what crashed runs left (with ``own_only``, only for these
        ``jobs``: a ``--shard`` run, whose other parts may be writing to the same
        destination now); returns done jobs found that ``records`` does not have as done."""

    @abc.abstractmethod
    async def verify(
        self, records: Mapping[str, JobRecord], jobs: Iterable[Job]
    ) -> list[JobRecord]:
        """Read-only: the done jobs found at the destination that ``records`` does not have
        as done, and whatever :meth:`file_ok` needs beforehand."""

    @abc.abstractmethod
    def file_ok(self, relative: str, size: int) -> bool:
        """Whether a done job's result is still there with its recorded size."""

    @abc.abstractmethod
    def open_part(self, relative: PurePosixPath, key: str) -> Part:
        """Where the result for ``relative`` goes while it streams (``key``: the job's)."""

    async def write(
        self, relative: PurePosixPath, expected: str, ready: Ready, *, key: str = ""
    ) -> Written:
        """Stream ``ready`` into place at ``relative``; raises on a bad or short body.

        ``key`` is the job's (an object's metadata names it; a file does not).

        The event loop only receives. A body of at most ``SMALL_BODY`` is checked, then
        written, fsynced and renamed into place in one worker-thread call. A bigger one is
        handed over in blocks of about ``WRITE_CHUNK`` through a :class:`BlockPipe` to one
        worker thread that hashes and writes each block (``hashlib`` and ``os.writev``
        release the GIL) while the loop receives the next; at most ``QUEUE_BLOCKS`` blocks
        wait, so memory stays bounded whatever the file's size. Only a checked, complete
        body is fsynced and renamed.
        """
        part = self.open_part(relative, key)
        size = 0
        head = b""
        pending: list[bytes] = []
        buffered = 0
        started = 0.0
        try:
            chunks = ready.chunks(WRITE_CHUNK)
            async for chunk in chunks:
                if not started:
                    started = time.monotonic()
                if len(head) < 16:
                    head += chunk[: 16 - len(head)]
                size += len(chunk)
                pending.append(chunk)
                buffered += len(chunk)
                if buffered > min(SMALL_BODY, WRITE_CHUNK):
                    break
            else:
                # The whole body is in memory: check it first, then one thread call.
                check_result(
                    expected=expected, head=head, size=size, content_length=ready.content_length
                )
                written_at = await anyio.to_thread.run_sync(part.publish, pending)
                return _written(relative, size, part, started, written_at)
            pipe = BlockPipe(QUEUE_BLOCKS)
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(anyio.to_thread.run_sync, part.drain, pipe)
                    try:
                        await pipe.put(pending)
                        pending, buffered = [], 0
                        async for chunk in chunks:
                            size += len(chunk)
                            pending.append(chunk)
                            buffered += len(chunk)
                            if buffered >= WRITE_CHUNK:
                                await pipe.put(pending)
                                pending, buffered = [], 0
                        check_result(
                            expected=expected,
                            head=head,
                            size=size,
                            content_length=ready.content_length,
                        )
                    except BaseException:
                        pipe.abort()  # the writer stops at its next block
                        raise
                    pipe.close()
            except BaseExceptionGroup as group:
                # One download's own failure (a short body, a full disk), not a group; a
                # writer that failed leaves the receiver's put broken, which says nothing.
                _, rest = group.split(anyio.BrokenResourceError)
                raise first_error(rest or group) from None
            # The writer has written every block it was sent; the rest goes with the publish.
            written_at = await anyio.to_thread.run_sync(part.publish, pending)
        except OSError as exc:
            part.discard()
            raise _storage_error(exc, part.where) from None
        except BaseException:
            part.discard()
            raise
        return _written(relative, size, part, started, written_at)


def _written(
    relative: PurePosixPath, size: int, part: Part, started: float, written_at: float
) -> Written:
    now = time.monotonic()
    start = started or now  # (an empty body never started)
    path = PurePosixPath(relative).as_posix()
    return Written(path, size, part.hexdigest(), written_at - start, now - start)


def _storage_error(exc: OSError, final: str) -> StorageError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageError(f"disk full while writing {final}: free some space and run again")
    return StorageError(f"cannot write {final}: {exc.strerror or exc}")
