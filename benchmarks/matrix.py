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
nginx cell, whose simulator does not limit at all. The *blind reference* is what a poller
that cannot see readiness reaches on the same tasks even with the processing-time law and
the rates known in advance (``benchmarks.oracle.greedy_poller``): the part of a cell's gap
to the bound no scheduling closes. *Process start* (exec to the first
request) is reported apart: the server's makespan does not include it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
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
    CaseResult,
    RunFigures,
    TaskTrace,
    figures_from,
    job_params,
    ledger_traces,
    sim_config,
    write_manifest,
)
from benchmarks.oracle import greedy_poller
from benchmarks.procs import (
    SimProcess,
    bulkfetch_cmd,
    child_env,
    free_port,
    sim_process,
    spawn,
    wait,
)
from bulkfetch.simulator import TEST_API_KEY, bound_makespan

__all__ = ["CELLS", "NGINX", "Cell", "cells", "run_cell_client", "run_matrix"]

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
    with learning, Retry-After exact (at this time scale whole seconds are whole windows,
    which the other cells cover; the search draws one 429 per lane whatever the form)."""
    out = [Cell(k, f) for k in KINDS for f in FORMS]
    out += [Cell(k, f, 2.0) for k in KINDS for f in FORMS]
    out += [Cell(k, "float", 0.5, True) for k in KINDS]
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
    # BENCH_CLIENT_PATH: another checkout's bulkfetch as the client (an A/B on one server),
    # run as ``python -m bulkfetch``: this environment's console script names this
    # checkout's entry point, which another checkout's layout may not have.
    other = os.environ.get("BENCH_CLIENT_PATH")
    cmd = [
        *([sys.executable, "-m", "bulkfetch"] if other else bulkfetch_cmd()),
        *("run", str(manifest), "-o", str(out), "--api-url", api_url),
        *("--create-rate", rate, "--status-rate", rate, "-q", "--report", str(report)),
        *(["--learn-rates"] if cell.learn else []),
        # BENCH_CLIENT_FLAGS: more flags for bulkfetch run (an A/B of an option).
        *os.environ.get("BENCH_CLIENT_FLAGS", "").split(),
    ]
    proc, started = spawn(cmd, env=child_env({"PYTHONPATH": other} if other else None))
    usage, err = await asyncio.to_thread(wait, proc, started)
    try:
        data = json.loads(report.read_text())
    except (OSError, ValueError):
        data = {}
    return usage.returncode, err, data


async def _baseline(
    client: str,
    cell: Cell,
    jobs: list[dict[str, Any]],
    api_url: str,
    out: Path,
    limited: dict[str, int],
) -> dict[str, TaskTrace]:
    """The fixed-delay client at the cell's configured rate, or the sequential script."""
    if client == "fixed-delay":
        interval = SLOT / cell.factor
        traces, _ = await baselines.fixed_delay(
            jobs,
            out=out,
            api_url=api_url,
            api_key=TEST_API_KEY,
            create_interval=interval,
            status_interval=interval,
            poll_every=POLL_EVERY,
            backoff=BACKOFF,
            stats=limited,
        )
        return traces
    traces, _ = await baselines.sequential(
        jobs,
        out=out,
        api_url=api_url,
        api_key=TEST_API_KEY,
        poll_every=POLL_EVERY,
        backoff=BACKOFF,
        stats=limited,
    )
    return traces


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
            traces, done = ledger_traces(out)
            limited.update(report.get("run", {}).get("rate_limited", {}))
            notes.append(f"exit code {code}")
            notes += [f"{k} lane at the end: {v}" for k, v in report.get("lanes", {}).items()]
            if code != 0:
                notes.append(err.strip().splitlines()[-1] if err.strip() else "no stderr")
        else:
            traces = await _baseline(client, cell, jobs, front.api_url, work / "out", limited)
            done = sum(1 for t in traces.values() if t.fetched is not None)
        wall = time.monotonic() - spawned
        counters = _get(f"{sim.url}/_sim/counters")
        tasks = _get(f"{sim.url}/_sim/tasks")
    if cell.limiter == NGINX:
        # nginx answered the 429s: the simulator saw only the calls it let through.
        for lane in ("create", "status"):
            counters[f"{lane}_429"] = int(limited.get(lane, 0))
            counters[f"{lane}_calls"] += int(limited.get(lane, 0))
    processing = [float(t["processing"]) for t in tasks]
    counters["bound_seconds"] = bound_makespan(processing, SLOT, SLOT)
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
    if client == "bulkfetch":
        # The same tasks, polled blind but with the law and the rates known (oracle.py).
        ratio, _ = greedy_poller([p / SLOT for p in processing], median=MEDIAN_SLOTS, sigma=SIGMA)
        figures.diag["blind_reference"] = ratio
    figures.notes.extend(notes)
    return figures


