"""Recorded answers of the real EOS (``tests/fixtures``, sources in its README): the client's
parsers read each one, and a small aiohttp server replays them to the real CLI."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import orjson
from aiohttp import web

from bulkfetch._http import CREATING, error_for
from bulkfetch.client import Created, Failed, Pending, _parse_created, interpret_status
from bulkfetch.config import ApiKey, Rate
from bulkfetch.errors import AuthError
from bulkfetch.limiter.lane import Limiter
from bulkfetch.scene_search.client import SearchClient, SearchLane, SearchStats
from bulkfetch.scene_search.scenes import parse_scene
from bulkfetch.simulator import TEST_API_KEY, render_result
from tests.conftest import bulkfetch_cli, square, write_jsonl
from tests.scene_search.test_finder import jobs_of

FIXTURES = Path(__file__).parent / "fixtures"
CREATED = (FIXTURES / "eos_create_answer.json").read_bytes()
TASK_ERROR = (FIXTURES / "eos_task_error.json").read_bytes()
FORBIDDEN = (FIXTURES / "eos_403_forbidden.txt").read_bytes()
SEARCH_PAGE = (FIXTURES / "awseos_search.json").read_bytes()
RECORDED_TASK = "00dd1775-4fe4-420f-9ab8-19e967233154"


# -- the parsers ---------------------------------------------------------------------------


def test_the_documented_creation_answer() -> None:
    assert _parse_created(CREATED) == Created(
        RECORDED_TASK, "4554a79d-7b7c-4515-a94f-7ceeab2417c2", 172800.0
    )


def test_the_creation_answer_read_again_as_a_status_is_pending() -> None:
    # The docs' pending status is the same shape: status "created" and the task's ids.
    assert interpret_status(orjson.loads(CREATED)) == Pending("created")


def test_the_documented_task_error() -> None:
    assert interpret_status(orjson.loads(TASK_ERROR)) == Failed(
        "Scene S2/55/P/BS/2020/8/15/0 is not available for NDVI"
    )


def test_a_plain_text_403_is_a_refused_key_quoting_the_server() -> None:
    error = error_for(403, {"Content-Type": "text/plain"}, FORBIDDEN, CREATING)
    assert isinstance(error, AuthError)
    assert error.fatal
    assert str(error).endswith("server said: 403: Forbidden")


def test_eodags_recorded_search_page() -> None:
    page = orjson.loads(SEARCH_PAGE)
    scenes = [parse_scene(result, "sentinel2") for result in page["results"]]
    assert [(s.view_id, s.date, s.cloud, s.coverage) for s in scenes] == [
        ("S2/55/P/DS/2020/8/15/0", dt.date(2020, 8, 15), 44.06, 77.21),
        ("S2/55/P/BS/2020/8/15/0", dt.date(2020, 8, 15), 0.0, 5.76),
    ]
    assert page["meta"] == {"page": 1, "found": 44, "name": "satellite-meta-service", "limit": 2}


# -- a server that replays them ------------------------------------------------------------


def replay_app(
    *, forbidden: bool = False, served: dict[str, bytes] | None = None
) -> web.Application:
    """EOS as recorded: the documented creation answer (the second task under a new id, same
    shape), a pending answer, then the image for the first job and the recorded task error
    for the second; the recorded search page, and an empty page after it."""
    polls: dict[str, int] = {}
    tasks: dict[str, dict[str, Any]] = {}

    async def create(request: web.Request) -> web.Response:
        if forbidden:
            return web.Response(status=403, body=FORBIDDEN, content_type="text/plain")
        body = orjson.loads(await request.read())
        answer = CREATED
        if tasks:
            answer = CREATED.replace(RECORDED_TASK.encode(), f"task-{len(tasks)}".encode())
        tasks[orjson.loads(answer)["task_id"]] = body["params"]
        return web.Response(body=answer, status=202, content_type="application/json")

    async def status(request: web.Request) -> web.Response:
        task_id = request.match_info["task_id"]
        if request.headers.get("x-api-key") != TEST_API_KEY or task_id not in tasks:
            return web.Response(status=403, body=FORBIDDEN, content_type="text/plain")
        polls[task_id] = polls.get(task_id, 0) + 1
        if polls[task_id] == 1:
            return web.Response(body=CREATED, content_type="application/json")
        if task_id != RECORDED_TASK:
            return web.Response(body=TASK_ERROR, content_type="application/json")
        image = render_result(tasks[task_id])
        if served is not None:
            served[tasks[task_id]["view_id"]] = image
        return web.Response(body=image, content_type="image/jpeg")

    async def search(request: web.Request) -> web.Response:
        query = orjson.loads(await request.read())
        if query.get("page", 1) == 1:
            return web.Response(body=SEARCH_PAGE, content_type="application/json")
        meta = orjson.loads(SEARCH_PAGE)["meta"] | {"page": query["page"]}
        return web.json_response({"results": [], "meta": meta})

    app = web.Application()
    app.router.add_post("/api/gdw/api", create)
    app.router.add_get("/api/gdw/api/{task_id}", status)
    app.router.add_post("/api/lms/search/v2/{dataset}", search)
    app.router.add_post("/api/lms/search/v2", search)  # several datasets in one request
    return app


@contextmanager
def replaying(app: web.Application) -> Iterator[str]:
    """Serve ``app`` on loopback from a thread of its own; yields the root URL."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)

    async def start() -> str:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    try:
        yield asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


