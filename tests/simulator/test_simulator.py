"""The simulator plays the EOS task API as documented in its modules, faults included."""

from __future__ import annotations

import email.utils
import io
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import click
import orjson
import pytest
from PIL import Image

import bulkfetch.simulator as simulator
from bulkfetch.simulator import (
    TEST_API_KEY,
    SimConfig,
    Simulator,
    bound_makespan,
    render_result,
    run_in_thread,
)
from bulkfetch.simulator.cli import parse_rate, simulate
from tests.conftest import serve

KEY = {"x-api-key": TEST_API_KEY}
PARAMS: dict[str, Any] = {
    "view_id": "S2/13/R/EL/2023/7/19/0",
    "bm_type": "NDVI",
    "geometry": {
        "type": "Polygon",
        "coordinates": [[[-104.879, 27.166], [-104.870, 27.166], [-104.870, 27.172]]],
    },
    "px_size": 4,
    "reference": "ref-1",
}


def fast(**changes: Any) -> SimConfig:
    """Generous limits and 50 ms tasks, so only what a test asks for slows it down."""
    base: dict[str, Any] = {
        "create_limit": 1000,
        "create_window": 1.0,
        "status_limit": 1000,
        "status_window": 1.0,
        "processing_median": 0.05,
        "processing_sigma": 0.0,
    }
    return SimConfig(**{**base, **changes})


async def create(sim: Simulator, session: aiohttp.ClientSession, **params: Any) -> dict[str, Any]:
    body = {"type": "jpeg", "params": {**PARAMS, **params}}
    async with session.post(sim.api_url, json=body, headers=KEY) as response:
        assert response.status == 202, await response.text()
        answer: dict[str, Any] = await response.json()
        return answer


async def get(
    session: aiohttp.ClientSession, url: str, headers: Mapping[str, str] = KEY
) -> tuple[int, str, bytes]:
    async with session.get(url, headers=headers) as response:
        return response.status, response.content_type, await response.read()


async def finished(sim: Simulator, session: aiohttp.ClientSession, **params: Any) -> str:
    task_id: str = (await create(sim, session, **params))["task_id"]
    await anyio.sleep(0.06)
    return f"{sim.api_url}/{task_id}"


# --- results ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "content_type", "magic"),
    [
        ({}, "image/jpeg", b"\xff\xd8\xff"),
        ({"format": "png"}, "image/png", b"\x89PNG"),
        ({"format": "tiff"}, "image/tiff", b"II*\x00"),
        ({"georeference": "tiff"}, "image/tiff", b"II*\x00"),
        ({"georeference": "world"}, "application/zip", b"PK\x03\x04"),
        ({"georeference": "kmz"}, "application/vnd.google-earth.kmz", b"PK\x03\x04"),
    ],
)
def test_round_trip_gives_a_real_result(
    extra: dict[str, str], content_type: str, magic: bytes
) -> None:
    async def check(sim: Simulator, session: aiohttp.ClientSession) -> None:
        url = await finished(sim, session, **extra)
        async with session.get(url, headers=KEY) as response:
            body = await response.read()
            assert response.status == 200
            assert response.content_type == content_type
            assert response.content_length == len(body)
        assert body.startswith(magic)
        picture = body
        if magic == b"PK\x03\x04":
            archive = zipfile.ZipFile(io.BytesIO(body))
            names = archive.namelist()
            expected = ["doc.kml", "image.jpg"] if "kmz" in extra.values() else ["image.jpg"]
            assert set(expected) <= set(names)
            if extra["georeference"] == "world":
                assert len(archive.read("image.jpgw").splitlines()) == 6
            picture = archive.read("image.jpg")
        with Image.open(io.BytesIO(picture)) as image:
            image.load()
            assert image.size == (64, 64)
            assert image.mode == "RGB"
        assert sim.counters()["results_served"] == 1
        assert sim.counters()["bytes_sent"] == len(body)

    serve(fast(), check)


def test_results_depend_only_on_params() -> None:
    assert render_result(PARAMS) == render_result({**PARAMS, "reference": "other"})
    assert render_result(PARAMS) != render_result({**PARAMS, "view_id": "S2/1/A/BC/2020/1/1/0"})
    world = {**PARAMS, "georeference": "world"}
    assert render_result(world) == render_result(dict(reversed(world.items())))

    async def check(sim: Simulator, session: aiohttp.ClientSession) -> None:
        first = await get(session, await finished(sim, session, reference="a"))
        second = await get(session, await finished(sim, session, reference="b"))
        assert first == second
        assert first[2] == render_result(PARAMS)

    serve(fast(), check)


