"""Results streamed into a bucket: :class:`StoreSink`, the :class:`~bulkfetch.sink.base.Sink`
of a bucket destination.

**Done means complete.** The sink's own loop receives, its own ``check_result`` judges the
body (length, magic bytes, not JSON), and only a body that passes is published; here
through an upload instead of a part file. A result up to :data:`PART_SIZE` is held in
memory and PUT once checked, with its job key and sha256 as metadata. A bigger one
streams into a multipart upload (memory bounded by ``PART_SIZE`` times
:data:`UPLOAD_CONCURRENCY`, whatever the size) that is completed only after the check;
anything else (a short body, a failure, SIGINT/SIGTERM) aborts it, so no object appears
under its final key unless it is whole. obstore takes an upload's metadata when it is
opened, before the sha256 is known: the upload is opened with the job key, and once
completed, the sha256 is added: on S3 by copying the object onto itself server-side
(:func:`~bulkfetch.sink._s3_uploads.add_metadata`, with boto3), on Azure by a Set Blob
Metadata at a URL obstore signs (:func:`~bulkfetch.sink._az_metadata.add_metadata`).
Where that cannot be done (no boto3, Google Cloud Storage, an Azure credential that
cannot sign, a failure) the object carries its job key and the ledger its sha256; a run
that lost its ledger hashes it once by reading it.

**Resume without a local disk.** :meth:`StoreSink.prepare` checks access (exit 4 before
any creation), lists the prefix once, deletes probe objects a killed run left, HEADs every
done job's object (its size and job key must match the ledger's), and HEADs the objects
at the paths of jobs the ledger does not have as done: one carrying that job's key is
taken as done, so a pod that lost its ledger creates none of them again.
"""

from __future__ import annotations

import hashlib
import logging
import mimetypes
import re
import time
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import anyio
import obstore
from obstore.store import AzureStore, S3Store

from bulkfetch.errors import StorageError
from bulkfetch.ledger import JobRecord, JobState
from bulkfetch.sink._pipe import BlockPipe
from bulkfetch.sink._s3_uploads import abort_leftover_uploads
from bulkfetch.sink.base import Part, Sink, drain
from bulkfetch.sink.destination import relative_key
from bulkfetch.sink.object_store import (
    ERRORS,
    META_KEY,
    META_SHA256,
    PROBE_PREFIX,
    ObjectStore,
    describe,
    store_error,
)

if TYPE_CHECKING:
    from bulkfetch.manifest.jobs import Job

__all__ = ["HEAD_CONCURRENCY", "PART_SIZE", "UPLOAD_CONCURRENCY", "StoreSink"]

log = logging.getLogger(__name__)

#: Multipart part size: S3 wants 5 MiB at least; a result below it is one PUT.
PART_SIZE = 8 << 20
#: Parts of one upload in flight at once. Measured into moto on loopback (500 MB, 2 cores):
#: 8 MiB x 4 (boto3's part size) ran at 90-138 MB/s with a flat 93 MiB RSS; 5 MiB x 8 at
#: 60 MB/s, its RSS growing with the file (97 -> 143 MiB from 100 to 500 MB).
UPLOAD_CONCURRENCY = 4
#: HEADs in flight at once when a run checks its done jobs.
HEAD_CONCURRENCY = 16


class _Upload:
    """One result on its way into the bucket (a :class:`~bulkfetch.sink.base.Part`).

    Blocks are hashed and held until :data:`PART_SIZE` has come; then a multipart upload
    starts and takes them, and every later block, a part at a time. ``publish`` PUTs a
    small result whole with its sha256, or completes the upload; ``discard`` aborts it.
    """

    __slots__ = (
        "_attributes",
        "_digest",
        "_held",
        "_path",
        "_size",
        "_store",
        "_writer",
        "where",
    )

    def __init__(self, store: ObjectStore, path: str, key: str) -> None:
        self._store = store
        self._path = path
        self.where = store.where(path)
        kind = mimetypes.guess_type(path)[0] or "application/octet-stream"
        self._attributes: dict[str, str] = {"Content-Type": kind}
        if key:
            self._attributes[store.meta_name(META_KEY)] = key
        self._digest = hashlib.sha256()
        self._size = 0
        self._held: list[bytes] = []
        self._writer: Any = None  # obstore's WritableFile, once the upload has started

    def hexdigest(self) -> str:
        return self._digest.hexdigest()

    def _write(self, blocks: list[bytes]) -> None:
        try:
            self._send(blocks)
        except ERRORS as exc:
            raise store_error(self._store.url, exc, f"uploading {self._path}") from None

    def _send(self, blocks: list[bytes]) -> None:
        for block in blocks:
            self._digest.update(block)
            self._size += len(block)
        if self._writer is None:
            self._held.extend(blocks)
            if sum(map(len, self._held)) < PART_SIZE:
                return
            self._writer = obstore.open_writer(
                self._store.store,
                self._path,
                attributes=self._attributes,
                buffer_size=PART_SIZE,
                max_concurrency=UPLOAD_CONCURRENCY,
            )
            blocks, self._held = self._held, []
        for block in blocks:
            self._writer.write(block)

    def drain(self, pipe: BlockPipe) -> None:
        drain(pipe, self._write)

    def publish(self, blocks: list[bytes]) -> float:
        self._write(blocks)
        written_at = time.monotonic()
        try:
            if self._writer is None:
                sha = {self._store.meta_name(META_SHA256): self.hexdigest()}
                attributes = self._attributes | sha
                body, self._held = b"".join(self._held), []
                obstore.put(self._store.store, self._path, body, attributes=attributes)
            else:
                self._writer.close()  # completes the upload: only now does the object appear
                self._writer = None
                self._add_sha256()
        except ERRORS as exc:
            raise store_error(self._store.url, exc, f"uploading {self._path}") from None
        return written_at

    def _add_sha256(self) -> None:
        """The completed multipart object's sha256, into its metadata (S3 and Azure: see
        the module docstring). Best effort: the ledger has it anyway."""
        metadata = {k: v for k, v in self._attributes.items() if k != "Content-Type"}
        metadata[self._store.meta_name(META_SHA256)] = self.hexdigest()
        if isinstance(self._store.store, S3Store):
            from bulkfetch.sink._s3_uploads import add_metadata

            add_metadata(self._store.url, self._path, self._size, metadata)
        elif isinstance(self._store.store, AzureStore):
            from bulkfetch.sink._az_metadata import add_metadata as set_metadata

            set_metadata(self._store, self._path, self._size, metadata)

    def discard(self) -> None:
        self._held = []
        writer, self._writer = self._writer, None
        if writer is None:
            return
        try:
            # obstore aborts the multipart upload when its context exits with an error.
            writer.__exit__(RuntimeError, RuntimeError("discarded"), None)
        except ERRORS as exc:
            log.warning("could not abort the upload to %s: %s", self.where, describe(exc))


