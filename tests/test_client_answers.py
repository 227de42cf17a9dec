"""The client against answers seen in the wild (issue 12), over real sockets to the simulator:
402 and a plain-text 403, a 202 while pending, results under any Content-Type, behind any
redirect to another host, or behind a URL under any name in JSON; and answers no task API
gives (HTML pages, JSON of another API)."""

from __future__ import annotations

import anyio
import pytest
from aiohttp import web

from bulkfetch.client import Client, Pending
from bulkfetch.errors import AuthError, NotTheApi, TransientError
from bulkfetch.simulator import Simulator, render_result
from tests.test_client import (
    BODY,
    KEY,
    PARAMS,
    created_and_ready,
    expect,
    fast,
    serve,
    status_of,
    with_client,
)


@pytest.mark.parametrize("lane", ["create", "status"])
def test_402_is_a_fatal_auth_error_about_the_plan(lane: str) -> None:
    async def check(sim: Simulator, client: Client) -> None:
        call = (
            (lambda: client.create(BODY)) if lane == "create" else (lambda: status_of(client, "t"))
        )
        error = await expect(AuthError, call)
        assert error.status == 402
        assert error.fatal
        assert "no credit left, or does not include this API" in str(error)
        assert "payment required" in str(error)  # the server's own words are kept

    with_client(fast(payment_required=True), check)


def test_403_says_the_plan_may_not_include_the_api_and_keeps_a_plain_text_body() -> None:
    async def check(sim: Simulator, client: Client) -> None:
        error = await expect(AuthError, lambda: client.create(BODY))
        assert error.status == 403
        assert "refused the API key" in str(error)
        assert "plan includes this API" in str(error)
        assert str(error).endswith("server said: 403: Forbidden")

    with_client(fast(forbidden=True, forbidden_text=True), check)


def test_a_202_with_a_status_word_while_pending_is_not_ready() -> None:
    async def check(sim: Simulator, client: Client) -> None:
        created = await client.create(BODY)
        assert await status_of(client, created.task_id) == Pending("processing")

    with_client(
        fast(processing_median=60.0, pending_words=("processing",), pending_status=202), check
    )


def test_an_empty_202_is_not_ready() -> None:
    async def accepted(request: web.Request) -> web.Response:
        return web.Response(status=202)

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/api/gdw/api/{task_id}", accepted)
        async with serve(app) as url, Client(url + "/api/gdw/api", KEY) as client:
            assert await status_of(client, "t1") == Pending("accepted")

    anyio.run(main)


@pytest.mark.parametrize(
    "ctype", ["application/octet-stream", "binary/octet-stream", "image/jpg", "text/html", ""]
)
def test_result_bytes_under_any_content_type(ctype: str) -> None:
    async def check(sim: Simulator, client: Client) -> None:
        created = await created_and_ready(client)
        assert await status_of(client, created.task_id) == render_result(PARAMS)

    with_client(fast(result_content_type=ctype), check)


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("form", ["redirect", "json-url"])
def test_a_result_on_another_host_is_fetched_without_the_key(form: str, status: int) -> None:
    async def check(sim: Simulator, client: Client) -> None:
        created = await created_and_ready(client)
        assert await status_of(client, created.task_id) == render_result(PARAMS)
        counters = sim.counters()
        assert counters["results_served"] == 1
        assert counters["result_requests_with_key"] == 0

    # The API is on 127.0.0.1; the result on localhost: another origin.
    config = fast(result_form=form, redirect_status=status, result_host="localhost")
    with_client(config, check)


def test_a_result_on_the_apis_own_host_is_fetched_with_the_key() -> None:
    # The control for the test above: the simulator does see a key when one is sent.
    async def check(sim: Simulator, client: Client) -> None:
        created = await created_and_ready(client)
        assert await status_of(client, created.task_id) == render_result(PARAMS)
        assert sim.counters()["result_requests_with_key"] == 1

    with_client(fast(result_form="redirect", redirect_status=303), check)


@pytest.mark.parametrize(
    "field",
    [
        "url",
        "image_url",
        "file_url",
        "download_url",
        "downloadUrl",
        "result",
        "link",
        "result.url",
        "data.download_url",
        "files[]",
        "urls[]",
    ],
)
def test_a_json_result_url_under_any_plausible_name(field: str) -> None:
    async def check(sim: Simulator, client: Client) -> None:
        created = await created_and_ready(client)
        assert await status_of(client, created.task_id) == render_result(PARAMS)

    with_client(
        fast(result_form="json-url", result_url_field=field, result_host="localhost"), check
    )


