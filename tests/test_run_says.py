"""What a run says: its summary, its progress lines while a lane is paused, and the plain
data of report.json, status --json and plan, each through the real CLI."""

from __future__ import annotations

import dataclasses
import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import orjson
import pytest

import bulkfetch
from bulkfetch.cli.main import cli
from bulkfetch.cli.progress import LaneView, Snapshot, bar_text, lane_text, pace_text, progress_line
from bulkfetch.config import RunConfig
from bulkfetch.simulator import TEST_API_KEY, SimConfig, run_in_thread
from tests.conftest import FAST, FAST_FLAGS, bulkfetch_cli, cli_env, make_jobs, run_cli, write_jsonl


def test_summary_and_report_json_are_plain_data(tmp_path: Path) -> None:
    manifest = write_jsonl(tmp_path / "jobs.jsonl", make_jobs(4))
    out = tmp_path / "out"
    with run_in_thread(SimConfig(**FAST)) as sim:
        proc = run_cli(sim, manifest, out, "--report", out / "report.json")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert "summary: 4 jobs: 4 done (4 downloaded, 0 already there), 0 failed, 0 left" in lines
    assert re.search(
        r"^requests: create 4 \(0 answered 429\), status \d+ \(0 answered 429\); ",
        proc.stderr,
        re.M,
    )
    assert "exit 0: every job of the manifest is done (all 4 jobs done)" in lines
    assert "to carry on" not in proc.stderr and "saved:" not in proc.stderr

    report = orjson.loads((out / "report.json").read_bytes())
    for lane in ("create", "status"):
        figures = report["lanes"][lane]
        assert figures["configured"] == "50/s"
        assert figures["configured_per_second"] == 50
        assert re.fullmatch(r"[\d.]+/s", figures["pace"]), figures
        assert 45 < figures["pace_per_second"] <= 50
        assert all(isinstance(v, str | int | float) for v in figures.values()), figures
    assert "<" not in orjson.dumps(report["lanes"]).decode()  # no repr left


def test_summary_in_json_logs_is_one_event(tmp_path: Path) -> None:
    manifest = write_jsonl(tmp_path / "jobs.jsonl", make_jobs(3))
    with run_in_thread(SimConfig(**FAST, task_error_rate=1.0)) as sim:
        proc = run_cli(sim, manifest, tmp_path / "out", "--log-format", "json")
    assert proc.returncode == 1, proc.stderr
    events = [orjson.loads(line) for line in proc.stderr.splitlines()]  # JSON lines only
    (summary,) = [e for e in events if e.get("event") == "summary"]
    assert summary["msg"] == "run summary: 3 of 3 jobs failed"
    assert summary["level"] == "warning"
    assert summary["jobs"] == 3 and summary["failed"] == 3 and summary["done"] == 0
    assert summary["requests"]["create"] == 3 and summary["rate_limited"] == {
        "create": 0,
        "status": 0,
    }
    assert summary["exit_code"] == 1 and "failed" in summary["exit_meaning"]
    (reason,) = summary["failures_by_reason"]
    assert "'<view_id>'" in reason and summary["failures_by_reason"][reason] == 3
    assert summary["carry_on"] == ""


