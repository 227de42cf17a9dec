"""What S3 needs beyond obstore, through boto3 (:mod:`bulkfetch.sink._s3_uploads`), against
moto's S3 server: the sha256 of a multipart upload's object, added to its metadata once
the upload is complete."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

import pytest

from bulkfetch.simulator import SimulatorThread
from bulkfetch.sink import _s3_uploads
from bulkfetch.sink._s3_uploads import add_metadata
from bulkfetch.sink.bucket import PART_SIZE
from bulkfetch.sink.destination import StoreUrl
from bulkfetch.sink.object_store import META_KEY, META_SHA256
from tests.conftest import make_jobs, run_cli, write_jsonl
from tests.sink.conftest import (
    CREDENTIALS,
    bucket_ledger,
    done_records,
    list_objects,
    s3_client,
    s3_env,
)


def test_a_multipart_result_carries_its_key_and_sha256(
    sim: SimulatorThread, moto_url: str, bucket: str, tmp_path: Path
) -> None:
    manifest = write_jsonl(tmp_path / "m.jsonl", make_jobs(1, formats=("tiff",)))
    url = f"s3://{bucket}/big"
    env = s3_env(moto_url, tmp_path)
    sim.configure(big_result_bytes=PART_SIZE + (3 << 20))  # two parts
    result = run_cli(sim, manifest, url, env=env)
    assert result.returncode == 0, result.stderr
    (record,) = done_records(bucket_ledger(tmp_path, url)).values()
    s3 = s3_client(moto_url)
    ((key, obj),) = list_objects(s3, bucket).items()
    assert len(obj["body"]) == record.size > PART_SIZE
    assert hashlib.sha256(obj["body"]).hexdigest() == record.sha256
    assert obj["meta"] == {META_KEY: record.key, META_SHA256: record.sha256}
    head = s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    assert head["ContentType"] == "image/tiff"  # kept through the copy
    # The copy had S3 checksum the whole object: S3's own checksum of it is the sha256
    # the ledger and the metadata hold.
    assert base64.b64decode(head["ChecksumSHA256"]).hex() == record.sha256
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert "could not add the metadata" not in result.stderr


@pytest.fixture
def s3_environ(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in (CREDENTIALS | {"AWS_ENDPOINT_URL": moto_url}).items():
        monkeypatch.setenv(name, value)


@pytest.mark.usefixtures("s3_environ")
def test_someone_elses_object_is_left_alone(moto_url: str, bucket: str) -> None:
    s3 = s3_client(moto_url)
    url = StoreUrl("s3", bucket, "p")
    body = os.urandom(1000)
    s3.put_object(Bucket=bucket, Key="p/a.tif", Body=body, Metadata={META_KEY: "theirs"})
    sha = {META_KEY: "ours", META_SHA256: "0" * 64}
    assert not add_metadata(url, "a.tif", len(body), sha)  # another job's key
    s3.put_object(Bucket=bucket, Key="p/b.tif", Body=body, Metadata={META_KEY: "ours"})
    assert not add_metadata(url, "b.tif", len(body) + 1, sha)  # another size
    assert not add_metadata(url, "missing.tif", len(body), sha)
    found = list_objects(s3, bucket)
    assert found["p/a.tif"]["meta"] == {META_KEY: "theirs"}
    assert found["p/b.tif"]["meta"] == {META_KEY: "ours"}
    assert sorted(found) == ["p/a.tif", "p/b.tif"]


@pytest.mark.usefixtures("s3_environ")
def test_an_object_over_the_single_copy_limit_is_copied_in_parts(
    moto_url: str, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # S3's limit is 5 GiB: here 5 MiB, so a 12 MiB object takes three part copies.
    monkeypatch.setattr(_s3_uploads, "_COPY_MAX", 5 << 20)
    monkeypatch.setattr(_s3_uploads, "_COPY_PART", 5 << 20)
    s3 = s3_client(moto_url)
    body = os.urandom(12 << 20)
    s3.put_object(
        Bucket=bucket, Key="big.tif", Body=body, ContentType="image/tiff", Metadata={META_KEY: "k"}
    )
    sha = hashlib.sha256(body).hexdigest()
    assert add_metadata(
        StoreUrl("s3", bucket), "big.tif", len(body), {META_KEY: "k", META_SHA256: sha}
    )
    (obj,) = list_objects(s3, bucket).values()
    assert obj["body"] == body and obj["meta"] == {META_KEY: "k", META_SHA256: sha}
    head = s3.head_object(Bucket=bucket, Key="big.tif")
    assert head["ContentType"] == "image/tiff" and head["ETag"].endswith('-3"')
