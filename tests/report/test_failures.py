"""Failures grouped by reason: the pure grouping key, and status, report.json and the HTML
report of a real run where every task errors."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
from hypothesis import given
from hypothesis import strategies as st

from bulkfetch.report.failures import NO_REASON, group_failures, reason_group
from bulkfetch.simulator import SimConfig, run_in_thread
from tests.conftest import FAST, bulkfetch_cli, make_jobs, run_cli, write_jsonl

VIEW_IDS = (
    st.builds(
        lambda zone, band, day: f"S2/{zone}/R/{band}/2023/{day}/1/0",
        st.integers(1, 60),
        st.sampled_from(["EL", "UP", "XK"]),
        st.integers(1, 28),
    )
    | st.builds(  # every shape eos-api.md documents: Landsat's has a single slash
        lambda sat, path, row, day: f"{sat}/LC8{path:03d}{row:03d}2016{day:03d}LGN00",
        st.sampled_from(["L8", "L9"]),
        st.integers(1, 233),
        st.integers(1, 248),
        st.integers(1, 366),
    )
    | st.builds(
        lambda h, v, day: f"MODIS/{h:02d}/{v:02d}/2017{day:03d}/2017213034223",
        st.integers(0, 35),
        st.integers(0, 17),
        st.integers(1, 366),
    )
)
# (an all-digit "hex" id reads as a number, and becomes N: out of the key all the same)
HEX = st.text("0123456789abcdef", min_size=12, max_size=64).filter(
    lambda s: any(c.isdigit() for c in s) and any(c.isalpha() for c in s)
)
UUIDS = st.uuids().map(str)


def test_job_specific_parts_are_out_of_the_key() -> None:
    view = "EOS task failed: simulated task error: view 'S2/13/R/EL/2023/1/25/0' could not be made"
    assert reason_group(view) == (
        "EOS task failed: simulated task error: view '<view_id>' could not be made"
    )
    assert reason_group("task 3f2a9c1e-1b2c-4d5e-8f90-123456789abc gone") == "task <id> gone"
    assert reason_group("job 09e04b9e9375 failed after 60s") == "job <id> failed after Ns"
    assert reason_group("truncated result: 100 of 12428 bytes") == "truncated result: N of N bytes"
    assert reason_group("7 retries failed; last: timeout") == "N retries failed; last: timeout"
    assert reason_group("   ") == NO_REASON
    landsat = "EOS task failed: view 'L8/LC80290332023200LGN00' could not be made"
    assert reason_group(landsat) == "EOS task failed: view '<view_id>' could not be made"
    assert "<view_id>" not in reason_group("proxy said HTTP/1.1 502")


def test_what_tells_problems_apart_stays() -> None:
    assert reason_group("server error (HTTP 503)") != reason_group("server error (HTTP 500)")
    assert reason_group("400 bad request: px_size") != reason_group("404 bad request: px_size")
    band = "EOS refused the job's parameters (HTTP 400): band B13 unknown in (B08-B04)"
    assert reason_group(band) == band


@given(VIEW_IDS, VIEW_IDS, HEX, HEX, UUIDS, UUIDS, st.integers(0, 10**9), st.integers(0, 10**9))
def test_reasons_differing_only_in_job_parts_share_a_key(
    v1: str, v2: str, h1: str, h2: str, u1: str, u2: str, n1: int, n2: int
) -> None:
    def reason(view: str, hexa: str, uuid: str, n: int) -> str:
        return f"view {view!r}: task {uuid} (key {hexa}) failed {n} times, HTTP 502"

    key = reason_group(reason(v1, h1, u1, n1))
    assert key == reason_group(reason(v2, h2, u2, n2))
    assert key == "view '<view_id>': task <id> (key <id>) failed N times, HTTP 502"
    assert reason_group(key) == key  # a key is its own key


def test_groups_largest_first_with_their_jobs_in_order() -> None:
    pairs = [("HTTP 500", "a"), ("view 'S2/1/R/EL/2023/1/1/0' bad", "b")]
    pairs += [("HTTP 500", "c"), ("view 'S2/2/R/EL/2023/1/2/0' bad", "d")]
    pairs += [("view 'S2/3/R/EL/2023/1/3/0' bad", "e")]
    groups = group_failures(pairs)
    assert [(g.reason, g.count, g.jobs) for g in groups] == [
        ("view '<view_id>' bad", 3, ("b", "d", "e")),
        ("HTTP 500", 2, ("a", "c")),
    ]
    assert groups[0].title == "view '<view_id>' bad" and not groups[0].alike
    assert groups[1].title == "HTTP 500" and groups[1].alike  # all the same: shown as is


def test_a_run_where_every_task_errors_is_one_group_everywhere(tmp_path: Path) -> None:
    n = 12
    manifest = write_jsonl(tmp_path / "jobs.jsonl", make_jobs(n))
    out = tmp_path / "out"
    key = "EOS task failed: simulated task error: view '<view_id>' could not be made"
    with run_in_thread(SimConfig(**FAST, task_error_rate=1.0)) as sim:
        proc = run_cli(sim, manifest, out, "--report", out / "report.json")
    assert proc.returncode == 1, proc.stderr
    # The end-of-run summary groups them too.
    assert f"failures by reason ({n} jobs, 1 reason):\n  {n} x {key}\n" in proc.stderr
    assert f"... and {n - 5} more" in proc.stderr

    report = orjson.loads((out / "report.json").read_bytes())
    assert report["failures_by_reason"] == {key: n}
    (group,) = report["failure_groups"]
    assert group["count"] == n and group["reason"] == key
    assert group["example"].startswith("EOS task failed: simulated task error: view 'S2/")
    assert sorted(job["key"] for job in group["jobs"]) == sorted(
        row["key"] for row in report["job_list"]
    )
    assert all(job["view_id"] in job["error"] for job in group["jobs"])

    status = bulkfetch_cli("status", "--out", out)
    assert status.returncode == 0, status.stderr
    assert f"  failed    {n}" in status.stdout
    assert f"  {n} x {key}" in status.stdout
    assert len(re.findall(r"^      [0-9a-f]{12} S2/", status.stdout, re.M)) == 3
    as_json = orjson.loads(bulkfetch_cli("status", "--out", out, "--json").stdout)
    assert as_json["failure_groups"][0]["count"] == n

    page = tmp_path / "r.html"
    html = bulkfetch_cli("report", "--out", out, "--html", page)
    assert html.returncode == 0, html.stderr
    text = page.read_text("utf-8")
    assert text.count("<details>") == 1
    assert f"<summary><b>{n}</b>EOS task failed: simulated task error: view" in text
    assert text.count("<li>") >= n
