"""Results in object storage (S3 and compatibles, Google Cloud Storage, Azure Blob) via obstore.

obstore is Rust's ``object_store`` under Python: streaming multipart uploads, and each
cloud's credential chain (environment, web/workload identity, instance metadata), so
credentials come the way each cloud's own tools take them and bulkfetch never sees,
logs or stores one. ``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``) points at an
S3-compatible store; an ``http://`` endpoint is allowed (a local MinIO, the tests' moto).
AWS profiles (``AWS_PROFILE``, ``~/.aws/config``): ``object_store`` does not read them, so
when a profile is named and no keys are in the environment, boto3 (if installed) resolves
it through obstore's ``Boto3CredentialProvider``.

**Done means complete.** :class:`StoreSink` is :class:`~bulkfetch.sink.Sink` with uploads
for parts: the same loop receives, the same ``check_result`` judges the body, and only a
body that passes is published. A result up to :data:`PART_SIZE` is held in memory and
PUT once checked, with its job key and sha256 as metadata. A bigger one streams into a
multipart upload (memory bounded by ``PART_SIZE`` times :data:`UPLOAD_CONCURRENCY`,
whatever the size) that is completed only after the check; anything else aborts it, so no
object appears under its final key unless it is whole. S3's metadata is fixed when a
multipart upload starts, before the sha256 is known: such an object carries its job key
(and the ledger its sha256); a run that has lost its ledger hashes it once by reading it.

**Resume without a local disk.** :meth:`StoreSink.prepare` lists the prefix once, HEADs
every done job's object (its size and job key must match the ledger's), and HEADs the
objects at the paths of jobs the ledger does not have as done: one carrying that job's key
is taken as done, so a pod that lost its ledger creates none of them again. Probe objects
a killed run left are deleted. (Incomplete multipart uploads of a ``kill -9`` are invisible
to every ``object_store`` API: a bucket lifecycle rule removes them; see the README.)

Errors: a missing bucket, refused credentials or a refused write are a
:class:`StorageError` (exit 4, found before anything is created); other failures of one
upload are a :class:`TransientError` (the result is fetched again). Messages name the
URL and the service's error code, never a response body or a signed URL.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import mimetypes
import os
import re
import secrets
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import anyio
import obstore
from obstore.exceptions import (
    BaseError,
    NotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
)

from ._pipe import BlockPipe
from .destination import StoreUrl, relative_key
from .errors import BulkfetchError, StorageError, TransientError
from .ledger import JobRecord, JobState
from .sink import Part, Sink, drain

if TYPE_CHECKING:
    from obstore.store import ObjectStore as ObstoreStore

    from .manifest import Job

__all__ = ["META_KEY", "META_SHA256", "PART_SIZE", "Head", "ObjectStore", "StoreSink"]

log = logging.getLogger(__name__)

#: Multipart part size: S3 wants 5 MiB at least; a result below it is one PUT.
PART_SIZE = 8 << 20
#: Parts of one upload in flight at once. Measured into moto on loopback (500 MB, 2 cores):
#: 8 MiB x 4 (boto3's part size) ran at 90-138 MB/s with a flat 93 MiB RSS; 5 MiB x 8 at
#: 60 MB/s, its RSS growing with the file (97 -> 143 MiB from 100 to 500 MB).
UPLOAD_CONCURRENCY = 4
#: HEADs in flight at once when a run checks its done jobs.
HEAD_CONCURRENCY = 16
META_KEY = "bulkfetch-key"
META_SHA256 = "bulkfetch-sha256"
PROBE_PREFIX = ".bulkfetch-probe-"
#: obstore raises FileNotFoundError (not its NotFoundError) for a missing object, and
#: may raise other OSErrors; every failure of a call is one of these.
_NOT_FOUND = (NotFoundError, FileNotFoundError)
_ERRORS = (BaseError, OSError)
_CODE = re.compile(r"<Code>([A-Za-z.]+)</Code>|\"code\"\s*:\s*\"?([A-Za-z.]+)")
_STATUS = re.compile(r"\b([45]\d\d) ([A-Z][A-Za-z ]+?)(?::|$)", re.M)
_NO_BUCKET = ("NoSuchBucket", "ContainerNotFound", "BucketNotFound")
_REFUSED = (
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AuthenticationFailed",
    "AuthorizationFailure",
    "ExpiredToken",
    "InvalidToken",
)


@dataclass(frozen=True, slots=True)
class Head:
    """An object's size and its user metadata."""

    size: int
    metadata: Mapping[str, str]


