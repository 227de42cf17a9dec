"""A bucket's obstore store as :func:`bulkfetch.sink.object_store.ObjectStore` builds it."""

from __future__ import annotations

import pytest
from obstore.store import MemoryStore, S3Store

from bulkfetch.sink.destination import StoreUrl
from bulkfetch.sink.object_store import (
    META_KEY,
    META_SHA256,
    ObjectStore,
    merged_metadata,
    s3_checksum,
)


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


@pytest.mark.parametrize(
    ("environ", "declared"),
    [
        ({}, "sha256"),
        ({"AWS_REQUEST_CHECKSUM_CALCULATION": "WHEN_SUPPORTED"}, "sha256"),
        ({"AWS_REQUEST_CHECKSUM_CALCULATION": "when_required"}, None),  # none declared
        ({"AWS_REQUEST_CHECKSUM_CALCULATION": " WHEN_REQUIRED "}, None),
        ({"AWS_CHECKSUM_ALGORITHM": "crc64nvme"}, None),  # object_store reads it itself
    ],
)
def test_s3_uploads_declare_a_sha256_unless_told_otherwise(
    environ: dict[str, str], declared: str | None
) -> None:
    assert s3_checksum(environ) == declared


def test_the_s3_store_is_built_with_the_checksum(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_CHECKSUM_ALGORITHM", "AWS_REQUEST_CHECKSUM_CALCULATION"):
        monkeypatch.delenv(name, raising=False)
    assert str(_s3_config().get("checksum_algorithm")).lower() == "sha256"
    monkeypatch.setenv("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required")
    assert "checksum_algorithm" not in _s3_config()


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


@pytest.mark.parametrize(
    ("had", "adding", "merged"),
    [
        ({"k": "1"}, {"k": "1", "sha": "a"}, {"k": "1", "sha": "a"}),
        ({"K": "1", "other": "x"}, {"k": "1", "sha": "a"}, {"k": "1", "other": "x", "sha": "a"}),
        ({}, {"k": "1"}, {"k": "1"}),
        ({"k": "2"}, {"k": "1", "sha": "a"}, None),  # another job's object: left alone
        ({"k": "1", "sha": "b"}, {"k": "1", "sha": "a"}, None),
    ],
)
def test_metadata_is_added_only_where_nothing_says_otherwise(
    had: dict[str, str], adding: dict[str, str], merged: dict[str, str] | None
) -> None:
    assert merged_metadata(had, adding) == merged