def test_a_quota_stop_says_what_was_saved_and_how_to_carry_on(tmp_path: Path) -> None:
    manifest = write_jsonl(tmp_path / "jobs.jsonl", make_jobs(5))
    out = tmp_path / "out"
    with run_in_thread(SimConfig(**FAST)) as sim:
        first = run_cli(sim, manifest, out, "--max-creates", "2")
        assert first.returncode == 75, first.stderr
        assert "saved: 2 files downloaded by this run are in" in first.stderr
        assert "3 jobs not started" in first.stderr
        assert "exit 75: stopped with work left by the time box or a creation quota" in (
            first.stderr
        )
        (command,) = re.findall(r"^to carry on: (.*)$", first.stderr, re.M)
        args = shlex.split(command)
        assert args[:3] == ["bulkfetch", "run", str(manifest)]
        assert "--max-creates" in args and str(out) in args
        # The command carries on, as said (the same quota again: two more).
        again = subprocess.run(
            [sys.executable, "-m", "bulkfetch.cli", *args[1:]],
            env=cli_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert again.returncode == 75, again.stderr
    assert "4 done (2 downloaded, 2 already there)" in again.stderr


def test_every_progress_line_says_a_lane_is_paused_while_the_api_is_down(
    tmp_path: Path,
) -> None:
    manifest = write_jsonl(tmp_path / "jobs.jsonl", make_jobs(4))
    with run_in_thread(SimConfig(**FAST)) as sim:
        sim.configure(outage_for=3.5)
        proc = run_cli(sim, manifest, tmp_path / "out", "--progress-interval", "1")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    down = next(i for i, line in enumerate(lines) if "the API seems down, pausing" in line)
    back = next(i for i, line in enumerate(lines) if "the API answers again" in line)
    during = [line for line in lines[down:back] if "progress:" in line]
    assert len(during) >= 2, proc.stderr
    paused = re.compile(
        r"create PAUSED: API down since \d\d:\d\d:\d\d, waiting until "
        r"\d\d:\d\d:\d\d \(2\dm\d\ds more\)"
    )
    assert all(paused.search(line) for line in during), during
    after = [line for line in lines[back:] if "progress:" in line]
    assert all("PAUSED" not in line for line in after)


def test_lane_text_says_why_and_until_when() -> None:
    now = 1_700_000_000.0
    assert lane_text(LaneView("create", 6.06), now) == "create 9.9/min"
    assert pace_text(0.05) == "20/s" and pace_text(600.0) == "6/h" and pace_text(6.0) == "10/min"
    limited = lane_text(LaneView("status", 6.0, paused_for=12.0), now)
    assert limited.startswith("status PAUSED until ") and "(429, 12.0s)" in limited
    down = LaneView("create", 6.0, paused_for=3.0, down_since=now - 60, down_until=now + 1740)
    assert lane_text(down, now).startswith("create PAUSED: API down since ")
    assert "(29m00s more), next try in 3.0s" in lane_text(down, now)
    gave_up = LaneView("create", 6.0, down_since=now - 1900, down_until=now - 100)
    assert "no longer waiting: failures count against jobs" in lane_text(gave_up, now)
    s = Snapshot(40, 10, 1, 5, 123_456, 10, 20.0, now, (LaneView("create", 6.0),))
    assert progress_line(s) == (
        "progress: 10/40 done, 1 failed, 5 in flight, 123.5 kB, ETA 58.0s; create 10/min"
    )
    assert bar_text(s).startswith("10 done, 1 failed, 5 in flight, 123.5 kB, ETA 58.0s | ")
    paused = Snapshot(40, 10, 1, 5, 123_456, 10, 20.0, now, (LaneView("create", 6.0), down))
    assert bar_text(paused).startswith("create PAUSED: API down since ")  # first: cut last
    assert bar_text(paused).endswith(" | 10 done, 1 failed, 5 in flight, 123.5 kB, ETA 58.0s")


def test_status_json_names_every_job_and_plan_says_fetch_again(tmp_path: Path) -> None:
    jobs = make_jobs(3)
    jobs[0]["name"] = "first-field"
    manifest = write_jsonl(tmp_path / "jobs.jsonl", jobs)
    out = tmp_path / "out"
    with run_in_thread(SimConfig(**FAST)) as sim:
        assert run_cli(sim, manifest, out).returncode == 0
    status = orjson.loads(bulkfetch_cli("status", "-o", out, "--json").stdout)
    rows = status["job_list"]
    assert len(rows) == 3
    assert {row["view_id"] for row in rows} == {job["view_id"] for job in jobs}
    assert all(row["bm_type"] and row["name"] for row in rows)
    first = next(row for row in rows if row["view_id"] == jobs[0]["view_id"])
    assert first["name"] == "first-field.jpg" == first["path"]

    (out / first["path"]).unlink()  # done, its file gone, its task still alive
    plan = bulkfetch_cli("plan", manifest, "-o", out, *FAST_FLAGS)
    assert plan.returncode == 0, plan.stderr
    assert re.search(r"^  fetch again +1$", plan.stdout, re.M), plan.stdout
    assert "poll" not in plan.stdout
    as_json = orjson.loads(bulkfetch_cli("plan", manifest, "-o", out, "--json").stdout)
    assert as_json["actions"] == {"fetch-again": 1, "skip-done": 2}

    # Without its manifest, status still lists the ledger's jobs, and says why no names.
    manifest.rename(tmp_path / "moved.jsonl")
    bare = bulkfetch_cli("status", "-o", out, "--json")
    assert "warning: the ledger's manifest could not be used" in bare.stderr
    assert len(orjson.loads(bare.stdout)["job_list"]) == 3
    named = bulkfetch_cli("status", "-o", out, "--json", "-m", tmp_path / "moved.jsonl")
    assert all(row["view_id"] for row in orjson.loads(named.stdout)["job_list"])


def test_python_keywords_are_the_run_command_flags() -> None:
    command = cli.commands["run"]
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    cli_only = {"config_file", "api_key_file", "dry_run", "log_format", "quiet", "verbose"}
    cli_only |= {"progress_interval", "help"}
    cli_only |= {"stac"}  # a step after the run (bulkfetch stac), not an option of the run
    options = [p for p in command.params if isinstance(p, click.Option) and p.name not in cli_only]
    assert len(options) >= 14  # every run option, each checked below
    for option in options:
        flag = next(o for o in option.opts if o.startswith("--"))
        assert option.name == flag[2:].replace("-", "_"), option.opts
        assert option.name in fields, f"{flag} has no RunConfig field of its name"


def test_python_max_creates_is_the_run_quota_as_on_the_command_line(tmp_path: Path) -> None:
    manifest = write_jsonl(tmp_path / "jobs.jsonl", make_jobs(4))
    with run_in_thread(SimConfig(**FAST)) as sim:
        common = {"api_key": TEST_API_KEY, "api_url": sim.api_url, "create_rate": "50/s"}
        common["status_rate"] = "50/s"
        key_file = tmp_path / "eos.key"
        key_file.write_text(TEST_API_KEY)
        key_file.chmod(0o600)
        first = {k: v for k, v in common.items() if k != "api_key"}  # as --api-key-file
        result = bulkfetch.run(
            manifest,
            out=tmp_path / "a",
            api_key_file=key_file,
            max_creates=2,
            max_creates_per_job=1,
            **first,
        )
        assert result.exit_code == 75 and result.counters.create_calls == 2
        with pytest.warns(DeprecationWarning, match="max_creates_run= is now max_creates="):
            old = bulkfetch.run(
                manifest, out=tmp_path / "b", max_creates_run=3, max_outage="1m", **common
            )
        assert old.exit_code == 75 and old.counters.create_calls == 3
        with pytest.raises(bulkfetch.UsageError, match="give max_creates= only"):
            bulkfetch.run(manifest, out=tmp_path / "c", max_creates=1, max_creates_run=3, **common)


def test_every_option_of_every_command_says_what_it_does() -> None:
    ctx = click.Context(cli)
    for name in cli.list_commands(ctx):
        command = cli.get_command(ctx, name)
        assert command is not None
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden:
                assert param.help and len(param.help) > 10, f"{name} {param.opts}: no help"
    # Short flags mean one thing everywhere: -o the output folder, -m a manifest; and every
    # --manifest has its -m.
    for name in cli.list_commands(ctx):
        command = cli.get_command(ctx, name)
        assert command is not None
        for param in command.params:
            if "-o" in getattr(param, "opts", ()) and not getattr(param, "hidden", False):
                # (report's -o also takes a file: its old meaning, read with a warning)
                assert isinstance(param.type, click.Path), name
                assert not param.type.file_okay or param.metavar == "DIR", name
            if "-m" in getattr(param, "opts", ()):
                assert isinstance(param.type, click.Path) and not param.type.dir_okay, name
                assert "--manifest" in param.opts, name
            if "--manifest" in getattr(param, "opts", ()):
                assert "-m" in param.opts, name
