"""Many processes, one key: 2 and 4 ``bulkfetch run`` processes on one key share its rate.

Each process gets its share of one manifest (``--shard K/N``) and is configured at the
key's full rate, as users do; they start together against one ``bulkfetch simulate``
process (sliding log, both lanes at ``RATE``/s). Setups:

* **one host, file store**: no flag; the processes share ``$XDG_CACHE_HOME``;
* **separate "hosts", Redis**: ``--rate-store redis://...`` to a ``redis-server`` started
  here, each process with its own ``XDG_CACHE_HOME`` (so no file is shared);
* **none** (the problem, for reference): ``--rate-store none``, each at the full rate;
* **one process** alone (``--rate-store none``, the whole manifest): what the limiter
  reaches without sharing, on this machine now, to judge the shared figures by.

Makespan is the server's (first request to last result, all processes together); the
bound is computed from the tasks the server made, both lanes at the server's rate, as in
the matrix. Targets: makespan / bound <= 1.10 and at most 3 429s in all.

Where the slots went, from the server's task list joined with every part's ledger (the
matrix's ``figures_from``, all processes as one client): the makespan's excess split
between the create lane and the status lane, status calls that found a task not ready,
status slots nobody used, how long a ready task waited; and per process, when it created
its first and last task and had its last file (slots after the first request), to see
the start, the end and the hand-over between processes.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks.common import (
    RATE,
    SLOT,
    CaseResult,
    TaskTrace,
    figures_from,
    job_params,
    sim_config,
    write_manifest,
)
from benchmarks.oracle import greedy_poller
from benchmarks.procs import bulkfetch_cmd, child_env, sim_process, spawn, wait
from bulkfetch.ledger import JobState, Ledger
from bulkfetch.simulator import bound_makespan
from tests.redis_server import RedisServer

__all__ = ["run_shared_case"]

#: The matrix's processing law and seed (its "sliding, float, 1x" cell is one process).
MEDIAN_SLOTS = 20.0
SIGMA = 0.5
SEED = 11


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return json.loads(resp.read())


def _part_traces(out: Path) -> list[dict[str, TaskTrace]]:
    """Each part's tasks from its ledger (one per ``--shard K/N``), on the host's clock."""
    parts: list[dict[str, TaskTrace]] = []
    for path in sorted(out.glob("bulkfetch-ledger*.json")):
        traces: dict[str, TaskTrace] = {}
        with Ledger.open(path, readonly=True) as ledger:
            for record in ledger.records().values():
                if record.task_id:
                    done = record.state is JobState.DONE
                    fetched = record.updated_at if done else None
                    traces[record.task_id] = TaskTrace(record.created_at, fetched)
        parts.append(traces)
    return parts


def _where_slots_went(
    parts: list[dict[str, TaskTrace]],
    counters: dict[str, Any],
    tasks: list[dict[str, Any]],
    bound: float,
    n: int,
) -> dict[str, Any]:
    """The matrix's diagnostics for all processes as one client, and each process's
    first creation, last creation and last file, in slots after the first request."""
    merged = {tid: trace for part in parts for tid, trace in part.items()}
    done = sum(1 for t in merged.values() if t.fetched is not None)
    figures = figures_from(
        "bulkfetch",
        jobs=n,
        done=done,
        counters={**counters, "bound_seconds": bound},
        tasks=tasks,
        traces=merged,
        not_ready_times=[],
        config=sim_config(seed=SEED, median_slots=MEDIAN_SLOTS, sigma=SIGMA),
        wall=0.0,
    )
    by_id = {str(t["task_id"]): t for t in tasks}
    first = float(counters.get("first_request_at") or 0.0)
    offsets = [t.created - float(by_id[i]["created_at"]) for i, t in merged.items() if i in by_id]
    offset = sorted(offsets)[len(offsets) // 2] if offsets else 0.0
    per_process = []
    for part in parts:
        created = [float(by_id[i]["created_at"]) - first for i in part if i in by_id]
        fetched = [t.fetched - offset - first for t in part.values() if t.fetched is not None]
        polls = sum(int(by_id[i]["polls"]) for i in part if i in by_id)
        per_process.append(
            {
                "jobs": len(part),
                "first_create": min(created, default=math.nan) / SLOT,
                "last_create": max(created, default=math.nan) / SLOT,
                "last_fetch": max(fetched, default=math.nan) / SLOT,
                "status_calls": polls,
            }
        )
    return {"diag": figures.diag, "not_ready": figures.not_ready, "parts": per_process}


def _one(setup: str, processes: int, n: int, work: Path, redis: RedisServer) -> dict[str, Any]:
    """``processes`` runs of one key at once; the server's figures for all of them."""
    manifest = write_manifest(work / "jobs.jsonl", (job_params(i) for i in range(n)))
    rate = f"{RATE}/s"
    flags = [
        *("--seed", str(SEED), "--create-rate", rate, "--status-rate", rate),
        *("--processing-median", f"{MEDIAN_SLOTS * SLOT:g}", "--processing-sigma", f"{SIGMA:g}"),
    ]
    if setup == "redis":
        redis.flush()
    with sim_process(*flags) as sim:
        children = []
        for k in range(1, processes + 1):
            cache = work / ("cache" if setup == "file" else f"cache-{k}")
            store = {"redis": redis.url, "none": "none"}.get(setup, "")
            cmd = [*bulkfetch_cmd(), "run", str(manifest), "-o", str(work / "out")]
            cmd += ["--api-url", sim.api_url, "--create-rate", rate, "--status-rate", rate]
            cmd += ["--shard", f"{k}/{processes}", "-q"]
            cmd += ["--report", str(work / f"report-{k}.json")]
            env = child_env({"XDG_CACHE_HOME": str(cache)})
            if store:
                env["BULKFETCH_RATE_STORE"] = store
            children.append(spawn(cmd, env=env))
        results = [wait(proc, started) for proc, started in children]
        counters = _get(f"{sim.url}/_sim/counters")
        tasks = _get(f"{sim.url}/_sim/tasks")
    processing = [float(t["processing"]) for t in tasks]
    bound = bound_makespan(processing, SLOT, SLOT)
    # The same tasks, polled blind but with the law and the rates known (oracle.py).
    blind, _ = greedy_poller([p / SLOT for p in processing], median=MEDIAN_SLOTS, sigma=SIGMA)
    makespan = float(counters["makespan_seconds"] or 0.0)
    lanes = []  # each process's lanes at the end: interval / the server's, 429s, paused
    for k in range(1, processes + 1):
        try:
            report = json.loads((work / f"report-{k}.json").read_text())
        except (OSError, ValueError):
            continue
        lanes.append(
            {
                name: (
                    lane["interval_seconds"] / SLOT,
                    lane["rate_limited"],
                    lane["paused_seconds"],
                )
                for name, lane in report.get("lanes", {}).items()
            }
        )
    return {
        **_where_slots_went(_part_traces(work / "out"), counters, tasks, bound, n),
        "lanes": lanes,
        "setup": setup,
        "processes": processes,
        "codes": [usage.returncode for usage, _ in results],
        "errors": [err for usage, err in results if usage.returncode != 0],
        "done": int(counters["results_served"]),
        "makespan": makespan,
        "bound": bound,
        "ratio": makespan / bound if bound else float("nan"),
        "blind_reference": blind,
        "create_429": int(counters["create_429"]),
        "status_429": int(counters["status_429"]),
        "requests": int(counters["create_calls"]) + int(counters["status_calls"]),
    }


