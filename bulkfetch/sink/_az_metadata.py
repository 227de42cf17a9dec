"""What Azure needs that obstore cannot do: metadata known only at the end of a block list.

obstore sends an upload's metadata with its Put Block List (its completion), but takes it
when the upload is opened, before the sha256 of the result is known. Azure's Set Blob
Metadata replaces a blob's metadata without touching its bytes or properties: no copy.
obstore has no call for it, but it signs URLs with the store's own credential (a service
SAS from an account key, a user delegation SAS from an Entra ID token), and one request
at such a URL, with ``comp=metadata``, is that call. Nothing is added to bulkfetch's
dependencies, and no credential is handled here: only the URL obstore signed, which is
never logged (it carries a signature).

Best effort, as S3's copy (:mod:`bulkfetch.sink._s3_uploads`): a credential that cannot
sign (a SAS token given as the credential), a refusal or a failure is logged and the
run goes on; the ledger has the sha256 anyway.
"""

from __future__ import annotations

import http.client
import logging
import time
import urllib.parse
from collections.abc import Mapping
from datetime import timedelta

import obstore
from obstore.store import AzureStore

from bulkfetch.sink.object_store import ObjectStore, merged_metadata

__all__ = ["add_metadata"]

log = logging.getLogger(__name__)

#: How long the signed URL is good for: one request, sent at once.
_VALID_FOR = timedelta(minutes=5)
#: An object's attributes that are properties, not metadata (obstore's names).
_PROPERTIES = frozenset(
    {"content-type", "content-encoding", "content-disposition", "content-language"}
    | {"cache-control", "storage-class"}
)
_TIMEOUT = 60.0


def add_metadata(store: ObjectStore, relative: str, size: int, metadata: Mapping[str, str]) -> bool:
    """Give the blob at ``relative`` (``size`` bytes, just committed with some of
    ``metadata``, under the names :meth:`ObjectStore.meta_name` gives) all of ``metadata``.

    Nothing is written unless the blob still has ``size`` bytes and carries no value
    ``metadata`` contradicts (someone else's blob there is left alone), and the write is
    conditional on its ETag. Returns whether the metadata is now there; a failure is
    logged, never raised.
    """
    started = time.monotonic()
    where = store.where(relative)
    if not isinstance(store.store, AzureStore):
        return False
    try:
        head = obstore.get(store.store, relative, options={"head": True})
        had = {
            str(k).lower(): str(v)
            for k, v in head.attributes.items()
            if str(k).lower() not in _PROPERTIES
        }
        wanted = merged_metadata(had, metadata)
        if int(head.meta["size"]) != size or wanted is None:
            log.warning("%s changed before its metadata was added: left as it is", where)
            return False
        if wanted == had:
            return True
        signed = obstore.sign(store.store, "PUT", relative, _VALID_FOR)
        status, code = _set_metadata(signed, wanted, str(head.meta["e_tag"] or ""))
    except Exception as exc:  # noqa: BLE001 - best effort: obstore's errors are many
        log.warning(
            "could not add the metadata of %s (it is in the ledger): %s", where, type(exc).__name__
        )
        return False
    if status != 200:
        log.warning(
            "could not add the metadata of %s (it is in the ledger): %s %s", where, status, code
        )
        return False
    took = time.monotonic() - started
    log.debug(
        "added the metadata of %s by a HEAD and a Set Blob Metadata in %.2fs",
        *(where, took),
        extra={"fields": {"path": relative, "metadata_seconds": round(took, 6)}},
    )
    return True


def _set_metadata(signed: str, metadata: Mapping[str, str], etag: str) -> tuple[int, str]:
    """Set Blob Metadata at ``signed`` (a URL obstore signed for a PUT): the answer's
    status and Azure's error code. http.client, not urllib: urllib title-cases header
    names, and Azure keeps a metadata name as it is sent."""
    url = urllib.parse.urlsplit(signed)
    query = urllib.parse.parse_qs(url.query)
    headers = {f"x-ms-meta-{name}": value for name, value in metadata.items()}
    headers["Content-Length"] = "0"
    if query.get("sv"):
        headers["x-ms-version"] = query["sv"][0]  # the version the SAS was signed for
    if etag:
        headers["If-Match"] = etag
    kind = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
    connection = kind(url.netloc, timeout=_TIMEOUT)
    try:
        connection.request("PUT", f"{url.path}?{url.query}&comp=metadata", b"", headers)
        answer = connection.getresponse()
        answer.read()
        return answer.status, answer.getheader("x-ms-error-code") or answer.reason
    finally:
        connection.close()
