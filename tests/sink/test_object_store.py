"""A bucket's obstore store as :func:`bulkfetch.sink.object_store.ObjectStore` builds it."""

from __future__ import annotations

import pytest
from obstore.store import MemoryStore, S3Store

from bulkfetch.sink.destination import StoreUrl
from bulkfetch.sink.object_store import META_KEY, META_SHA256, ObjectStore


@pytest.mark.parametrize(
    ("endpoint", "unsigned"),
    [(None, True), ("https://minio.example:9000", True), ("http://127.0.0.1:9000", False)],
)
def test_parts_are_signed_without_their_sha256_only_over_tls(
    endpoint: str | None, unsigned: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_UNSIGNED_PAYLOAD"):
        monkeypatch.delenv(name, raising=False)
    if endpoint:
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    config = _s3_config()
    assert (config.get("unsigned_payload") in (True, "true")) is unsigned
    monkeypatch.setenv("AWS_UNSIGNED_PAYLOAD", "false")  # the user's word wins
    assert "unsigned_payload" not in _s3_config()


def _s3_config() -> dict[str, object]:
    store = ObjectStore(StoreUrl("s3", "bkt", "p")).store
    assert isinstance(store, S3Store)
    return dict(store.config)


def test_metadata_names_are_identifiers_on_azure_only() -> None:
    s3 = ObjectStore(StoreUrl("s3", "bkt"), store=MemoryStore())
    az = ObjectStore(StoreUrl("az", "cont"), store=MemoryStore())
    assert (s3.meta_name(META_KEY), s3.meta_name(META_SHA256)) == (META_KEY, META_SHA256)
    assert (az.meta_name(META_KEY), az.meta_name(META_SHA256)) == (
        "bulkfetch_key",
        "bulkfetch_sha256",
    )