def _pace_end(run: RunFigures) -> str:
    """The lanes' pace at the end as a multiple of the server's rate, from the notes."""
    paces = []
    for note in run.notes:
        m = re.search(r"(create|status) lane at the end: <Limiter \S+ interval=([0-9.e+-]+)s", note)
        if m:
            paces.append(f"{m.group(1)} {SLOT / float(m.group(2)):.2f}x")
    return ", ".join(paces)


def _cell_row(cell: Cell, bf: RunFigures, fd: RunFigures) -> list[str]:
    ok = _cell_ok(cell, bf, fd)
    return [
        cell.name,
        f"{bf.ratio:.3f}",
        f"{bf.diag.get('blind_reference', math.nan):.3f}",
        f"{bf.create_429} / {bf.status_429}",
        f"{bf.status_per_job:.2f}",
        f"{bf.diag['create_loss']:.1f} / {bf.diag['status_loss']:.1f}",
        f"{bf.diag.get('process_start_s', math.nan):.2f}",
        f"{fd.ratio:.3f}",
        f"{fd.create_429} / {fd.status_429}",
        f"≤ {cell.max_ratio}"
        + (f", ≤ {cell.max_429} 429s" if cell.max_429 is not None else "")
        + ", < fixed-delay",
        "met" if ok else f"**missed** ({_misses(cell, bf, fd)})",
    ]


def _cell_ok(cell: Cell, bf: RunFigures, fd: RunFigures) -> bool:
    return not _misses(cell, bf, fd)


def _misses(cell: Cell, bf: RunFigures, fd: RunFigures) -> str:
    out = []
    if bf.done != bf.jobs:
        out.append(f"{bf.done}/{bf.jobs} done")
    if not bf.ratio <= cell.max_ratio:
        out.append("makespan")
    if cell.max_429 is not None and bf.create_429 + bf.status_429 > cell.max_429:
        out.append("429s")
    if not bf.ratio < fd.ratio:
        out.append("behind fixed-delay")
    return ", ".join(out)


MATRIX_HEADER = [
    "server, configuration",
    "bulkfetch makespan / bound",
    "blind reference",
    "429s create / status",
    "status calls / job",
    "loss create / status lane (slots)",
    "process start (s)",
    "fixed-delay makespan / bound",
    "fixed-delay 429s",
    "target",
    "",
]


def _diagnose(cell: Cell, bf: RunFigures, fd: RunFigures) -> str:
    d = bf.diag
    parts = [
        f"**{cell.name}**: {bf.ratio:.3f}× the bound ({_misses(cell, bf, fd)}); fixed-delay "
        f"{fd.ratio:.3f}×; the blind reference on the same tasks "
        f"{d.get('blind_reference', math.nan):.3f}×.",
        f"Create lane lost {d['create_loss']:.1f} slots (last creation at slot "
        f"{d['last_create']:.0f} of {bf.jobs - 1} ideal), status lane {d['status_loss']:.1f} "
        f"(a ready task waited {d['ready_to_fetch_mean']:.1f} slots on average, "
        f"{bf.status_per_job - 1:.2f} extra status calls per job, {d['status_idle']:.0f} "
        f"status slots idle); 429s {bf.create_429} create / {bf.status_429} status.",
    ]
    pace = _pace_end(bf)
    if pace:
        parts.append(f"Lanes at the end: {pace} the server's rate.")
    return " ".join(parts)


