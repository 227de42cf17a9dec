"""Faults: the real ``bulkfetch run`` against a simulator that misbehaves in every way.

Each case ends, in bounded time, with every recoverable job done (its file byte for byte
what the server renders) and every other job failed with its reason in the report; the
exit code says which (0 all done, 1 some failed, 4 storage). Beyond ``test_run``'s
survival checks, each case also checks the server's side: the fault really happened, and
no task was created again while an earlier one for the job was alive.
"""

from __future__ import annotations

import hashlib
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest

from bulkfetch.ledger import JobState, Ledger
from bulkfetch.manifest.jobs import Job, load_manifest
from bulkfetch.simulator import SimConfig, SimulatorThread, render_result, run_in_thread
from bulkfetch.simulator.images import big_body
from bulkfetch.sink.local import PART_SUFFIX
from tests.conftest import FAST, FAST_FLAGS, bulkfetch_cli, make_jobs, spawn_cli, tmpfs, write_jsonl

LEDGER = "bulkfetch-ledger.json"


def expected(job: Job, config: SimConfig) -> bytes:
    params = job.api_body()["params"]
    if config.big_result_bytes and job.format == "tiff" and job.georeference is None:
        body = big_body(params, config.big_result_bytes)
        return b"".join(body.chunks(1 << 16))
    return render_result(params, image_size=config.image_size)