def test_a_json_result_url_that_redirects_is_followed() -> None:
    image = render_result(PARAMS)

    async def done(request: web.Request) -> web.Response:
        return web.json_response({"status": "done", "result": {"download_url": "/hop"}})

    async def hop(request: web.Request) -> web.Response:
        return web.Response(status=303, headers={"Location": "/file.jpg"})

    async def file(request: web.Request) -> web.Response:
        return web.Response(body=image, content_type="binary/octet-stream")

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/api/gdw/api/{task_id}", done)
        app.router.add_get("/hop", hop)
        app.router.add_get("/file.jpg", file)
        async with serve(app) as url, Client(url + "/api/gdw/api", KEY) as client:
            assert await status_of(client, "t1") == image

    anyio.run(main)


# -- answers no task API gives -------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "at_once"), [(200, True), (404, True), (501, True), (502, False)]
)
@pytest.mark.parametrize("lane", ["create", "status"])
def test_an_html_page_is_not_the_api(lane: str, status: int, at_once: bool) -> None:
    async def check(sim: Simulator, client: Client) -> None:
        call = (
            (lambda: client.create(BODY)) if lane == "create" else (lambda: status_of(client, "t"))
        )
        error = await expect(NotTheApi, call)
        assert error.retryable  # once the API has answered, a proxy's page is an outage
        assert error.at_once is at_once
        assert error.what == f"an HTML page ('Welcome to our site') (HTTP {status})"

    with_client(fast(html_status=status), check)


@pytest.mark.parametrize(
    ("body", "ctype", "what"),
    [
        (b'{"hello": "world"}', "application/json", "JSON without a usable task_id (HTTP 200)"),
        (b"[1, 2]", "application/json", "JSON but not an object (HTTP 200)"),
        (b"OK", "text/plain", "OK (HTTP 200)"),
        (b"", "text/plain", "an empty body (HTTP 200)"),
    ],
)
def test_a_creation_answer_that_is_not_the_task_apis_json(
    body: bytes, ctype: str, what: str
) -> None:
    async def answer(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type=ctype)

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/api/gdw/api", answer)
        async with serve(app) as url, Client(url + "/api/gdw/api", KEY) as client:
            error = await expect(NotTheApi, lambda: client.create(BODY))
            assert error.at_once
            assert error.what == what

    anyio.run(main)


def test_a_creation_answer_with_taskId_is_a_task() -> None:
    async def answer(request: web.Request) -> web.Response:
        return web.json_response({"status": "created", "taskId": "t-9"})

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/api/gdw/api", answer)
        async with serve(app) as url, Client(url + "/api/gdw/api", KEY) as client:
            assert (await client.create(BODY)).task_id == "t-9"

    anyio.run(main)


def test_a_5xx_in_text_is_still_only_transient() -> None:
    async def check(sim: Simulator, client: Client) -> None:
        error = await expect(TransientError, lambda: client.create(BODY))
        assert not isinstance(error, NotTheApi)

    with_client(fast(create_5xx_rate=1.0), check)


@pytest.mark.parametrize("form", ["redirect", "json-url"])
def test_a_refusal_from_the_results_host_is_not_a_refused_key(form: str) -> None:
    # An expired presigned URL: S3 answers 403 with an XML body. Retried, not fatal.
    async def denied(request: web.Request) -> web.Response:
        xml = b"<?xml version='1.0'?><Error><Code>AccessDenied</Code></Error>"
        return web.Response(status=403, body=xml, content_type="application/xml")

    async def main() -> None:
        storage = web.Application()
        storage.router.add_get("/bucket/r.jpg", denied)
        async with serve(storage) as storage_url:
            target = storage_url.replace("127.0.0.1", "localhost") + "/bucket/r.jpg"

            async def done(request: web.Request) -> web.Response:
                if form == "redirect":
                    return web.Response(status=303, headers={"Location": target})
                return web.json_response({"status": "done", "download_url": target})

            api = web.Application()
            api.router.add_get("/api/gdw/api/{task_id}", done)
            async with serve(api) as api_url, Client(api_url + "/api/gdw/api", KEY) as client:
                error = await expect(TransientError, lambda: status_of(client, "t1"))
                assert not error.fatal
                assert "the result's host refused the download (HTTP 403)" in str(error)

    anyio.run(main)
