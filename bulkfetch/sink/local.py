"""Results to disk: streamed, checked, and only then given their final name.

A result is written to a temporary file beside its target (``.NAME.XXXX.bulkfetch-part``),
hashed (sha256) and counted as it streams, then checked: its length against
Content-Length, its first bytes against the format the job asked for, and never JSON. Only
a result that passes is fsynced and renamed into place, and the directory fsynced (and any
folder created for it, in its parent), so a final name always holds a complete, checked
file. Anything else is deleted and reported as a ``TransientError`` (the engine fetches it
again). A crash leaves at most a ``.bulkfetch-part`` file, which ``remove_partials()``
deletes at the next start.

The event loop only receives. A body of at most ``SMALL_BODY`` bytes is checked in memory
and then written, fsynced and renamed in one worker-thread call. A bigger one goes in blocks
of about ``WRITE_CHUNK`` through a pipe of ``QUEUE_BLOCKS`` to one worker thread that hashes
and writes each block (``hashlib`` and ``os.writev`` release the GIL) while the loop
receives the next: memory per download is bounded whatever the file's size.

Names come from the manifest (already checked by ``manifest.safe_name``) or are made by
bulkfetch; the server's names are never used. ``target()`` still checks that the path
stays inside the output folder.

``sniff()`` and ``check_result()`` are the pure decisions, tested without files.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import secrets
import stat
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Protocol

import anyio

from bulkfetch.client import Ready
from bulkfetch.durable import fsync_directory, write_all
from bulkfetch.errors import StorageError, TransientError, first_error
from bulkfetch.sink._pipe import BlockPipe

if TYPE_CHECKING:
    from bulkfetch.ledger import JobRecord
    from bulkfetch.manifest.jobs import Job

__all__ = ["PART_SUFFIX", "Part", "Sink", "Written", "check_result", "drain", "sniff"]

log = logging.getLogger(__name__)

PART_SUFFIX = ".bulkfetch-part"
#: Bytes gathered before each write: few thread hops per file, bounded memory per download.
WRITE_CHUNK = 1 << 20
#: A body up to this size is checked in memory and written in one thread call; a bigger one
#: is on disk (as a part file) from its first this-many bytes on.
SMALL_BODY = 1 << 16
#: Blocks of ``WRITE_CHUNK`` waiting for the writer thread: with the one being written and the
#: one being received, a download holds at most ``QUEUE_BLOCKS + 2`` blocks in memory.
QUEUE_BLOCKS = 2
_IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 16

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
    """One result on its way to its final place (a file, an object): see :class:`Sink`.

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


class Sink:
    """Writes results under one output folder.

    :meth:`write` streams, checks and publishes through a :class:`Part`;
    :class:`bulkfetch.sink.object_store.StoreSink` is the same with parts that are uploads.
    """

    def __init__(self, out: Path) -> None:
        self.out = out
        self._root = out.resolve()
        self._out = os.fspath(out)

    def target(self, relative: PurePosixPath | str) -> Path:
        rel = PurePosixPath(relative)
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            raise StorageError(f"refusing to write outside the output folder: {relative}")
        path = self.out.joinpath(*rel.parts)
        if not path.resolve().is_relative_to(self._root):
            raise StorageError(f"refusing to write outside the output folder: {relative}")
        return path

    def file_ok(self, relative: str, size: int) -> bool:
        """Whether a done job's file is still there with its recorded size."""
        if not relative or relative.startswith("/") or ".." in relative.split("/"):
            return False
        # One stat on a string path, not target() nor a Path: a 100,000-job resume calls
        # this for every done job, and reading a size cannot write outside the folder.
        try:
            st = os.stat(f"{self._out}/{relative}")  # noqa: PTH116
        except (OSError, ValueError):  # ValueError: a NUL in the path
            return False
        return stat.S_ISREG(st.st_mode) and st.st_size == size

    def check_writable(self) -> None:
        """Raise ``StorageError`` unless a file can be made in the output folder: found
        before the first task is created, not after the first download."""
        probe = self.out / f".bulkfetch-probe.{secrets.token_hex(4)}{PART_SUFFIX}"
        try:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            raise StorageError(
                f"cannot write into the output folder {self.out}: {exc.strerror or exc}"
            ) from None
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(probe)  # noqa: PTH108

    async def prepare(
        self, records: Mapping[str, JobRecord], jobs: Iterable[Job], *, own_only: bool = False
    ) -> list[JobRecord]:
        """Before a run: remove what crashed runs left (with ``own_only``, only for these
        ``jobs``: a ``--shard`` run, whose other parts may be writing into the same folder
        now); returns done jobs found that the ledger does not know of (a folder has none:
        its files carry no job key)."""
        jobs = list(jobs)
        if own_only:
            owned = [job.relative_path() for job in jobs]
            removed = await anyio.to_thread.run_sync(self.remove_own_partials, owned)
        else:
            removed = await anyio.to_thread.run_sync(self.remove_partials)
        if removed:
            log.info("removed %d partial file(s) left by an earlier run", removed)
        return await self.verify(records, jobs)

    async def verify(
        self, records: Mapping[str, JobRecord], jobs: Iterable[Job]
    ) -> list[JobRecord]:
        """Read-only: the done jobs found at the destination that ``records`` does not have
        as done (none in a folder), and whatever :meth:`file_ok` needs beforehand."""
        return []

    def open_part(self, relative: PurePosixPath, key: str) -> Part:
        """Where the result for ``relative`` goes while it streams: a part file beside it."""
        final = self.target(relative)
        temporary = final.with_name(f".{final.name}.{secrets.token_hex(4)}{PART_SUFFIX}")
        return _PartFile(temporary, final)

    def remove_partials(self) -> int:
        """Delete temporary files a crashed run left behind. Returns how many."""
        return self.remove_own_partials(None)

    def remove_own_partials(self, owned: Collection[PurePosixPath] | None) -> int:
        """Delete the temporary files crashed runs left for the results ``owned`` (a
        ``--shard`` run: other parts may be writing into the same folder right now), or
        all with None. Returns how many."""
        removed = 0
        if not self.out.is_dir():
            return 0
        mine = None if owned is None else {os.fspath(self.out.joinpath(*p.parts)) for p in owned}
        for part in _find_parts(self._out):
            if mine is not None and _part_target(part) not in mine:
                continue
            try:
                os.unlink(part)  # noqa: PTH108
                removed += 1
            except OSError as exc:
                log.warning("could not remove leftover %s: %s", part, exc.strerror)
        return removed

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


