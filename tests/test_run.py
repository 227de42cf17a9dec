"""End to end: the real ``bulkfetch`` command against the simulator over real sockets."""

from __future__ import annotations

import hashlib
import signal
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from bulkfetch.manifest.jobs import load_manifest
from bulkfetch.simulator import (
    TEST_API_KEY,
    SimConfig,
    SimulatorThread,
    render_result,
    run_in_thread,
)
from tests.conftest import (
    FAST,
    FAST_FLAGS,
    bulkfetch_cli,
    load_ledger_json,
    make_jobs,
    run_cli,
    spawn_cli,
    write_jsonl,
)


def assert_files_match_server(out: Path, manifest: Path) -> None:
    """Every job's file is byte for byte what the simulator renders for its params."""
    ledger = load_ledger_json(out)
    for job in load_manifest(manifest).jobs:
        record = ledger[job.key]
        assert record["state"] == "done", (job.where, record)
        data = (out / record["path"]).read_bytes()
        assert data == render_result(job.api_body()["params"]), job.where
        assert hashlib.sha256(data).hexdigest() == record["sha256"]
        assert len(data) == record["size"]
    assert not list(out.rglob("*.bulkfetch-part"))


def assert_no_key(*texts: str | bytes) -> None:
    for text in texts:
        raw = text.encode() if isinstance(text, str) else text
        assert TEST_API_KEY.encode() not in raw
        assert TEST_API_KEY[4:20].encode() not in raw


def test_run_downloads_every_job_byte_for_byte(sim: SimulatorThread, tmp_path: Path) -> None:
    manifest = write_jsonl(tmp_path / "jobs.jsonl", make_jobs(12))
    out = tmp_path / "out"
    report = tmp_path / "report.json"
    proc = run_cli(sim, manifest, out, "--report", report)
    assert proc.returncode == 0, proc.stderr
    assert_files_match_server(out, manifest)
    data = orjson.loads(report.read_bytes())
    assert data["states"]["done"] == 12
    assert data["run"]["requests"]["create"] == 12
    assert data["run"]["downloaded"] == 12
    assert {row["state"] for row in data["job_list"]} == {"done"}
    counters = sim.counters()
    assert counters["tasks_created"] == 12
    assert counters["results_served"] == 12
    assert counters["duplicate_creations"] == 0
    assert_no_key(
        proc.stdout,
        proc.stderr,
        report.read_bytes(),
        *(p.read_bytes() for p in out.glob("bulkfetch-ledger.json*")),
    )

    # A second run finds everything done and sends nothing at all.
    again = run_cli(sim, manifest, out)
    assert again.returncode == 0, again.stderr
    assert sim.counters()["create_calls"] == counters["create_calls"]
    assert sim.counters()["status_calls"] == counters["status_calls"]


def test_rerun_refetches_a_deleted_file_without_creating(
    sim: SimulatorThread, tmp_path: Path
) -> None:
    manifest = write_jsonl(tmp_path / "jobs.jsonl", make_jobs(3))
    out = tmp_path / "out"
    assert run_cli(sim, manifest, out).returncode == 0
    victim = next(p for p in out.rglob("*.jpg"))
    victim.unlink()
    created = sim.counters()["tasks_created"]
    proc = run_cli(sim, manifest, out)
    assert proc.returncode == 0, proc.stderr
    assert victim.exists()
    # The task is still alive on the server: fetched again from it, not created again.
    assert sim.counters()["tasks_created"] == created
    assert_files_match_server(out, manifest)


def test_added_and_changed_jobs_are_picked_up(sim: SimulatorThread, tmp_path: Path) -> None:
    jobs = make_jobs(4)
    manifest = write_jsonl(tmp_path / "jobs.jsonl", jobs)
    out = tmp_path / "out"
    assert run_cli(sim, manifest, out).returncode == 0
    jobs[0]["px_size"] = 20  # changed: a new job
    jobs.append(make_jobs(5)[4])  # added
    write_jsonl(manifest, jobs)
    assert run_cli(sim, manifest, out).returncode == 0
    assert sim.counters()["tasks_created"] == 6
    assert_files_match_server(out, manifest)


