"""Case 6: a 100,000-job manifest: validation, resuming, memory, and CPU per job.

Every bulkfetch measured here is a child process (``bulkfetch validate`` / ``bulkfetch run``)
reaped with ``wait4``, so its wall time, CPU time and peak RSS are its own:

* **validate**: ``bulkfetch validate`` of the generated manifest;
* **resume**: a ledger holding every job, half of them ``done`` with their (tiny) files
  present and half ``pending``, built with ``Ledger.put_many``; the time from starting
  ``bulkfetch run`` to the first request the simulator (a thread of this process) receives,
  which is the time spent reading the manifest and the ledger, checking the 50% done files
  and planning; the run is then stopped with SIGINT. Twice: the first finds no manifest
  cache (the harness built the ledger, not a run) and validates; the second reads the
  cache the first left, as any resume of a run of this version does;
* **full run**: ``bulkfetch run`` of the first ``n_full`` jobs against ``bulkfetch simulate``
  in a process of its own, both lanes at 2000/s and processing ~1 ms, so bulkfetch's own
  CPU time per job is what is measured.
"""

from __future__ import annotations

import hashlib
import json
import signal
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks.common import CaseResult, job_params, write_manifest
from benchmarks.procs import bulkfetch_cmd, sim_process, spawn, wait
from bulkfetch.ledger import JobRecord, JobState, Ledger
from bulkfetch.manifest.jobs import load_manifest
from bulkfetch.simulator import SimConfig, run_in_thread

__all__ = ["run_scale_case"]

FAST = "2000/s"
TINY = b"\xff\xd8\xff" + b"\x00" * 13  # a 16-byte "jpeg": only its size is checked on resume


def _validate(manifest: Path) -> tuple[float, float, str]:
    proc, started = spawn([*bulkfetch_cmd(), "validate", str(manifest)])
    usage, err = wait(proc, started)
    if usage.returncode != 0:
        raise RuntimeError(f"bulkfetch validate exited {usage.returncode}: {err}")
    return usage.wall, usage.max_rss_mb, err


def _build_resume_ledger(manifest: Path, out: Path) -> tuple[int, float]:
    """Ledger with every job, even ones done (file present), odd ones pending."""
    started = time.monotonic()
    jobs = load_manifest(manifest).jobs
    sha = hashlib.sha256(TINY).hexdigest()
    records: list[JobRecord] = []
    made: set[Path] = set()
    for i, job in enumerate(jobs):
        rel = job.relative_path().as_posix()
        if i % 2 == 0:
            path = out / rel
            if path.parent not in made:
                path.parent.mkdir(parents=True, exist_ok=True)
                made.add(path.parent)
            path.write_bytes(TINY)
            records.append(
                JobRecord(
                    key=job.key,
                    state=JobState.DONE,
                    path=rel,
                    task_id=f"old-{i}",
                    size=len(TINY),
                    sha256=sha,
                    creates=1,
                )
            )
        else:
            records.append(JobRecord(key=job.key, state=JobState.PENDING, path=rel))
    with Ledger.open(out / "bulkfetch-ledger.json") as ledger:
        ledger.put_many(records)
    return (len(jobs) + 1) // 2, time.monotonic() - started


def _resume(manifest: Path, out: Path) -> tuple[float, float, int]:
    """Seconds to the first request, peak RSS, and the run's exit code (130: SIGINT)."""
    config = SimConfig(
        create_limit=2000,
        create_window=1.0,
        status_limit=2000,
        status_window=1.0,
        processing_median=0.001,
        processing_sigma=0.0,
        retry_after="float",
    )
    with run_in_thread(config) as sim:
        cmd = [
            *bulkfetch_cmd(),
            *("run", str(manifest), "--out", str(out), "--api-url", sim.api_url),
            *("--create-rate", FAST, "--status-rate", FAST, "--quiet"),
        ]
        proc, started = spawn(cmd)
        first = None
        while proc.poll() is None:
            counters = sim.counters()
            if counters["create_calls"] + counters["status_calls"] > 0:
                first = time.monotonic() - started
                break
            time.sleep(0.005)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        usage, err = wait(proc, started)
    if first is None:
        raise RuntimeError(f"the resumed run sent nothing (exit {usage.returncode}): {err}")
    return first, usage.max_rss_mb, usage.returncode