def test_big_tiff_is_streamed_with_exact_length() -> None:
    async def check(sim: Simulator, session: aiohttp.ClientSession) -> None:
        url = await finished(sim, session, format="tiff")
        async with session.get(url, headers=KEY) as response:
            body = await response.read()
            assert response.content_length == len(body) >= 300_000
        assert body.startswith(b"II*\x00")
        with Image.open(io.BytesIO(body)) as image:
            image.load()
            assert image.size == (1024, 98)

    serve(fast(big_result_bytes=300_000, chunk_size=4096), check)


@pytest.mark.parametrize("form", ["redirect", "json-url"])
def test_result_forms_lead_to_the_bytes_without_a_key(form: str) -> None:
    async def check(sim: Simulator, session: aiohttp.ClientSession) -> None:
        url = await finished(sim, session)
        async with session.get(url, headers=KEY, allow_redirects=False) as response:
            if form == "redirect":
                assert response.status == 302
                target = response.headers["Location"]
            else:
                answer = await response.json()
                assert answer["status"] == "done"
                target = answer["url"]
        assert target.startswith(sim.url + "/_sim/results/")
        assert await get(session, target, headers={}) == (200, "image/jpeg", render_result(PARAMS))
        assert sim.counters()["status_calls"] == 1  # the target is not the status endpoint

    serve(fast(result_form=form), check)


# --- creation, status, auth -------------------------------------------------------------


def test_create_answer_shape() -> None:
    async def check(sim: Simulator, session: aiohttp.ClientSession) -> None:
        body = {"type": "jpeg", "params": PARAMS}
        url = f"{sim.api_url}?api_key={TEST_API_KEY}"
        async with session.post(url, json=body) as response:
            assert response.status == 201
            answer = await response.json()
            assert response.headers["X-Request-Id"] == answer["req_id"]
        assert answer["status"] == "created"
        assert answer["task_timeout"] == 172800
        assert len(answer["task_id"]) == 36

    serve(fast(create_status=201), check)


def test_a_sub_second_task_timeout_is_reported_as_it_is() -> None:
    async def check(sim: Simulator, session: aiohttp.ClientSession) -> None:
        assert (await create(sim, session))["task_timeout"] == 0.25

    serve(fast(task_timeout=0.25), check)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"type": "png", "params": PARAMS}, "unsupported task type"),
        (
            {"type": "jpeg", "params": {k: v for k, v in PARAMS.items() if k != "bm_type"}},
            "bm_type",
        ),
        ({"type": "jpeg", "params": {**PARAMS, "format": "gif"}}, "format"),
        ({"type": "jpeg", "params": {**PARAMS, "view_id": "BAD/1"}}, "BAD/1"),
        ([1, 2], "JSON object"),
    ],
)
def test_bad_create_requests_get_400(body: Any, message: str) -> None:
    async def check(sim: Simulator, session: aiohttp.ClientSession) -> None:
        async with session.post(sim.api_url, data=orjson.dumps(body), headers=KEY) as response:
            assert response.status == 400
            assert message in (await response.json())["error"]
        assert sim.counters()["tasks_created"] == 0

    serve(fast(bad_view_ids=frozenset({"BAD/1"})), check)


def test_key_is_checked_on_both_endpoints_in_header_or_query() -> None:
    async def check(sim: Simulator, session: aiohttp.ClientSession) -> None:
        body = {"type": "jpeg", "params": PARAMS}
        for headers in ({}, {"x-api-key": "apk." + "0" * 64}):
            async with session.post(sim.api_url, json=body, headers=headers) as response:
                assert response.status == 401
            status, _, _ = await get(session, f"{sim.api_url}/nope", headers=headers)
            assert status == 401
        url = await finished(sim, session)
        assert (await get(session, f"{url}?api_key={TEST_API_KEY}", headers={}))[0] == 200
        assert (await get(session, url))[0] == 200
        assert (await get(session, f"{sim.api_url}/not-a-task"))[0] == 404
        sim.configure(forbidden=True)
        assert (await get(session, url))[0] == 403

    serve(fast(), check)


def test_pending_words_cycle_until_ready() -> None:
    async def check(sim: Simulator, session: aiohttp.ClientSession) -> None:
        task_id = (await create(sim, session))["task_id"]
        words = []
        for _ in range(4):
            async with session.get(f"{sim.api_url}/{task_id}", headers=KEY) as response:
                answer = await response.json()
                assert answer["task_id"] == task_id
                words.append(answer["status"])
        assert words == ["created", "pending", "queued", "created"]
        assert sim.counters()["polls_not_ready"] == 4
        assert sim.tasks()[0]["polls"] == 4

    serve(fast(processing_median=60.0, pending_words=("created", "pending", "queued")), check)


