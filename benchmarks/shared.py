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
"""

from __future__ import annotations

import json
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks.common import RATE, SLOT, CaseResult, job_params, write_manifest
from benchmarks.procs import bulkfetch_cmd, child_env, sim_process, spawn, wait
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
            env = child_env({"XDG_CACHE_HOME": str(cache)})
            if store:
                env["BULKFETCH_RATE_STORE"] = store
            children.append(spawn(cmd, env=env))
        results = [wait(proc, started) for proc, started in children]
        counters = _get(f"{sim.url}/_sim/counters")
        tasks = _get(f"{sim.url}/_sim/tasks")
    bound = bound_makespan([float(t["processing"]) for t in tasks], SLOT, SLOT)
    makespan = float(counters["makespan_seconds"] or 0.0)
    return {
        "setup": setup,
        "processes": processes,
        "codes": [usage.returncode for usage, _ in results],
        "errors": [err for usage, err in results if usage.returncode != 0],
        "done": int(counters["results_served"]),
        "makespan": makespan,
        "bound": bound,
        "ratio": makespan / bound if bound else float("nan"),
        "create_429": int(counters["create_429"]),
        "status_429": int(counters["status_429"]),
        "requests": int(counters["create_calls"]) + int(counters["status_calls"]),
    }


def _setup_name(setup: str, processes: int) -> str:
    if setup == "none":
        return "one process alone (reference)" if processes == 1 else "none (each alone)"
    return {"file": "file (one host)", "redis": "Redis (separate hosts)"}[setup]


def run_shared_case(*, n: int, with_none: bool = True) -> CaseResult:
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
                rows.append(fig)
        finally:
            redis.stop()
    result.tables.append(
        (
            "Processes on one key",
            ["store", "processes", "makespan / bound", "429s (create+status)", "done", "exits"],
            [
                [
                    _setup_name(f["setup"], f["processes"]),
                    str(f["processes"]),
                    f"{f['ratio']:.3f}",
                    f"{f['create_429']}+{f['status_429']}",
                    f"{f['done']}/{n}",
                    " ".join(map(str, f["codes"])),
                ]
                for f in rows
            ],
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
