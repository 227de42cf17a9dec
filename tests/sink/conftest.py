"""Shared by the object storage tests: moto's S3 server (a real S3 HTTP API) on loopback,
started once per session on a free port, and boto3 to look at what was written (a client
of its own, so nothing trusts bulkfetch's view of its bucket)."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from bulkfetch.ledger import JobState, Ledger
from bulkfetch.simulator import SimulatorThread
from bulkfetch.sink.destination import default_ledger, store_url
from tests.conftest import make_jobs, run_cli, write_jsonl

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "AKIABFTESTKEYID00001",
    "AWS_SECRET_ACCESS_KEY": "testing-secret",
    "AWS_REGION": "us-east-1",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_moto(extra_env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()} | (extra_env or {})
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    proc.kill()
    pytest.fail("moto's S3 server did not start")


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    proc, url = start_moto()
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def s3_client(endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=endpoint, **boto_credentials())


def boto_credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        "region_name": CREDENTIALS["AWS_REGION"],
    }


@pytest.fixture
def bucket(moto_url: str, request: pytest.FixtureRequest) -> str:
    name = "bf-" + hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:20]
    s3_client(moto_url).create_bucket(Bucket=name)
    return name


def s3_env(moto_url: str, tmp_path: Path) -> dict[str, str]:
    return CREDENTIALS | {
        "AWS_ENDPOINT_URL": moto_url,
        "XDG_STATE_HOME": str(tmp_path / "state"),
    }


def list_objects(s3: Any, bucket: str, prefix: str = "") -> dict[str, dict[str, Any]]:
    """Every object under ``prefix``: its bytes and metadata, read with boto3."""
    found: dict[str, dict[str, Any]] = {}
    for item in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []):
        got = s3.get_object(Bucket=bucket, Key=item["Key"])
        found[item["Key"]] = {"body": got["Body"].read(), "meta": got["Metadata"]}
    return found


def bucket_ledger(tmp_path: Path, url: str) -> Path:
    parsed = store_url(url)
    assert parsed is not None
    return default_ledger(parsed, tmp_path / "state" / "bulkfetch")


def done_records(ledger: Path) -> dict[str, Any]:
    with Ledger.open(ledger, readonly=True) as book:
        return {k: r for k, r in book.records().items() if r.state is JobState.DONE}


def run_cut_midway(sim: SimulatorThread, url: str, env: dict[str, str], tmp_path: Path) -> str:
    """One tiff job into ``url`` whose 20 MiB body is cut at half (two parts uploaded
    before it falls short), with no second creation: the run's stderr, once it has
    failed as it must."""
    manifest = write_jsonl(tmp_path / "m.jsonl", make_jobs(1, formats=("tiff",)))
    sim.configure(big_result_bytes=20 << 20, truncate_rate=1.0)
    result = run_cli(sim, manifest, url, "--max-creates-per-job", "1", env=env, timeout=120)
    assert result.returncode == 1, result.stderr
    assert "content length" in result.stderr  # the body fell short of its Content-Length
    return result.stderr