def test_task_error_shape() -> None:
    async def check(sim: Simulator, session: aiohttp.ClientSession) -> None:
        url = await finished(sim, session)
        async with session.get(url, headers=KEY) as response:
            assert response.status == 200
            answer = await response.json()
        assert answer["task_type"] == "error"
        assert answer["error_message"]["error"].startswith("simulated task error")

    serve(fast(task_error_rate=1.0), check)


def test_expired_task_is_404_and_dropped() -> None:
    async def check(sim: Simulator, session: aiohttp.ClientSession) -> None:
        url = await finished(sim, session)
        await anyio.sleep(0.2)
        assert (await get(session, url))[0] == 404
        assert (await get(session, url))[0] == 404
        assert sim.counters()["polls_expired"] == 1  # the second 404 is an unknown id

    serve(fast(task_timeout=0.15), check)


# --- rate limits --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["int", "float", "date", "window", "off"])
def test_rate_limit_429_with_each_retry_after_mode(mode: str) -> None:
    async def check(sim: Simulator, session: aiohttp.ClientSession) -> None:
        body = {"type": "jpeg", "params": PARAMS}

        async def post() -> aiohttp.ClientResponse:
            async with session.post(sim.api_url, json=body, headers=KEY) as response:
                await response.read()
                return response

        assert [(await post()).status for _ in range(3)] == [202] * 3
        # All three reached the server by now, however slowly they went (a loaded machine):
        # the times below count from here, not from before the first was sent.
        first_done = time.monotonic()
        await anyio.sleep(0.2)
        refused = await post()
        assert refused.status == 429
        value = refused.headers.get("Retry-After")
        if mode in ("int", "window"):  # at most 0.3 s rounded up; the 0.5 s window rounded up
            assert value == "1"
        elif mode == "float":
            assert value is not None
            # The oldest leaves the window 0.5 s after it came, before first_done; the
            # refused one came at least 0.2 s after first_done.
            assert 0.0 < float(value) <= 0.5 - 0.2 + 0.01
        elif mode == "date":
            assert value is not None
            assert email.utils.parsedate_to_datetime(value).timestamp() > time.time()
        else:
            assert value is None
        # The status lane has its own window: it is untouched by the create lane's 429.
        assert (await get(session, f"{sim.api_url}/unknown"))[0] == 404
        # Once the first three leave the window, three fit again: the 429 did not count.
        await anyio.sleep(first_done + 0.5 + 0.05 - time.monotonic())
        assert [(await post()).status for _ in range(3)] == [202] * 3
        assert (await post()).status == 429
        counters = sim.counters()
        assert (counters["create_calls"], counters["create_429"]) == (8, 2)
        assert counters["status_429"] == 0

    serve(fast(create_limit=3, create_window=0.5, retry_after=mode), check)


def test_status_lane_is_limited_too() -> None:
    async def check(sim: Simulator, session: aiohttp.ClientSession) -> None:
        statuses = [(await get(session, f"{sim.api_url}/x"))[0] for _ in range(4)]
        assert statuses == [404, 404, 429, 429]
        assert sim.counters()["status_429"] == 2

    serve(fast(status_limit=2, status_window=5.0), check)


# --- faults ----------------------------------------------------------------------------------


def test_5xx_faults() -> None:
    async def check(sim: Simulator, session: aiohttp.ClientSession) -> None:
        body = {"type": "jpeg", "params": PARAMS}
        async with session.post(sim.api_url, json=body, headers=KEY) as response:
            assert response.status in (500, 502, 503)
        sim.configure(create_5xx_rate=0.0, status_5xx_rate=1.0)
        url = await finished(sim, session)
        assert (await get(session, url))[0] in (500, 502, 503)
        counters = sim.counters()
        assert (counters["create_5xx"], counters["status_5xx"]) == (1, 1)

    serve(fast(create_5xx_rate=1.0), check)