#: The two scenes of EODAG's recorded page, over a field on Saipan.
DS, BS = "S2/55/P/DS/2020/8/15/0", "S2/55/P/BS/2020/8/15/0"
SAIPAN = square(145.75, 15.2)
JOBS = [
    {"view_id": DS, "bm_type": "NDVI", "geometry": SAIPAN, "px_size": 10},
    {"view_id": BS, "bm_type": "NDVI", "geometry": SAIPAN, "px_size": 10},
]


def test_a_whole_run_against_the_recorded_answers(tmp_path: Path) -> None:
    manifest = write_jsonl(tmp_path / "jobs.jsonl", JOBS)
    out, report = tmp_path / "out", tmp_path / "report.json"
    served: dict[str, bytes] = {}
    with replaying(replay_app(served=served)) as root:
        proc = bulkfetch_cli(
            "run", manifest, "--out", out, "--api-url", root + "/api/gdw/api", "--report", report,
            "--create-rate", "20/s", "--status-rate", "20/s",
        )  # fmt: skip
    assert proc.returncode == 1, proc.stderr  # one job done, one failed as recorded
    rows = {row["view_id"]: row for row in orjson.loads(report.read_bytes())["job_list"]}
    assert rows[DS]["state"] == "done"
    assert (out / rows[DS]["path"]).read_bytes() == served[DS]
    assert rows[BS]["state"] == "failed"
    assert f"EOS task failed: Scene {BS} is not available for NDVI" in rows[BS]["error"]


def test_a_recorded_plain_text_403_stops_the_run(tmp_path: Path) -> None:
    manifest = write_jsonl(tmp_path / "jobs.jsonl", JOBS)
    with replaying(replay_app(forbidden=True)) as root:
        proc = bulkfetch_cli(
            "run", manifest, "--out", tmp_path / "out", "--api-url", root + "/api/gdw/api"
        )
    assert proc.returncode == 3, proc.stderr
    assert "refused the API key (HTTP 403)" in proc.stderr
    assert "server said: 403: Forbidden" in proc.stderr


def test_a_search_against_eodags_recorded_page(tmp_path: Path) -> None:
    fields = write_jsonl(tmp_path / "fields.jsonl", [{"id": "saipan", "geometry": SAIPAN}])
    output = tmp_path / "m.jsonl"
    with replaying(replay_app()) as root:
        proc = bulkfetch_cli(
            "search", fields, "--from", "2020-08-01", "--to", "2020-08-31", "-o", output,
            "--search-url", root + "/api/lms/search/v2", "--dataset", "sentinel2",
            "--search-rate", "20/s", "--no-cache",
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert sorted(job["view_id"] for job in jobs_of(output)) == [BS, DS]


def test_the_search_lane_pages_through_the_recorded_page() -> None:
    async def main() -> list[dict[str, Any]]:
        with replaying(replay_app()) as root:
            async with SearchClient(root + "/api/lms/search/v2", ApiKey(TEST_API_KEY)) as client:
                lane = SearchLane(client, Limiter("search", Rate(100, 1.0)), SearchStats(), 2)
                results = await lane.pages("sentinel2", {"search": {}, "limit": 2})
                assert lane.stats.requests == 2  # the recorded page, then an empty one
                return results

    results = anyio.run(main)
    assert [r["view_id"] for r in results] == [DS, BS]
