"""The real ``bulkfetch run`` (and ``search``) against answers seen in the wild (issue 12):
402 and a plain-text 403 stop the run; a 202 while pending, results under any Content-Type,
behind a 303 to another host or a URL under any name in JSON are downloaded; a wrong URL
ends the run within the first-contact grace with exit 3 and says why; bad URLs and an
``--out`` that is a URL are usage errors; an unwritable ``--out`` is found before anything
is sent."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import pytest

from bulkfetch.config import ApiKey, Rate
from bulkfetch.errors import EndpointError
from bulkfetch.ledger import JobState, Ledger
from bulkfetch.limiter.lane import Limiter
from bulkfetch.scene_search.client import SearchClient, SearchLane, SearchStats
from bulkfetch.simulator import TEST_API_KEY, SimConfig, SimulatorThread, run_in_thread
from tests.conftest import (
    FAST,
    FAST_FLAGS,
    bulkfetch_cli,
    cli_env,
    make_jobs,
    run_cli,
    spawn_cli,
    tmpfs,
    write_jsonl,
)
from tests.scene_search.test_finder import FIELDS, SEASON
from tests.test_faults import check_outcome, run

LEDGER = "bulkfetch-ledger.json"


def no_traceback(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in proc.stderr, proc.stderr


# -- finished answers of every plausible form: every job done, exit 0 ------------------------

FORMS: dict[str, dict[str, Any]] = {
    "202-while-pending": {"pending_status": 202, "processing_median": 0.3},
    "application-octet-stream": {"result_content_type": "application/octet-stream"},
    "binary-octet-stream": {"result_content_type": "binary/octet-stream"},
    "303-to-another-host": {"result_form": "redirect", "redirect_status": 303},
    "json-downloadUrl-on-another-host": {
        "result_form": "json-url",
        "result_url_field": "downloadUrl",
    },
    "json-result.url-on-another-host": {
        "result_form": "json-url",
        "result_url_field": "result.url",
    },
    "json-files[]-on-another-host": {"result_form": "json-url", "result_url_field": "files[]"},
}


@pytest.mark.parametrize("case", list(FORMS))
def test_every_finished_answer_form_is_downloaded(tmp_path: Path, case: str) -> None:
    faults = FORMS[case] | ({"result_host": "localhost"} if "another-host" in case else {})
    config = SimConfig(**(FAST | faults))
    manifest = write_jsonl(tmp_path / "jobs.jsonl", make_jobs(6))
    out, report = tmp_path / "out", tmp_path / "report.json"
    with run_in_thread(config) as sim:
        proc, _ = run(sim, manifest, out, report, *FAST_FLAGS)
        counters = sim.counters()
    assert proc.returncode == 0, proc.stderr
    check_outcome(out, manifest, report, config)
    assert counters["tasks_created"] == 6
    assert counters["result_requests_with_key"] == 0
    if case == "202-while-pending":
        assert counters["polls_not_ready"] > 0
    if "another-host" in case:
        assert counters["results_served"] == 6


# -- the key or the plan refused: the run stops at once, exit 3 ------------------------------


@pytest.mark.parametrize(
    ("faults", "says"),
    [
        ({"payment_required": True}, "no credit left, or does not include this API"),
        ({"forbidden": True, "forbidden_text": True}, "server said: 403: Forbidden"),
    ],
    ids=["402", "403-text"],
)
def test_a_refused_plan_or_key_stops_the_run_at_once(
    tmp_path: Path, faults: dict[str, Any], says: str
) -> None:
    manifest = write_jsonl(tmp_path / "jobs.jsonl", make_jobs(20))
    out = tmp_path / "out"
    with run_in_thread(SimConfig(**(FAST | faults))) as sim:
        began = time.monotonic()
        proc = run_cli(sim, manifest, out, "--create-rate", "5/s")
        took = time.monotonic() - began
        counters = sim.counters()
    assert proc.returncode == 3, proc.stderr
    no_traceback(proc)
    assert says in proc.stderr
    assert took < 15
    assert counters["create_calls"] <= 2  # not one refused creation per job
    with Ledger.open(out / LEDGER, readonly=True) as ledger:
        states = {record.state for record in ledger.records().values()}
    assert states <= {JobState.PENDING}  # refused: no task exists, none is "lost"


def test_402_stops_a_search(tmp_path: Path) -> None:
    with run_in_thread(SimConfig(**FAST, payment_required=True)) as sim:
        output = tmp_path / "m.jsonl"
        proc = bulkfetch_cli(
            "search", FIELDS, *SEASON, "-o", output, "--search-url", sim.search_url, "--no-cache"
        )
        calls = sim.counters()["search_calls"]
    assert proc.returncode == 3, proc.stderr
    assert "HTTP 402" in proc.stderr
    assert calls <= 4  # one per field searched at once, no retries
    assert not output.exists()


# -- a wrong URL: exit 3 within the grace, saying what came back -----------------------------


class _OtherApi(BaseHTTPRequestHandler):
    """A JSON API that is not EOS's: answers every request with its own JSON."""

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps({"service": "weather", "version": 3}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def other_api() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _OtherApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api/gdw/api"
    finally:
        server.shutdown()
        server.server_close()


def wrong_url_run(tmp_path: Path, api_url: str, *flags: str) -> tuple[Any, float]:
    manifest = write_jsonl(tmp_path / "jobs.jsonl", make_jobs(3))
    began = time.monotonic()
    proc = bulkfetch_cli(
        "run", manifest, "--out", tmp_path / "out", "--api-url", api_url, *FAST_FLAGS, *flags
    )
    return proc, time.monotonic() - began


@pytest.mark.parametrize("status", [200, 501])
def test_an_html_page_stops_the_run_at_once(tmp_path: Path, status: int) -> None:
    with run_in_thread(SimConfig(**FAST, html_status=status)) as sim:
        proc, took = wrong_url_run(tmp_path, sim.api_url)  # the default grace: 45 s
    assert proc.returncode == 3, proc.stderr
    no_traceback(proc)
    assert f"{sim.api_url} does not answer as the EOS task API" in proc.stderr
    assert f"an HTML page ('Welcome to our site') (HTTP {status})" in proc.stderr
    assert "check --api-url" in proc.stderr
    assert took < 20


def test_json_of_another_api_stops_the_run_at_once(tmp_path: Path, other_api: str) -> None:
    proc, took = wrong_url_run(tmp_path, other_api)
    assert proc.returncode == 3, proc.stderr
    assert "JSON without a usable task_id (HTTP 200)" in proc.stderr
    assert took < 20


@pytest.mark.parametrize(
    ("where", "says"),
    [
        ("nothing-listening", "creating a task: connection refused, for 2 s"),
        ("dns", "DNS lookup failed for host 'no-such-host.invalid'"),
        ("tls", "TLS failure"),
        ("503-outage", "server error (HTTP 503)"),
    ],
)
def test_a_url_that_never_answers_as_the_api_ends_the_run_after_the_grace(
    tmp_path: Path, where: str, says: str
) -> None:
    with run_in_thread(SimConfig(**FAST)) as sim:
        urls = {
            "dns": "http://no-such-host.invalid/api/gdw/api",
            "tls": sim.api_url.replace("http://", "https://"),
            "503-outage": sim.api_url,
        }
        if where == "nothing-listening":
            sim.stop()
            api_url = sim.api_url
        else:
            api_url = urls[where]
        if where == "503-outage":
            sim.configure(outage_for=600)
        proc, took = wrong_url_run(tmp_path, api_url, "--first-contact-grace", "2s")
    assert proc.returncode == 3, proc.stderr
    no_traceback(proc)
    assert "does not answer as the EOS task API" in proc.stderr
    assert says in proc.stderr
    assert 2 <= took < 20


def test_once_the_api_has_answered_an_outage_longer_than_the_grace_is_waited_out(
    tmp_path: Path,
) -> None:
    config = SimConfig(**(FAST | {"processing_median": 0.5}))
    manifest = write_jsonl(tmp_path / "jobs.jsonl", make_jobs(12))
    out, report = tmp_path / "out", tmp_path / "report.json"
    with run_in_thread(config) as sim:
        proc = spawn_cli(
            "run", manifest, "--out", out, "--api-url", sim.api_url, "--report", report,
            "--create-rate", "10/s", "--status-rate", "10/s", "--first-contact-grace", "1s",
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while sim.counters()["results_served"] < 1:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        sim.stop()
        time.sleep(3)
        sim.start()
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    check_outcome(out, manifest, report, config)


def test_a_wrong_search_url_stops_the_search_at_once(tmp_path: Path) -> None:
    with run_in_thread(SimConfig(**FAST, html_status=404)) as sim:
        output = tmp_path / "m.jsonl"
        proc = bulkfetch_cli(
            "search", FIELDS, *SEASON, "-o", output, "--search-url", sim.search_url, "--no-cache"
        )
    assert proc.returncode == 3, proc.stderr
    no_traceback(proc)
    assert "does not answer as the EOS Search API (an HTML page" in proc.stderr
    assert "check --search-url" in proc.stderr
    assert not output.exists()


# -- URLs and folders that cannot work: refused before anything is made or sent -------------


def cli_in(cwd: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bulkfetch.cli", *map(str, args)],
        env=cli_env(),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--api-url", "not-a-url"], "--api-url 'not-a-url' must be an http(s) URL"),
        (["--api-url", "ftp://eos.example/api"], "its scheme is 'ftp'"),
        (["--api-url", "http://"], "has no host"),
        (["--out", "ftp://bucket/prefix"], "ftp:// is not a destination bulkfetch writes to"),
        (["--out", "https://example.com/up"], "https:// is not a destination bulkfetch"),
    ],
)
@pytest.mark.parametrize("command", ["run", "plan"])
def test_unusable_urls_are_usage_errors_and_nothing_is_made(
    tmp_path: Path, command: str, flags: list[str], says: str
) -> None:
    write_jsonl(tmp_path / "jobs.jsonl", make_jobs(2))
    args = ["--out", "out", *flags] if "--out" not in flags else flags
    proc = cli_in(tmp_path, command, "jobs.jsonl", *args)
    assert proc.returncode == 2, proc.stderr
    no_traceback(proc)
    assert says in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jobs.jsonl"]


@pytest.mark.parametrize("flag", ["--search-url", "--api-url"])
def test_an_unusable_search_url_is_a_usage_error(tmp_path: Path, flag: str) -> None:
    proc = cli_in(tmp_path, "search", FIELDS, *SEASON, "-o", "m.jsonl", flag, "ftp://x/y")
    assert proc.returncode == 2, proc.stderr
    no_traceback(proc)
    assert f"{flag} 'ftp://x/y' must be an http(s) URL" in proc.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A folder nobody may write into: a read-only tmpfs as root, else mode 0555."""
    where = tmp_path / "ro"
    where.mkdir()
    if os.geteuid() != 0:
        where.chmod(0o555)
        yield where
        where.chmod(0o755)
        return
    with tmpfs(where, "ro,size=1m"):
        yield where


def test_an_unwritable_out_is_found_before_anything_is_sent(
    tmp_path: Path, sim: SimulatorThread, read_only_dir: Path
) -> None:
    manifest = write_jsonl(tmp_path / "jobs.jsonl", make_jobs(4))
    proc = run_cli(sim, manifest, read_only_dir, "--ledger", tmp_path / "ledger.json")
    assert proc.returncode == 4, proc.stderr
    no_traceback(proc)
    assert f"cannot write into the output folder {read_only_dir}" in proc.stderr
    assert sim.counters()["create_calls"] == 0


def test_a_search_url_with_nothing_listening_ends_when_the_grace_runs_out() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/api/lms/search/v2"

    async def main() -> EndpointError:
        async with SearchClient(url, ApiKey(TEST_API_KEY)) as client:
            limiter = Limiter("search", Rate(100, 1.0))
            lane = SearchLane(client, limiter, SearchStats(), 50, first_contact_grace=1.0)
            with pytest.raises(EndpointError) as info:
                await lane.post("sentinel2", {})
            return info.value

    began = time.monotonic()
    error = anyio.run(main)
    assert 1.0 <= time.monotonic() - began < 5  # not 50 attempts with back-off
    assert str(error) == (
        f"{url} does not answer as the EOS Search API (searching: connection refused, "
        "for 1 s): check --search-url"
    )