def _full_run(manifest: Path, n: int, out: Path) -> dict[str, Any]:
    flags = ("--create-rate", FAST, "--status-rate", FAST, "--retry-after", "float")
    with sim_process(*flags, "--processing-median", "0.001", "--processing-sigma", "0") as sim:
        cmd = [
            *bulkfetch_cmd(),
            *("run", str(manifest), "--out", str(out), "--api-url", sim.api_url),
            *("--create-rate", FAST, "--status-rate", FAST, "--quiet"),
        ]
        proc, started = spawn(cmd)
        usage, err = wait(proc, started)
        with urllib.request.urlopen(f"{sim.url}/_sim/counters") as answer:
            counters: dict[str, Any] = json.loads(answer.read())
        sim_cpu = sim.cpu_seconds()
    if usage.returncode != 0:
        raise RuntimeError(f"bulkfetch run exited {usage.returncode}: {err}")
    return {
        "wall": usage.wall,
        "cpu": usage.cpu,
        "user": usage.user,
        "system": usage.system,
        "rss": usage.max_rss_mb,
        "sim_cpu": sim_cpu,
        "counters": counters,
        "n": n,
    }


def run_scale_case(*, n_manifest: int, n_full: int) -> CaseResult:
    started = time.monotonic()
    result = CaseResult(
        "scale",
        "6. Scale",
        f"A generated manifest of {n_manifest:,} jobs (.jsonl, one small Polygon each). "
        f"Resume: ledger with all {n_manifest:,}, half done with their files present (16-byte "
        f"files), half pending. Full run: the first {n_full:,} jobs against `bulkfetch "
        "simulate` in its own process, both lanes at 2000/s, processing ~1 ms.",
    )
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        work = Path(tmp)
        manifest = write_manifest(work / "big.jsonl", (job_params(i) for i in range(n_manifest)))
        small = write_manifest(work / "full.jsonl", (job_params(i) for i in range(n_full)))
        validate_s, validate_rss, _ = _validate(manifest)
        out = work / "resume-out"
        done, build_s = _build_resume_ledger(manifest, out)
        # The first resume validates the manifest and leaves its cache beside the ledger, as
        # the interrupted run before it would have; the second is the resume users see.
        cold_s, cold_rss, _ = _resume(manifest, out)
        first_s, resume_rss, code = _resume(manifest, out)
        full = _full_run(small, n_full, work / "full-out")
    c = full["counters"]
    requests = max(1, c["create_calls"] + c["status_calls"])
    pct_429 = 100 * (c["create_429"] + c["status_429"]) / requests
    cpu_ms = full["cpu"] * 1000 / n_full
    result.tables.append(
        (
            "Measurements (each a `bulkfetch` child process)",
            ["measurement", "value"],
            [
                [f"`bulkfetch validate` of {n_manifest:,} jobs, wall", f"{validate_s:.2f} s"],
                ["  peak RSS", f"{validate_rss:.0f} MiB"],
                [
                    f"resumed run ({done:,} done + files present, {n_manifest - done:,} "
                    "pending), no manifest cache yet: start to first request",
                    f"{cold_s:.2f} s",
                ],
                ["  peak RSS", f"{cold_rss:.0f} MiB"],
                [
                    "resumed again (the manifest cache the run before left): start to first "
                    "request",
                    f"{first_s:.2f} s",
                ],
                ["  peak RSS (stopped by SIGINT after the first request)", f"{resume_rss:.0f} MiB"],
                ["  exit code after SIGINT", str(code)],
                ["  (building that ledger and its files in the harness took)", f"{build_s:.1f} s"],
                [f"full run of {n_full:,} jobs, wall", f"{full['wall']:.1f} s"],
                ["  jobs per second", f"{n_full / full['wall']:.0f}"],
                [
                    "  bulkfetch CPU per job (user + system)",
                    f"{cpu_ms:.2f} ms ({full['user'] * 1000 / n_full:.2f} + "
                    f"{full['system'] * 1000 / n_full:.2f})",
                ],
                ["  peak RSS", f"{full['rss']:.0f} MiB"],
                [
                    "  requests per job (create + status)",
                    f"{c['create_calls'] / n_full:.3f} + {c['status_calls'] / n_full:.3f}",
                ],
                [
                    "  429s, % of requests",
                    f"{pct_429:.2f}",
                ],
                ["  simulator CPU (its own process)", f"{full['sim_cpu']:.1f} s"],
            ],
        )
    )
    result.target(f"validate {n_manifest:,} jobs (s)", "< 10", validate_s, validate_s < 10, ".2f")
    result.target(
        "resumed run, start to first request (s; manifest cached by the run before)",
        "< 3",
        first_s,
        first_s < 3,
        ".2f",
    )
    peak = max(validate_rss, cold_rss, resume_rss, full["rss"])
    result.target("peak RSS of any of them (MiB)", "< 500", peak, peak < 500, ".0f")
    result.target("CPU per job, full run (ms)", "< 2", cpu_ms, cpu_ms < 2, ".2f")
    result.seconds = time.monotonic() - started
    return result
