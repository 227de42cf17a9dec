"""Scheduled batch work: plan, time box, quotas, retries across runs, logs, config, cron."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import orjson

from bulkfetch.simulator import SimConfig, run_in_thread
from tests.conftest import (
    FAST,
    FAST_FLAGS,
    bulkfetch_cli,
    load_ledger_json,
    make_jobs,
    run_cli,
    write_jsonl,
)
from tests.test_run import assert_files_match_server


def test_plan_and_dry_run_send_nothing_and_count_right(tmp_path: Path) -> None:
    jobs = make_jobs(6)
    manifest = write_jsonl(tmp_path / "jobs.jsonl", jobs)
    out = tmp_path / "out"
    with run_in_thread(SimConfig(**FAST)) as sim:
        plan = bulkfetch_cli("plan", manifest, "--out", out, "--json")
        assert plan.returncode == 0, plan.stderr
        data = orjson.loads(plan.stdout)
        assert data["actions"] == {"create": 6}
        assert data["requests"]["create"] == 6
        assert data["estimated_seconds"] >= 6 * 6  # six creations at 10/min
        assert run_cli(sim, manifest, out).returncode == 0
        jobs[0]["px_size"] = 20  # changed: same file, other parameters
        write_jsonl(manifest, [*jobs[:5], make_jobs(7)[6]])  # one removed, one added
        (out / load_ledger_json(out)[next(iter(load_ledger_json(out)))]["path"]).unlink()
        before = sim.counters()
        dry = bulkfetch_cli("run", manifest, "--out", out, "--dry-run", *FAST_FLAGS)
        plan = bulkfetch_cli("plan", manifest, "--out", out, "--json", *FAST_FLAGS)
        assert sim.counters()["create_calls"] == 6
        assert sim.counters()["status_calls"] == before["status_calls"]
    assert dry.returncode == 0, dry.stderr
    assert "skip-done" in dry.stdout and "cost:" in dry.stdout
    data = orjson.loads(plan.stdout)
    assert data["jobs"] == 6
    assert data["actions"]["create"] == 2  # the changed job and the added one
    assert data["actions"].get("poll", 0) + data["actions"].get("refetch", 0) <= 1
    assert len(data["changed"]) == 1
    assert data["removed"] == 1


def test_max_duration_stops_with_work_left_then_next_run_finishes(tmp_path: Path) -> None:
    config = SimConfig(**(FAST | {"create_limit": 5, "status_limit": 5}))
    manifest = write_jsonl(tmp_path / "jobs.jsonl", make_jobs(30))
    out = tmp_path / "out"
    args: tuple[str | Path, ...] = (
        "run",
        manifest,
        "--out",
        out,
        "--create-rate",
        "5/s",
        "--status-rate",
        "5/s",
    )
    with run_in_thread(config) as sim:
        started = time.monotonic()
        first = bulkfetch_cli(*args, "--api-url", sim.api_url, "--max-duration", "2s")
        took = time.monotonic() - started
        assert first.returncode == 75, first.stderr
        assert "time box" in first.stderr
        assert took < 8
        ledger = load_ledger_json(out)
        done = sum(1 for r in ledger.values() if r.get("state") == "done")
        assert 0 < done < 30
        second = bulkfetch_cli(*args, "--api-url", sim.api_url)
        assert second.returncode == 0, second.stderr
        assert sim.counters()["live_duplicate_creations"] == 0
    assert_files_match_server(out, manifest)


def test_creation_quotas_per_run_and_per_day(tmp_path: Path) -> None:
    manifest = write_jsonl(tmp_path / "jobs.jsonl", make_jobs(8))
    out = tmp_path / "out"
    with run_in_thread(SimConfig(**FAST)) as sim:
        first = run_cli(sim, manifest, out, "--max-creates", "3")
        assert first.returncode == 75, first.stderr
        assert "quota" in first.stderr
        assert sim.counters()["create_calls"] == 3
        second = run_cli(sim, manifest, out, "--max-creates-per-day", "5")
        assert second.returncode == 75, second.stderr
        # 3 already counted today by the first run: only 2 more allowed.
        assert sim.counters()["create_calls"] == 5
        third = run_cli(sim, manifest, out)
        assert third.returncode == 0, third.stderr
        assert sim.counters()["create_calls"] == 8


def test_failures_that_may_pass_are_retried_after_a_back_off(tmp_path: Path) -> None:
    manifest = write_jsonl(tmp_path / "jobs.jsonl", make_jobs(3))
    out = tmp_path / "out"
    with run_in_thread(SimConfig(**FAST, status_5xx_rate=1.0)) as sim:
        base: tuple[str, ...] = ("--max-outage", "1s")
        first = run_cli(sim, manifest, out, *base)
        assert first.returncode == 1
        ledger = load_ledger_json(out)
        assert all(r["state"] == "failed" and r["retryable"] for r in ledger.values())
        assert all(r["retry_at"] > time.time() + 3000 for r in ledger.values())
        sim.configure(status_5xx_rate=0.0)
        creates = sim.counters()["create_calls"]
        # Within the back-off, the next run leaves them alone...
        assert run_cli(sim, manifest, out, *base).returncode == 1
        assert sim.counters()["create_calls"] == creates
        # ...once it is over (here: forced by rewriting retry_at), it retries by itself.
        from bulkfetch.ledger import Ledger

        with Ledger.open(out / "bulkfetch-ledger.json") as book:
            book.put_many(r.replace(retry_at=1.0) for r in list(book.records().values()))
        assert run_cli(sim, manifest, out, *base).returncode == 0
    assert_files_match_server(out, manifest)


def test_quarantined_failures_wait_for_retry_failed(tmp_path: Path) -> None:
    jobs = make_jobs(2)
    manifest = write_jsonl(tmp_path / "jobs.jsonl", jobs)
    out = tmp_path / "out"
    config = SimConfig(**FAST, bad_view_ids=frozenset({jobs[0]["view_id"]}))
    with run_in_thread(config) as sim:
        assert run_cli(sim, manifest, out).returncode == 1
        record = next(r for r in load_ledger_json(out).values() if r["state"] == "failed")
        assert not record.get("retryable") and "retry_at" not in record
        sim.configure(bad_view_ids=frozenset())
        assert run_cli(sim, manifest, out).returncode == 1
        assert run_cli(sim, manifest, out, "--retry-failed").returncode == 0


def test_log_format_json(tmp_path: Path) -> None:
    manifest = write_jsonl(tmp_path / "jobs.jsonl", make_jobs(3))
    with run_in_thread(SimConfig(**FAST)) as sim:
        proc = run_cli(
            sim,
            manifest,
            tmp_path / "out",
            "--log-format",
            "json",
        )
    assert proc.returncode == 0, proc.stderr
    events = [orjson.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(events) >= len(lines) - 1  # everything but the closing "files in" line
    assert len({e["run_id"] for e in events}) == 1
    done = [e for e in events if e["msg"].endswith("bytes)") and "done" in e["msg"]]
    assert len(done) == 3
    assert all(len(e["job"]) == 64 and e["view_id"] and e["bm_type"] for e in done)
    # A download's own figures are fields of the event, for collectors.
    for event in done:
        assert (tmp_path / "out" / event["path"]).stat().st_size == event["bytes"] > 0
        assert 0 < event["stream_seconds"] <= event["seconds"] < 10


def test_config_file_beside_the_manifest_and_flags_win(tmp_path: Path) -> None:
    manifest = write_jsonl(tmp_path / "jobs.jsonl", make_jobs(4))
    with run_in_thread(SimConfig(**FAST)) as sim:
        (tmp_path / "bulkfetch.toml").write_text(
            f'out = "tiles"\napi-url = "{sim.api_url}"\ncreate-rate = "50/s"\n'
            'status_rate = "50/s"\nmax-creates = 2\nreport = "tiles/report.json"\n'
        )
        first = bulkfetch_cli("run", manifest)
        assert first.returncode == 75, first.stderr  # max-creates from the file
        assert (tmp_path / "tiles" / "report.json").exists()
        second = bulkfetch_cli("run", manifest, "--max-creates", "10")  # the flag wins
        assert second.returncode == 0, second.stderr
    (tmp_path / "bulkfetch.toml").write_text('ouT = "x"\n')
    bad = bulkfetch_cli("run", manifest)
    assert bad.returncode == 2
    assert "bulkfetch.toml" in bad.stderr and "ouT" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_readme_cron_line_run_twice_as_cron_would(tmp_path: Path) -> None:
    """The README's crontab line, run twice: the second run finishes the rest."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    line = next(x for x in readme.splitlines() if x.startswith("0 2 * * *"))
    command = line.split(None, 5)[5]
    home = tmp_path
    work = home / "imagery"
    work.mkdir()
    manifest = write_jsonl(work / "scenes.jsonl", make_jobs(12))
    assert manifest.name in command
    with run_in_thread(SimConfig(**(FAST | {"create_limit": 5, "status_limit": 5}))) as sim:
        (home / ".config").mkdir()
        key_file = home / ".config" / "eos.key"
        key_file.write_text(sim.simulator.config.api_key)
        key_file.chmod(0o600)
        (work / "bulkfetch.toml").write_text('create-rate = "5/s"\nstatus-rate = "5/s"\n')
        env = _cron_env({"HOME": str(home), "EOS_API_URL": sim.api_url})

        def cron() -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                ["sh", "-c", command],
                env=env,
                capture_output=True,
                text=True,
                timeout=90,
                check=False,
            )

        first = cron()
        assert first.returncode in (0, 75), first.stderr
        second = cron()
        assert second.returncode == 0, second.stderr
        assert sim.counters()["tasks_created"] == 12
    report = orjson.loads((work / "tiles" / "report.json").read_bytes())
    assert report["states"]["done"] == 12


def _cron_env(extra: dict[str, str]) -> dict[str, str]:
    path = str(Path(sys.executable).parent) + os.pathsep + "/usr/bin:/bin"
    return {"PATH": path, "LANG": "C.UTF-8", **extra}


def test_html_report_of_a_real_run(tmp_path: Path) -> None:
    manifest = write_jsonl(tmp_path / "jobs.jsonl", make_jobs(5))
    out = tmp_path / "out"
    with run_in_thread(SimConfig(**FAST)) as sim:
        proc = run_cli(sim, manifest, out)
        assert proc.returncode == 0, proc.stderr
    page = tmp_path / "report.html"
    proc = bulkfetch_cli("report", "--out", out, "-o", page)
    assert proc.returncode == 0, proc.stderr
    html = page.read_text()
    assert html.count("data:image/jpeg;base64,") == 5
    assert html.count("<polygon") >= 5
    assert "S2/13/R/EL/2023/1/1/0" in html.replace("<wbr>", "")
    missing = bulkfetch_cli("report", "--out", tmp_path / "nowhere", "-o", page)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