def test_invalid_manifest_exits_2_and_sends_nothing(sim: SimulatorThread, tmp_path: Path) -> None:
    jobs = make_jobs(3)
    del jobs[1]["bm_type"]
    jobs[2]["px_size"] = -1
    manifest = write_jsonl(tmp_path / "jobs.jsonl", jobs)
    proc = bulkfetch_cli("run", manifest, "--out", tmp_path / "out", "--api-url", sim.api_url)
    assert proc.returncode == 2
    assert "jobs.jsonl: line 2" in proc.stderr and "bm_type" in proc.stderr
    assert "jobs.jsonl: line 3" in proc.stderr and "px_size" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert sim.counters()["create_calls"] == 0
    assert not (tmp_path / "out" / "bulkfetch-ledger.json").exists()


def test_validate_command(tmp_path: Path) -> None:
    good = write_jsonl(tmp_path / "good.jsonl", make_jobs(2))
    proc = bulkfetch_cli("validate", good)
    assert proc.returncode == 0 and "2 valid jobs" in proc.stdout
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"view_id": "S2/1/2", "bm_type": "NDVI"\n')
    proc = bulkfetch_cli("validate", bad)
    assert proc.returncode == 2
    assert "bad.jsonl: line 1" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_refused_key_stops_the_run_with_exit_3(sim: SimulatorThread, tmp_path: Path) -> None:
    manifest = write_jsonl(tmp_path / "jobs.jsonl", make_jobs(3))
    wrong = "apk." + "ab" * 32
    proc = run_cli(
        sim,
        manifest,
        tmp_path / "out",
        env={"EOS_API_KEY": wrong},
    )
    assert proc.returncode == 3, proc.stderr
    assert "refused the API key" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert wrong not in proc.stderr + proc.stdout
    assert sim.counters()["create_calls"] == 1  # stopped at the first refusal


def test_missing_key_is_a_usage_error(tmp_path: Path) -> None:
    manifest = write_jsonl(tmp_path / "jobs.jsonl", make_jobs(1))
    proc = bulkfetch_cli("run", manifest, "--out", tmp_path / "o", env={"EOS_API_KEY": ""})
    assert proc.returncode == 2
    assert "EOS_API_KEY" in proc.stderr


def test_task_errors_and_bad_params_fail_jobs_with_reasons(tmp_path: Path) -> None:
    jobs = make_jobs(6)
    config = SimConfig(**FAST, bad_view_ids=frozenset({jobs[0]["view_id"]}))
    manifest = write_jsonl(tmp_path / "jobs.jsonl", jobs)
    out = tmp_path / "out"
    report = tmp_path / "r.json"
    with run_in_thread(config) as sim:
        proc = run_cli(
            sim,
            manifest,
            out,
            "--report",
            report,
        )
        assert proc.returncode == 1, proc.stderr
        data = orjson.loads(report.read_bytes())
        failed = [row for row in data["job_list"] if row["state"] == "failed"]
        assert len(failed) == 1
        assert "refused the job's parameters" in failed[0]["error"]
        assert data["states"]["done"] == 5
        creates = sim.counters()["create_calls"]
        # A failed job is not retried by the next run unless asked.
        assert run_cli(sim, manifest, out).returncode == 1
        assert sim.counters()["create_calls"] == creates
        sim.configure(bad_view_ids=frozenset(), task_error_rate=1.0)
        proc = run_cli(
            sim,
            manifest,
            out,
            "--retry-failed",
            "--report",
            report,
        )
        assert proc.returncode == 1
        data = orjson.loads(report.read_bytes())
        failed = [row for row in data["job_list"] if row["state"] == "failed"]
        assert len(failed) == 1 and "simulated task error" in failed[0]["error"]