class StoreSink(Sink):
    """A :class:`~bulkfetch.sink.base.Sink` whose results are objects under a bucket prefix."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self.out = Path(str(store.url))
        self._verified: dict[str, int] = {}  # done results seen whole: path -> size

    def open_part(self, relative: PurePosixPath, key: str) -> Part:
        path = relative.as_posix()
        if relative_key(path) is None:
            raise StorageError(f"refusing to write outside the destination: {relative}")
        return _Upload(self.store, path, key)

    def file_ok(self, relative: str, size: int) -> bool:
        """Whether :meth:`prepare` found the done job's object whole (size and key)."""
        return self._verified.get(relative) == size

    def remove_partials(self) -> int:
        listing = self.store.listing()
        return self._remove_probes(listing)

    def _remove_probes(self, listing: Iterable[str]) -> int:
        removed = 0
        for path in listing:
            if path.rsplit("/", 1)[-1].startswith(PROBE_PREFIX):
                self.store.delete(path)
                removed += 1
        return removed

    async def prepare(
        self, records: Mapping[str, JobRecord], jobs: Iterable[Job], *, own_only: bool = False
    ) -> list[JobRecord]:
        """Check access, list once, remove probes, HEAD what must be checked; returns the
        done jobs the ledger does not know of (see the module docstring). Leftover uploads
        are aborted only for these ``jobs``' keys whatever ``own_only`` says, so a
        ``--shard`` run never touches another part's upload."""
        started = time.time()
        jobs = list(jobs)
        await anyio.to_thread.run_sync(self.store.check_access)
        listing = await anyio.to_thread.run_sync(self.store.listing)
        removed = await anyio.to_thread.run_sync(self._remove_probes, list(listing))
        if removed:
            log.info("removed %d probe object(s) left by an earlier run", removed)
        if self.store.url.scheme == "s3":
            paths = {job.relative_path().as_posix() for job in jobs}
            aborted = await anyio.to_thread.run_sync(
                abort_leftover_uploads, self.store.url, paths, started
            )
            if aborted > 0:
                log.info("aborted %d incomplete upload(s) left by an earlier run", aborted)
        return await self._verify(records, jobs, listing)

    async def verify(
        self, records: Mapping[str, JobRecord], jobs: Iterable[Job]
    ) -> list[JobRecord]:
        listing = await anyio.to_thread.run_sync(self.store.listing)
        return await self._verify(records, jobs, listing)

    async def _verify(
        self, records: Mapping[str, JobRecord], jobs: Iterable[Job], listing: Mapping[str, int]
    ) -> list[JobRecord]:
        done: list[tuple[str, str, int]] = []  # (key, path, size) to verify
        unknown: list[Job] = []  # jobs whose object may be there already
        for job in jobs:
            record = records.get(job.key)
            if record is not None and record.state is JobState.DONE:
                if listing.get(record.path) == record.size:
                    done.append((record.key, record.path, record.size))
            elif job.relative_path().as_posix() in listing:
                unknown.append(job)
        found: list[JobRecord] = []
        limit = anyio.Semaphore(HEAD_CONCURRENCY)

        async def verify(key: str, path: str, size: int) -> None:
            async with limit:
                head = await self.store.head_async(path)
            if head is not None and head.size == size and head.metadata.get(META_KEY) == key:
                self._verified[path] = size

        async def recognise(job: Job) -> None:
            path = job.relative_path().as_posix()
            async with limit:
                head = await self.store.head_async(path)
                if head is None or head.metadata.get(META_KEY) != job.key:
                    return
                sha = head.metadata.get(META_SHA256, "")
                if not re.fullmatch(r"[0-9a-f]{64}", sha):  # a multipart upload's
                    sha = await anyio.to_thread.run_sync(self.store.sha256, path)
            record = records.get(job.key) or JobRecord(key=job.key, slot=job.slot)
            found.append(
                record.replace(
                    state=JobState.DONE,
                    path=path,
                    size=head.size,
                    sha256=sha,
                    reason="",
                    updated_at=time.time(),
                )
            )
            self._verified[path] = head.size

        async with anyio.create_task_group() as tg:
            for key, path, size in done:
                tg.start_soon(verify, key, path, size)
            for job in unknown:
                tg.start_soon(recognise, job)
        return found