def test_reset_and_truncation_break_the_connection() -> None:
    async def check(sim: Simulator, session: aiohttp.ClientSession) -> None:
        url = await finished(sim, session)
        sim.configure(reset_rate=1.0)
        with pytest.raises((aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
            await get(session, url)
        assert sim.counters()["resets"] >= 1
        sim.configure(reset_rate=0.0, truncate_rate=1.0)
        with pytest.raises(aiohttp.ClientPayloadError):
            await get(session, url)
        counters = sim.counters()
        assert (counters["truncated"], counters["results_served"]) == (1, 0)
        assert 0 < counters["bytes_sent"] < len(render_result(PARAMS))

    serve(fast(), check)


def test_body_faults() -> None:
    async def check(sim: Simulator, session: aiohttp.ClientSession) -> None:
        url = await finished(sim, session)
        sim.configure(wrong_format_rate=1.0)
        status, content_type, body = await get(session, url)
        assert (status, content_type) == (200, "image/jpeg")
        assert body.startswith(b"\x89PNG")  # only the magic bytes tell
        sim.configure(wrong_format_rate=0.0, json_instead_rate=1.0)
        assert await get(session, url) == (200, "application/json", b'{"status":"done"}')
        sim.configure(json_instead_rate=0.0, empty_200_rate=1.0)
        async with session.get(url, headers=KEY) as response:
            assert (response.status, response.content_length) == (200, 0)
            assert await response.read() == b""
        sim.configure(empty_200_rate=0.0, slow_body_seconds=0.05)
        started = time.monotonic()
        assert (await get(session, url))[2] == render_result(PARAMS)
        assert time.monotonic() - started >= 0.15  # 4 chunks of 512 bytes, 50 ms apart

    serve(fast(chunk_size=512), check)


def test_outage_and_runtime_config_over_http() -> None:
    async def check(sim: Simulator, session: aiohttp.ClientSession) -> None:
        url = await finished(sim, session)
        config_url = sim.url + "/_sim/config"
        async with session.post(config_url, json={"outage_for": 0.2}) as response:
            assert response.status == 200
        assert (await get(session, url))[0] == 503
        await anyio.sleep(0.2)
        assert (await get(session, url))[0] == 200
        async with session.post(config_url, json={"json_instead_rate": 1}) as response:
            assert response.status == 200
        assert (await get(session, url))[1] == "application/json"
        for bad in ({"no_such_knob": 1}, {"reset_rate": 2}, {"port": 1}, [1]):
            async with session.post(config_url, json=bad) as response:
                assert response.status == 400
        async with session.get(sim.url + "/_sim/counters") as response:
            counters = await response.json()
        assert counters["status_5xx"] == 1
        async with session.post(sim.url + "/_sim/reset-counters") as response:
            assert response.status == 200
        assert sim.counters()["status_calls"] == 0

    serve(fast(), check)


# --- counters and the bound ---------------------------------------------------------------


def test_bound_makespan_by_hand() -> None:
    # Created at 0, 2, 4; ready at 5, 3, 5 -> sorted 3, 5, 5; fetched at 3, max(5, 6), max(5, 9).
    assert bound_makespan([5.0, 1.0, 1.0], 2.0, 3.0) == 9.0
    assert bound_makespan([1.0], 2.0, 3.0) == 1.0
    assert bound_makespan([], 2.0, 3.0) == 0.0


def test_counters_bound_and_duplicates() -> None:
    times = iter([0.05, 0.3, 0.05, 0.05])

    async def check(sim: Simulator, session: aiohttp.ClientSession) -> None:
        first = await create(sim, session, reference="A")
        await create(sim, session, reference="A")  # A's first task is live: a live duplicate
        await anyio.sleep(0.06)
        assert (await get(session, f"{sim.api_url}/{first['task_id']}"))[0] == 200
        await create(sim, session, reference="B")
        url = await finished(sim, session, reference="C")
        assert (await get(session, url))[0] == 200
        counters = sim.counters()
        assert counters["duplicate_creations"] == 1
        assert counters["live_duplicate_creations"] == 1
        assert counters["tasks_created"] == 4
        assert counters["results_served"] == 2
        # 10/s and 5/s: create every 0.1 s, status every 0.2 s.
        assert counters["bound_seconds"] == pytest.approx(
            bound_makespan([0.05, 0.3, 0.05, 0.05], 0.1, 0.2)
        )
        assert counters["makespan_seconds"] > 0
        tasks = sim.tasks()
        assert [t["reference"] for t in tasks] == ["A", "A", "B", "C"]
        assert [t["fetched"] for t in tasks] == [True, False, False, True]

    config = fast(create_limit=10, status_limit=5, processing_time_fn=lambda p: next(times))
    serve(config, check)


def test_refetched_reference_is_not_a_live_duplicate() -> None:
    async def check(sim: Simulator, session: aiohttp.ClientSession) -> None:
        assert (await get(session, await finished(sim, session, reference="R")))[0] == 200
        await create(sim, session, reference="R")
        counters = sim.counters()
        assert (counters["duplicate_creations"], counters["live_duplicate_creations"]) == (1, 0)

    serve(fast(), check)


def test_processing_times_follow_the_seed() -> None:
    def processing(seed: int) -> list[float]:
        drawn: list[float] = []

        async def check(sim: Simulator, session: aiohttp.ClientSession) -> None:
            for _ in range(3):
                await create(sim, session)
            drawn.extend(t["processing"] for t in sim.tasks())

        serve(fast(seed=seed, processing_median=3.0, processing_sigma=0.5), check)
        return drawn

    assert processing(7) == processing(7) != processing(8)


# --- the thread runner, config, CLI, exports --------------------------------------------------


def test_thread_runner_stops_and_starts_on_the_same_port() -> None:
    body = orjson.dumps({"type": "jpeg", "params": PARAMS})
    with run_in_thread(fast()) as sim:
        request = urllib.request.Request(sim.api_url, data=body, headers=KEY, method="POST")
        with urllib.request.urlopen(request, timeout=5) as response:
            task_id = orjson.loads(response.read())["task_id"]
        port = sim.port
        sim.stop()
        status_url = f"{sim.api_url}/{task_id}"
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(urllib.request.Request(status_url, headers=KEY), timeout=5)
        sim.start()
        assert sim.port == port
        time.sleep(0.06)
        with urllib.request.urlopen(urllib.request.Request(status_url, headers=KEY)) as response:
            assert response.read() == render_result(PARAMS)
        sim.configure(forbidden=True)
        assert sim.counters()["results_served"] == 1
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(urllib.request.Request(status_url, headers=KEY), timeout=5)
        assert refused.value.code == 403
        refused.value.close()


def test_config_update_validates_all_or_nothing() -> None:
    config = SimConfig()
    config.update(reset_rate=0.5, pending_words=["a", "b"])
    assert (config.reset_rate, config.pending_words) == (0.5, ("a", "b"))
    with pytest.raises(ValueError, match="unknown"):
        config.update(reset_rate=0.1, resett_rate=0.2)
    with pytest.raises(ValueError, match="probability"):
        config.update(truncate_rate=0.3, reset_rate=1.5)
    assert (config.reset_rate, config.truncate_rate) == (0.5, 0.0)
    with pytest.raises(ValueError, match="create_status"):
        SimConfig(create_status=204)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("10/min", (10, 60.0)), ("20/s", (20, 1.0)), ("100/h", (100, 3600.0)), (" 3 / S", (3, 1.0))],
)
def test_parse_rate(text: str, expected: tuple[int, float]) -> None:
    assert parse_rate(text) == expected


