"""What every benchmark case shares: the time scale, manifests, figures and diagnostics.

Time is scaled so a case runs in seconds: the real service allows 10 requests a minute per
lane (one "slot" = 6 s); the benchmarks run both lanes at 20/s (one slot = 0.05 s) and give
processing times in slots. Every figure reported is a ratio that does not depend on the scale
(makespan / bound, status calls per job, 429s as a share of requests), or a time in slots.

Diagnostics come from the simulator's task list (when each task was created and became
ready) joined with when the client had each file (the ledger for bulkfetch, the baselines'
own trace), so every client is judged by the same arithmetic.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bulkfetch.simulator import SimConfig, bound_makespan

__all__ = [
    "RATE",
    "SLOT",
    "CaseResult",
    "RunFigures",
    "TaskTrace",
    "figures_from",
    "job_params",
    "ledger_traces",
    "sim_config",
    "write_manifest",
]

#: Requests per second per lane on the scaled simulator (10/min on the real service).
RATE = 20
#: One slot: the interval between two requests of one lane, in seconds.
SLOT = 1.0 / RATE


def sim_config(
    *,
    seed: int,
    median_slots: float,
    sigma: float,
    rate: int = RATE,
    retry_after: str = "float",
    **extra: Any,
) -> SimConfig:
    """A well-behaved EOS at ``rate`` requests/s per lane, lognormal processing in slots."""
    return SimConfig(
        seed=seed,
        create_limit=rate,
        create_window=1.0,
        status_limit=rate,
        status_window=1.0,
        retry_after=retry_after,  # type: ignore[arg-type]
        processing_median=median_slots / rate,
        processing_sigma=sigma,
        **extra,
    )


def job_params(i: int, *, fmt: str = "jpeg") -> dict[str, Any]:
    """Job ``i`` of a generated manifest: a small square AOI, distinct for every ``i``."""
    lon = -104.9 + (i % 1000) * 0.001
    lat = 27.1 + (i // 1000) * 0.001
    d = 0.0008
    ring = [[lon, lat], [lon + d, lat], [lon + d, lat + d], [lon, lat + d], [lon, lat]]
    day = 1 + i % 28
    return {
        "view_id": f"S2/13/R/EL/2023/7/{day}/0",
        "bm_type": "NDVI",
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "px_size": 10,
        "format": fmt,
    }


def write_manifest(path: Path, jobs: Iterable[Mapping[str, Any]]) -> Path:
    """Write ``jobs`` as a ``.jsonl`` manifest at ``path``."""
    with path.open("wb") as f:
        for job in jobs:
            f.write(orjson.dumps(job))
            f.write(b"\n")
    return path


@dataclass(frozen=True, slots=True)
class TaskTrace:
    """When a client had a task: both on the client's own clock (any epoch)."""

    created: float  # when the create answer arrived
    fetched: float | None  # when the file was complete on disk, None if never


@dataclass(slots=True)
class RunFigures:
    """One client's run of one case, as ratios and slot counts."""

    client: str
    jobs: int
    done: int
    makespan: float
    bound: float
    create_calls: int
    status_calls: int
    create_429: int
    status_429: int
    not_ready: int
    wall: float
    #: Scale-free diagnostics (slots, counts); see ``figures_from``.
    diag: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return self.makespan / self.bound if self.bound > 0 else math.nan

    @property
    def status_per_job(self) -> float:
        return self.status_calls / self.jobs if self.jobs else math.nan

    @property
    def create_per_job(self) -> float:
        return self.create_calls / self.jobs if self.jobs else math.nan

    @property
    def pct_429(self) -> float:
        total = self.create_calls + self.status_calls
        return 100.0 * (self.create_429 + self.status_429) / total if total else math.nan

    def to_json(self) -> dict[str, Any]:
        return {
            "client": self.client,
            "jobs": self.jobs,
            "done": self.done,
            "makespan_over_bound": self.ratio,
            "status_calls_per_job": self.status_per_job,
            "create_calls_per_job": self.create_per_job,
            "pct_429": self.pct_429,
            "makespan_s": self.makespan,
            "bound_s": self.bound,
            "create_429": self.create_429,
            "status_429": self.status_429,
            "not_ready": self.not_ready,
            "wall_s": self.wall,
            "diag": self.diag,
            "notes": self.notes,
        }


@dataclass(slots=True)
class CaseResult:
    """A case's figures: rows of a table, a verdict per target, and prose."""

    name: str
    title: str
    setup: str
    runs: list[RunFigures] = field(default_factory=list)
    #: (what, target, measured, met) rows.
    targets: list[tuple[str, str, str, bool]] = field(default_factory=list)
    #: Extra tables: (caption, header, rows).
    tables: list[tuple[str, list[str], list[list[str]]]] = field(default_factory=list)
    paragraphs: list[str] = field(default_factory=list)
    seconds: float = 0.0
    #: Runs kept in RESULTS.json only (the matrix's, summed up in its own table).
    runs_json: list[RunFigures] = field(default_factory=list)

    def target(self, what: str, target: str, measured: float, ok: bool, fmt: str = ".3f") -> None:
        self.targets.append((what, target, format(measured, fmt), ok))


def ledger_traces(out: Path) -> tuple[dict[str, TaskTrace], int]:
    """bulkfetch's ``TaskTrace`` per task id from the ledger in ``out``, and the jobs done."""
    from bulkfetch.ledger import JobState, Ledger

    traces: dict[str, TaskTrace] = {}
    done = 0
    with Ledger.open(out / "bulkfetch-ledger.json", readonly=True) as ledger:
        for record in ledger.records().values():
            if record.task_id:
                fetched = record.updated_at if record.state is JobState.DONE else None
                done += record.state is JobState.DONE
                traces[record.task_id] = TaskTrace(record.created_at, fetched)
    return traces, done


