"""``--out az://container/prefix`` through the real CLI, against Azurite (the Azure Storage
emulator, npm's ``azurite``) on a free loopback port, started once per session. What was
written is read back with Azure's own SDK (``azure-storage-blob``), a client of its own.

Not installed: skipped, except under CI, where that fails (.ci/run installs it).
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from azure.storage.blob import BlobServiceClient, ContentSettings

from bulkfetch.simulator import SimulatorThread
from bulkfetch.sink._az_metadata import add_metadata
from bulkfetch.sink.bucket import PART_SIZE
from bulkfetch.sink.destination import StoreUrl
from bulkfetch.sink.object_store import ObjectStore
from tests.conftest import bulkfetch_cli, make_jobs, run_cli, write_jsonl
from tests.sink.conftest import bucket_ledger, done_records, free_port, run_cut_midway

#: Azurite's one account and its published key (the emulator's, not a secret).
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


@pytest.fixture(scope="session")
def azurite_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    program = shutil.which("azurite-blob")
    if program is None:
        if os.environ.get("CI"):
            pytest.fail("azurite-blob is not installed, and CI must run the Azure tests")
        pytest.skip("Azurite is not installed (npm install -g azurite)")
    port = free_port()
    proc = subprocess.Popen(
        [
            *(program, "--blobHost", "127.0.0.1", "--blobPort", str(port)),
            *("--inMemoryPersistence", "--silent", "--disableTelemetry"),
            # Azure's SDK may speak an API version newer than this Azurite knows.
            "--skipApiVersionCheck",
        ],
        cwd=tmp_path_factory.mktemp("azurite"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while not _answers(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"Azurite did not start (exit {proc.poll()})")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def _service(url: str, key: str = ACCOUNT_KEY) -> BlobServiceClient:
    return BlobServiceClient.from_connection_string(
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={key};"
        f"BlobEndpoint={url}/{ACCOUNT};"
    )


@pytest.fixture
def container(azurite_url: str, request: pytest.FixtureRequest) -> str:
    name = "bf-" + hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:20]
    _service(azurite_url).create_container(name)
    return name


def _env(azurite_url: str, tmp_path: Path, key: str = ACCOUNT_KEY) -> dict[str, str]:
    """How Azure's own tools name an account and its key, and the emulator."""
    return {
        "AZURE_STORAGE_ACCOUNT_NAME": ACCOUNT,
        "AZURE_STORAGE_ACCOUNT_KEY": key,
        "AZURE_STORAGE_USE_EMULATOR": "true",
        "AZURITE_BLOB_STORAGE_URL": azurite_url,
        "XDG_STATE_HOME": str(tmp_path / "state"),
    }


def _blobs(azurite_url: str, container: str) -> dict[str, dict[str, Any]]:
    """Every committed blob: its bytes, metadata and content type."""
    client = _service(azurite_url).get_container_client(container)
    found: dict[str, dict[str, Any]] = {}
    for blob in client.list_blobs(include=["metadata"]):
        body = client.download_blob(blob.name).readall()
        found[blob.name] = {
            "body": body,
            "meta": dict(blob.metadata or {}),
            "type": blob.content_settings.content_type,
        }
    return found


def _jobs(tmp_path: Path) -> Path:
    jobs = make_jobs(3)
    jobs[2]["format"] = "tiff"
    return write_jsonl(tmp_path / "m.jsonl", jobs)


