"""Incomplete S3 multipart uploads a killed run left, aborted by the next run.

A run aborts its own failed or interrupted uploads; only a process killed outright
(``kill -9``, a lost node) leaves one behind, invisible as an object but billed as
storage. ``object_store`` (obstore) has no call that lists them, so this asks S3 through
boto3 when it is installed (``pip install bulkfetch[s3]``), with the same credential
chain the AWS CLI uses. Without boto3, a bucket lifecycle rule
(``AbortIncompleteMultipartUpload``) does the same; the README says so.

Only uploads begun before this run started, to the key of one of this run's jobs, are
aborted: never another tool's upload, nor one a run on another ledger has under way now.
Best effort: a failure to list or abort is logged and the run goes on.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection

from bulkfetch.sink.destination import StoreUrl

__all__ = ["abort_leftover_uploads"]

log = logging.getLogger(__name__)


def abort_leftover_uploads(url: StoreUrl, paths: Collection[str], before: float) -> int:
    """Abort ``url``'s incomplete multipart uploads to ``paths`` (relative to the prefix)
    begun before ``before`` (unix time). Returns how many; -1 if S3 could not be asked."""
    try:
        import boto3
    except ImportError:
        log.debug("boto3 is not installed: incomplete multipart uploads are not looked for")
        return -1
    # botocore's debug log shows each request's headers (the access key id, signatures):
    # never, even with --verbose.
    for name in ("boto3", "botocore", "s3transfer", "urllib3"):
        logging.getLogger(name).setLevel(logging.WARNING)
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    base = f"{url.prefix}/" if url.prefix else ""
    aborted = 0
    try:
        client = boto3.client("s3", endpoint_url=endpoint or None)
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