def _setup_name(setup: str, processes: int) -> str:
    if setup == "none":
        return "one process alone (reference)" if processes == 1 else "none (each alone)"
    return {"file": "file (one host)", "redis": "Redis (separate hosts)"}[setup]


def _slots_row(f: dict[str, Any]) -> list[str]:
    d = f["diag"]
    return [
        f"{_setup_name(f['setup'], f['processes'])} x{f['processes']}",
        f"{d['create_loss']:.1f} / {d['status_loss']:.1f}",
        f"{d['last_create']:.0f}",
        f"{f['not_ready']}",
        f"{d['status_idle']:.0f}",
        f"{d['ready_to_fetch_mean']:.1f}",
        "; ".join(
            f"{p['jobs']} jobs, {p['first_create']:.0f}-{p['last_create']:.0f}, "
            f"end {p['last_fetch']:.0f}, {p['status_calls']} polls"
            for p in f["parts"]
        ),
        "; ".join(
            " ".join(
                f"{name} {x:.3f}x {n429} {paused:.2f}s" for name, (x, n429, paused) in p.items()
            )
            for p in f["lanes"]
        ),
    ]


def run_shared_case(
    *, n: int, with_none: bool = True, setups: list[tuple[str, int]] | None = None
) -> CaseResult:
    started = time.monotonic()
    result = CaseResult(
        "shared",
        "7. Many processes, one key",
        f"{n} jobs of one manifest split with `--shard K/N` over 2 or 4 `bulkfetch run` "
        f"processes started together, each configured at the key's full rate ({RATE}/s per "
        "lane, the simulator's sliding log), processing lognormal (median "
        f"{MEDIAN_SLOTS:g} slots, sigma {SIGMA:g}). One host: the default file store "
        "(no flag). Separate hosts: `--rate-store redis://...` (a local redis-server), "
        "each process with its own cache folder. Makespan on the server, all processes "
        "together; bound from the tasks made, both lanes at the key's rate.",
    )
    if setups is None:
        setups = [("none", 1), ("file", 2), ("file", 4), ("redis", 2), ("redis", 4)]
        if with_none:
            setups.append(("none", 2))
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-shared-") as tmp:
        redis = RedisServer.start(Path(tmp) / "redis")
        try:
            for setup, processes in setups:
                work = Path(tmp) / f"{setup}-{processes}"
                work.mkdir()
                fig = _one(setup, processes, n, work, redis)
                print(
                    f"[bench]   {setup:<5} x{processes}  makespan/bound {fig['ratio']:.3f}  "
                    f"429s {fig['create_429']}+{fig['status_429']}  done {fig['done']}/{n}  "
                    f"exit {fig['codes']}",
                    flush=True,
                )
                print(f"[bench]     {' | '.join(_slots_row(fig)[1:])}", flush=True)
                rows.append(fig)
        finally:
            redis.stop()
    result.tables.append(
        (
            "Processes on one key",
            [
                "store",
                "processes",
                "makespan / bound",
                "blind reference",
                "429s (create+status)",
                "done",
                "exits",
            ],
            [
                [
                    _setup_name(f["setup"], f["processes"]),
                    str(f["processes"]),
                    f"{f['ratio']:.3f}",
                    f"{f['blind_reference']:.3f}",
                    f"{f['create_429']}+{f['status_429']}",
                    f"{f['done']}/{n}",
                    " ".join(map(str, f["codes"])),
                ]
                for f in rows
            ],
        )
    )
    result.tables.append(
        (
            "Where the slots went (slots of 50 ms; per process: first-last creation, last file)",
            [
                "store",
                "loss create / status",
                "last creation (ideal N-1)",
                "not ready",
                "status slots idle",
                "ready→fetch",
                "per process",
                "lanes at the end (interval / the server's, 429s, paused)",
            ],
            [_slots_row(f) for f in rows],
        )
    )
    for f in rows:
        if f["setup"] == "none":  # references, not targets
            continue
        name = f"{f['setup']} x{f['processes']}"
        result.target(f"{name}: makespan / bound", "<= 1.10", f["ratio"], f["ratio"] <= 1.10)
        limited = f["create_429"] + f["status_429"]
        result.target(f"{name}: 429s in all", "<= 3", limited, limited <= 3, "d")
        result.target(f"{name}: jobs done", f"{n}", f["done"], f["done"] == n, "d")
    result.seconds = time.monotonic() - started
    return result