def test_run_into_a_container_then_resume_with_heads(
    sim: SimulatorThread, azurite_url: str, container: str, tmp_path: Path
) -> None:
    manifest = _jobs(tmp_path)
    url = f"az://{container}/runs/one"
    env = _env(azurite_url, tmp_path)
    sim.configure(big_result_bytes=PART_SIZE + (3 << 20))  # the tiff: a block list of two
    result = run_cli(sim, manifest, url, env=env)
    assert result.returncode == 0, result.stderr
    assert ACCOUNT_KEY not in result.stderr + result.stdout
    blobs = _blobs(azurite_url, container)
    done = done_records(bucket_ledger(tmp_path, url))
    assert len(blobs) == len(done) == 3
    assert any(r.size > PART_SIZE for r in done.values())
    for record in done.values():
        blob = blobs[f"runs/one/{record.path}"]
        assert len(blob["body"]) == record.size
        assert hashlib.sha256(blob["body"]).hexdigest() == record.sha256
        # Azure's metadata names are C# identifiers: an underscore for the hyphen. A
        # block list's sha256, known only once committed, is added by Set Blob Metadata.
        assert blob["meta"] == {"bulkfetch_key": record.key, "bulkfetch_sha256": record.sha256}
        assert blob["type"].startswith("image/")
    assert "could not add the metadata" not in result.stderr

    again = run_cli(sim, manifest, url, env=env)
    assert again.returncode == 0, again.stderr
    assert "3 skip-done" in again.stderr
    assert sim.counters()["tasks_created"] == 3

    # A deleted blob is fetched again from its live task; a lost ledger creates nothing.
    gone = next(iter(done.values())).path
    _service(azurite_url).get_container_client(container).delete_blob(f"runs/one/{gone}")
    ledger = bucket_ledger(tmp_path, url)
    ledger.unlink()
    plan = bulkfetch_cli("plan", manifest, "--out", url, "--json", env=env)
    assert plan.returncode == 0, plan.stderr
    assert orjson.loads(plan.stdout)["actions"] == {"skip-done": 2, "create": 1}
    result = run_cli(sim, manifest, url, env=env)
    assert result.returncode == 0, result.stderr
    assert "2 results already at the destination" in result.stderr
    assert sim.counters()["tasks_created"] == 4
    after = done_records(ledger)
    assert {k: r.sha256 for k, r in after.items()} == {k: r.sha256 for k, r in done.items()}
    assert sorted(_blobs(azurite_url, container)) == sorted(blobs)


def test_an_upload_failing_midway_leaves_no_blob(
    sim: SimulatorThread, azurite_url: str, container: str, tmp_path: Path
) -> None:
    stderr = run_cut_midway(sim, f"az://{container}/mid", _env(azurite_url, tmp_path), tmp_path)
    assert "could not abort" not in stderr
    assert _blobs(azurite_url, container) == {}


def test_a_missing_container_or_a_wrong_key_is_exit_4_before_any_creation(
    sim: SimulatorThread, azurite_url: str, container: str, tmp_path: Path
) -> None:
    manifest = write_jsonl(tmp_path / "m.jsonl", make_jobs(2))
    missing = run_cli(sim, manifest, "az://no-such-container/p", env=_env(azurite_url, tmp_path))
    assert missing.returncode == 4, missing.stderr
    assert "az://no-such-container/p: the bucket does not exist" in missing.stderr
    wrong = base64.b64encode(bytes(range(64))).decode()  # well formed, not the account's
    refused = run_cli(sim, manifest, f"az://{container}/p", env=_env(azurite_url, tmp_path, wrong))
    assert refused.returncode == 4, refused.stderr
    assert "credentials were refused" in refused.stderr
    assert wrong not in refused.stderr
    for result in missing, refused:
        assert "Traceback" not in result.stderr
    assert sim.counters()["create_calls"] == 0
    assert _blobs(azurite_url, container) == {}


@pytest.fixture
def azure_environ(azurite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in _env(azurite_url, tmp_path).items():
        monkeypatch.setenv(name, value)


@pytest.mark.usefixtures("azure_environ")
def test_metadata_is_added_to_our_blob_only(azurite_url: str, container: str) -> None:
    store = ObjectStore(StoreUrl("az", container, "p"))
    client = _service(azurite_url).get_container_client(container)
    body = os.urandom(1000)
    tiff = ContentSettings(content_type="image/tiff")
    for name, key in (("ours", "k1"), ("theirs", "k2")):
        client.upload_blob(
            f"p/{name}.tif", body, metadata={"bulkfetch_key": key}, content_settings=tiff
        )
    sha = {"bulkfetch_key": "k1", "bulkfetch_sha256": hashlib.sha256(body).hexdigest()}
    assert not add_metadata(store, "ours.tif", len(body) + 1, sha)  # another size
    assert not add_metadata(store, "theirs.tif", len(body), sha)  # another job's key
    assert not add_metadata(store, "missing.tif", len(body), sha)
    assert add_metadata(store, "ours.tif", len(body), sha)
    blobs = _blobs(azurite_url, container)
    assert blobs["p/ours.tif"] == {"body": body, "meta": sha, "type": "image/tiff"}
    assert blobs["p/theirs.tif"]["meta"] == {"bulkfetch_key": "k2"}
    assert sorted(blobs) == ["p/ours.tif", "p/theirs.tif"]
