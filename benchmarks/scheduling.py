"""Cases 1–4: how close each client gets to the best possible makespan.

Each case is one server (the simulator at 20 requests/s per lane, lognormal processing in
slots) and one manifest, run by three clients, each against a fresh simulator with the same
seed (so the n-th task created gets the same processing time whoever creates it):

* bulkfetch, in-process through ``run_async``, knowing only its configured rates;
* ``baselines.fixed_delay``, at the same configured rates;
* ``baselines.sequential``, on the first ``n_sequential`` jobs only (it is slow).

The simulator runs in a thread of its own (``run_in_thread``), so a client that blocks its
event loop (an fsync) delays itself, not the server's clock.
"""

from __future__ import annotations

import asyncio
import logging
import math
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bulkfetch
from benchmarks import baselines
from benchmarks.common import (
    RATE,
    SLOT,
    CaseResult,
    RunFigures,
    TaskTrace,
    figures_from,
    job_params,
    sim_config,
    write_manifest,
)
from bulkfetch.config import Rate
from bulkfetch.ledger import JobState, Ledger
from bulkfetch.simulator import TEST_API_KEY, SimConfig, run_in_thread

__all__ = ["CASES", "SchedulingCase", "run_scheduling_case"]

#: Public scripts poll "every few seconds": 5 slots, whatever the rate.
POLL_EVERY = 5 * SLOT
#: First back-off after a 429 in the baselines: one slot, doubling.
BACKOFF = SLOT


@dataclass(frozen=True, slots=True)
class SchedulingCase:
    name: str
    title: str
    median_slots: float
    sigma: float
    seed: int
    #: The clients' configured rate as a multiple of the server's.
    client_factor: float = 1.0
    learn_rates: bool = False
    max_ratio: float = 1.05
    max_status_per_job: float | None = None
    max_pct_429: float | None = None

    def describe(self, n: int, n_seq: int) -> str:
        client = RATE * self.client_factor
        learn = ", `learn_rates=True`" if self.learn_rates else ""
        return (
            f"N = {n} jobs (sequential script: first {n_seq}); server {RATE}/s per lane "
            f"(sliding window {RATE} per 1 s, `Retry-After` as a float); clients configured "
            f"at {client:g}/s per lane{learn}; processing lognormal, median "
            f"{self.median_slots:g} slots, sigma {self.sigma:g}; seed {self.seed}. "
            f"1 slot = {SLOT:g} s. Baselines poll every 5 slots and back off 1, 2, 4… slots "
            "on a 429."
        )


CASES: dict[str, SchedulingCase] = {
    c.name: c
    for c in (
        SchedulingCase(
            "known-rates",
            "1. Known rates",
            median_slots=20,
            sigma=0.5,
            seed=11,
            max_status_per_job=1.10,
            max_pct_429=0.5,
        ),
        SchedulingCase(
            "heavy-tail",
            "2. Heavy tail",
            median_slots=60,
            sigma=1.0,
            seed=12,
            max_status_per_job=1.3,
        ),
        SchedulingCase(
            "rates-too-high",
            "3a. Wrong configuration: client at 2x the server's rates",
            median_slots=20,
            sigma=0.5,
            seed=11,
            client_factor=2.0,
            max_ratio=1.15,
            max_pct_429=5.0,
        ),
        SchedulingCase(
            "rates-too-low",
            "3b. Wrong configuration: client at half the server's rates, learn_rates=True",
            median_slots=20,
            sigma=0.5,
            seed=11,
            client_factor=0.5,
            learn_rates=True,
            max_ratio=1.2,
        ),
    )
}


def _config(case: SchedulingCase) -> SimConfig:
    return sim_config(seed=case.seed, median_slots=case.median_slots, sigma=case.sigma)


Runner = Callable[[str, Path], Awaitable[tuple[dict[str, TaskTrace], int, list[str]]]]


async def _measure(
    client: str, case: SchedulingCase, n: int, work: Path, runner: Runner
) -> RunFigures:
    config = _config(case)
    with run_in_thread(config) as sim:
        started = time.monotonic()
        traces, done, notes = await runner(sim.api_url, work)
        wall = time.monotonic() - started
        counters, tasks = sim.counters(), sim.tasks()
    figures = figures_from(
        client,
        jobs=n,
        done=done,
        counters=counters,
        tasks=tasks,
        traces=traces,
        config=config,
        wall=wall,
    )
    figures.notes.extend(notes)
    return figures


