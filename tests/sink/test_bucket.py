"""Object storage destinations (``--out s3://bucket/prefix``) through the real CLI.

Against a real S3 HTTP API on loopback: moto's server mode, started once per session on
a free port, and the simulator. The bucket is looked at with boto3, a client of its own,
so nothing here trusts bulkfetch's view of what it wrote.
"""

from __future__ import annotations

import hashlib
import os
import signal
import time
from pathlib import Path, PurePosixPath
from typing import Any, cast

import anyio
import obstore
import orjson
import pytest
from obstore.store import MemoryStore

from bulkfetch.client import Ready
from bulkfetch.errors import StorageError, TransientError, UsageError
from bulkfetch.simulator import SimulatorThread
from bulkfetch.sink.base import Written
from bulkfetch.sink.bucket import PART_SIZE, StoreSink
from bulkfetch.sink.destination import StoreUrl, default_ledger, display, store_url
from bulkfetch.sink.object_store import META_KEY, META_SHA256, ObjectStore, describe, store_error
from tests.conftest import FAST_FLAGS, bulkfetch_cli, make_jobs, run_cli, spawn_cli, write_jsonl
from tests.sink.conftest import (
    CREDENTIALS,
    bucket_ledger,
    done_records,
    free_port,
    list_objects,
    run_cut_midway,
    s3_client,
    s3_env,
    start_moto,
)
from tests.sink.test_local import JPEG, FakeReady

# -- pure pieces -------------------------------------------------------------------------------


def test_store_urls() -> None:
    assert store_url(Path("out/images")) is None
    assert store_url("C:/images") is None
    assert store_url("s3://bucket/a/b/") == StoreUrl("s3", "bucket", "a/b")
    # A Path keeps one slash of "//": the URL survives the options.
    assert store_url(Path("gs://bucket//a")) == StoreUrl("gs", "bucket", "a")
    assert store_url("az://container") == StoreUrl("az", "container", "")
    assert display(Path("s3://bucket/p")) == "s3://bucket/p"
    for bad in ("ftp://host/x", "s3://", "s3://b/a/../c", "http://host/x"):
        with pytest.raises(UsageError):
            store_url(bad)


def test_default_ledger_is_named_after_the_destination(tmp_path: Path) -> None:
    one = default_ledger(StoreUrl("s3", "bucket", "a/b"), tmp_path)
    assert one.parent == tmp_path / "ledgers"
    assert one.name.startswith("s3-bucket-a-b-") and one.suffix == ".json"
    assert one != default_ledger(StoreUrl("s3", "bucket", "a-b"), tmp_path)


def test_errors_say_the_code_never_the_body() -> None:
    url = StoreUrl("s3", "b", "p")
    text = (
        "Error performing PUT http://host/b/p/x?X-Amz-Signature=secret in 5ms - Server "
        "returned non-2xx status code: 403 Forbidden: <Error><Code>AccessDenied</Code></Error>"
    )
    error = store_error(url, RuntimeError(text), "uploading x")
    assert isinstance(error, StorageError)
    assert "AccessDenied" in str(error) and "secret" not in str(error)
    assert describe(RuntimeError(text)) == "AccessDenied, 403 Forbidden"
    assert isinstance(store_error(url, RuntimeError("connection reset"), "x"), TransientError)


def _memory_sink() -> tuple[StoreSink, MemoryStore]:
    memory = MemoryStore()
    return StoreSink(ObjectStore(StoreUrl("s3", "b", "p"), memory)), memory


def _put(sink: StoreSink, relative: str, expected: str, ready: FakeReady) -> Written:
    async def main() -> Written:
        return await sink.write(PurePosixPath(relative), expected, cast(Ready, ready), key="k1")

    return anyio.run(main)