def _build(url: StoreUrl) -> ObstoreStore:
    """The obstore store for ``url``, with each cloud's own credential chain."""
    from obstore.store import from_url

    options: dict[str, Any] = {}
    client: dict[str, Any] = {}
    if url.scheme == "s3":
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            options["endpoint"] = endpoint
            client["allow_http"] = endpoint.startswith("http://")
        if os.environ.get("AWS_PROFILE") and not os.environ.get("AWS_ACCESS_KEY_ID"):
            with contextlib.suppress(ImportError):
                from obstore.auth.boto3 import Boto3CredentialProvider

                options["credential_provider"] = Boto3CredentialProvider()
    if client:
        options["client_options"] = client
    try:
        return from_url(str(url), **options)
    except (*_ERRORS, ValueError) as exc:  # a missing account name, a malformed endpoint
        said = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else describe(exc)
        raise StorageError(f"cannot use {url}: {said}") from None


def describe(exc: BaseException) -> str:
    """What went wrong, from the service's error code and status only (no bodies or URLs,
    which may carry a signature)."""
    text = str(exc)
    code = next((a or b for a, b in _CODE.findall(text)), "")
    status = _STATUS.search(text)
    said = ", ".join(p for p in (code, f"{status[1]} {status[2].strip()}" if status else "") if p)
    return said or type(exc).__name__


def _refused(exc: BaseException) -> bool:
    text = str(exc)
    return isinstance(exc, PermissionDeniedError | UnauthenticatedError) or any(
        code in text for code in _REFUSED
    )


def store_error(url: StoreUrl, exc: BaseException, doing: str) -> BulkfetchError:
    """A ``StorageError`` for what stops every upload, else a ``TransientError``."""
    said = describe(exc)
    text = str(exc)
    if any(code in text for code in _NO_BUCKET):
        return StorageError(f"{url}: the bucket does not exist ({said}); create it or fix --out")
    if _refused(exc):
        return StorageError(
            f"{url}: the credentials were refused while {doing} ({said}); check the "
            "environment, profile or identity the cloud's own tools would use"
        )
    return TransientError(f"{url}: {doing} failed: {said}")


class ObjectStore:
    """A bucket prefix: a :class:`~bulkfetch.stac_catalog.Destination`, and what the sink
    and the report need (heads, listings, local copies). Paths are relative to the prefix."""

    __slots__ = ("store", "url")

    def __init__(self, url: StoreUrl, store: ObstoreStore | None = None) -> None:
        self.url = url
        self.store = store if store is not None else _build(url)

    def __repr__(self) -> str:
        return f"ObjectStore({str(self.url)!r})"

    def where(self, relative: str) -> str:
        return f"{self.url}/{relative}"

    def _path(self, relative: str) -> str:
        if relative_key(relative) is None:
            raise ValueError(f"not a path inside the destination: {relative!r}")
        return relative

    def _fail(self, exc: Exception, doing: str) -> BulkfetchError:
        error = store_error(self.url, exc, doing)
        return error if isinstance(error, StorageError) else StorageError(str(error))

    # -- the catalog's Destination ----------------------------------------------------

    def read(self, relative: str) -> bytes | None:
        try:
            return bytes(obstore.get(self.store, self._path(relative)).bytes())
        except _NOT_FOUND:
            return None
        except _ERRORS as exc:
            raise self._fail(exc, f"reading {relative}") from None

    def write(self, relative: str, data: bytes, *, durable: bool) -> None:
        """One PUT: an object is replaced whole or not at all (``durable`` always holds)."""
        kind = mimetypes.guess_type(relative)[0] or "application/octet-stream"
        try:
            obstore.put(self.store, self._path(relative), data, attributes={"Content-Type": kind})
        except _ERRORS as exc:
            raise self._fail(exc, f"writing {relative}") from None

    def delete(self, relative: str) -> None:
        try:
            obstore.delete(self.store, self._path(relative))
        except _NOT_FOUND:
            return
        except _ERRORS as exc:
            raise self._fail(exc, f"deleting {relative}") from None

    def files(self, prefix: str) -> list[str]:
        return list(self.listing(prefix.rstrip("/") + "/"))

    def size(self, relative: str) -> int | None:
        head = self.head(relative)
        return None if head is None else head.size

    def local_path(self, relative: str) -> Path | None:
        return None  # (read through fetched())

    # -- what the sink and the report need --------------------------------------------

    def head(self, relative: str) -> Head | None:
        """The object's size and metadata; None if there is none (or the path is bad)."""
        if relative_key(relative) is None:
            return None
        try:
            result = obstore.get(self.store, relative, options={"head": True})
        except _NOT_FOUND:
            return None
        except _ERRORS as exc:
            raise self._fail(exc, f"reading {relative}") from None
        return Head(int(result.meta["size"]), _metadata(result.attributes))

    async def head_async(self, relative: str) -> Head | None:
        if relative_key(relative) is None:
            return None
        try:
            result = await obstore.get_async(self.store, relative, options={"head": True})
        except _NOT_FOUND:
            return None
        except _ERRORS as exc:
            raise self._fail(exc, f"reading {relative}") from None
        return Head(int(result.meta["size"]), _metadata(result.attributes))

    def listing(self, prefix: str = "") -> dict[str, int]:
        """Every object under ``prefix`` (relative to the destination), with its size."""
        found: dict[str, int] = {}
        try:
            for page in obstore.list(self.store, prefix or None, chunk_size=1000):
                for meta in page:
                    found[str(meta["path"])] = int(meta["size"])
        except _ERRORS as exc:
            raise self._fail(exc, "listing the destination") from None
        return found

    def check_access(self) -> None:
        """Raise :class:`StorageError` unless the bucket exists and takes a write: one
        listing call, one small PUT and its DELETE, before the first task is created."""
        probe = f"{PROBE_PREFIX}{secrets.token_hex(6)}"
        try:
            next(iter(obstore.list(self.store, None, chunk_size=1)), None)
            obstore.put(self.store, probe, b"bulkfetch can write here\n")
            obstore.delete(self.store, probe)
        except _ERRORS as exc:
            error = store_error(self.url, exc, "checking access")
            if isinstance(error, StorageError):
                raise error from None
            raise StorageError(f"cannot use {self.url}: {describe(exc)}") from None

    @contextlib.contextmanager
    def fetched(self, relative: str) -> Iterator[Path]:
        """The object copied to a temporary file (streamed, never whole in memory)."""
        with tempfile.TemporaryDirectory(prefix="bulkfetch-") as folder:
            local = Path(folder) / (PurePosixPath(relative).name or "object")
            try:
                result = obstore.get(self.store, self._path(relative))
                with local.open("wb") as out:
                    for chunk in result.stream(min_chunk_size=1 << 20):
                        out.write(chunk)
            except _NOT_FOUND:
                raise FileNotFoundError(relative) from None
            except _ERRORS as exc:
                raise OSError(f"cannot read {self.where(relative)}: {describe(exc)}") from None
            yield local

    def sha256(self, relative: str) -> str:
        """The object's sha256, by reading it once (streamed)."""
        digest = hashlib.sha256()
        try:
            for chunk in obstore.get(self.store, relative).stream(min_chunk_size=1 << 20):
                digest.update(chunk)
        except _ERRORS as exc:
            raise self._fail(exc, f"reading {relative}") from None
        return digest.hexdigest()


