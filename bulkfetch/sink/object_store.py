"""A bucket prefix as a destination (S3 and compatibles, Google Cloud Storage, Azure Blob).

obstore is Rust's ``object_store`` under Python: streaming multipart uploads, and each
cloud's credential chain (environment, web/workload identity, instance metadata), so
credentials come the way each cloud's own tools take them and bulkfetch never sees,
logs or stores one. ``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``) points at an
S3-compatible store; an ``http://`` endpoint is allowed (a local MinIO, the tests' moto).
AWS profiles (``AWS_PROFILE``, ``~/.aws/config``): ``object_store`` does not read them, so
when a profile is named and no keys are in the environment, boto3 (if installed) resolves
it through obstore's ``Boto3CredentialProvider``.

:class:`ObjectStore` is the catalog's :class:`~bulkfetch.stac.catalog.Destination` on a
bucket, plus what the run and the report need: access checks, listings, HEADs with
metadata, local copies. Results are written by :mod:`bulkfetch.sink.bucket`.

Errors: a missing bucket, refused credentials or a refused write are a
:class:`StorageError` (exit 4); other failures are a :class:`TransientError` where one
upload may be retried. Messages name the URL and the service's error code, never a
response body or a signed URL.
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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import obstore
from obstore.exceptions import (
    BaseError,
    NotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
)

from bulkfetch.errors import BulkfetchError, StorageError, TransientError
from bulkfetch.sink.destination import StoreUrl, relative_key

if TYPE_CHECKING:
    from obstore.store import ObjectStore as ObstoreStore


__all__ = [
    "ERRORS",
    "META_KEY",
    "META_SHA256",
    "PROBE_PREFIX",
    "Head",
    "ObjectStore",
    "describe",
    "merged_metadata",
    "s3_checksum",
    "store_error",
]

log = logging.getLogger(__name__)

META_KEY = "bulkfetch-key"
META_SHA256 = "bulkfetch-sha256"
PROBE_PREFIX = ".bulkfetch-probe-"
#: obstore raises FileNotFoundError (not its NotFoundError) for a missing object, and
#: may raise other OSErrors; every failure of a call is one of these.
_NOT_FOUND = (NotFoundError, FileNotFoundError)
ERRORS = (BaseError, OSError)
_CODE = re.compile(r"<Code>([A-Za-z.]+)</Code>|\"code\"\s*:\s*\"?([A-Za-z.]+)")
_STATUS = re.compile(r"\b([45]\d\d) ([A-Z][A-Za-z ]+?)(?::|$)", re.M)
_KIND = re.compile(r"kind: (ConnectionRefused|ConnectionReset|TimedOut|HostUnreachable)\b")
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
        # Over TLS, as every AWS SDK does: the signature covers no sha256 of each part
        # (TLS guards the bytes on the way; the part's checksum, below, what S3 keeps).
        # Over plain http (a local MinIO) the signature guards them too.
        # AWS_UNSIGNED_PAYLOAD, when set, says otherwise (object_store reads it).
        secure = not endpoint or not endpoint.startswith("http://")
        if secure and "AWS_UNSIGNED_PAYLOAD" not in os.environ:
            options["unsigned_payload"] = True
        checksum = s3_checksum(os.environ)
        if checksum:
            options["checksum_algorithm"] = checksum
        if os.environ.get("AWS_PROFILE") and not os.environ.get("AWS_ACCESS_KEY_ID"):
            with contextlib.suppress(ImportError):
                from obstore.auth.boto3 import Boto3CredentialProvider

                options["credential_provider"] = Boto3CredentialProvider()
    if client:
        options["client_options"] = client
    try:
        return from_url(str(url), **options)
    except (*ERRORS, ValueError) as exc:  # a missing account name, a malformed endpoint
        said = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else describe(exc)
        raise StorageError(f"cannot use {url}: {said}") from None


def s3_checksum(environ: Mapping[str, str]) -> str | None:
    """The checksum every S3 upload declares, or None to leave it to object_store.

    sha256, declared when an upload is created and sent with every part
    (``x-amz-checksum-sha256``), as the AWS SDKs declare and send their CRC32s: S3 checks
    each part against it on arrival and refuses one that differs (BadDigest), so a part
    damaged after it was hashed never becomes part of an object; the object keeps it (a
    single PUT's is the whole object's sha256, the ledger's). Over http it is the pass
    the signature takes anyway; over TLS one pass more, in object_store's threads.
    ``AWS_CHECKSUM_ALGORITHM`` (read by object_store: sha256 or crc64nvme) chooses
    otherwise, and ``AWS_REQUEST_CHECKSUM_CALCULATION=when_required`` (the AWS SDKs'
    setting for stores that refuse checksums) declares none.
    """
    if "AWS_CHECKSUM_ALGORITHM" in environ:
        return None
    if environ.get("AWS_REQUEST_CHECKSUM_CALCULATION", "").strip().lower() == "when_required":
        return None
    return "sha256"


def merged_metadata(had: Mapping[str, str], adding: Mapping[str, str]) -> dict[str, str] | None:
    """An object's metadata ``had`` with ``adding`` added, or None where ``had`` holds
    another value for a name of ``adding`` (someone else's object: leave it alone).
    Names are compared lower-case, as the services compare them."""
    before = {k.lower(): v for k, v in had.items()}
    after = {k.lower(): v for k, v in adding.items()}
    if any(before.get(k, v) != v for k, v in after.items()):
        return None
    return before | after


def describe(exc: BaseException) -> str:
    """What went wrong, from the service's error code and status only (no bodies or URLs,
    which may carry a signature)."""
    text = str(exc)
    code = next((a or b for a, b in _CODE.findall(text)), "")
    status = _STATUS.search(text)
    said = ", ".join(p for p in (code, f"{status[1]} {status[2].strip()}" if status else "") if p)
    if said:
        return said
    # No answer at all (a refused connection, a timeout): the first line's last clause,
    # after the request's URL, and the OS's word for it.
    first = text.strip().split("\n", 1)[0]
    clause = first.rsplit(" - ", 1)[1].strip() if " - " in first else ""
    kind = _KIND.search(text)
    said = clause + (f" ({kind[1]})" if kind else "")
    return said.strip() or type(exc).__name__


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
    """A bucket prefix: a :class:`~bulkfetch.stac.catalog.Destination`, and what the sink
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
        except ERRORS as exc:
            raise self._fail(exc, f"reading {relative}") from None

    def write(self, relative: str, data: bytes, *, durable: bool) -> None:
        """One PUT: an object is replaced whole or not at all (``durable`` always holds)."""
        kind = mimetypes.guess_type(relative)[0] or "application/octet-stream"
        try:
            obstore.put(self.store, self._path(relative), data, attributes={"Content-Type": kind})
        except ERRORS as exc:
            raise self._fail(exc, f"writing {relative}") from None

    def delete(self, relative: str) -> None:
        try:
            obstore.delete(self.store, self._path(relative))
        except _NOT_FOUND:
            return
        except ERRORS as exc:
            raise self._fail(exc, f"deleting {relative}") from None

    def files(self, prefix: str) -> list[str]:
        return list(self.listing(prefix.rstrip("/") + "/"))

    def size(self, relative: str) -> int | None:
        head = self.head(relative)
        return None if head is None else head.size

    def local_path(self, relative: str) -> Path | None:
        return None  # (read through fetched() or first_bytes())

    def first_bytes(self, relative: str, length: int) -> bytes | None:
        """One ranged GET (after a HEAD for the size: a range past the end is an error)."""
        head = self.head(relative)
        if head is None:
            return None
        try:
            data = obstore.get_range(self.store, relative, start=0, length=min(length, head.size))
        except _NOT_FOUND:
            return None
        except ERRORS as exc:
            raise self._fail(exc, f"reading {relative}") from None
        return bytes(data)

    # -- what the sink and the report need --------------------------------------------

    def meta_name(self, name: str) -> str:
        """Metadata ``name`` (like :data:`META_KEY`) as this cloud takes it: Azure's must be
        C# identifiers (``bulkfetch_key``: a hyphen is refused as InvalidMetadata), while
        S3 and GCS keep the hyphen (nginx and other proxies drop headers with an underscore)."""
        return name.replace("-", "_") if self.url.scheme == "az" else name

    def _metadata(self, attributes: Mapping[str, Any]) -> dict[str, str]:
        """An object's metadata under the names :meth:`meta_name` was given."""
        found = {str(k).lower(): str(v) for k, v in attributes.items()}
        if self.url.scheme == "az":
            ours = {self.meta_name(n): n for n in (META_KEY, META_SHA256)}
            found = {ours.get(k, k): v for k, v in found.items()}
        return found

    def head(self, relative: str) -> Head | None:
        """The object's size and metadata; None if there is none (or the path is bad)."""
        if relative_key(relative) is None:
            return None
        try:
            result = obstore.get(self.store, relative, options={"head": True})
        except _NOT_FOUND:
            return None
        except ERRORS as exc:
            raise self._fail(exc, f"reading {relative}") from None
        return Head(int(result.meta["size"]), self._metadata(result.attributes))

    async def head_async(self, relative: str) -> Head | None:
        if relative_key(relative) is None:
            return None
        try:
            result = await obstore.get_async(self.store, relative, options={"head": True})
        except _NOT_FOUND:
            return None
        except ERRORS as exc:
            raise self._fail(exc, f"reading {relative}") from None
        return Head(int(result.meta["size"]), self._metadata(result.attributes))

    def listing(self, prefix: str = "") -> dict[str, int]:
        """Every object under ``prefix`` (relative to the destination), with its size."""
        found: dict[str, int] = {}
        try:
            for page in obstore.list(self.store, prefix or None, chunk_size=1000):
                for meta in page:
                    found[str(meta["path"])] = int(meta["size"])
        except ERRORS as exc:
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
        except ERRORS as exc:
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
            except ERRORS as exc:
                raise OSError(f"cannot read {self.where(relative)}: {describe(exc)}") from None
            yield local

    def sha256(self, relative: str) -> str:
        """The object's sha256, by reading it once (streamed)."""
        digest = hashlib.sha256()
        try:
            for chunk in obstore.get(self.store, relative).stream(min_chunk_size=1 << 20):
                digest.update(chunk)
        except ERRORS as exc:
            raise self._fail(exc, f"reading {relative}") from None
        return digest.hexdigest()
