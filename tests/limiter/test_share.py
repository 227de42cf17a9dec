"""Many processes, one key: real ``bulkfetch run`` processes sharing the key's rate through
the default file store (no flag) and through a real Redis server, against one simulator.

The simulator counts every request of the key whoever sends it, so its counters tell
whether the processes together kept to the key's rate (few or no 429s) and finished every
job. Short runs at scaled rates (10 a second per lane); speed is the benchmarks' business.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from bulkfetch.ledger import JobState, Ledger
from bulkfetch.limiter.share import LEASE
from bulkfetch.simulator import TEST_API_KEY, SimConfig, run_in_thread
from tests.conftest import bulkfetch_cli, make_jobs, spawn_cli, write_jsonl
from tests.redis_server import RedisServer

RATE = 10  # requests per second per lane, on the server: the key's rate
JOBS = 10  # per process


def _config() -> SimConfig:
    return SimConfig(
        create_limit=RATE,
        create_window=1.0,
        status_limit=RATE,
        status_window=1.0,
        processing_median=0.2,
        processing_sigma=0.3,
    )


def _manifests(tmp_path: Path, n: int) -> list[Path]:
    jobs = make_jobs(JOBS * n)
    return [
        write_jsonl(tmp_path / f"jobs{i}.jsonl", jobs[i * JOBS : (i + 1) * JOBS]) for i in range(n)
    ]


def _run_together(
    tmp_path: Path,
    n: int,
    *flags: str,
    env: dict[str, str] | None = None,
    sim_config: SimConfig | None = None,
) -> tuple[list[subprocess.Popen[str]], list[tuple[str, str]], dict[str, int]]:
    """``n`` processes at once, each at the key's full rate, on their own manifest."""
    manifests = _manifests(tmp_path, n)
    rate = f"{RATE}/s"
    with run_in_thread(sim_config or _config()) as sim:
        procs = [
            spawn_cli(
                "run",
                manifests[i],
                "--out",
                tmp_path / f"out{i}",
                "--api-url",
                sim.api_url,
                "--create-rate",
                rate,
                "--status-rate",
                rate,
                *flags,
                env=env,
            )
            for i in range(n)
        ]
        outputs = [p.communicate(timeout=90) for p in procs]
        counters = sim.counters()
    return procs, outputs, counters


def _check_all_done(
    procs: list[subprocess.Popen[str]], outputs: list[tuple[str, str]], counters: dict[str, int]
) -> None:
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
    assert counters["results_served"] == JOBS * len(procs)


@pytest.mark.parametrize("n", [2, 3])
def test_processes_share_the_key_through_redis(
    n: int, tmp_path: Path, redis_server: RedisServer
) -> None:
    redis_server.flush()
    procs, outputs, counters = _run_together(tmp_path, n, "--rate-store", redis_server.url)
    _check_all_done(procs, outputs, counters)
    # Together at most the key's rate: a stray 429 per lane at most (loopback jitter on a
    # loaded test machine), not the storm of n processes each at the full rate.
    assert counters["create_429"] <= 2, counters
    assert counters["status_429"] <= 2, counters
    # Each process released its lease as it ended.
    assert redis_server.leases() == 0
    # What Redis holds names the key by its fingerprint only.
    assert redis_server.dump()
    assert TEST_API_KEY not in redis_server.dump()