def check_outcome(
    out: Path,
    manifest: Path,
    report: Path,
    config: SimConfig,
    *,
    failed: Mapping[str, str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Every job is done with the server's bytes, or failed with a reason.

    ``failed`` maps the view_ids expected to fail to a text their reason must contain;
    every other job must be done. Returns the report's rows by view_id.
    """
    failed = failed or {}
    data = orjson.loads(report.read_bytes())
    rows = {row["view_id"]: row for row in data["job_list"]}
    jobs = {job.view_id: job for job in load_manifest(manifest).jobs}
    assert set(rows) == set(jobs)
    with Ledger.open(out / LEDGER, readonly=True) as ledger:
        records = dict(ledger.records())
    for view_id, job in jobs.items():
        row = rows[view_id]
        if view_id in failed:
            assert row["state"] == "failed", row
            assert failed[view_id] in row["error"], row
            continue
        assert row["state"] == "done", row
        record = records[job.key]
        assert record.state is JobState.DONE
        content = (out / record.path).read_bytes()
        assert content == expected(job, config), view_id
        assert hashlib.sha256(content).hexdigest() == record.sha256 == row["sha256"]
        assert len(content) == record.size
    assert not list(out.rglob(f"*{PART_SUFFIX}"))
    n_failed = sum(1 for row in rows.values() if row["state"] == "failed")
    assert data["states"]["failed"] == n_failed
    return rows


def run(
    sim: SimulatorThread, manifest: Path, out: Path, report: Path, *flags: str, timeout: float = 60
) -> tuple[subprocess.CompletedProcess[str], float]:
    began = time.monotonic()
    proc = bulkfetch_cli(
        "run",
        manifest,
        "--out",
        out,
        "--api-url",
        sim.api_url,
        "--report",
        report,
        *flags,
        timeout=timeout,
    )
    return proc, time.monotonic() - began


# -- every job recoverable: all done, exit 0 -------------------------------------------

#: case -> (simulator faults, jobs, what must show in the counters). Enough jobs that the
#: fault surely happens (10% of >= 72 requests: none with probability 0.05%).
RECOVERABLE: dict[str, tuple[dict[str, Any], int, Callable[[dict[str, Any]], bool]]] = {
    "5xx-10pct-both-lanes": (
        {"create_5xx_rate": 0.1, "status_5xx_rate": 0.1},
        36,
        lambda c: c["create_5xx"] + c["status_5xx"] > 0,
    ),
    "connection-resets": ({"reset_rate": 0.15}, 24, lambda c: c["resets"] > 0),
    "truncated-mid-stream": (
        {"truncate_rate": 0.3, "chunk_size": 2048, "image_size": 128},
        24,
        lambda c: c["truncated"] > 0,
    ),
    "slow-bodies": (
        {"slow_body_seconds": 0.02, "chunk_size": 4096, "image_size": 128},
        12,
        lambda c: c["results_served"] >= 12,
    ),
    "json-empty-wrong-format-bodies": (
        {"json_instead_rate": 0.15, "empty_200_rate": 0.15, "wrong_format_rate": 0.15},
        24,
        lambda c: c["results_served"] >= 24,
    ),
    "status-word-never-seen": (
        {"pending_words": ("created", "brewing", "reticulating splines"), "processing_median": 0.3},
        12,
        lambda c: c["polls_not_ready"] > 0,
    ),
    "redirect-with-resets": (
        {"result_form": "redirect", "reset_rate": 0.1},
        24,
        lambda c: c["resets"] > 0,
    ),
    "json-url-truncated": (
        {"result_form": "json-url", "truncate_rate": 0.3, "chunk_size": 1024},
        24,
        lambda c: c["truncated"] > 0,
    ),
    # The client asks 8-15 times what the server allows; tasks get ready faster than the
    # status lane may fetch them.
    "429-storm-retry-after-date": (
        {"create_limit": 4, "status_limit": 2, "retry_after": "date"},
        8,
        lambda c: c["create_429"] > 0 and c["status_429"] > 0,
    ),
    "429-storm-no-retry-after": (
        {"create_limit": 4, "status_limit": 2, "retry_after": "off"},
        8,
        lambda c: c["create_429"] > 0 and c["status_429"] > 0,
    ),
}


@pytest.mark.parametrize("case", list(RECOVERABLE))
def test_recoverable_faults_end_with_every_job_done(tmp_path: Path, case: str) -> None:
    faults, n_jobs, happened = RECOVERABLE[case]
    config = SimConfig(**(FAST | {"seed": 1} | faults))
    manifest = write_jsonl(tmp_path / "jobs.jsonl", make_jobs(n_jobs))
    out, report = tmp_path / "out", tmp_path / "report.json"
    flags = ("--create-rate", "30/s", "--status-rate", "30/s") if "429" in case else FAST_FLAGS
    with run_in_thread(config) as sim:
        proc, took = run(sim, manifest, out, report, *flags)
        counters = sim.counters()
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert took < 30, f"{took:.1f}s"
    assert happened(counters), counters
    check_outcome(out, manifest, report, config)
    assert counters["live_duplicate_creations"] == 0
    assert counters["tasks_created"] == n_jobs
    data = orjson.loads(report.read_bytes())
    if "429" in case:
        limited = data["run"]["rate_limited"]
        assert (
            limited["create"] + limited["status"] == counters["create_429"] + counters["status_429"]
        )


# -- some jobs cannot be done: they fail with the server's reason, exit 1 --------------


def test_task_errors_fail_those_jobs_with_the_servers_message(tmp_path: Path) -> None:
    config = SimConfig(**(FAST | {"seed": 11, "task_error_rate": 0.4}))
    manifest = write_jsonl(tmp_path / "jobs.jsonl", make_jobs(12))
    out, report = tmp_path / "out", tmp_path / "report.json"
    with run_in_thread(config) as sim:
        proc, took = run(sim, manifest, out, report, *FAST_FLAGS)
        errored = {t["params"]["view_id"] for t in sim.tasks() if t["error"]}
        counters = sim.counters()
    assert 0 < len(errored) < 12, "the seed should give some task errors and some results"
    assert proc.returncode == 1, proc.stderr
    assert took < 30
    rows = check_outcome(
        out,
        manifest,
        report,
        config,
        failed={v: f"EOS task failed: simulated task error: view {v!r}" for v in errored},
    )
    assert counters["tasks_created"] == 12  # a task error is not retried
    for view_id in errored:  # each failure logged as it happens, with the server's words
        assert f"{rows[view_id]['key'][:12]} {view_id} " in proc.stderr
        assert f"failed: EOS task failed: simulated task error: view {view_id!r}" in proc.stderr
    # ... and the summary groups them into one reason.
    group = "EOS task failed: simulated task error: view '<view_id>' could not be made"
    assert f"  {len(errored)} x {group}\n" in proc.stderr
    assert f"{len(errored)} of 12 jobs failed" in proc.stderr


def test_tasks_that_expire_before_they_are_ready_fail_after_the_creation_budget(
    tmp_path: Path,
) -> None:
    # Tasks live 2 s (EOS gives whole seconds). Half the jobs take 10 s to process: their
    # tasks always expire first, so each is created again (never while the last is alive)
    # and fails when the creation budget is spent; the other half are done.
    slow = {job["view_id"] for job in make_jobs(10)[1::2]}

    def processing(params: Mapping[str, Any]) -> float:
        return 10.0 if params["view_id"] in slow else 0.05

    config = SimConfig(**FAST, task_timeout=2, processing_time_fn=processing)
    manifest = write_jsonl(tmp_path / "jobs.jsonl", make_jobs(10))
    out, report = tmp_path / "out", tmp_path / "report.json"
    with run_in_thread(config) as sim:
        proc, took = run(sim, manifest, out, report, *FAST_FLAGS, "--max-creates-per-job", "2")
        counters = sim.counters()
    assert proc.returncode == 1, proc.stderr
    assert took < 20, f"{took:.1f}s"
    check_outcome(out, manifest, report, config, failed=dict.fromkeys(slow, "expired"))
    assert counters["tasks_created"] == 5 + 2 * 5
    assert counters["live_duplicate_creations"] == 0
    assert orjson.loads(report.read_bytes())["run"]["expired"] >= 5


def test_a_status_lane_that_always_fails_fails_the_jobs_in_bounded_time(tmp_path: Path) -> None:
    config = SimConfig(**(FAST | {"status_limit": 500, "status_5xx_rate": 1.0}))
    manifest = write_jsonl(tmp_path / "jobs.jsonl", make_jobs(4))
    out, report = tmp_path / "out", tmp_path / "report.json"
    with run_in_thread(config) as sim:
        proc, took = run(
            sim,
            manifest,
            out,
            report,
            "--create-rate",
            "50/s",
            "--status-rate",
            "200/s",
            "--max-outage",
            "2s",
        )
        counters = sim.counters()
    assert proc.returncode == 1, proc.stderr
    assert took < 20, f"{took:.1f}s"
    views = {job["view_id"] for job in make_jobs(4)}
    check_outcome(out, manifest, report, config, failed=dict.fromkeys(views, "retries failed"))
    assert counters["tasks_created"] == 4
    rows = orjson.loads(report.read_bytes())["job_list"]
    assert all("server error (HTTP 5" in row["error"] for row in rows), rows


# -- the server goes away, and comes back ----------------------------------------------


def _wait_for(sim: SimulatorThread, name: str, at_least: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while sim.counters()[name] < at_least:
        assert time.monotonic() < deadline, f"{name} never reached {at_least}"
        time.sleep(0.01)


@pytest.mark.parametrize("how", ["stop-start", "503-outage"])
def test_the_server_going_away_for_a_while_and_coming_back(tmp_path: Path, how: str) -> None:
    config = SimConfig(
        **(FAST | {"processing_median": 0.5, "slow_body_seconds": 0.01, "chunk_size": 4096})
    )
    manifest = write_jsonl(tmp_path / "jobs.jsonl", make_jobs(16))
    out, report = tmp_path / "out", tmp_path / "report.json"
    with run_in_thread(config) as sim:
        args = ("run", manifest, "--out", out, "--api-url", sim.api_url, "--report", report)
        proc = spawn_cli(*args, "--create-rate", "10/s", "--status-rate", "10/s")
        _wait_for(sim, "results_served", 2)
        if how == "stop-start":
            sim.stop()  # refuses connections and cuts the ones open, downloads included
            time.sleep(3)
            sim.start()
        else:
            sim.configure(outage_for=3)
        _, stderr = proc.communicate(timeout=60)
        counters = sim.counters()
    assert proc.returncode == 0, stderr
    check_outcome(out, manifest, report, config)
    assert counters["tasks_created"] == 16
    assert counters["live_duplicate_creations"] == 0
    assert orjson.loads(report.read_bytes())["run"]["transient_errors"] > 0


def test_an_outage_longer_than_a_jobs_retry_budget_still_ends_with_every_job_done(
    tmp_path: Path,
) -> None:
    config = SimConfig(**(FAST | {"create_limit": 500, "status_limit": 500}))
    manifest = write_jsonl(tmp_path / "jobs.jsonl", make_jobs(6))
    out, report = tmp_path / "out", tmp_path / "report.json"
    with run_in_thread(config) as sim:
        sim.configure(outage_for=6)
        proc, _ = run(
            sim, manifest, out, report, "--create-rate", "100/s", "--status-rate", "100/s"
        )
    assert proc.returncode == 0, proc.stderr
    check_outcome(out, manifest, report, config)


# -- a disk that fills up mid-file -----------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB tmpfs; skipped where mounting is not allowed (not root, no CAP_SYS_ADMIN)."""
    where = tmp_path / "disk"
    where.mkdir()
    with tmpfs(where, "size=2m,mode=0755"):
        yield where


def test_a_disk_that_fills_up_mid_file_stops_cleanly_and_the_next_run_finishes(
    tmp_path: Path, small_disk: Path
) -> None:
    # Six small results and one 3 MB tiff on a 2 MB disk (the ledger lives there too).
    jobs = make_jobs(6, formats=("jpeg", "png"))
    big = make_jobs(7, formats=("tiff",))[6]
    jobs.append(big)
    manifest = write_jsonl(tmp_path / "jobs.jsonl", jobs)
    out, report = small_disk / "out", tmp_path / "report.json"
    config = SimConfig(**(FAST | {"big_result_bytes": 3_000_000}))
    with run_in_thread(config) as sim:
        proc, took = run(sim, manifest, out, report, *FAST_FLAGS)
        assert proc.returncode == 4, proc.stderr
        assert took < 30
        assert "disk full" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
        data = orjson.loads(report.read_bytes())
        assert "disk full" in data["outcome"]
        # The ledger is intact and its done jobs are valid; no partial file is left.
        with Ledger.open(out / LEDGER, readonly=True) as ledger:
            records = dict(ledger.records())
        done = [r for r in records.values() if r.state is JobState.DONE]
        by_key = {job.key: job for job in load_manifest(manifest).jobs}
        for record in done:
            content = (out / record.path).read_bytes()
            assert content == expected(by_key[record.key], config)
            assert hashlib.sha256(content).hexdigest() == record.sha256
        assert not list(out.rglob(f"*{PART_SUFFIX}"))
        assert all(by_key[r.key].view_id != big["view_id"] for r in done)

        # With space again, the next run finishes, without creating done jobs again.
        remount = subprocess.run(
            ["mount", "-o", "remount,size=16m", str(small_disk)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert remount.returncode == 0, remount.stderr
        created = sim.counters()["tasks_created"]
        again, _ = run(sim, manifest, out, report, *FAST_FLAGS)
        counters = sim.counters()
    assert again.returncode == 0, again.stderr
    check_outcome(out, manifest, report, config)
    assert counters["tasks_created"] == created  # every task was still alive: polled
    assert counters["live_duplicate_creations"] == 0