def _metadata(attributes: Mapping[str, Any]) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in attributes.items()}


class _Upload:
    """One result on its way into the bucket (a :class:`~bulkfetch.sink.Part`).

    Blocks are hashed and held until :data:`PART_SIZE` has come; then a multipart upload
    starts and takes them, and every later block, a part at a time. ``publish`` PUTs a
    small result whole with its sha256, or completes the upload; ``discard`` aborts it.
    """

    __slots__ = ("_attributes", "_digest", "_held", "_path", "_store", "_writer", "where")

    def __init__(self, store: ObjectStore, path: str, key: str) -> None:
        self._store = store
        self._path = path
        self.where = store.where(path)
        kind = mimetypes.guess_type(path)[0] or "application/octet-stream"
        self._attributes: dict[str, str] = {"Content-Type": kind}
        if key:
            self._attributes[META_KEY] = key
        self._digest = hashlib.sha256()
        self._held: list[bytes] = []
        self._writer: Any = None  # obstore's WritableFile, once the upload has started

    def hexdigest(self) -> str:
        return self._digest.hexdigest()

    def _write(self, blocks: list[bytes]) -> None:
        try:
            self._send(blocks)
        except _ERRORS as exc:
            raise store_error(self._store.url, exc, f"uploading {self._path}") from None

    def _send(self, blocks: list[bytes]) -> None:
        for block in blocks:
            self._digest.update(block)
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
                attributes = self._attributes | {META_SHA256: self.hexdigest()}
                body, self._held = b"".join(self._held), []
                obstore.put(self._store.store, self._path, body, attributes=attributes)
            else:
                self._writer.close()  # completes the upload: only now does the object appear
                self._writer = None
        except _ERRORS as exc:
            raise store_error(self._store.url, exc, f"uploading {self._path}") from None
        return written_at

    def discard(self) -> None:
        self._held = []
        writer, self._writer = self._writer, None
        if writer is None:
            return
        try:
            # obstore aborts the multipart upload when its context exits with an error.
            writer.__exit__(RuntimeError, RuntimeError("discarded"), None)
        except _ERRORS as exc:
            log.warning("could not abort the upload to %s: %s", self.where, describe(exc))


class StoreSink(Sink):
    """A :class:`~bulkfetch.sink.Sink` whose results are objects under a bucket prefix."""

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
        self, records: Mapping[str, JobRecord], jobs: Iterable[Job]
    ) -> list[JobRecord]:
        """Check access, list once, remove probes, HEAD what must be checked; returns the
        done jobs the ledger does not know of (see the module docstring)."""
        await anyio.to_thread.run_sync(self.store.check_access)
        listing = await anyio.to_thread.run_sync(self.store.listing)
        removed = await anyio.to_thread.run_sync(self._remove_probes, list(listing))
        if removed:
            log.info("removed %d probe object(s) left by an earlier run", removed)
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
