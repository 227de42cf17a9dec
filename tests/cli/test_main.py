"""The command's other faces: the demo, the simulator command, help, and the public API."""

from __future__ import annotations

import pkgutil
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import orjson

import bulkfetch
from bulkfetch.cli.demo import demo_fields, demo_manifest
from tests.conftest import bulkfetch_cli

ROOT = Path(__file__).resolve().parents[2]


def test_packaged_demo_manifest_is_the_one_in_manifests() -> None:
    assert demo_manifest().read_bytes() == (ROOT / "manifests" / "demo.jsonl").read_bytes()
    assert len(bulkfetch.load_manifest(demo_manifest()).jobs) == 40


def test_packaged_demo_fields_are_the_ones_in_manifests() -> None:
    assert demo_fields().read_bytes() == (ROOT / "manifests" / "fields.geojson").read_bytes()
    assert len(bulkfetch.load_fields(demo_fields())) == 6


def test_demo_from_fields_searches_then_downloads_then_asks_nothing(tmp_path: Path) -> None:
    # Its own folder by default, not the plain demo's (one ledger per manifest).
    out = tmp_path / "demo-fields-output"
    first = bulkfetch_cli("demo", "--from-fields", timeout=120, cwd=tmp_path)
    assert not (tmp_path / "demo-output").exists()
    assert first.returncode == 0, first.stderr
    found = re.search(r"(\d+) search requests .* (\d+) kept -> (\d+) jobs", first.stderr)
    assert found, first.stderr
    requests, kept, jobs = map(int, found.groups())
    assert requests == 6 and kept == jobs > 0
    assert f"all {jobs} jobs done: {jobs} downloaded" in first.stderr
    manifest = bulkfetch.load_manifest(out / "manifest.jsonl")
    for job in manifest.jobs:
        assert (out / job.relative_path()).is_file()
    second = bulkfetch_cli("demo", "--from-fields", "--out", out, timeout=120)
    assert second.returncode == 0, second.stderr
    assert "0 search requests (6 of 6 fields answered by the cache)" in second.stderr
    assert f"0 downloaded, {jobs} already there" in second.stderr


def test_demo_downloads_everything_then_sends_nothing(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    first = bulkfetch_cli("demo", "--out", out, timeout=120)
    assert first.returncode == 0, first.stderr
    assert "all 40 jobs done" in first.stderr
    report = orjson.loads((out / "report.json").read_bytes())
    assert report["states"]["done"] == 40
    assert {Path(row["path"]).suffix for row in report["job_list"]} == {
        ".jpg",
        ".png",
        ".tif",
        ".zip",
        ".kmz",
    }
    second = bulkfetch_cli("demo", "--out", out, timeout=120)
    assert second.returncode == 0, second.stderr
    assert "0 downloaded, 40 already there" in second.stderr
    assert "0 creations, 0 status calls" in second.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_simulate_command_serves_the_api(tmp_path: Path) -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bulkfetch",
            "simulate",
            "--port",
            str(port),
            "--create-rate",
            "50/s",
            "--status-rate",
            "50/s",
            "--processing-median",
            "0.05",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 15
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_sim/counters", timeout=1) as resp:
                    assert orjson.loads(resp.read())["create_calls"] == 0
                break
            except OSError:
                assert time.monotonic() < deadline, "simulator did not start"
                time.sleep(0.1)
        jobs = tmp_path / "jobs.jsonl"
        jobs.write_bytes((ROOT / "manifests" / "demo.jsonl").read_bytes())
        run = bulkfetch_cli(
            "run",
            jobs,
            "--out",
            tmp_path / "out",
            "--api-url",
            f"{url}/api/gdw/api",
            "--create-rate",
            "50/s",
            "--status-rate",
            "50/s",
        )
        assert run.returncode == 0, run.stderr
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def test_help_and_bad_flags() -> None:
    assert bulkfetch_cli("--help").returncode == 0
    for command in ("run", "plan", "status", "validate", "report", "simulate", "demo"):
        proc = bulkfetch_cli(command, "--help")
        assert proc.returncode == 0, command
    bad = bulkfetch_cli("run", "x.jsonl", "--out", "o", "--create-rate", "ten a minute")
    assert bad.returncode == 2
    assert "N/s, N/min or N/h" in bad.stderr and "Traceback" not in bad.stderr


def test_public_api_is_exactly_all() -> None:
    public = {name for name in dir(bulkfetch) if not name.startswith("_")}
    submodules = {info.name for info in pkgutil.iter_modules(bulkfetch.__path__)}
    assert public - submodules == set(bulkfetch.__all__) - {"__version__"}
