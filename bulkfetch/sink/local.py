"""Results into a local folder: part files, fsynced, renamed into place.

:class:`FolderSink` is the :class:`~bulkfetch.sink.base.Sink` of a folder. A result is
written to a temporary file beside its target (``.NAME.XXXX.bulkfetch-part``), hashed
(sha256) and counted as it streams, then checked (:func:`~bulkfetch.sink.base.check_result`).
Only a result that passes is fsynced and renamed into place, and the directory fsynced (and
any folder created for it, in its parent), so a final name always holds a complete, checked
file. A crash leaves at most a ``.bulkfetch-part`` file, which ``remove_partials()``
deletes at the next start.

The writer thread appends each block with ``os.writev`` after hashing it (``hashlib`` and
``os.writev`` release the GIL) while the loop receives the next (see
:meth:`~bulkfetch.sink.base.Sink.write`).

Names come from the manifest (already checked by ``manifest.safe_name``) or are made by
bulkfetch; the server's names are never used. ``target()`` still checks that the path
stays inside the output folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import stat
import time
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import anyio

from bulkfetch.durable import fsync_directory, write_all
from bulkfetch.errors import StorageError
from bulkfetch.sink._pipe import BlockPipe
from bulkfetch.sink.base import Part, Sink, drain

if TYPE_CHECKING:
    from bulkfetch.ledger import JobRecord
    from bulkfetch.manifest.jobs import Job

__all__ = ["PART_SUFFIX", "FolderSink"]

log = logging.getLogger(__name__)

PART_SUFFIX = ".bulkfetch-part"
_IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 16


class FolderSink(Sink):
    """Writes results under one output folder, each through a part file beside it."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self._root = out.resolve()
        self._out = os.fspath(out)
        #: Folders (existing) found to lie inside the output folder, symlinks followed,
        #: with the names of the symlinks they held when first seen.
        self._inside: dict[Path, frozenset[str]] = {}

    def target(self, relative: PurePosixPath | str) -> Path:
        rel = PurePosixPath(relative)
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            raise StorageError(f"refusing to write outside the output folder: {relative}")
        path = self.out.joinpath(*rel.parts)
        if not self._stays_inside(path):
            raise StorageError(f"refusing to write outside the output folder: {relative}")
        return path

    def _stays_inside(self, path: Path) -> bool:
        """Whether ``path``, symlinks followed, is in the output folder.

        Its folder is resolved and listed once (a resolve stats every component, and a
        stat of a file not there yet costs as much in a folder of thousands: half a
        millisecond a job in all); a symlink put there by hand since is not seen, and a
        result is written by renaming onto its path, which replaces a link, never
        follows it."""
        folder = path.parent
        links = self._inside.get(folder)
        if links is None:
            if not folder.resolve().is_relative_to(self._root):
                return False
            if not folder.is_dir():
                return True  # not there yet: nothing in it, not even a link
            with os.scandir(folder) as entries:
                links = frozenset(e.name for e in entries if e.is_symlink())
            self._inside[folder] = links
        return path.name not in links or path.resolve().is_relative_to(self._root)

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
