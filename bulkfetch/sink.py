"""Results to disk: streamed, checked, and only then given their final name.

A result is written in chunks to a temporary file beside its target
(``.NAME.XXXX.bulkfetch-part``), hashed (sha256) and counted as it streams, then checked:
its length against Content-Length, its first bytes against the format the job asked for,
and never JSON. Only a result that passes is fsynced and renamed into place, and the
directory fsynced, so a final name always holds a complete, checked file. Anything else is
deleted and reported as a ``TransientError`` (the engine fetches it again). A crash leaves
at most a ``.bulkfetch-part`` file, which ``remove_partials()`` deletes at the next start.

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
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import aiofiles
import anyio

from .client import Ready
from .durable import fsync_directory
from .errors import StorageError, TransientError

__all__ = ["PART_SUFFIX", "Sink", "Written", "check_result", "sniff"]

log = logging.getLogger(__name__)

PART_SUFFIX = ".bulkfetch-part"
#: Bytes gathered before each write: few thread hops per file, bounded memory per download.
WRITE_CHUNK = 1 << 20

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


class Sink:
    """Writes results under one output folder."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self._root = out.resolve()

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
        if not relative:
            return False
        rel = PurePosixPath(relative)
        if rel.is_absolute() or ".." in rel.parts:
            return False
        # A stat, not target(): resolving every path costs several lstat calls per job on
        # a 100,000-job resume, and reading a size cannot write outside the folder.
        try:
            path = self.out.joinpath(*rel.parts)
            return path.is_file() and path.stat().st_size == size
        except (OSError, StorageError):
            return False

    def remove_partials(self) -> int:
        """Delete temporary files a crashed run left behind. Returns how many."""
        removed = 0
        if not self.out.is_dir():
            return 0
        for part in self.out.rglob(f"*{PART_SUFFIX}"):
            try:
                part.unlink()
                removed += 1
            except OSError as exc:
                log.warning("could not remove leftover %s: %s", part, exc.strerror)
        return removed

    async def write(self, relative: PurePosixPath, expected: str, ready: Ready) -> Written:
        """Stream ``ready`` into place at ``relative``; raises on a bad or short body."""
        final = self.target(relative)
        part = final.with_name(f".{final.name}.{secrets.token_hex(4)}{PART_SUFFIX}")
        digest = hashlib.sha256()
        size = 0
        head = b""
        try:
            await anyio.to_thread.run_sync(_mkdirs, final.parent)
            async with _open_for_write(part) as f:
                pending: list[bytes] = []
                buffered = 0
                async for chunk in ready.chunks():
                    if len(head) < 16:
                        head += chunk[: 16 - len(head)]
                    digest.update(chunk)
                    size += len(chunk)
                    pending.append(chunk)
                    buffered += len(chunk)
                    if buffered >= WRITE_CHUNK:
                        await f.write(b"".join(pending))
                        pending, buffered = [], 0
                if pending:
                    await f.write(b"".join(pending))
                check_result(
                    expected=expected, head=head, size=size, content_length=ready.content_length
                )
                await f.flush()
                await anyio.to_thread.run_sync(os.fsync, f.fileno())
            await anyio.to_thread.run_sync(_publish, part, final)
        except OSError as exc:
            _discard(part)
            raise _storage_error(exc, final) from None
        except BaseException:
            _discard(part)
            raise
        return Written(PurePosixPath(relative).as_posix(), size, digest.hexdigest())


@contextlib.asynccontextmanager
async def _open_for_write(path: Path) -> AsyncIterator[Any]:
    """``aiofiles.open(path, "wb")`` whose close survives cancellation.

    A cancelled download must still close its file, or the descriptor leaks; aiofiles'
    own exit awaits the close inside the cancelled scope, where it never runs.
    """
    opener = aiofiles.open(path, "wb")
    f = await opener.__aenter__()
    try:
        yield f
    except BaseException as exc:
        with anyio.CancelScope(shield=True):
            await opener.__aexit__(type(exc), exc, exc.__traceback__)
        raise
    with anyio.CancelScope(shield=True):
        await opener.__aexit__(None, None, None)


def _mkdirs(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)


def _publish(part: Path, final: Path) -> None:
    part.replace(final)
    fsync_directory(final.parent)


def _discard(part: Path) -> None:
    try:
        part.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("could not remove %s: %s", part, exc.strerror)


def _storage_error(exc: OSError, final: Path) -> StorageError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageError(f"disk full while writing {final}: free some space and run again")
    return StorageError(f"cannot write {final}: {exc.strerror or exc}")