def test_a_small_result_is_one_put_with_its_key_and_sha256() -> None:
    sink, memory = _memory_sink()
    written = _put(sink, "d/a.jpg", "jpeg", FakeReady(JPEG))
    got = obstore.get(memory, "d/a.jpg")
    assert bytes(got.bytes()) == JPEG
    sha = hashlib.sha256(JPEG).hexdigest()
    assert (written.path, written.size, written.sha256) == ("d/a.jpg", len(JPEG), sha)
    assert got.attributes[META_KEY] == "k1" and got.attributes[META_SHA256] == sha
    assert got.attributes["Content-Type"] == "image/jpeg"


def test_a_large_result_is_a_multipart_upload_with_its_key() -> None:
    sink, memory = _memory_sink()
    body = b"II*\x00" + os.urandom(2 * PART_SIZE + 12345)
    written = _put(sink, "big.tif", "tiff", FakeReady(body, chunk=1 << 20))
    got = obstore.get(memory, "big.tif")
    assert bytes(got.bytes()) == body
    assert written.sha256 == hashlib.sha256(body).hexdigest()
    assert got.attributes[META_KEY] == "k1" and META_SHA256 not in got.attributes


@pytest.mark.parametrize(
    ("body", "ready"),
    [
        ("big", {"content_length": 3 * PART_SIZE}),  # falls short after two parts
        ("big", {"fail_after": 12}),  # the connection drops mid-upload
        ("small", {"content_length": 10_000}),
        ("json", {}),
    ],
)
def test_a_bad_body_leaves_no_object(body: str, ready: dict[str, Any]) -> None:
    sink, memory = _memory_sink()
    data = {
        "big": b"II*\x00" + bytes(2 * PART_SIZE + 7),
        "small": JPEG,
        "json": b'{"status": "done"}',
    }[body]
    with pytest.raises(TransientError):
        _put(
            sink,
            "x.tif",
            "tiff" if body == "big" else "jpeg",
            FakeReady(data, chunk=1 << 20, **ready),
        )
    assert list(obstore.list(memory)) == []


# -- through the CLI -----------------------------------------------------------------------------


def test_run_into_a_bucket_then_resume_with_heads(
    sim: SimulatorThread, moto_url: str, bucket: str, tmp_path: Path
) -> None:
    manifest = write_jsonl(tmp_path / "m.jsonl", make_jobs(4))
    url = f"s3://{bucket}/runs/one"
    env = s3_env(moto_url, tmp_path)
    result = run_cli(sim, manifest, url, env=env)
    assert result.returncode == 0, result.stderr
    assert f"files in {url}" in result.stderr
    assert not (Path.cwd() / "s3:").exists()
    s3 = s3_client(moto_url)
    objects = list_objects(s3, bucket)
    assert len(objects) == 4 and all(k.startswith("runs/one/") for k in objects)
    done = done_records(bucket_ledger(tmp_path, url))
    assert len(done) == 4
    for record in done.values():
        obj = objects[f"runs/one/{record.path}"]
        sha = hashlib.sha256(obj["body"]).hexdigest()
        assert record.sha256 == sha and record.size == len(obj["body"])
        assert obj["meta"] == {META_KEY: record.key, META_SHA256: sha}
    assert "testing-secret" not in result.stderr + result.stdout

    again = run_cli(sim, manifest, url, env=env)
    assert again.returncode == 0, again.stderr
    assert "4 skip-done" in again.stderr
    assert sim.counters()["tasks_created"] == 4

    status = bulkfetch_cli("status", "--out", url, env=env)
    assert status.returncode == 0, status.stderr
    assert "done      4" in status.stdout

    s3.delete_object(Bucket=bucket, Key=f"runs/one/{next(iter(done.values())).path}")
    plan = bulkfetch_cli("plan", manifest, "--out", url, "--json", env=env)
    assert plan.returncode == 0, plan.stderr
    assert orjson.loads(plan.stdout)["actions"] == {
        "skip-done": 3,
        "fetch-again": 1,
    }  # the deleted object, from its live task


