"""The simulator's fault kinds for answers seen in the wild (issue 12), checked on the wire
with a plain HTTP client: each knob makes the answer it documents, and nothing else."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from bulkfetch.simulator import TEST_API_KEY, SimConfig, Simulator, render_result
from bulkfetch.simulator.app import _url_answer
from tests.conftest import serve
from tests.simulator.test_simulator import KEY, PARAMS, create, fast, finished, get


@pytest.mark.parametrize(
    "changes",
    [
        {"pending_status": 201},
        {"redirect_status": 304},
        {"html_status": 42},
        {"result_url_field": "a.b.c"},
        {"result_url_field": "1url"},
        {"result_host": "evil.example/path"},
    ],
)
def test_bad_values_are_refused(changes: dict[str, Any]) -> None:
    config = SimConfig()
    with pytest.raises(ValueError, match=next(iter(changes))):
        config.update(**changes)


@pytest.mark.parametrize(
    ("field", "answer"),
    [
        ("url", {"url": "U"}),
        ("downloadUrl", {"downloadUrl": "U"}),
        ("result.url", {"result": {"url": "U"}}),
        ("files[]", {"files": ["U"]}),
        ("data.links[]", {"data": {"links": ["U"]}}),
    ],
)
def test_url_answer_puts_the_url_where_asked(field: str, answer: dict[str, Any]) -> None:
    assert _url_answer(field, "U", "t") == {"status": "done", "task_id": "t", **answer}


@pytest.mark.parametrize("lane", ["create", "status", "search"])
def test_payment_required_answers_402_everywhere(lane: str) -> None:
    async def check(sim: Simulator, session: aiohttp.ClientSession) -> None:
        urls = {
            "create": sim.api_url,
            "status": sim.api_url + "/t",
            "search": sim.search_url + "/sentinel2",
        }
        method = session.get if lane == "status" else session.post
        async with method(urls[lane], headers=KEY, json={}) as response:
            assert response.status == 402
            assert "payment required" in (await response.json())["error"]

    serve(fast(payment_required=True), check)


def test_forbidden_text_is_plain_text() -> None:
    async def check(sim: Simulator, session: aiohttp.ClientSession) -> None:
        assert await get(session, sim.api_url + "/t") == (403, "text/plain", b"403: Forbidden")

    serve(fast(forbidden=True, forbidden_text=True), check)


@pytest.mark.parametrize("status", [200, 404, 501])
def test_html_status_answers_every_api_request_with_a_page(status: int) -> None:
    async def check(sim: Simulator, session: aiohttp.ClientSession) -> None:
        for method, url in (("GET", sim.api_url + "/t"), ("POST", sim.search_url)):
            async with session.request(method, url, headers=KEY) as response:
                assert (response.status, response.content_type) == (status, "text/html")
                assert (await response.read()).startswith(b"<!DOCTYPE html>")
        assert sim.counters()["status_calls"] == 1

    serve(fast(html_status=status), check)


def test_pending_status_202() -> None:
    async def check(sim: Simulator, session: aiohttp.ClientSession) -> None:
        task = await create(sim, session)
        async with session.get(f"{sim.api_url}/{task['task_id']}", headers=KEY) as response:
            assert response.status == 202
            assert (await response.json())["status"] == "created"

    serve(fast(processing_median=60.0, pending_status=202), check)


def test_result_content_type() -> None:
    async def check(sim: Simulator, session: aiohttp.ClientSession) -> None:
        url = await finished(sim, session)
        expected = (200, "binary/octet-stream", render_result(PARAMS))
        assert await get(session, url) == expected

    serve(fast(result_content_type="binary/octet-stream"), check)


@pytest.mark.parametrize("status", [303, 307])
def test_redirect_status_and_result_host(status: int) -> None:
    async def check(sim: Simulator, session: aiohttp.ClientSession) -> None:
        url = await finished(sim, session)
        async with session.get(url, headers=KEY, allow_redirects=False) as response:
            assert response.status == status
            target = response.headers["Location"]
        assert target.startswith(f"http://localhost:{sim.port}/_sim/results/")
        assert await get(session, target, headers={}) == (200, "image/jpeg", render_result(PARAMS))
        assert await get(session, target, headers={"x-api-key": TEST_API_KEY}) == (
            200,
            "image/jpeg",
            render_result(PARAMS),
        )
        assert sim.counters()["result_requests_with_key"] == 1

    serve(fast(result_form="redirect", redirect_status=status, result_host="localhost"), check)
