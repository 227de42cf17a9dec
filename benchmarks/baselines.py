"""What users write instead of bulkfetch, written the simplest honest way with aiohttp.

Two clients, both driven by a list of Download visual parameter dicts (the same manifest
bulkfetch gets) and both returning, for the diagnostics, a ``TaskTrace`` per task id and
the times of their "not ready" answers:

* ``sequential``: for each job in turn, create the task, wait, poll it every ``poll_every``
  seconds until the file comes, save it, go on to the next job. What a first script does.
* ``fixed_delay``: every task is created up front behind one shared pacing limiter at the
  configured create rate; each task then polls itself every ``poll_every`` seconds, every
  poll going through one shared pacing limiter at the configured status rate; a 429 is
  retried after an exponential back-off (``Retry-After`` ignored, as most scripts do).
  What a careful concurrent script does.

Public scripts poll "every few seconds" whatever the rate limit; the benchmarks scale that
to 5 slots (see ``common.SLOT``). Neither client knows anything the simulator knows: both
see only the API's answers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.common import TaskTrace

__all__ = ["Pacer", "fixed_delay", "sequential"]

#: Back-off after a 429: ``base * 2**n`` seconds, n = 429s in a row for that request.
BACKOFF_CAP_FACTOR = 64


class Pacer:
    """One request every ``interval`` seconds across all callers, first come first served."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        async with self._lock:
            now = time.monotonic()
            at = max(now, self._next)
            self._next = at + self.interval
        if at > now:
            await asyncio.sleep(at - now)


class _Api:
    def __init__(self, session: aiohttp.ClientSession, api_url: str, backoff: float) -> None:
        #: When each "not ready" answer came (``time.time()``), for the diagnostics.
        self.not_ready: list[float] = []
        #: 429s per lane (behind nginx the simulator never sees them).
        self.rate_limited = {"create": 0, "status": 0}
        self.session = session
        self.api_url = api_url
        self.backoff = backoff

    async def create(self, params: dict[str, Any], pacer: Pacer | None) -> str:
        attempt = 0
        while True:
            if pacer is not None:
                await pacer.wait()
            body = {"type": "jpeg", "params": params}
            async with self.session.post(self.api_url, json=body) as resp:
                if resp.status == 429:
                    self.rate_limited["create"] += 1
                    await asyncio.sleep(self._backoff(attempt))
                    attempt += 1
                    continue
                resp.raise_for_status()
                data = await resp.json()
                return str(data["task_id"])

    async def poll(self, task_id: str, pacer: Pacer | None) -> bytes | None:
        """The result's bytes, or None if the task is still pending."""
        attempt = 0
        while True:
            if pacer is not None:
                await pacer.wait()
            async with self.session.get(f"{self.api_url}/{task_id}") as resp:
                if resp.status == 429:
                    self.rate_limited["status"] += 1
                    await asyncio.sleep(self._backoff(attempt))
                    attempt += 1
                    continue
                resp.raise_for_status()
                if resp.content_type == "application/json":
                    data = await resp.json()
                    if data.get("task_type") == "error":
                        raise RuntimeError(f"task {task_id} failed: {data}")
                    self.not_ready.append(time.time())
                    return None
                return await resp.read()

    def _backoff(self, attempt: int) -> float:
        return self.backoff * min(2.0**attempt, BACKOFF_CAP_FACTOR)


def _session(api_key: str) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(headers={"x-api-key": api_key})


def _save(out: Path, i: int, data: bytes) -> None:
    (out / f"job-{i:06d}.jpg").write_bytes(data)


async def sequential(
    jobs: Sequence[dict[str, Any]],
    *,
    out: Path,
    api_url: str,
    api_key: str,
    poll_every: float,
    backoff: float,
    stats: dict[str, int] | None = None,
) -> tuple[dict[str, TaskTrace], list[float]]:
    """Create, poll every ``poll_every`` s until done, save; then the next job.

    ``stats`` (if given) gets the 429s per lane."""
    await asyncio.to_thread(out.mkdir, parents=True, exist_ok=True)
    traces: dict[str, TaskTrace] = {}
    async with _session(api_key) as session:
        api = _Api(session, api_url, backoff)
        for i, params in enumerate(jobs):
            task_id = await api.create(params, None)
            created = time.time()
            while True:
                await asyncio.sleep(poll_every)
                data = await api.poll(task_id, None)
                if data is not None:
                    _save(out, i, data)
                    traces[task_id] = TaskTrace(created, time.time())
                    break
    if stats is not None:
        stats.update(api.rate_limited)
    return traces, api.not_ready


async def fixed_delay(
    jobs: Sequence[dict[str, Any]],
    *,
    out: Path,
    api_url: str,
    api_key: str,
    create_interval: float,
    status_interval: float,
    poll_every: float,
    backoff: float,
    stats: dict[str, int] | None = None,
) -> tuple[dict[str, TaskTrace], list[float]]:
    """Create everything behind one pacer, poll each task every ``poll_every`` s behind another.

    ``stats`` (if given) gets the 429s per lane."""
    await asyncio.to_thread(out.mkdir, parents=True, exist_ok=True)
    traces: dict[str, TaskTrace] = {}
    create_pacer, status_pacer = Pacer(create_interval), Pacer(status_interval)
    connector = aiohttp.TCPConnector(limit=0)
    async with (
        aiohttp.ClientSession(headers={"x-api-key": api_key}, connector=connector) as session,
        asyncio.TaskGroup() as tg,
    ):
        api = _Api(session, api_url, backoff)

        async def one(i: int, params: dict[str, Any]) -> None:
            task_id = await api.create(params, create_pacer)
            created = time.time()
            while True:
                await asyncio.sleep(poll_every)
                data = await api.poll(task_id, status_pacer)
                if data is not None:
                    _save(out, i, data)
                    traces[task_id] = TaskTrace(created, time.time())
                    return

        for i, params in enumerate(jobs):
            tg.create_task(one(i, params))
    if stats is not None:
        stats.update(api.rate_limited)
    return traces, api.not_ready