@pytest.mark.parametrize("retry_after", ["float", "off"])
def test_rates_twice_too_high_still_finish(tmp_path: Path, retry_after: str) -> None:
    config = SimConfig(
        **(FAST | {"create_limit": 10, "status_limit": 10, "retry_after": retry_after})
    )
    manifest = write_jsonl(tmp_path / "jobs.jsonl", make_jobs(20))
    out = tmp_path / "out"
    with run_in_thread(config) as sim:
        proc = bulkfetch_cli(
            "run",
            manifest,
            "--out",
            out,
            "--api-url",
            sim.api_url,
            "--create-rate",
            "20/s",
            "--status-rate",
            "20/s",
            "--report",
            tmp_path / "r.json",
        )
        counters = sim.counters()
    assert proc.returncode == 0, proc.stderr
    assert counters["create_429"] + counters["status_429"] > 0
    assert counters["duplicate_creations"] == 0
    data = orjson.loads((tmp_path / "r.json").read_bytes())
    assert (
        sum(data["run"]["rate_limited"].values()) == counters["create_429"] + counters["status_429"]
    )
    assert_files_match_server(out, manifest)


@pytest.mark.parametrize(
    "faults",
    [
        {"truncate_rate": 0.3},
        {"reset_rate": 0.2},
        {"create_5xx_rate": 0.2, "status_5xx_rate": 0.2},
        {"wrong_format_rate": 0.15, "json_instead_rate": 0.1, "empty_200_rate": 0.1},
        {"result_form": "redirect"},
        {"result_form": "json-url", "pending_words": ("created", "queued", "brewing")},
    ],
    ids=["truncated", "resets", "5xx", "bad-bodies", "redirect", "json-url"],
)
def test_faults_are_survived(tmp_path: Path, faults: dict[str, Any]) -> None:
    manifest = write_jsonl(tmp_path / "jobs.jsonl", make_jobs(10))
    out = tmp_path / "out"
    with run_in_thread(SimConfig(**FAST, seed=3, **faults)) as sim:
        proc = run_cli(sim, manifest, out)
    assert proc.returncode == 0, proc.stderr
    assert_files_match_server(out, manifest)
    assert_no_key(proc.stdout, proc.stderr)


def test_expired_tasks_are_created_again(tmp_path: Path) -> None:
    # Tasks live 2 s (EOS gives whole seconds); the status lane fetches 3 a second, so
    # later tasks of the window expire unfetched.
    config = SimConfig(**(FAST | {"status_limit": 3}), task_timeout=2)
    manifest = write_jsonl(tmp_path / "jobs.jsonl", make_jobs(10))
    out = tmp_path / "out"
    with run_in_thread(config) as sim:
        proc = bulkfetch_cli(
            "run",
            manifest,
            "--out",
            out,
            "--api-url",
            sim.api_url,
            "--create-rate",
            "50/s",
            "--status-rate",
            "4/s",
            "--max-in-flight",
            "10",
            "--max-creates-per-job",
            "10",
            "--report",
            tmp_path / "r.json",
        )
        counters = sim.counters()
    assert proc.returncode == 0, proc.stderr
    data = orjson.loads((tmp_path / "r.json").read_bytes())
    assert data["run"]["expired"] > 0
    assert counters["tasks_created"] > 10
    # Never created again while an earlier task for the job was alive.
    assert counters["live_duplicate_creations"] == 0
    assert_files_match_server(out, manifest)


