"""Shared fixtures: a simulator on loopback, a small manifest, and the CLI as users run it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import orjson
import pytest

from bulkfetch.simulator import TEST_API_KEY, SimConfig, Simulator, SimulatorThread, run_in_thread
from tests.redis_server import RedisServer

#: Fast lanes for tests: the simulator's windows and the client's rates in step.
FAST: dict[str, Any] = {
    "create_limit": 50,
    "create_window": 1.0,
    "status_limit": 50,
    "status_window": 1.0,
    "processing_median": 0.05,
    "processing_sigma": 0.3,
    "retry_after": "float",
}
FAST_FLAGS = ["--create-rate", "50/s", "--status-rate", "50/s"]


@pytest.fixture(autouse=True)
def _no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loopback traffic must never go through a proxy from the environment."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture(autouse=True)
def _private_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The user's cache folder (search and colormap caches) is the test's own."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


@pytest.fixture
def sim() -> Iterator[SimulatorThread]:
    with run_in_thread(SimConfig(**FAST)) as handle:
        yield handle


def square(lon: float, lat: float, d: float = 0.01) -> dict[str, Any]:
    ring = [[lon, lat], [lon + d, lat], [lon + d, lat + d], [lon, lat + d], [lon, lat]]
    return {"type": "Polygon", "coordinates": [ring]}


def make_jobs(
    n: int, *, formats: tuple[str, ...] = ("jpeg", "png", "tiff")
) -> list[dict[str, Any]]:
    jobs = []
    for i in range(n):
        job: dict[str, Any] = {
            "view_id": f"S2/13/R/EL/2023/{1 + i % 12}/{1 + i % 28}/0",
            "bm_type": ("NDVI", "NDWI", "NATURAL")[i % 3],
            "geometry": square(-104.9 + i * 0.02, 27.1),
            "px_size": 10,
        }
        fmt = formats[i % len(formats)]
        if fmt != "jpeg":
            job["format"] = fmt
        jobs.append(job)
    return jobs


def write_jsonl(path: Path, jobs: list[dict[str, Any]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(job) + b"\n" for job in jobs))
    return path


def cli_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["EOS_API_KEY"] = TEST_API_KEY
    env["NO_PROXY"] = "127.0.0.1,localhost"
    env.pop("EOS_API_URL", None)
    if extra:
        env |= extra
    return env


def bulkfetch_cli(
    *args: str | Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 90,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the real ``bulkfetch`` command in a subprocess, as cron would."""
    return subprocess.run(
        [sys.executable, "-m", "bulkfetch.cli", *map(str, args)],
        cwd=cwd,
        env=cli_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def spawn_cli(*args: str | Path, env: Mapping[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bulkfetch.cli", *map(str, args)],
        env=cli_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )


def load_ledger_json(out: Path) -> dict[str, Any]:
    from bulkfetch.ledger import Ledger

    with Ledger.open(out / "bulkfetch-ledger.json", readonly=True) as ledger:
        return {key: record.to_json() for key, record in ledger.records().items()}


def run_cli(
    sim: SimulatorThread,
    manifest: Path,
    out: Path | str,
    *flags: str | Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 90,
) -> subprocess.CompletedProcess[str]:
    """``bulkfetch run MANIFEST --out OUT`` against ``sim`` at the fast test rates."""
    return bulkfetch_cli(
        "run",
        manifest,
        "--out",
        out,
        "--api-url",
        sim.api_url,
        *FAST_FLAGS,
        *flags,
        env=env,
        timeout=timeout,
    )


#: A check against a running simulator, given a client session.
Check = Callable[[Simulator, aiohttp.ClientSession], Awaitable[None]]


def serve(config: SimConfig, check: Check) -> None:
    async def main() -> None:
        async with Simulator(config) as sim, aiohttp.ClientSession() as session:
            await check(sim, session)

    anyio.run(main)


@contextmanager
def tmpfs(where: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted at ``where`` with ``options`` for the block; the test is skipped
    where mounting is not allowed (not root, no CAP_SYS_ADMIN)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real Redis (Debian's redis-server) on a free loopback port, for the session. Not
    installed: skipped, except under CI, where that fails (.ci/run installs it)."""
    if not RedisServer.available():
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed, and CI must run the Redis tests")
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    server = RedisServer.start(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.stop()