async def run_bulkfetch(case: SchedulingCase, n: int, work: Path) -> RunFigures:
    manifest = write_manifest(work / "manifest.jsonl", (job_params(i) for i in range(n)))
    rate = Rate(RATE * case.client_factor, 1.0)

    async def runner(api_url: str, where: Path) -> tuple[dict[str, TaskTrace], int, list[str]]:
        out = where / "bulkfetch-out"
        result = await bulkfetch.run_async(
            manifest,
            out=out,
            api_key=TEST_API_KEY,
            api_url=api_url,
            create_rate=rate,
            status_rate=rate,
            learn_rates=case.learn_rates,
            report=None,
        )
        traces: dict[str, TaskTrace] = {}
        with Ledger.open(out / "bulkfetch-ledger.json", readonly=True) as ledger:
            for record in ledger.records().values():
                if record.task_id:
                    fetched = record.updated_at if record.state is JobState.DONE else None
                    traces[record.task_id] = TaskTrace(record.created_at, fetched)
        lanes = result.report.get("lanes", {})
        notes = [f"outcome: {result.outcome}"] + [
            f"{k} lane at the end: {v}" for k, v in lanes.items()
        ]
        return traces, result.counters.done, notes

    return await _measure("bulkfetch", case, n, work, runner)


def _script_jobs(n: int) -> list[dict[str, Any]]:
    return [{**job_params(i), "reference": f"script-{i}"} for i in range(n)]


async def run_fixed_delay(case: SchedulingCase, n: int, work: Path) -> RunFigures:
    interval = 1.0 / (RATE * case.client_factor)

    async def runner(api_url: str, where: Path) -> tuple[dict[str, TaskTrace], int, list[str]]:
        traces = await baselines.fixed_delay(
            _script_jobs(n),
            out=where / "fixed-delay-out",
            api_url=api_url,
            api_key=TEST_API_KEY,
            create_interval=interval,
            status_interval=interval,
            poll_every=POLL_EVERY,
            backoff=BACKOFF,
        )
        return traces, len(traces), []

    return await _measure("fixed-delay script", case, n, work, runner)


async def run_sequential(case: SchedulingCase, n: int, work: Path) -> RunFigures:
    async def runner(api_url: str, where: Path) -> tuple[dict[str, TaskTrace], int, list[str]]:
        traces = await baselines.sequential(
            _script_jobs(n),
            out=where / "sequential-out",
            api_url=api_url,
            api_key=TEST_API_KEY,
            poll_every=POLL_EVERY,
            backoff=BACKOFF,
        )
        return traces, len(traces), []

    return await _measure("sequential script", case, n, work, runner)


def start_sequential(case: SchedulingCase, n_seq: int, work: Path) -> asyncio.Task[RunFigures]:
    """Start the slow sequential baseline now, to run beside the other clients."""
    (work / "sequential").mkdir(parents=True, exist_ok=True)
    return asyncio.create_task(run_sequential(case, n_seq, work / "sequential"))


async def run_scheduling_case(
    case: SchedulingCase,
    *,
    n: int,
    n_seq: int,
    sequential: asyncio.Task[RunFigures] | None = None,
) -> CaseResult:
    """Run bulkfetch and the fixed-delay script, then collect the sequential script.

    ``sequential`` is the baseline already started (``start_sequential``) by the caller,
    which may run every case's sequential script at once to save time; None runs it here.
    """
    logging.getLogger("bulkfetch").setLevel(logging.WARNING)
    started = time.monotonic()
    result = CaseResult(case.name, case.title, case.describe(n, n_seq))
    with tempfile.TemporaryDirectory(prefix=f"bench-{case.name}-") as tmp:
        work = Path(tmp)
        (work / "bf").mkdir()
        (work / "fd").mkdir()
        bf = await run_bulkfetch(case, n, work / "bf")
        fd = await run_fixed_delay(case, n, work / "fd")
        if sequential is None:
            (work / "seq").mkdir()
            seq = await run_sequential(case, n_seq, work / "seq")
        else:
            seq = await sequential
    result.runs = [bf, fd, seq]
    result.seconds = time.monotonic() - started
    _judge(case, result, bf)
    return result


def _judge(case: SchedulingCase, result: CaseResult, bf: RunFigures) -> None:
    result.target(
        "bulkfetch makespan / bound", f"≤ {case.max_ratio}", bf.ratio, bf.ratio <= case.max_ratio
    )
    if case.max_status_per_job is not None:
        result.target(
            "bulkfetch status calls / job",
            f"≤ {case.max_status_per_job}",
            bf.status_per_job,
            bf.status_per_job <= case.max_status_per_job,
        )
    if case.max_pct_429 is not None:
        result.target(
            "bulkfetch 429s, % of requests",
            f"< {case.max_pct_429}",
            bf.pct_429,
            bf.pct_429 < case.max_pct_429,
            ".2f",
        )
    if bf.done != bf.jobs:
        result.target("bulkfetch jobs done", f"= {bf.jobs}", bf.done, False, "d")
    if math.isnan(bf.ratio):
        result.paragraphs.append("bulkfetch fetched nothing: no makespan to judge.")