def test_a_deleted_or_replaced_object_is_fetched_again(
    sim: SimulatorThread, moto_url: str, bucket: str, tmp_path: Path
) -> None:
    manifest = write_jsonl(tmp_path / "m.jsonl", make_jobs(3))
    url = f"s3://{bucket}/p"
    env = s3_env(moto_url, tmp_path)
    assert run_cli(sim, manifest, url, env=env).returncode == 0
    s3 = s3_client(moto_url)
    keys = sorted(list_objects(s3, bucket))
    before = list_objects(s3, bucket)
    s3.delete_object(Bucket=bucket, Key=keys[0])
    # Same size, no job key: not ours any more (someone else's upload to that name).
    s3.put_object(Bucket=bucket, Key=keys[1], Body=before[keys[1]]["body"])
    result = run_cli(sim, manifest, url, env=env)
    assert result.returncode == 0, result.stderr
    # Their tasks are still alive on EOS: fetched from them again, nothing created.
    assert "2 poll, 1 skip-done" in result.stderr
    assert sim.counters()["tasks_created"] == 3
    after = list_objects(s3, bucket)
    assert sorted(after) == keys
    assert after[keys[0]]["body"] == before[keys[0]]["body"]
    assert after[keys[1]]["meta"][META_KEY] == before[keys[1]]["meta"][META_KEY]


def test_a_lost_ledger_creates_nothing_again(
    sim: SimulatorThread, moto_url: str, bucket: str, tmp_path: Path
) -> None:
    jobs = make_jobs(3)
    jobs[2]["format"] = "tiff"
    manifest = write_jsonl(tmp_path / "m.jsonl", jobs)
    url = f"s3://{bucket}/lost"
    env = s3_env(moto_url, tmp_path)
    # One result big enough for a multipart upload, created with its key only.
    sim.configure(big_result_bytes=9 << 20)
    assert run_cli(sim, manifest, url, env=env).returncode == 0
    ledger = bucket_ledger(tmp_path, url)
    first = {k: (r.path, r.size, r.sha256) for k, r in done_records(ledger).items()}
    s3 = s3_client(moto_url)
    objects = list_objects(s3, bucket)
    assert all(META_SHA256 in o["meta"] for o in objects.values())
    # As a run killed between completing that upload and adding its sha256 (or one
    # without boto3) leaves it: the lost ledger's run hashes it by reading it.
    big = next(k for k, o in objects.items() if len(o["body"]) > 9 << 20)
    s3.copy_object(
        CopySource={"Bucket": bucket, "Key": big},
        Bucket=bucket,
        Key=big,
        Metadata={META_KEY: objects[big]["meta"][META_KEY]},
        MetadataDirective="REPLACE",
    )
    for path in ledger.parent.iterdir():  # a pod without a volume: the state dir is gone
        path.unlink()
    plan = bulkfetch_cli("plan", manifest, "--out", url, "--json", env=env)
    assert plan.returncode == 0, plan.stderr
    assert orjson.loads(plan.stdout)["actions"] == {"skip-done": 3}
    assert not ledger.exists()  # (a plan writes nothing)
    result = run_cli(sim, manifest, url, env=env)
    assert result.returncode == 0, result.stderr
    assert "3 results already at the destination" in result.stderr
    assert sim.counters()["tasks_created"] == 3
    assert {k: (r.path, r.size, r.sha256) for k, r in done_records(ledger).items()} == first