@pytest.mark.parametrize("text", ["", "10", "0/min", "ten/min", "10/week", "-1/s", "1.5/s"])
def test_parse_rate_refuses(text: str) -> None:
    with pytest.raises(click.BadParameter):
        parse_rate(text)


def test_cli_refuses_a_bad_rate_before_serving() -> None:
    with pytest.raises(click.BadParameter):
        simulate.main(["--create-rate", "fast"], standalone_mode=False)


def test_cli_serves_with_the_key_from_the_environment_until_interrupted() -> None:
    key = "apk." + "c0de" * 16
    command = [sys.executable, "-c", "from bulkfetch.simulator.cli import simulate; simulate()"]
    env = {**os.environ, "SIM_KEY": key, "PYTHONPATH": str(Path(__file__).parents[2])}
    process = subprocess.Popen(
        [
            *command,
            *("--port", "0", "--api-key-env", "SIM_KEY", "--create-rate", "2/s"),
            *("--limiter", "spacing", "--retry-after", "window"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("EOS simulator on http://127.0.0.1:")
        api_url = line.split()[-1]
        body = orjson.dumps({"type": "jpeg", "params": PARAMS})
        request = urllib.request.Request(
            api_url, data=body, headers={"x-api-key": key}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 202
        # Strict spacing: a second creation at once is refused, and told the whole window.
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)
        refused.value.close()
        assert refused.value.code == 429
        assert refused.value.headers["Retry-After"] == "1"
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=10)
    assert process.returncode == 0
    assert key not in line + out + err


def test_exports_are_exactly_all() -> None:
    public = {name for name in dir(simulator) if not name.startswith("_")}
    modules = {"app", "catalogue", "cli", "colormap_app", "config", "images", "limits"}
    modules |= {"search_app", "server", "state"}
    assert public - modules == set(simulator.__all__)
