"""Case 5: one large result, bulkfetch (a child process) against ``curl -o``.

The simulator (``bulkfetch simulate`` in a process of its own) serves tiff results as a
generated TIFF of ``--big-result-bytes`` from constant memory, in 1 MiB writes, behind a
redirect to the key-less ``/_sim/results/{task_id}``, so curl can fetch the very same bytes.
For each size:

1. ``bulkfetch run --log-format json`` (a child process, measured with ``wait4``) fetches
   the one job; its throughput is its own, as curl's is: the ``done`` event's
   ``stream_seconds`` (first byte received to last byte written) and ``seconds`` (to the
   file fsynced under its final name);
2. ``curl -o`` fetches the same task's URL; its throughput is curl's own
   ``size_download / time_total``.

Both write to a temporary folder on the same disk, deleted after each run, and each fetch
starts after a ``sync``. Each pair is repeated and the best of each kept, with the median
beside it (the page cache, writeback and a shared 2-core VM make single runs noisy).
The simulator's CPU while each client ran is measured too: on a 2-core machine the server
and the client share the cores, so a client's CPU per byte shows in its throughput.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import orjson

from benchmarks.common import CaseResult, job_params, write_manifest
from benchmarks.procs import bulkfetch_cmd, sim_process, spawn, wait

__all__ = ["run_streaming_case"]

MB = 1_000_000


@dataclass(frozen=True, slots=True)
class Fetch:
    size: int
    stream_s: float  # first to last byte on disk
    durable_s: float  # first byte to the final name (fsync, rename)
    wall_s: float  # the whole child process
    rss_mb: float
    cpu_s: float

    @property
    def stream_mbps(self) -> float:
        return self.size / self.stream_s / MB

    @property
    def durable_mbps(self) -> float:
        return self.size / self.durable_s / MB


def _settle() -> None:
    """Start each fetch with no dirty pages from the one before: curl does not fsync, so
    without this its 500 MB would still be going to disk while bulkfetch runs next."""
    os.sync()
    time.sleep(0.2)


def _bulkfetch_fetch(api_url: str, manifest: Path, out: Path) -> Fetch:
    out.mkdir()
    cmd = [
        *bulkfetch_cmd(),
        *("run", str(manifest), "--out", str(out), "--api-url", api_url),
        *("--create-rate", "20/s", "--status-rate", "20/s", "--log-format", "json"),
    ]
    proc, started = spawn(cmd)
    usage, err = wait(proc, started)
    if usage.returncode != 0:
        raise RuntimeError(f"bulkfetch run exited {usage.returncode}: {err}")
    events = [orjson.loads(line) for line in err.splitlines() if line.startswith('{"')]
    done = next(e for e in events if "stream_seconds" in e)
    return Fetch(
        size=done["bytes"],
        stream_s=done["stream_seconds"],
        durable_s=done["seconds"],
        wall_s=usage.wall,
        rss_mb=usage.max_rss_mb,
        cpu_s=usage.cpu,
    )


@dataclass(frozen=True, slots=True)
class CurlFetch:
    size: int
    seconds: float  # curl's own time_total
    rss_mb: float
    cpu_s: float
    fsync_s: float  # an fsync of curl's file right after it exited, which curl never does

    @property
    def mbps(self) -> float:
        return self.size / self.seconds / MB

    @property
    def durable_mbps(self) -> float:
        return self.size / (self.seconds + self.fsync_s) / MB


def _curl_fetch(url: str, target: Path) -> CurlFetch:
    """``curl -o target url``: curl's own size and time, and its CPU and RSS (``wait4``)."""
    cmd = ["curl", "-sS", "-o", str(target), "-w", "%{size_download} %{time_total}", url]
    proc, started = spawn(cmd, env={}, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    text = proc.stdout.read().decode()
    proc.stdout.close()
    usage, err = wait(proc, started)
    if usage.returncode != 0:
        raise RuntimeError(f"curl exited {usage.returncode}: {err}")
    size, seconds = text.split()
    fd = os.open(target, os.O_RDONLY)
    try:
        synced = time.monotonic()
        os.fsync(fd)
        fsync_s = time.monotonic() - synced
    finally:
        os.close(fd)
    return CurlFetch(int(size), float(seconds), usage.max_rss_mb, usage.cpu, fsync_s)


def run_streaming_case(*, sizes: list[int], repeats: int) -> CaseResult:
    started = time.monotonic()
    result = CaseResult(
        "streaming",
        "5. Streaming one large result",
        "One tiff job; the simulator serves a generated TIFF of "
        f"{', '.join(f'{s // MB} MB' for s in sizes)} "
        "behind a redirect to a key-less URL; `bulkfetch run` (child process, limits 20/s) "
        f"against `curl -o` of the same URL, best of {repeats} each, writing to a temporary "
        "folder on the same disk.",
    )
    rows: list[list[str]] = []
    best: dict[int, tuple[Fetch, float]] = {}
    cpu: dict[int, tuple[float, float]] = {}  # size -> (bulkfetch, curl) CPU seconds
    # size -> the simulator's CPU seconds while (bulkfetch, curl) fetched, each repeat
    server_cpu: dict[int, tuple[list[float], list[float]]] = {s: ([], []) for s in sizes}
    pairs: dict[int, list[float]] = {}  # size -> each repeat's bulkfetch / curl throughput
    durable_best: dict[int, float] = {}  # size -> best curl + fsync MB/s
    with tempfile.TemporaryDirectory(prefix="bench-streaming-") as tmp:
        work = Path(tmp)
        manifest = write_manifest(work / "big.jsonl", [job_params(0, fmt="tiff")])
        for size in sizes:
            flags = [
                *("--seed", "5", "--create-rate", "20/s", "--status-rate", "20/s"),
                *("--processing-median", "0.05", "--processing-sigma", "0"),
                *("--result-form", "redirect", "--retry-after", "float"),
                *("--big-result-bytes", str(size), "--chunk-size", str(1 << 20)),
            ]
            fetches: list[Fetch] = []
            curls: list[CurlFetch] = []
            with sim_process(*flags) as sim:
                for rep in range(repeats):
                    out = work / f"bf-{size}-{rep}"
                    _settle()
                    before = sim.cpu_seconds()
                    fetch = _bulkfetch_fetch(sim.api_url, manifest, out)
                    server_cpu[size][0].append(sim.cpu_seconds() - before)
                    fetches.append(fetch)
                    for f in out.iterdir():
                        f.unlink()
                    with urllib.request.urlopen(f"{sim.url}/_sim/tasks") as answer:
                        task = json.loads(answer.read())[-1]
                    url = f"{sim.url}/_sim/results/{task['task_id']}"
                    target = work / f"curl-{size}-{rep}.tif"
                    _settle()
                    before = sim.cpu_seconds()
                    curl = _curl_fetch(url, target)
                    server_cpu[size][1].append(sim.cpu_seconds() - before)
                    target.unlink()
                    if curl.size != fetch.size:
                        raise RuntimeError(f"curl got {curl.size} bytes, bulkfetch {fetch.size}")
                    curls.append(curl)
            top = max(fetches, key=lambda f: f.stream_mbps)
            curl_top = max(curls, key=lambda c: c.mbps)
            curl_best = curl_top.mbps
            curl_durable = max(c.durable_mbps for c in curls)
            best[size] = (top, curl_best)
            durable_best[size] = curl_durable
            pairs[size] = [f.stream_mbps / c.mbps for f, c in zip(fetches, curls, strict=True)]
            cpu[size] = (min(f.cpu_s for f in fetches), min(c.cpu_s for c in curls))
            rows.append(
                [
                    f"{top.size / MB:.0f} MB",
                    f"{curl_best:.0f}",
                    f"{top.stream_mbps:.0f}",
                    f"{top.stream_mbps / curl_best:.2f}",
                    f"{statistics.median(pairs[size]):.2f}",
                    f"{top.durable_mbps:.0f}",
                    f"{curl_durable:.0f}",
                    f"{top.durable_mbps / curl_durable:.2f}",
                    f"{max(f.rss_mb for f in fetches):.0f}",
                    f"{min(f.cpu_s for f in fetches):.2f} / {min(c.cpu_s for c in curls):.2f}",
                    f"{min(server_cpu[size][0]):.2f} / {min(server_cpu[size][1]):.2f}",
                ]
            )
    result.tables.append(
        (
            "Throughput in MB/s (10^6 bytes); RSS of the bulkfetch process",
            [
                "size",
                "curl MB/s",
                "bulkfetch stream MB/s",
                "stream / curl (best / best)",
                "median of each repeat's stream / curl",
                "bulkfetch to final name MB/s",
                "curl, then fsync MB/s",
                "durable / (curl + fsync)",
                "bulkfetch peak RSS MiB",
                "CPU s, whole process: bulkfetch / curl",
                "simulator CPU s while bulkfetch / curl fetched",
            ],
            rows,
        )
    )
    big = max(sizes)
    small = min(sizes)
    top, curl_best = best[big]
    result.target(
        f"throughput vs curl ({big // MB} MB, streaming)",
        "≥ 0.9",
        top.stream_mbps / curl_best,
        top.stream_mbps / curl_best >= 0.9,
        ".2f",
    )
    result.target(
        f"throughput vs curl + fsync ({big // MB} MB, to the fsynced final name)",
        "≥ 0.9",
        top.durable_mbps / durable_best[big],
        top.durable_mbps / durable_best[big] >= 0.9,
        ".2f",
    )
    rss_big, rss_small = best[big][0].rss_mb, best[small][0].rss_mb
    result.target(f"peak RSS, {big // MB} MB file (MiB)", "< 100", rss_big, rss_big < 100, ".0f")
    flat = abs(rss_big - rss_small) <= 10
    result.target(
        f"RSS growth {small // MB} MB → {big // MB} MB (MiB)",
        "flat (≤ 10)",
        rss_big - rss_small,
        flat,
        "+.0f",
    )
    if big != small:
        span = (big - small) / MB
        bf_ms = (cpu[big][0] - cpu[small][0]) * 1000 / span
        curl_ms = (cpu[big][1] - cpu[small][1]) * 1000 / span
        result.tables.append(
            (
                f"Marginal CPU per MB, from the {small // MB} MB and {big // MB} MB runs "
                "(start-up cancels out)",
                ["client", "CPU ms per MB"],
                [["bulkfetch", f"{bf_ms:.2f}"], ["curl", f"{curl_ms:.2f}"]],
            )
        )
        result.paragraphs.append(
            f"**What it shows.** On the {big // MB} MB file bulkfetch streamed at "
            f"{top.stream_mbps:.0f} MB/s ({top.stream_mbps / curl_best:.2f} of curl's "
            f"{curl_best:.0f} MB/s; the median of the repeats' own ratios was "
            f"{statistics.median(pairs[big]):.2f}) and had the file fsynced under its final "
            "name at "
            f"{top.durable_mbps:.0f} MB/s ({top.durable_mbps / durable_best[big]:.2f} of curl "
            f"followed by an fsync of its file, {top.durable_mbps / curl_best:.2f} of curl "
            "alone, which leaves its file in the page cache). "
            f"Its peak RSS was {rss_big:.0f} MiB against {rss_small:.0f} MiB "
            f"for {small // MB} MB: memory does not grow with the file. Marginal CPU per MB: "
            f"bulkfetch {bf_ms:.2f} ms, curl {curl_ms:.2f} ms (child processes, all threads). "
            f"On this {os.cpu_count()}-core machine the simulator serving the bytes (a process "
            "of its own) shares the cores with the client, so a client's CPU per byte shows "
            "in its throughput."
        )
    result.seconds = time.monotonic() - started
    return result
