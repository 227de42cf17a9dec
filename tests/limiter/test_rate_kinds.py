"""End to end against each way a server may count requests: the real ``bulkfetch run`` over
real sockets, the simulator playing a sliding log, a fixed calendar window, a token bucket or
strict spacing (nginx ``limit_req``), with each form of Retry-After.

Short runs (20 jobs at 10 requests/s per lane): enough for a lane to fill a window, draw
its 429s and settle. Speed is the benchmarks' business; these check what users depend on:
every job done, and the 429s a wrong configuration costs bounded, whatever the server.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from bulkfetch.simulator import SimConfig, run_in_thread
from tests.conftest import bulkfetch_cli, make_jobs, write_jsonl

RATE = 10  # per second per lane, on the server
JOBS = 20


def run_against(
    tmp_path: Path, kind: str, form: str, client_rate: float, *flags: str
) -> tuple[dict[str, int], dict[str, object]]:
    config = SimConfig(
        create_limit=RATE,
        create_window=1.0,
        status_limit=RATE,
        status_window=1.0,
        processing_median=0.2,
        processing_sigma=0.3,
        limiter=kind,  # type: ignore[arg-type]
        retry_after=form,  # type: ignore[arg-type]
    )
    manifest = write_jsonl(tmp_path / "jobs.jsonl", make_jobs(JOBS))
    report = tmp_path / "report.json"
    rate = f"{client_rate:g}/s"
    with run_in_thread(config) as sim:
        args: list[str | Path] = ["run", manifest, "--out", tmp_path / "out"]
        args += ["--api-url", sim.api_url, "--create-rate", rate, "--status-rate", rate]
        proc = bulkfetch_cli(*args, "--report", report, *flags)
        counters = sim.counters()
    assert proc.returncode == 0, proc.stderr
    data = orjson.loads(report.read_bytes())
    assert data["states"]["done"] == JOBS
    assert counters["results_served"] == JOBS
    return counters, data


@pytest.mark.parametrize("kind", ["sliding", "fixed", "bucket", "spacing"])
def test_at_the_known_rate_every_kind_is_served_without_a_storm(kind: str, tmp_path: Path) -> None:
    """A server that counts in a window never refuses the lane's pace; one that spaces
    requests may refuse once per lane (loopback's jitter is a large share of a 100 ms slot,
    so the lane pays it between every two requests only once a 429 asks)."""
    counters, _ = run_against(tmp_path, kind, "float", RATE)
    allowed = 1 if kind == "spacing" else 0
    assert counters["create_429"] <= allowed + 1  # + 1: a loaded test machine's hiccup
    assert counters["status_429"] <= allowed + 1


@pytest.mark.parametrize(
    ("kind", "form"),
    [("sliding", "window"), ("fixed", "off"), ("bucket", "float"), ("spacing", "int")],
)
def test_rates_twice_too_high_cost_a_few_429s_whatever_the_server(
    kind: str, form: str, tmp_path: Path
) -> None:
    counters, data = run_against(tmp_path, kind, form, 2 * RATE)
    most = 5 if kind == "bucket" else 3  # a bucket's burst hides its rate (test_limiter)
    assert counters["create_429"] <= most
    assert counters["status_429"] <= most
    # (How fast each lane settles is test_limiter's business, without sockets.)
    assert data["run"]["rate_limited"] == {  # type: ignore[index]
        "create": counters["create_429"],
        "status": counters["status_429"],
    }


def test_rates_twice_too_low_are_learned_with_learn_rates(tmp_path: Path) -> None:
    _, data = run_against(tmp_path, "sliding", "int", RATE / 2, "--learn-rates")
    lanes = data["lanes"]
    assert isinstance(lanes, dict)
    create = lanes["create"]  # (main's report gives each lane's figures, not its repr)
    assert isinstance(create, dict), create
    assert float(create["interval_seconds"]) < 0.8 * 2.0 / RATE  # faster than configured