def _part_target(part: str) -> str:
    """The result a temporary file ``DIR/.NAME.XXXXXXXX.bulkfetch-part`` is for: DIR/NAME."""
    folder, _, name = part.rpartition("/")
    return f"{folder}/{name[1 : -len(PART_SUFFIX) - 9]}"


def _find_parts(top: str) -> list[str]:
    """Paths of the part files under ``top``, not following symlinks, skipping folders that
    cannot be read (as ``Path.rglob`` does). ``os.scandir`` and string paths: a resume walks
    every result of earlier runs, and a Path per file costs three times as much."""
    found: list[str] = []
    folders = [top]
    while folders:
        folder = folders.pop()
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        folders.append(entry.path)
                    elif entry.name.endswith(PART_SUFFIX):
                        found.append(entry.path)
        except OSError:
            continue
    return found


class _PartFile:
    """A result's temporary file, written from worker threads one call at a time.

    ``drain`` (a large body's blocks) and then ``publish`` run in worker threads; the event
    loop starts ``publish`` only once ``drain`` has returned, so the descriptor and the
    digest are never used by two threads at once. ``discard`` (on the loop, after the last
    call returned) closes and deletes the file.
    """

    __slots__ = ("_digest", "_fd", "final", "path", "where")

    def __init__(self, path: Path, final: Path) -> None:
        self.path = path
        self.final = final
        self.where = str(final)
        self._fd = -1
        self._digest = hashlib.sha256()

    def hexdigest(self) -> str:
        return self._digest.hexdigest()

    def write(self, blocks: list[bytes]) -> None:
        """Hash ``blocks`` and append them to the file (created on the first call)."""
        if self._fd < 0:
            _mkdirs(self.path.parent)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
            self._fd = os.open(self.path, flags, 0o666)
        for block in blocks:
            self._digest.update(block)
        _writev_all(self._fd, blocks)

    def drain(self, pipe: BlockPipe) -> None:
        drain(pipe, self.write)

    def publish(self, blocks: list[bytes]) -> float:
        """Write the last ``blocks``, fsync, close, rename over ``final``, fsync its folder.

        Returns when (``time.monotonic``) the last byte was written, before the fsync.
        """
        self.write(blocks)
        written_at = time.monotonic()
        os.fsync(self._fd)
        fd, self._fd = self._fd, -1
        os.close(fd)
        self.path.replace(self.final)
        fsync_directory(self.final.parent)
        return written_at

    def discard(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            with contextlib.suppress(OSError):
                os.close(fd)
        try:
            self.path.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("could not remove %s: %s", self.path, exc.strerror)


def _writev_all(fd: int, blocks: list[bytes]) -> None:
    """Write every byte of ``blocks``: one ``writev`` call unless the kernel takes less."""
    if len(blocks) == 1:
        write_all(fd, blocks[0])
        return
    done = os.writev(fd, blocks) if len(blocks) <= _IOV_MAX else 0
    for block in blocks:
        if done >= len(block):
            done -= len(block)
            continue
        # A short writev (a signal, a filling disk): write the rest block by block.
        write_all(fd, memoryview(block)[done:])
        done = 0


def _mkdirs(path: Path) -> None:
    """``mkdir -p path``, and each new folder's entry made durable in its parent."""
    missing: list[Path] = []
    while not path.is_dir():
        missing.append(path)
        path = path.parent
    for folder in reversed(missing):
        try:
            folder.mkdir()
        except FileExistsError:
            if not folder.is_dir():
                raise
            continue
        fsync_directory(folder.parent)


def _storage_error(exc: OSError, final: str) -> StorageError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageError(f"disk full while writing {final}: free some space and run again")
    return StorageError(f"cannot write {final}: {exc.strerror or exc}")