async def run_matrix(
    chosen: list[Cell], *, n: int, n_seq: int, seed: int, tmp: Path, sequential: bool = True
) -> CaseResult:
    """Every cell: bulkfetch, then the fixed-delay client; the sequential script per limiter
    kind in the background. One CaseResult with the matrix as a table."""
    started = time.monotonic()
    title = "Scheduling matrix" if any(c.limiter != NGINX for c in chosen) else "nginx limit_req"
    result = CaseResult(
        "matrix" if title == "Scheduling matrix" else "nginx",
        title,
        f"N = {n} jobs per run (the sequential script: {n_seq}); server {RATE}/s per lane "
        f"(1 slot = {SLOT:g} s); processing lognormal, median {MEDIAN_SLOTS:g} slots, sigma "
        f"{SIGMA:g}; seed {seed} (every client gets the same draws). Each client against "
        "its own `bulkfetch simulate` process; bulkfetch through the real CLI. Makespan on "
        "the server, first request to last result; the bound is the clairvoyant one for the "
        "same tasks; the blind reference is the best poller we know that cannot see which "
        "task is ready, given the true processing-time law and the rates, with no margin, "
        "on the same tasks (`benchmarks/oracle.py`). Retry-After forms: exact (float), "
        "whole seconds rounded up (1 s is the whole window at this scale), the whole "
        "window, an HTTP date, absent. Behind nginx "
        "the simulator does not limit; nginx `limit_req` (rate=20r/s, no burst, status "
        "429, one zone per lane) does, with no Retry-After.",
    )
    kinds = sorted({c.limiter for c in chosen}, key=lambda k: (k == NGINX, k))
    background: dict[str, asyncio.Task[RunFigures]] = {}
    if sequential:
        for kind in kinds:
            cell = Cell(kind, "float" if kind != NGINX else "off")
            background[kind] = asyncio.create_task(
                run_cell_client(cell, "sequential", n_seq, seed, tmp / f"seq-{kind}")
            )
    rows = []
    for i, cell in enumerate(chosen):
        print(f"[bench] {cell.name} ...", file=sys.stderr, flush=True)
        bf = await run_cell_client(cell, "bulkfetch", n, seed, tmp / f"bf-{i}")
        fd = await run_cell_client(cell, "fixed-delay", n, seed, tmp / f"fd-{i}")
        print(
            f"[bench]   bulkfetch {bf.ratio:.3f} (429s {bf.create_429}/{bf.status_429}), "
            f"fixed-delay {fd.ratio:.3f} (429s {fd.create_429}/{fd.status_429})",
            file=sys.stderr,
            flush=True,
        )
        bf.client = f"bulkfetch: {cell.name}"
        fd.client = f"fixed-delay: {cell.name}"
        result.runs_json.extend([bf, fd])
        rows.append(_cell_row(cell, bf, fd))
        result.targets.append(
            (
                cell.name,
                rows[-1][-2],
                f"{bf.ratio:.3f}, {bf.create_429 + bf.status_429} 429s, fixed-delay {fd.ratio:.3f}",
                _cell_ok(cell, bf, fd),
            )
        )
        if not _cell_ok(cell, bf, fd):
            result.paragraphs.append(_diagnose(cell, bf, fd))
    result.tables.append(("The matrix (429s are counts in the run)", MATRIX_HEADER, rows))
    seq_rows = []
    for kind, task in background.items():
        seq = await task
        seq_rows.append([kind, str(seq.jobs), f"{seq.ratio:.1f}", f"{seq.status_per_job:.2f}"])
        seq.client = f"sequential: {kind}"
        result.runs_json.append(seq)
    if seq_rows:
        result.tables.append(
            (
                "The sequential script (create, poll every 5 slots, download, next), rates "
                "known, against each server",
                ["server", "jobs", "makespan / bound", "status calls / job"],
                seq_rows,
            )
        )
    met = sum(1 for *_, ok in result.targets if ok)
    result.paragraphs.insert(
        0,
        f"**What it shows.** {met} of {len(result.targets)} cells meet every target. "
        "Cells that miss are diagnosed below from their own figures (the hand-written "
        "reading, if any, is at the end of this file).",
    )
    result.seconds = time.monotonic() - started
    return result