def test_kill_and_rerun_finishes_without_duplicating_live_tasks(tmp_path: Path) -> None:
    config = SimConfig(**(FAST | {"processing_median": 1.0, "status_limit": 10}))
    manifest = write_jsonl(tmp_path / "jobs.jsonl", make_jobs(16))
    out = tmp_path / "out"
    rates = ("--create-rate", "50/s", "--status-rate", "10/s")
    with run_in_thread(config) as sim:
        args = ("run", manifest, "--out", out, "--api-url", sim.api_url, *rates)
        proc = spawn_cli(*args)
        deadline = time.monotonic() + 20
        while sim.counters()["tasks_created"] < 8 and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.kill()
        _, stderr = proc.communicate(timeout=10)
        first = sim.counters()
        assert first["tasks_created"] >= 8, stderr
        assert first["results_served"] < 16, "the kill should land mid-run"
        again = run_cli(sim, manifest, out)
        counters = sim.counters()
    assert again.returncode == 0, again.stderr
    assert_files_match_server(out, manifest)
    ledger = load_ledger_json(out)
    lost = sum(record.get("lost_creates", 0) for record in ledger.values())
    # Only a creation whose answer the kill cut off may be made again while alive.
    assert counters["live_duplicate_creations"] <= lost
    assert counters["tasks_created"] <= 16 + lost


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signals_stop_promptly_with_saved_ledger(tmp_path: Path, sig: int, code: int) -> None:
    config = SimConfig(**(FAST | {"processing_median": 2.0, "processing_sigma": 0.1}))
    manifest = write_jsonl(tmp_path / "jobs.jsonl", make_jobs(10))
    out = tmp_path / "out"
    with run_in_thread(config) as sim:
        proc = spawn_cli("run", manifest, "--out", out, "--api-url", sim.api_url, *FAST_FLAGS)
        deadline = time.monotonic() + 20
        while sim.counters()["tasks_created"] < 10 and time.monotonic() < deadline:
            time.sleep(0.02)
        sent = time.monotonic()
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=15)
        assert time.monotonic() - sent < 5
        assert proc.returncode == code, stderr
        assert "Traceback" not in stderr
        ledger = load_ledger_json(out)
        assert {record["state"] for record in ledger.values()} == {"created"}
        # The next run polls those tasks instead of creating them again.
        again = run_cli(sim, manifest, out)
        assert again.returncode == 0, again.stderr
        assert sim.counters()["tasks_created"] == 10
    assert_files_match_server(out, manifest)


def test_second_run_on_same_ledger_is_refused(tmp_path: Path) -> None:
    config = SimConfig(**(FAST | {"processing_median": 5.0}))
    manifest = write_jsonl(tmp_path / "jobs.jsonl", make_jobs(4))
    out = tmp_path / "out"
    with run_in_thread(config) as sim:
        first = spawn_cli("run", manifest, "--out", out, "--api-url", sim.api_url, *FAST_FLAGS)
        deadline = time.monotonic() + 20
        while sim.counters()["tasks_created"] < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        second = run_cli(sim, manifest, out)
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=15)
    assert second.returncode == 5
    assert "another bulkfetch run" in second.stderr
    assert "Traceback" not in second.stderr


def test_status_command(sim: SimulatorThread, tmp_path: Path) -> None:
    manifest = write_jsonl(tmp_path / "jobs.jsonl", make_jobs(3))
    out = tmp_path / "out"
    assert run_cli(sim, manifest, out).returncode == 0
    proc = bulkfetch_cli("status", "--out", out)
    assert proc.returncode == 0
    assert "3 jobs" in proc.stdout and "done" in proc.stdout
    proc = bulkfetch_cli("status", "--out", out, "--json")
    data = orjson.loads(proc.stdout)
    assert data["states"]["done"] == 3
    assert_no_key(proc.stdout)
    proc = bulkfetch_cli("status", "--out", tmp_path / "nowhere")
    assert proc.returncode == 2 and "no ledger" in proc.stderr


def test_python_api_runs_in_process(sim: SimulatorThread, tmp_path: Path) -> None:
    import bulkfetch

    manifest = write_jsonl(tmp_path / "jobs.jsonl", make_jobs(4))
    result = bulkfetch.run(
        manifest,
        out=tmp_path / "out",
        api_key=TEST_API_KEY,
        api_url=sim.api_url,
        create_rate="50/s",
        status_rate="50/s",
    )
    assert result.ok and result.exit_code == 0
    assert result.counters.done == 4
    assert [row["state"] for row in result.jobs] == ["done"] * 4
    assert TEST_API_KEY not in repr(result)
