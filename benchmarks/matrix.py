"""The scheduling matrix: every way a server may count requests, every form of Retry-After,
every wrong configuration, and nginx's own ``limit_req`` in front of the simulator.

A cell is a server (limiter kind x Retry-After form) and a client configuration (rates
known, 2x too high, or 2x too low with ``--learn-rates``). In each cell bulkfetch and the
fixed-delay client run in turn, each against a fresh ``bulkfetch simulate`` process with the
same seed (so the n-th task created gets the same processing time whoever creates it).
bulkfetch runs as the real CLI (``bulkfetch run``) in a process of its own; the fixed-delay
client in this process; the simulator in a third, so no two share a GIL. The sequential
script runs once per limiter kind, in the background (it is slow and idle).

Makespan is taken on the server: from the first request it saw to the last complete
result. The bound is computed here from the tasks the server made (their processing times
in creation order, both lanes at the server's rate), so it is the same formula for the
nginx cell, whose simulator does not limit at all. *Process start* (exec to the first
request) is reported apart: the server's makespan does not include it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import baselines
from benchmarks.common import (
    RATE,
    SLOT,
    RunFigures,
    TaskTrace,
    figures_from,
    job_params,
    sim_config,
    write_manifest,
)
from benchmarks.procs import (
    SimProcess,
    bulkfetch_cmd,
    child_env,
    free_port,
    sim_process,
    spawn,
    wait,
)
from bulkfetch.ledger import JobState, Ledger
from bulkfetch.simulator import TEST_API_KEY, bound_makespan

__all__ = ["CELLS", "NGINX", "Cell", "cells", "run_cell_client"]

KINDS = ("sliding", "fixed", "bucket", "spacing")
FORMS = ("float", "int", "window", "date", "off")
#: What each Retry-After form is called in the tables.
FORM_NAMES = {
    "float": "exact",
    "int": "whole s, rounded up",
    "window": "whole window",
    "date": "HTTP date",
    "off": "absent",
}
NGINX = "nginx"
MEDIAN_SLOTS, SIGMA = 20.0, 0.5
POLL_EVERY = 5 * SLOT
BACKOFF = SLOT


@dataclass(frozen=True, slots=True)
class Cell:
    """One server and one client configuration."""

    limiter: str  # a simulator limiter kind, or "nginx"
    retry_after: str  # a simulator Retry-After mode ("off" for nginx)
    factor: float = 1.0  # the clients' configured rate over the server's
    learn: bool = False

    @property
    def config_name(self) -> str:
        if self.factor == 1.0:
            return "rates known"
        if self.factor > 1.0:
            return f"rates {self.factor:g}x too high"
        return f"rates {1 / self.factor:g}x too low, --learn-rates"

    @property
    def name(self) -> str:
        form = FORM_NAMES.get(self.retry_after, self.retry_after)
        server = "nginx limit_req" if self.limiter == NGINX else self.limiter
        return f"{server}, Retry-After {form}, {self.config_name}"

    @property
    def max_ratio(self) -> float:
        if self.limiter == NGINX:
            return 1.05
        if self.factor == 1.0:
            return 1.03
        return 1.10 if self.factor > 1.0 else 1.15

    @property
    def max_429(self) -> int | None:
        if self.factor == 1.0:
            return 0
        return 3 if self.factor > 1.0 else None


def cells() -> list[Cell]:
    """The matrix: each kind x form at known rates and 2x too high; each kind 2x too low
    with learning (Retry-After rounded up: the form matters little when probing up)."""
    out = [Cell(k, f) for k in KINDS for f in FORMS]
    out += [Cell(k, f, 2.0) for k in KINDS for f in FORMS]
    out += [Cell(k, "int", 0.5, True) for k in KINDS]
    return out


CELLS = cells()


def _sim_flags(cell: Cell, seed: int) -> list[str]:
    rate = f"{RATE}/s"
    limiter = cell.limiter
    if limiter == NGINX:
        rate, limiter = "100000/s", "sliding"  # nginx limits; the simulator does not
    return [
        *("--seed", str(seed), "--create-rate", rate, "--status-rate", rate),
        *("--processing-median", f"{MEDIAN_SLOTS * SLOT:g}"),
        *("--processing-sigma", f"{SIGMA:g}"),
        *("--limiter", limiter, "--retry-after", cell.retry_after),
    ]


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return json.loads(resp.read())


_NGINX_CONF = """
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    # One zone per lane, as EOS counts creations and status calls apart: an empty key
    # is not counted, so each zone sees only its own method.
    map $request_method $create_key {{ POST $binary_remote_addr; default ""; }}
    map $request_method $status_key {{ GET $binary_remote_addr; default ""; }}
    limit_req_zone $create_key zone=create:1m rate={rate}r/s;
    limit_req_zone $status_key zone=status:1m rate={rate}r/s;
    limit_req_status 429;
    upstream sim {{ server 127.0.0.1:{sim_port}; keepalive 16; }}
    server {{
        listen 127.0.0.1:{port};
        location /api/gdw/api {{
            limit_req zone=create;
            limit_req zone=status;
            proxy_pass http://sim;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
        location / {{ proxy_pass http://sim; }}
    }}
}}
"""


def nginx_path() -> str | None:
    return shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )


@contextlib.contextmanager
def _nginx_in_front(sim: SimProcess) -> Iterator[SimProcess]:
    """nginx ``limit_req`` (both lanes at the benchmark rate, no burst) on a free port,
    proxying to ``sim``; yields a handle whose URLs go through nginx."""
    binary = nginx_path()
    if binary is None:
        raise RuntimeError("nginx not found (apt-get install -y nginx-light)")
    with tempfile.TemporaryDirectory(prefix="bench-nginx-") as tmp:
        port = free_port()
        conf = Path(tmp) / "nginx.conf"
        conf.write_text(
            _NGINX_CONF.format(tmp=tmp, rate=RATE, sim_port=sim.url.rsplit(":", 1)[1], port=port)
        )
        proc = subprocess.Popen(
            [binary, "-p", tmp, "-c", str(conf), "-e", f"{tmp}/error.log"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    _get(f"http://127.0.0.1:{port}/_sim/counters")
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("nginx did not start") from None
                    time.sleep(0.05)
            yield SimProcess(sim.proc, f"http://127.0.0.1:{port}")
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def server(cell: Cell, seed: int) -> Iterator[tuple[SimProcess, SimProcess]]:
    """(where clients go, the simulator itself) for ``cell``."""
    with sim_process(*_sim_flags(cell, seed)) as sim:
        if cell.limiter == NGINX:
            with _nginx_in_front(sim) as front:
                yield front, sim
        else:
            yield sim, sim


async def _bulkfetch_cli(
    cell: Cell, api_url: str, manifest: Path, out: Path
) -> tuple[int, str, dict[str, Any]]:
    """Run ``bulkfetch run``; its exit code, the tail of its stderr, and its report."""
    rate = f"{RATE * cell.factor:g}/s"
    report = out.parent / "report.json"
    cmd = [
        *bulkfetch_cmd(),
        *("run", str(manifest), "-o", str(out), "--api-url", api_url),
        *("--create-rate", rate, "--status-rate", rate, "-q", "--report", str(report)),
        *(["--learn-rates"] if cell.learn else []),
        # BENCH_CLIENT_FLAGS: more flags for bulkfetch run (an A/B of an option).
        *os.environ.get("BENCH_CLIENT_FLAGS", "").split(),
    ]
    # BENCH_CLIENT_PATH: another checkout's bulkfetch as the client (an A/B on one server).
    other = os.environ.get("BENCH_CLIENT_PATH")
    proc, started = spawn(cmd, env=child_env({"PYTHONPATH": other} if other else None))
    usage, err = await asyncio.to_thread(wait, proc, started)
    try:
        data = json.loads(report.read_text())
    except (OSError, ValueError):
        data = {}
    return usage.returncode, err, data


def _bulkfetch_traces(out: Path) -> tuple[dict[str, TaskTrace], int]:
    traces: dict[str, TaskTrace] = {}
    done = 0
    with Ledger.open(out / "bulkfetch-ledger.json", readonly=True) as ledger:
        for record in ledger.records().values():
            if record.task_id:
                fetched = record.updated_at if record.state is JobState.DONE else None
                done += record.state is JobState.DONE
                traces[record.task_id] = TaskTrace(record.created_at, fetched)
    return traces, done


async def run_cell_client(cell: Cell, client: str, n: int, seed: int, work: Path) -> RunFigures:
    """One client's run of ``cell`` with ``n`` jobs: ``bulkfetch``, ``fixed-delay`` or
    ``sequential`` (the last with the rates known, whatever the cell says)."""
    await asyncio.to_thread(work.mkdir, parents=True, exist_ok=True)
    jobs = [{**job_params(i), "reference": f"{client}-{i}"} for i in range(n)]
    notes: list[str] = []
    limited = {"create": 0, "status": 0}
    with server(cell, seed) as (front, sim):
        asked = time.monotonic()
        before = _get(f"{sim.url}/_sim/counters")
        spawned = time.monotonic()
        # The simulator's clock when the client started (the GET took a moment: its middle).
        spawn_at_sim = float(before["now_seconds"]) + (spawned - asked) / 2
        if client == "bulkfetch":
            manifest = write_manifest(work / "manifest.jsonl", jobs)
            out = work / "out"
            code, err, report = await _bulkfetch_cli(cell, front.api_url, manifest, out)
            traces, done = _bulkfetch_traces(out)
            limited.update(report.get("run", {}).get("rate_limited", {}))
            notes.append(f"exit code {code}")
            notes += [f"{k} lane at the end: {v}" for k, v in report.get("lanes", {}).items()]
            if code != 0:
                notes.append(err.strip().splitlines()[-1] if err.strip() else "no stderr")
        else:
            interval = SLOT / (cell.factor if client == "fixed-delay" else 1.0)
            run = baselines.fixed_delay if client == "fixed-delay" else None
            if run is not None:
                traces, _ = await run(
                    jobs,
                    out=work / "out",
                    api_url=front.api_url,
                    api_key=TEST_API_KEY,
                    create_interval=interval,
                    status_interval=interval,
                    poll_every=POLL_EVERY,
                    backoff=BACKOFF,
                    stats=limited,
                )
            else:
                traces, _ = await baselines.sequential(
                    jobs,
                    out=work / "out",
                    api_url=front.api_url,
                    api_key=TEST_API_KEY,
                    poll_every=POLL_EVERY,
                    backoff=BACKOFF,
                    stats=limited,
                )
            done = sum(1 for t in traces.values() if t.fetched is not None)
        wall = time.monotonic() - spawned
        counters = _get(f"{sim.url}/_sim/counters")
        tasks = _get(f"{sim.url}/_sim/tasks")
    if cell.limiter == NGINX:
        # nginx answered the 429s: the simulator saw only the calls it let through.
        for lane in ("create", "status"):
            counters[f"{lane}_429"] = int(limited.get(lane, 0))
            counters[f"{lane}_calls"] += int(limited.get(lane, 0))
    counters["bound_seconds"] = bound_makespan([float(t["processing"]) for t in tasks], SLOT, SLOT)
    config = sim_config(seed=seed, median_slots=MEDIAN_SLOTS, sigma=SIGMA)
    figures = figures_from(
        client,
        jobs=n,
        done=done,
        counters=counters,
        tasks=tasks,
        traces=traces,
        not_ready_times=[],
        config=config,
        wall=wall,
    )
    first = counters.get("first_request_at")
    if first is not None:
        figures.diag["process_start_s"] = float(first) - spawn_at_sim
    figures.notes.extend(notes)
    return figures
