"""What S3 needs that ``object_store`` (obstore) cannot do, asked through boto3.

Both are optional (``pip install bulkfetch[s3]``) and best effort: without boto3, or on a
failure, the run goes on and says so in the log. boto3 uses the same credential chain as
the AWS CLI (and obstore, through the environment), and ``AWS_ENDPOINT_URL``.

**Leftover uploads.** A run aborts its own failed or interrupted uploads; only a process
killed outright (``kill -9``, a lost node) leaves one behind, invisible as an object but
billed as storage. obstore has no call that lists them. Only uploads begun before this run
started, to the key of one of this run's jobs, are aborted: never another tool's upload,
nor one a run on another ledger has under way now. Without boto3, a bucket lifecycle rule
(``AbortIncompleteMultipartUpload``) does the same; the README says so.

**Metadata known only at the end.** S3 fixes an object's metadata when a multipart upload
is created, and a result's sha256 is known only once its last byte has been streamed.
:func:`add_metadata` gives the completed object the rest of its metadata by a server-side
copy onto itself (``MetadataDirective=REPLACE``, a multipart copy above 5 GiB), on the
condition that it is still the object just completed (its size and metadata, then its
ETag): the object is whole under its key from the completion on, only its metadata grows.
Where uploads declare sha256 checksums (:func:`~bulkfetch.sink.object_store.s3_checksum`),
the copy asks for one too, so S3's own checksum of the object becomes the whole object's
sha256 (a multipart upload's, or a multipart copy's above 5 GiB, is a checksum of its
parts' checksums).
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Collection, Mapping
from typing import Any

from bulkfetch.sink.destination import StoreUrl
from bulkfetch.sink.object_store import merged_metadata, s3_checksum

__all__ = ["abort_leftover_uploads", "add_metadata"]

log = logging.getLogger(__name__)

#: CopyObject copies up to 5 GiB in one call; above, s3transfer copies in parts.
_COPY_MAX = 5 << 30
#: Part size of such a copy (at most 10,000 parts: 10 TB, over S3's 5 TB objects).
_COPY_PART = 1 << 30
#: Head fields a copy keeps only when asked to (REPLACE starts from nothing).
_KEPT = (
    "ContentType",
    "ContentEncoding",
    "ContentDisposition",
    "ContentLanguage",
    "CacheControl",
    "ServerSideEncryption",
    "SSEKMSKeyId",
    "StorageClass",
)


@functools.cache
def _client(endpoint: str | None) -> Any:
    """A boto3 S3 client (thread-safe; made once per endpoint), or None without boto3."""
    try:
        import boto3
    except ImportError:
        return None
    # botocore's debug log shows each request's headers (the access key id, signatures):
    # never, even with --verbose.
    for name in ("boto3", "botocore", "s3transfer", "urllib3"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return boto3.client("s3", endpoint_url=endpoint)


def _s3(url: StoreUrl) -> tuple[Any, str]:
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    return _client(endpoint or None), f"{url.prefix}/" if url.prefix else ""


def abort_leftover_uploads(url: StoreUrl, paths: Collection[str], before: float) -> int:
    """Abort ``url``'s incomplete multipart uploads to ``paths`` (relative to the prefix)
    begun before ``before`` (unix time). Returns how many; -1 if S3 could not be asked."""
    aborted = 0
    try:
        client, base = _s3(url)
        if client is None:
            log.debug("boto3 is not installed: incomplete multipart uploads are not looked for")
            return -1
        pages = client.get_paginator("list_multipart_uploads").paginate(
            Bucket=url.bucket, Prefix=base
        )
        for page in pages:
            for upload in page.get("Uploads", []):
                key = str(upload["Key"])
                if key[len(base) :] not in paths or upload["Initiated"].timestamp() >= before:
                    continue
                client.abort_multipart_upload(
                    Bucket=url.bucket, Key=key, UploadId=upload["UploadId"]
                )
                aborted += 1
    except Exception as exc:  # noqa: BLE001 - best effort: botocore's errors are many
        log.warning("could not look for incomplete uploads in %s: %s", url, type(exc).__name__)
        return -1
    return aborted


def add_metadata(url: StoreUrl, relative: str, size: int, metadata: Mapping[str, str]) -> bool:
    """Give the object at ``relative`` (``size`` bytes, just completed with some of
    ``metadata``) all of ``metadata``, by a server-side copy onto itself.

    Nothing is copied unless the object still has ``size`` bytes and carries no value
    ``metadata`` contradicts (someone else's object there is left alone), and the copy
    is conditional on its ETag. Returns whether the metadata is now there; a failure is
    logged, never raised (the ledger holds the values anyway).
    """
    started = time.monotonic()  # the whole step, HEAD included: the run waits for it
    try:
        client, base = _s3(url)
        if client is None:
            log.debug("boto3 is not installed: %s keeps the metadata it was created with", url)
            return False
        key = base + relative
        head = client.head_object(Bucket=url.bucket, Key=key)
        had = {str(k).lower(): str(v) for k, v in head.get("Metadata", {}).items()}
        wanted = merged_metadata(had, metadata)
        if int(head["ContentLength"]) != size or wanted is None:
            log.warning("%s/%s changed before its metadata was added: left as it is", url, relative)
            return False
        if wanted == had:
            return True
        extra = {name: head[name] for name in _KEPT if head.get(name)}
        extra |= {
            "Metadata": wanted,
            "MetadataDirective": "REPLACE",
            "CopySourceIfMatch": head["ETag"],
        }
        if s3_checksum(os.environ) == "sha256":
            # S3 computes the copy's checksum over the whole object: the sha256 the
            # metadata names, now S3's own too (the upload's was of its parts' sha256s).
            extra["ChecksumAlgorithm"] = "SHA256"
        source = {"Bucket": url.bucket, "Key": key}
        if size <= _COPY_MAX:
            client.copy_object(CopySource=source, Bucket=url.bucket, Key=key, **extra)
        else:
            from boto3.s3.transfer import TransferConfig

            config = TransferConfig(multipart_threshold=_COPY_MAX, multipart_chunksize=_COPY_PART)
            client.copy(source, url.bucket, key, ExtraArgs=extra, Config=config)
        took = time.monotonic() - started
        log.debug(
            "added the metadata of %s/%s by a HEAD and a copy onto itself in %.2fs",
            *(url, relative, took),
            extra={"fields": {"path": relative, "copy_seconds": round(took, 6)}},
        )
    except Exception as exc:  # noqa: BLE001 - best effort: botocore's errors are many
        log.warning(
            "could not add the metadata of %s/%s (it is in the ledger): %s",
            url,
            relative,
            type(exc).__name__,
        )
        return False
    return True