def test_processes_on_one_host_share_the_key_with_no_flag(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    procs, outputs, counters = _run_together(tmp_path, 2, env={"XDG_CACHE_HOME": str(cache)})
    _check_all_done(procs, outputs, counters)
    assert counters["create_429"] <= 2, counters
    assert counters["status_429"] <= 2, counters
    # One file for the API host and key, named and filled by the key's fingerprint only.
    files = sorted((cache / "bulkfetch" / "rates").glob("*.json"))
    assert len(files) == 1
    assert TEST_API_KEY not in files[0].name
    assert TEST_API_KEY.encode() not in files[0].read_bytes()


def test_without_a_store_processes_exceed_the_key_rate(tmp_path: Path) -> None:
    """``--rate-store none`` is each process pacing alone: the case the store is for
    (and proof that the simulator would show the store failing). Evenly paced: a burst
    would learn its share from its first 429 (``test_lane``), and hide the storm."""
    procs, outputs, counters = _run_together(tmp_path, 2, "--rate-store", "none", "--no-burst")
    _check_all_done(procs, outputs, counters)
    assert counters["create_429"] + counters["status_429"] >= 3, counters


def test_an_unreachable_redis_at_the_start_is_exit_3_naming_it(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{RedisServer.free_port()}/0"
    manifest = write_jsonl(tmp_path / "jobs.jsonl", make_jobs(2))
    with run_in_thread(_config()) as sim:
        proc = bulkfetch_cli(
            "run", manifest, "--out", tmp_path / "out", "--api-url", sim.api_url,
            env={"BULKFETCH_RATE_STORE": url},
        )  # fmt: skip
        counters = sim.counters()
    assert proc.returncode == 3, proc.stderr
    assert url in proc.stderr
    assert "Traceback" not in proc.stderr
    assert counters["create_calls"] == 0


def test_a_bad_rate_store_is_a_usage_error(tmp_path: Path) -> None:
    manifest = write_jsonl(tmp_path / "jobs.jsonl", make_jobs(1))
    proc = bulkfetch_cli(
        "run", manifest, "--out", tmp_path / "out", "--rate-store", "http://h:1/0"
    )  # fmt: skip
    assert proc.returncode == 2
    assert "--rate-store" in proc.stderr


def test_redis_gone_mid_run_falls_back_to_a_share_of_the_rate(tmp_path: Path) -> None:
    """Two processes share through Redis; Redis dies: each warns and paces at half the
    rate (two processes last seen), every job still done, no storm."""
    server = RedisServer.start(tmp_path / "redis")
    try:
        manifests = _manifests(tmp_path, 2)
        rate = f"{RATE}/s"
        with run_in_thread(_config()) as sim:
            flags = ["--api-url", sim.api_url, "--create-rate", rate, "--status-rate", rate]
            # Creations evenly paced (no burst): each process takes slots after the other
            # joined, so it has seen it when Redis goes (a burst may create every job
            # before the other process comes, and fall back at the whole rate, as the
            # processes it last saw say).
            flags += ["--rate-store", server.url, "--no-burst"]
            procs = [
                spawn_cli("run", manifests[i], "--out", tmp_path / f"out{i}", *flags)
                for i in range(2)
            ]
            # Both in the key's budget (a loaded machine may start one a second late), and
            # sending, before Redis goes.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and (
                server.leases() < 2 or sim.counters()["create_calls"] < 4
            ):
                time.sleep(0.05)
            server.stop()
            outputs = [p.communicate(timeout=90) for p in procs]
            counters = sim.counters()
    finally:
        server.stop()
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        assert "pacing alone at 1/2 of each rate" in err, err
    assert counters["results_served"] == 2 * JOBS
    assert counters["create_429"] + counters["status_429"] <= 4, counters


def test_a_killed_process_stops_counting_within_its_lease(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    redis_server.flush()
    manifest = write_jsonl(tmp_path / "jobs.jsonl", make_jobs(40))
    config = _config()
    with run_in_thread(config) as sim:
        proc = spawn_cli(
            "run", manifest, "--out", tmp_path / "out", "--api-url", sim.api_url,
            "--create-rate", "2/s", "--status-rate", "2/s", "--rate-store", redis_server.url,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while redis_server.leases() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert redis_server.leases() == 1
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=10)
        killed_at = time.time()
    # Nobody releases it: its lease runs out by itself within LEASE (test_rate_store shows
    # an expired lease no longer counts among the processes).
    assert redis_server.leases() == 1
    assert redis_server.lease_expiries()[0] <= killed_at + LEASE


def test_shard_validation_is_a_usage_error(tmp_path: Path) -> None:
    manifest = write_jsonl(tmp_path / "jobs.jsonl", make_jobs(1))
    for bad, says in [("0/4", "counts from 1"), ("5/4", "from 1 to N"), ("a/b", "K/N")]:
        proc = bulkfetch_cli("run", manifest, "--out", tmp_path / "out", "--shard", bad)
        assert proc.returncode == 2, bad
        assert says in proc.stderr, proc.stderr
        assert not (tmp_path / "out").exists()


def test_shards_split_a_manifest_by_key_each_with_its_own_ledger(tmp_path: Path) -> None:
    manifest = write_jsonl(tmp_path / "jobs.jsonl", make_jobs(12))
    out = tmp_path / "out"
    done: list[set[str]] = []  # (3 parts and more: test_shard, without sockets)
    with run_in_thread(_config()) as sim:
        for k in (1, 2):
            proc = bulkfetch_cli(
                "run", manifest, "--out", out, "--api-url", sim.api_url,
                "--create-rate", "50/s", "--status-rate", "50/s", "--shard", f"{k}/2",
            )  # fmt: skip
            assert proc.returncode == 0, proc.stderr
            assert (out / f"bulkfetch-ledger.shard-{k}-of-2.json").exists()
            ledger_path = out / f"bulkfetch-ledger.shard-{k}-of-2.json"
            with Ledger.open(ledger_path, readonly=True) as ledger:
                records = ledger.records()
            done.append({key for key, r in records.items() if r.state is JobState.DONE})
        assert sim.counters()["results_served"] == 12
    assert not (out / "bulkfetch-ledger.json").exists()
    assert sum(len(d) for d in done) == 12
    assert len(set().union(*done)) == 12  # disjoint and complete
    assert all(done)  # 12 jobs in 2 parts: none empty (a hash that spreads)
