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
import dataclasses
import logging
import math
import re
import statistics
import sys
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
    ledger_traces,
    sim_config,
    write_manifest,
)
from bulkfetch.config import Rate
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
    #: Also run diagnostic variants of bulkfetch (told what it cannot know; not results).
    diagnose: bool = False
    #: The seed for ``--quick`` (N = 100), when the full run's would make a smoke run slow.
    quick_seed: int | None = None
    #: More seeds to run bulkfetch and the fixed-delay script on (full runs only): one
    #: draw of 300 processing times decides a few % of the ratio by itself.
    spread_seeds: tuple[int, ...] = ()
    #: How the server counts (``simulator.limits``) and how its 429s say Retry-After.
    limiter: str = "sliding"
    retry_after: str = "float"
    burst: int = 0
    #: The most 429s bulkfetch may draw in the run (None: not judged).
    max_429: int | None = None
    #: Judged against the fixed-delay client: bulkfetch must finish first.
    beat_fixed_delay: bool = False

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
            max_pct_429=0.5,
            diagnose=True,
            spread_seeds=(3, 5, 7, 13),
        ),
        SchedulingCase(
            "heavy-tail",
            "2. Heavy tail",
            median_slots=60,
            sigma=1.0,
            # Not 12: it draws a 166 s task (a 4-sigma outlier) that makes the case one
            # task's lottery and takes 3 minutes per client. Seed 3's longest tasks (36-49
            # s) come late in the creation order, so create and status lanes both matter.
            seed=3,
            # Seed 3's first 100 tasks include a 40 s one; seed 9's longest is 15 s.
            quick_seed=9,
            diagnose=True,
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
    return sim_config(
        seed=case.seed,
        median_slots=case.median_slots,
        sigma=case.sigma,
        limiter=case.limiter,
        retry_after=case.retry_after,
        burst=case.burst,
    )


#: What a client's run hands back: traces by task id, "not ready" times, jobs done, notes.
Outcome = tuple[dict[str, TaskTrace], list[float], int, list[str]]
Runner = Callable[[str, Path], Awaitable[Outcome]]


class _PollLog(logging.Handler):
    """Collects when bulkfetch got "not ready" answers (its debug log); shows warnings."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.not_ready: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING:
            print(f"[bulkfetch] {record.getMessage()}", file=sys.stderr)
        elif isinstance(record.msg, str) and record.msg.endswith("not ready (%s)"):
            self.not_ready.append(record.created)


async def _measure(
    client: str, case: SchedulingCase, n: int, work: Path, runner: Runner
) -> RunFigures:
    config = _config(case)
    with run_in_thread(config) as sim:
        started = time.monotonic()
        traces, not_ready, done, notes = await runner(sim.api_url, work)
        wall = time.monotonic() - started
        counters, tasks = sim.counters(), sim.tasks()
    figures = figures_from(
        client,
        jobs=n,
        done=done,
        counters=counters,
        tasks=tasks,
        traces=traces,
        not_ready_times=not_ready,
        config=config,
        wall=wall,
    )
    figures.notes.extend(notes)
    return figures


async def run_bulkfetch(
    case: SchedulingCase,
    n: int,
    work: Path,
    *,
    label: str = "bulkfetch",
    **options: Any,
) -> RunFigures:
    """bulkfetch in-process; ``options`` (diagnostic variants only) go to ``run_async``."""
    await asyncio.to_thread(work.mkdir, parents=True, exist_ok=True)
    manifest = write_manifest(work / "manifest.jsonl", (job_params(i) for i in range(n)))
    rate = Rate(RATE * case.client_factor, 1.0)

    async def runner(api_url: str, where: Path) -> Outcome:
        out = where / "bulkfetch-out"
        logger = logging.getLogger("bulkfetch")
        polls = _PollLog()
        logger.addHandler(polls)
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
        try:
            result = await bulkfetch.run_async(
                manifest,
                out=out,
                api_key=TEST_API_KEY,
                api_url=api_url,
                create_rate=rate,
                status_rate=rate,
                learn_rates=case.learn_rates,
                report=None,
                **options,
            )
        finally:
            logger.removeHandler(polls)
            logger.setLevel(logging.WARNING)
            logger.propagate = True
        traces, _ = ledger_traces(out)
        lanes = result.report.get("lanes", {})
        notes = [f"outcome: {result.outcome}"] + [
            f"{k} lane at the end: {v}" for k, v in lanes.items()
        ]
        return traces, polls.not_ready, result.counters.done, notes

    figures = await _measure(label, case, n, work, runner)
    for note in figures.notes:
        # "<Limiter status interval=0.0505s ...>": the lane's pace at the end, as a
        # multiple of the server's rate (1.0 = exactly the server's limit).
        m = re.search(r"(create|status) lane at the end: <Limiter \S+ interval=([0-9.e+-]+)s", note)
        if m:
            figures.diag[f"{m.group(1)}_pace_end"] = SLOT / float(m.group(2))
    return figures


def _script_jobs(n: int) -> list[dict[str, Any]]:
    return [{**job_params(i), "reference": f"script-{i}"} for i in range(n)]


async def run_fixed_delay(case: SchedulingCase, n: int, work: Path) -> RunFigures:
    interval = 1.0 / (RATE * case.client_factor)

    async def runner(api_url: str, where: Path) -> Outcome:
        traces, not_ready = await baselines.fixed_delay(
            _script_jobs(n),
            out=where / "fixed-delay-out",
            api_url=api_url,
            api_key=TEST_API_KEY,
            create_interval=interval,
            status_interval=interval,
            poll_every=POLL_EVERY,
            backoff=BACKOFF,
        )
        return traces, not_ready, len(traces), []

    return await _measure("fixed-delay script", case, n, work, runner)


async def run_sequential(case: SchedulingCase, n: int, work: Path) -> RunFigures:
    async def runner(api_url: str, where: Path) -> Outcome:
        traces, not_ready = await baselines.sequential(
            _script_jobs(n),
            out=where / "sequential-out",
            api_url=api_url,
            api_key=TEST_API_KEY,
            poll_every=POLL_EVERY,
            backoff=BACKOFF,
        )
        return traces, not_ready, len(traces), []

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
    diagnose: bool = False,
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
        variants: list[RunFigures] = []
        if diagnose and case.diagnose:
            median = case.median_slots * SLOT
            variants.append(
                await run_bulkfetch(
                    case,
                    n,
                    work / "v1",
                    label=f"bulkfetch, max_in_flight={n} (diagnostic)",
                    max_in_flight=n,
                )
            )
            variants.append(
                await run_bulkfetch(
                    case,
                    n,
                    work / "v2",
                    label="bulkfetch, first_poll_after=true median (diagnostic)",
                    first_poll_after=median,
                )
            )
        spread: list[tuple[int, RunFigures, RunFigures]] = []
        if diagnose:
            for seed in case.spread_seeds:
                other = dataclasses.replace(case, seed=seed)
                spread.append(
                    (
                        seed,
                        await run_bulkfetch(other, n, work / f"bf-{seed}"),
                        await run_fixed_delay(other, n, work / f"fd-{seed}"),
                    )
                )
        if sequential is None:
            (work / "seq").mkdir()
            seq = await run_sequential(case, n_seq, work / "seq")
        else:
            seq = await sequential
    result.runs = [bf, fd, seq, *variants]
    result.seconds = time.monotonic() - started
    _judge(case, result, bf)
    if spread:
        _spread(case, result, [(case.seed, bf, fd), *spread])
    _explain(case, result, bf, fd, seq, variants)
    return result


def _spread(
    case: SchedulingCase, result: CaseResult, runs: list[tuple[int, RunFigures, RunFigures]]
) -> None:
    """The same case on other draws of processing times: how much of a ratio is the draw."""
    rows = [
        [
            str(seed),
            f"{bf.ratio:.3f}",
            f"{bf.status_per_job:.3f}",
            f"{bf.pct_429:.2f}",
            f"{fd.ratio:.3f}",
            f"{fd.status_per_job:.3f}",
            f"{fd.pct_429:.2f}",
        ]
        for seed, bf, fd in runs
    ]
    mean_bf = statistics.fmean(bf.ratio for _, bf, _ in runs)
    mean_fd = statistics.fmean(fd.ratio for _, _, fd in runs)
    calls_bf = statistics.fmean(bf.status_per_job for _, bf, _ in runs)
    calls_fd = statistics.fmean(fd.status_per_job for _, _, fd in runs)
    rows.append(
        ["mean", f"{mean_bf:.3f}", f"{calls_bf:.3f}", "", f"{mean_fd:.3f}", f"{calls_fd:.3f}", ""]
    )
    seeds = ", ".join(str(seed) for seed, _, _ in runs)
    result.tables.append(
        (
            f"The same case with other seeds (other draws of the 300 processing times): "
            f"seeds {seeds}",
            [
                "seed",
                "bulkfetch makespan / bound",
                "status calls / job",
                "429s %",
                "fixed-delay makespan / bound",
                "status calls / job",
                "429s %",
            ],
            rows,
        )
    )
    result.target(
        f"bulkfetch makespan / bound, mean of seeds {seeds}",
        f"≤ {case.max_ratio}",
        mean_bf,
        mean_bf <= case.max_ratio,
    )
    if case.max_status_per_job is not None:
        result.target(
            f"bulkfetch status calls / job, mean of seeds {seeds}",
            f"≤ {case.max_status_per_job}",
            calls_bf,
            calls_bf <= case.max_status_per_job,
        )


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


def _slots(x: float) -> str:
    return f"{x:.0f} slot{'s' if round(x) != 1 else ''}"


def _explain(
    case: SchedulingCase,
    result: CaseResult,
    bf: RunFigures,
    fd: RunFigures,
    seq: RunFigures,
    variants: list[RunFigures],
) -> None:
    """What the figures show, in words, from the figures themselves."""
    missed = [what for what, _, _, ok in result.targets if not ok]
    verdict = (
        "meets every target"
        if not missed
        else "misses " + ", ".join(w.removeprefix("bulkfetch ") for w in missed)
    )
    result.paragraphs.append(
        f"**What it shows.** bulkfetch finished in {bf.ratio:.3f}× the bound with "
        f"{bf.status_per_job:.2f} status calls per job and {bf.pct_429:.2f}% 429s: it "
        f"{verdict}. Beside it, on the same server and manifest, the fixed-delay script took "
        f"{fd.ratio:.3f}× the bound ({fd.status_per_job:.2f} status calls per job, "
        f"{fd.pct_429:.2f}% 429s) and the sequential script {seq.ratio:.1f}× "
        f"({seq.status_per_job:.2f} status calls per job; its bound is that of its own "
        f"{seq.jobs} jobs)."
    )
    d = bf.diag
    interval_slots = 1.0 / case.client_factor
    excess = (bf.makespan - bf.bound) / SLOT
    ideal_last = (bf.jobs - 1) * 1.0
    margin_slots = bf.jobs * 0.01 * interval_slots
    pace = ""
    if "create_pace_end" in d and "status_pace_end" in d:
        pace = (
            f" At the end its lanes were pacing at {d['create_pace_end']:.2f}× (create) and "
            f"{d['status_pace_end']:.2f}× (status) the server's rate."
        )
    result.paragraphs.append(
        f"**Where bulkfetch's time went.** It ended {_slots(excess)} after the bound. "
        f"Create lane: its last creation came at slot {d['last_create']:.0f} against "
        f"{ideal_last:.0f} for creations paced exactly at the server's limit "
        f"({bf.jobs} creations at the configured pace with its 1% margin take "
        f"{(bf.jobs - 1) * interval_slots * 1.01:.0f} slots; the margin alone is "
        f"{margin_slots:.0f}); recomputing the bound with the actual creation times puts "
        f"{d['create_loss']:.1f} slots of the excess there. Tasks in flight averaged "
        f"{d['in_flight_mean']:.0f} (peak {d['in_flight_peak']:.0f}). Status lane: "
        f"{d['status_loss']:.1f} slots of the excess; it spent "
        f"{bf.not_ready} calls on tasks not ready ({d['wasted_early']:.0f} before the first "
        f"task was ready, free; {d['wasted_late']:.0f} after, each taking a slot), drew "
        f"{bf.status_429} 429s, and left {d['status_idle']:.0f} of its slots unused; a ready "
        f"task waited {d['ready_to_fetch_mean']:.1f} slots on average (p90 "
        f"{d['ready_to_fetch_p90']:.1f}, max {d['ready_to_fetch_max']:.1f}) and the most "
        f"polled task took {d['polls_per_task_max']:.0f} calls. The task fetched last "
        f"(processing {d['last_processing']:.0f} slots) took {d['last_polls']:.0f} status "
        f"calls and waited {d['last_wait']:.1f} slots once ready.{pace}"
    )
    if variants:
        parts = [
            f"{v.client.removesuffix(' (diagnostic)')}: {v.ratio:.3f}× the bound, "
            f"{v.status_per_job:.2f} status calls per job, last creation at slot "
            f"{v.diag['last_create']:.0f}, {v.pct_429:.2f}% 429s"
            for v in variants
        ]
        result.paragraphs.append(
            "**Diagnostic variants** (told what a real run cannot know, so not results; "
            "they show which mechanism costs what): " + "; ".join(parts) + "."
        )