def figures_from(
    client: str,
    *,
    jobs: int,
    done: int,
    counters: Mapping[str, Any],
    tasks: Sequence[Mapping[str, Any]],
    traces: Mapping[str, TaskTrace],
    not_ready_times: Sequence[float],
    config: SimConfig,
    wall: float,
) -> RunFigures:
    """Figures and diagnostics of a run from the simulator's view and the client's trace.

    Diagnostics (all in slots of the status lane, or counts):

    - ``last_create``: when the last task was created, from the run's first request; a
      client pacing creations perfectly reaches ``jobs - 1``;
    - ``create_loss`` / ``status_loss``: the makespan's excess over the bound, split in
      two. ``bound_given_creations`` is the bound recomputed with the tasks' *actual*
      creation times: what was lost before it is the create lane's (tasks created late),
      what was lost after it is the status lane's (ready tasks not fetched at once:
      slots spent on pending tasks, 429 pauses, idle slots, download time);
    - ``ready_to_fetch_mean`` / ``_p90`` / ``_max``: how long a ready task waited;
    - ``in_flight_peak`` / ``in_flight_mean``: tasks created and not yet fetched;
    - ``polls_per_task_max``: the most status calls one task took;
    - ``status_idle``: status slots the makespan held that no admitted status call used
      (makespan / interval - status calls not answered 429);
    - ``last_wait`` / ``last_polls`` / ``last_processing``: the task fetched last: how
      long it waited once ready, the status calls it took, its processing time;
    - ``wasted_early`` / ``wasted_late``: "not ready" answers before / after the first task
      was ready. Early ones cost nothing (nothing could be fetched then); every late one
      took a slot from a task that may have been ready.
    """
    status_interval = config.status_window / config.status_limit
    create_interval = config.create_window / config.create_limit
    first = counters.get("first_request_at") or 0.0
    makespan = float(counters.get("makespan_seconds") or math.nan)
    bound = float(counters["bound_seconds"])
    by_id = {str(t["task_id"]): t for t in tasks}
    # The client's clock against the simulator's: the create answer arrives a little after
    # the task is made, so the median difference is the offset to a millisecond or so.
    offsets = [
        trace.created - float(by_id[tid]["created_at"])
        for tid, trace in traces.items()
        if tid in by_id
    ]
    offset = statistics.median(offsets) if offsets else 0.0
    created = sorted(float(t["created_at"]) - first for t in tasks)
    ready = [float(t["ready_at"]) - first for t in tasks]
    # The fetch schedule over the actual ready times (create interval 0: offsets are times).
    given = bound_makespan(ready, 0.0, status_interval)
    waits: list[float] = []
    events: list[tuple[float, int]] = []
    last: tuple[float, float, int, float] | None = None  # fetched, wait, polls, processing
    for tid, trace in traces.items():
        task = by_id.get(tid)
        if task is None or trace.fetched is None:
            continue
        fetched = trace.fetched - offset
        wait = max(0.0, fetched - float(task["ready_at"]))
        waits.append(wait)
        if last is None or fetched > last[0]:
            last = (fetched, wait, int(task["polls"]), float(task["processing"]))
        events.append((float(task["created_at"]), 1))
        events.append((fetched, -1))
    events.sort()
    level = peak = 0
    area = 0.0
    last_t = events[0][0] if events else 0.0
    for t, step in events:
        area += level * (t - last_t)
        last_t = t
        level += step
        peak = max(peak, level)
    span = (events[-1][0] - events[0][0]) if events else 0.0
    waits.sort()
    first_ready = min(ready, default=0.0)
    late = sum(1 for t in not_ready_times if t - offset - first >= first_ready)
    diag: dict[str, float] = {
        "last_create": (created[-1] / create_interval) if created else math.nan,
        "bound_given_creations": given / status_interval,
        "create_loss": (given - bound) / status_interval,
        "status_loss": (makespan - given) / status_interval,
        "ready_to_fetch_mean": (statistics.fmean(waits) / status_interval) if waits else math.nan,
        "ready_to_fetch_p90": (waits[int(0.9 * (len(waits) - 1))] / status_interval)
        if waits
        else math.nan,
        "ready_to_fetch_max": (waits[-1] / status_interval) if waits else math.nan,
        "in_flight_peak": float(peak),
        "in_flight_mean": (area / span) if span > 0 else math.nan,
        "polls_per_task_max": float(max((int(t["polls"]) for t in tasks), default=0)),
        "status_idle": makespan / status_interval
        - (int(counters["status_calls"]) - int(counters["status_429"])),
        "wasted_early": float(len(not_ready_times) - late),
        "wasted_late": float(late),
        "last_wait": last[1] / status_interval if last else math.nan,
        "last_polls": float(last[2]) if last else math.nan,
        "last_processing": last[3] / status_interval if last else math.nan,
    }
    return RunFigures(
        client=client,
        jobs=jobs,
        done=done,
        makespan=makespan,
        bound=bound,
        create_calls=int(counters["create_calls"]),
        status_calls=int(counters["status_calls"]),
        create_429=int(counters["create_429"]),
        status_429=int(counters["status_429"]),
        not_ready=int(counters["polls_not_ready"]),
        wall=wall,
        diag=diag,
    )