def test_an_upload_failing_midway_is_aborted_and_leaves_nothing(
    sim: SimulatorThread, moto_url: str, bucket: str, tmp_path: Path
) -> None:
    url = f"s3://{bucket}/mid"
    env = s3_env(moto_url, tmp_path)
    run_cut_midway(sim, url, env, tmp_path)
    manifest = tmp_path / "m.jsonl"
    s3 = s3_client(moto_url)
    assert list_objects(s3, bucket) == {}
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    sim.configure(truncate_rate=0.0)
    result = run_cli(sim, manifest, url, "--retry-failed", env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    (record,) = done_records(bucket_ledger(tmp_path, url)).values()
    (obj,) = list_objects(s3, bucket).values()
    assert len(obj["body"]) == record.size > 16 << 20
    assert hashlib.sha256(obj["body"]).hexdigest() == record.sha256
    assert obj["meta"] == {META_KEY: record.key, META_SHA256: record.sha256}


def test_a_missing_bucket_is_exit_4_before_any_creation(
    sim: SimulatorThread, moto_url: str, tmp_path: Path
) -> None:
    manifest = write_jsonl(tmp_path / "m.jsonl", make_jobs(2))
    result = run_cli(sim, manifest, "s3://no-such-bucket-here/p", env=s3_env(moto_url, tmp_path))
    assert result.returncode == 4, result.stderr
    assert "s3://no-such-bucket-here/p: the bucket does not exist" in result.stderr
    assert "Traceback" not in result.stderr
    assert sim.counters()["create_calls"] == 0


def test_refused_credentials_are_exit_4_before_any_creation(
    sim: SimulatorThread, tmp_path: Path
) -> None:
    # A second S3 server that checks credentials: it knows no access key at all.
    proc, url = start_moto({"INITIAL_NO_AUTH_ACTION_COUNT": "0"})
    try:
        manifest = write_jsonl(tmp_path / "m.jsonl", make_jobs(2))
        result = run_cli(sim, manifest, "s3://some-bucket/p", env=s3_env(url, tmp_path))
    finally:
        proc.terminate()
        proc.wait(10)
    assert result.returncode == 4, result.stderr
    assert "credentials were refused" in result.stderr and "InvalidAccessKeyId" in result.stderr
    assert "testing-secret" not in result.stderr
    assert sim.counters()["create_calls"] == 0


def test_other_schemes_are_usage_errors(sim: SimulatorThread, tmp_path: Path) -> None:
    manifest = write_jsonl(tmp_path / "m.jsonl", make_jobs(1))
    result = run_cli(sim, manifest, "ftp://host/x", env={"XDG_STATE_HOME": str(tmp_path)})
    assert result.returncode == 2, result.stderr
    assert "ftp:// is not a destination" in result.stderr
    assert sim.counters()["create_calls"] == 0


def test_report_and_stac_read_the_bucket(
    sim: SimulatorThread, moto_url: str, bucket: str, tmp_path: Path
) -> None:
    jobs = make_jobs(3)
    jobs[2] |= {"format": "tiff", "georeference": "tiff"}  # a GeoTIFF: its bands are read
    manifest = write_jsonl(tmp_path / "m.jsonl", jobs)
    url = f"s3://{bucket}/cat"
    env = s3_env(moto_url, tmp_path)
    assert run_cli(sim, manifest, url, "--stac", env=env).returncode == 0
    s3 = s3_client(moto_url)
    objects = list_objects(s3, bucket)
    catalog = orjson.loads(objects["cat/catalog.json"]["body"])
    assert catalog["type"] == "Catalog"
    items = [k for k in objects if "/items/" in k]
    assert len(items) == 3
    for key in items:
        item = orjson.loads(objects[key]["body"])
        href = item["assets"]["visual"]["href"]
        assert href.startswith("../../../")
        data = objects["cat/" + href.removeprefix("../../../")]["body"]
        checksum = item["assets"]["visual"]["file:checksum"]
        assert checksum == "1220" + hashlib.sha256(data).hexdigest()
        bands = item["assets"]["visual"].get("raster:bands")
        geotiff = item["properties"]["eos:view_id"] == jobs[2]["view_id"]
        assert bands == ([{"data_type": "uint8"}] * 3 if geotiff else None)

    again = bulkfetch_cli("stac", "--out", url, env=env)
    assert again.returncode == 0, again.stderr
    assert f"{url}/catalog.json: 3 items" in again.stdout and "0 files written" in again.stdout

    page = tmp_path / "report.html"
    report = bulkfetch_cli("report", "--out", url, "-o", page, env=env)
    assert report.returncode == 0, report.stderr
    assert "3 thumbnails" in report.stdout and "unreadable" not in report.stdout
    assert page.read_text().count("data:image/jpeg;base64,") == 3


def _signal_mid_upload(
    sim: SimulatorThread, manifest: Path, url: str, env: dict[str, str], sig: int
) -> tuple[int, str]:
    """Run into ``url`` and send ``sig`` once its multipart upload has started; the exit
    code and stderr. 24 MiB in 1 MiB pieces a quarter second apart: the upload starts
    after 8 MiB, and the body is still coming when the signal arrives."""
    sim.configure(big_result_bytes=24 << 20, chunk_size=1 << 20, slow_body_seconds=0.25)
    proc = spawn_cli(
        "run", manifest, "--out", url, "--api-url", sim.api_url, *FAST_FLAGS, env=env
    )  # fmt: skip
    parsed = store_url(url)
    assert parsed is not None
    s3 = s3_client(env["AWS_ENDPOINT_URL"])
    try:
        deadline = time.monotonic() + 60
        while not s3.list_multipart_uploads(Bucket=parsed.bucket).get("Uploads"):
            assert proc.poll() is None and time.monotonic() < deadline, "no upload started"
            time.sleep(0.05)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
    return proc.returncode, err


def test_sigterm_mid_upload_aborts_it(
    sim: SimulatorThread, moto_url: str, bucket: str, tmp_path: Path
) -> None:
    manifest = write_jsonl(tmp_path / "m.jsonl", make_jobs(1, formats=("tiff",)))
    url = f"s3://{bucket}/term"
    code, err = _signal_mid_upload(sim, manifest, url, s3_env(moto_url, tmp_path), signal.SIGTERM)
    assert code == 143, err
    s3 = s3_client(moto_url)
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert list_objects(s3, bucket) == {}


def test_a_config_file_names_the_bucket(
    sim: SimulatorThread, moto_url: str, bucket: str, tmp_path: Path
) -> None:
    manifest = write_jsonl(tmp_path / "m.jsonl", make_jobs(1))
    (tmp_path / "bulkfetch.toml").write_text(f'out = "s3://{bucket}/from-config"\n')
    result = bulkfetch_cli(
        "run", manifest, "--api-url", sim.api_url, *FAST_FLAGS, env=s3_env(moto_url, tmp_path)
    )
    assert result.returncode == 0, result.stderr
    assert [k.split("/")[0] for k in list_objects(s3_client(moto_url), bucket)] == ["from-config"]
    assert not (tmp_path / "s3:").exists()


def test_an_upload_a_killed_run_left_is_aborted_by_the_next(
    sim: SimulatorThread, moto_url: str, bucket: str, tmp_path: Path
) -> None:
    manifest = write_jsonl(tmp_path / "m.jsonl", make_jobs(1, formats=("tiff",)))
    url = f"s3://{bucket}/killed"
    env = s3_env(moto_url, tmp_path)
    # SIGKILL: no handler runs, the upload stays open.
    _signal_mid_upload(sim, manifest, url, env, signal.SIGKILL)
    s3 = s3_client(moto_url)
    assert len(s3.list_multipart_uploads(Bucket=bucket)["Uploads"]) == 1
    sim.configure(slow_body_seconds=0.0)
    result = run_cli(sim, manifest, url, "-v", env=env)  # (boto3 and obstore at work)
    assert result.returncode == 0, result.stderr
    assert "aborted 1 incomplete upload(s) left by an earlier run" in result.stderr
    for secret in CREDENTIALS["AWS_ACCESS_KEY_ID"], CREDENTIALS["AWS_SECRET_ACCESS_KEY"]:
        assert secret not in result.stderr + result.stdout
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    (obj,) = list_objects(s3, bucket).values()
    assert len(obj["body"]) > 20 << 20


def test_an_endpoint_nobody_answers_is_exit_4_before_any_creation(
    sim: SimulatorThread, tmp_path: Path
) -> None:
    manifest = write_jsonl(tmp_path / "m.jsonl", make_jobs(1))
    env = s3_env(f"http://127.0.0.1:{free_port()}", tmp_path)
    result = run_cli(sim, manifest, "s3://bucket/p", env=env)
    assert result.returncode == 4, result.stderr
    assert "cannot use s3://bucket/p: " in result.stderr
    assert "(ConnectionRefused)" in result.stderr and "Traceback" not in result.stderr
    assert sim.counters()["create_calls"] == 0
