"""Tests for bulkfetch.client: what each EOS answer means, over real sockets to the simulator."""

from __future__ import annotations

import contextlib
import email.utils
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import pytest
from aiohttp import web
from yarl import URL

from bulkfetch.client import (
    Client,
    Created,
    Failed,
    Pending,
    Ready,
    ResultUrl,
    interpret_status,
    parse_retry_after,
)
from bulkfetch.config import ApiKey
from bulkfetch.errors import (
    ApiError,
    AuthError,
    BadRequest,
    EndpointError,
    RateLimited,
    TaskGone,
    TransientError,
)
from bulkfetch.simulator import (
    TEST_API_KEY,
    SimConfig,
    Simulator,
    render_result,
    result_content_type,
)

T = TypeVar("T")
KEY = ApiKey(TEST_API_KEY)
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
BODY: dict[str, Any] = {"type": "jpeg", "params": PARAMS}


def fast(**changes: Any) -> SimConfig:
    """Generous limits and 20 ms tasks, so only what a test asks for slows it down."""
    base: dict[str, Any] = {
        "create_limit": 1000,
        "create_window": 1.0,
        "status_limit": 1000,
        "status_window": 1.0,
        "processing_median": 0.02,
        "processing_sigma": 0.0,
    }
    return SimConfig(**{**base, **changes})


def assert_no_key(exc: BaseException) -> None:
    for text in (str(exc), repr(exc), str(exc.__cause__), str(exc.__context__)):
        assert TEST_API_KEY not in text
        assert "5eed5eed" not in text


def with_client(
    config: SimConfig,
    check: Callable[[Simulator, Client], Awaitable[T]],
    *,
    api_url: Callable[[Simulator], str] = lambda sim: sim.api_url,
    key: ApiKey = KEY,
    timeout: float = 10.0,
) -> T:
    async def main() -> T:
        async with Simulator(config) as sim, Client(api_url(sim), key, timeout=timeout) as client:
            return await check(sim, client)

    return anyio.run(main)


async def read_all(ready: Ready) -> bytes:
    return b"".join([chunk async for chunk in ready.chunks(size=1000)])


async def created_and_ready(client: Client, body: dict[str, Any] = BODY) -> Created:
    created = await client.create(body)
    await anyio.sleep(0.06)
    return created


E = TypeVar("E", bound=BaseException)


async def expect(kind: type[E], call: Callable[[], Awaitable[object]]) -> E:
    """Await ``call()``, which must raise ``kind``; check the key is not in the error."""
    with pytest.raises(kind) as info:
        await call()
    assert_no_key(info.value)
    return info.value


async def status_of(client: Client, task_id: str) -> Pending | Failed | bytes:
    """A status call's answer, with a Ready read to its bytes inside the call."""
    async with client.status(task_id) as answer:
        if isinstance(answer, Ready):
            return await read_all(answer)
        return answer


# -- parse_retry_after ------------------------------------------------------------------------

NOW = 1_445_412_470.0  # Wed, 21 Oct 2015 07:27:50 GMT


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("5", 5.0),
        (" 120 ", 120.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("0.000001", 0.000001),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 10.0),
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),  # in the past: go now
        (email.utils.formatdate(NOW + 3600, usegmt=True), 3600.0),
        (None, None),
        ("", None),
        ("soon", None),
        ("5 seconds", None),
        ("NaN", None),
        ("nan", None),
        ("inf", None),
        ("-inf", None),
        ("1e999", None),
        ("Wed, 99 Foo 2015 07:28:00 GMT", None),
    ],
)
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == (
        pytest.approx(seconds) if seconds is not None else None
    )


@pytest.mark.parametrize("value", ["-1", "-0.5", "-100"])
def test_parse_retry_after_never_negative(value: str) -> None:
    result = parse_retry_after(value, now=NOW)
    assert result is None or result == 0.0


def test_parse_retry_after_date_against_the_real_clock() -> None:
    value = email.utils.formatdate(time.time() + 60, usegmt=True)
    result = parse_retry_after(value)
    assert result is not None
    assert 58.0 <= result <= 60.0


# -- interpret_status -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "word"),
    [
        ({"status": "created", "task_id": "t"}, "created"),
        ({"status": "pending"}, "pending"),
        ({"status": "queued"}, "queued"),
        ({"status": "processing"}, "processing"),
        ({"status": "running"}, "running"),
        ({"status": " Processing "}, "processing"),
        ({"status": "warming-up-the-satellite"}, "warming-up-the-satellite"),
        ({"task_id": "t"}, "unknown"),
        ({}, "unknown"),
    ],
)
def test_interpret_status_pending(data: dict[str, Any], word: str) -> None:
    assert interpret_status(data) == Pending(word)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"task_type": "error", "error_message": {"error": "view not found"}}, "view not found"),
        ({"task_type": "Error", "error_message": "plain text"}, "plain text"),
        ({"task_type": "error", "error_message": {"message": "m"}}, "m"),
        ({"task_type": "error", "error_message": {"code": 7}}, '{"code":7}'),
        ({"status": "failed", "error": "quota"}, "quota"),
        ({"status": "error", "message": "bad geometry"}, "bad geometry"),
        ({"status": "FAILED"}, "task failed (no message given)"),
        ({"status": "cancelled"}, "task failed (no message given)"),
        ({"task_type": "error", "url": "https://x/y"}, "task failed (no message given)"),
    ],
)
def test_interpret_status_failed_keeps_the_servers_message(
    data: dict[str, Any], message: str
) -> None:
    assert interpret_status(data) == Failed(message)


def test_interpret_status_failed_message_is_bounded() -> None:
    answer = interpret_status({"task_type": "error", "error_message": {"error": "x" * 10_000}})
    assert isinstance(answer, Failed)
    assert answer.message == "x" * 500


@pytest.mark.parametrize(
    "data",
    [
        {"status": "done", "url": "https://s3.example/r.jpg"},
        {"status": "finished", "result_url": "https://s3.example/r.jpg"},
        {"download_url": "https://s3.example/r.jpg"},
        {"status": "success", "result": "https://s3.example/r.jpg"},
        {"status": "completed", "link": "https://s3.example/r.jpg"},
        {"href": "https://s3.example/r.jpg"},
    ],
)
def test_interpret_status_url(data: dict[str, Any]) -> None:
    assert interpret_status(data) == ResultUrl("https://s3.example/r.jpg")


@pytest.mark.parametrize(
    "data",
    [
        {"status": "done"},
        {"status": "success", "url": ""},
        {"status": "done", "url": "ftp://s3.example/r.jpg"},
        {"status": "done", "url": "javascript:alert(1)"},
        {"status": "done", "url": 5},
        [],
        ["done"],
        "done",
        3,
        None,
    ],
)
def test_interpret_status_malformed_is_transient(data: Any) -> None:
    with pytest.raises(TransientError) as info:
        interpret_status(data)
    assert info.value.retryable


def test_interpret_status_pending_word_wins_over_a_link() -> None:
    data = {"status": "processing", "task_id": "t", "link": "https://api.example/task/t"}
    assert interpret_status(data) == Pending("processing")


# -- the key travels only where it belongs ----------------------------------------------------


def test_client_refuses_a_non_http_url() -> None:
    for url in ("ftp://eos/api", "api-connect.eos.com/api", "http:///nohost"):
        with pytest.raises(ValueError, match="http"):
            Client(url, KEY)


def test_client_session_needs_async_with() -> None:
    with pytest.raises(RuntimeError, match="async with"):
        _ = Client("http://127.0.0.1:1/api", KEY).session


def test_headers_carry_the_key_only_to_the_apis_own_origin() -> None:
    client = Client("https://api-connect.eos.com/api/gdw/api/", KEY)
    same = client.headers(URL("https://api-connect.eos.com/api/gdw/api/t1"))
    assert same == {"x-api-key": TEST_API_KEY}
    assert client.headers(URL("https://api-connect.eos.com:443/other/path?x=1")) == same
    for other in (
        "http://api-connect.eos.com/api/gdw/api/t1",  # downgraded scheme
        "https://api-connect.eos.com:8443/api/gdw/api/t1",  # other port
        "https://s3.amazonaws.com/bucket/r.jpg",  # other host
        "https://api-connect.eos.com.evil.example/api/gdw/api/t1",
        "https://evil.example/?host=api-connect.eos.com",
    ):
        assert client.headers(URL(other)) == {}, other


def test_client_repr_does_not_show_the_key() -> None:
    client = Client("http://127.0.0.1:1/api", KEY)
    assert TEST_API_KEY not in repr(vars(client) if hasattr(client, "__dict__") else client)


# -- create -----------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 201, 202])
def test_create_returns_the_task(status: int) -> None:
    async def check(sim: Simulator, client: Client) -> None:
        created = await client.create(BODY)
        assert isinstance(created, Created)
        assert created.task_timeout == 172800.0
        (task,) = sim.tasks()
        assert created.task_id == task["task_id"]
        assert created.req_id
        assert created.req_id != created.task_id
        assert task["params"] == PARAMS
        assert sim.counters()["create_calls"] == 1

    with_client(fast(create_status=status), check)


def test_create_reports_the_servers_task_timeout() -> None:
    async def check(sim: Simulator, client: Client) -> None:
        created = await client.create(BODY)
        assert created.task_timeout == 3600.0

    with_client(fast(task_timeout=3600.0), check)


@pytest.mark.parametrize("lane", ["create", "status"])
def test_bad_key_is_a_fatal_auth_error(lane: str) -> None:
    async def check(sim: Simulator, client: Client) -> None:
        call: Callable[[], Awaitable[object]] = (
            (lambda: client.create(BODY)) if lane == "create" else (lambda: status_of(client, "t"))
        )
        error = await expect(AuthError, call)
        assert error.status == 401
        assert error.fatal
        assert not error.retryable
        assert "invalid or missing api key" in str(error)

    with_client(fast(), check, key=ApiKey("apk." + "0" * 64))


@pytest.mark.parametrize("lane", ["create", "status"])
def test_forbidden_is_a_fatal_auth_error(lane: str) -> None:
    async def check(sim: Simulator, client: Client) -> None:
        call: Callable[[], Awaitable[object]] = (
            (lambda: client.create(BODY)) if lane == "create" else (lambda: status_of(client, "t"))
        )
        error = await expect(AuthError, call)
        assert error.status == 403
        assert error.fatal

    with_client(fast(forbidden=True), check)


@pytest.mark.parametrize(
    ("mode", "low", "high"),
    [("int", 29.0, 30.0), ("float", 29.0, 30.0), ("date", 28.0, 31.0), ("off", None, None)],
)
def test_429_on_create_is_rate_limited_with_retry_after(
    mode: str, low: float | None, high: float | None
) -> None:
    async def check(sim: Simulator, client: Client) -> None:
        await client.create(BODY)
        error = await expect(RateLimited, lambda: client.create(BODY))
        assert error.status == 429
        assert error.retryable
        assert not error.fatal
        if low is None or high is None:
            assert error.retry_after is None
        else:
            assert error.retry_after is not None
            assert low <= error.retry_after <= high
            if mode == "int":
                assert error.retry_after == int(error.retry_after)
        assert sim.counters()["create_429"] == 1

    with_client(fast(create_limit=1, create_window=30.0, retry_after=mode), check)


def test_429_on_status_is_rate_limited() -> None:
    async def check(sim: Simulator, client: Client) -> None:
        created = await client.create(BODY)
        assert isinstance(await status_of(client, created.task_id), Pending)
        error = await expect(RateLimited, lambda: status_of(client, created.task_id))
        assert error.retry_after is not None
        assert 0.0 < error.retry_after <= 30.0

    config = fast(status_limit=1, status_window=30.0, retry_after="float", processing_median=60.0)
    with_client(config, check)


def test_bad_params_are_a_bad_request_with_the_servers_message() -> None:
    bad = "S2/99/X/XX/2023/1/1/0"

    async def check(sim: Simulator, client: Client) -> None:
        body = {"type": "jpeg", "params": {**PARAMS, "view_id": bad}}
        error = await expect(BadRequest, lambda: client.create(body))
        assert error.status == 400
        assert f"view_id {bad!r} not found" in str(error)
        assert not error.retryable
        assert not error.fatal
        # The other jobs still work.
        assert isinstance(await client.create(BODY), Created)

    with_client(fast(bad_view_ids=frozenset({bad})), check)


def test_missing_params_are_a_bad_request() -> None:
    async def check(sim: Simulator, client: Client) -> None:
        body = {"type": "jpeg", "params": {"view_id": "S2/1"}}
        error = await expect(BadRequest, lambda: client.create(body))
        assert "missing required param" in str(error)

    with_client(fast(), check)


def test_wrong_api_url_is_a_fatal_endpoint_error() -> None:
    async def check(sim: Simulator, client: Client) -> None:
        error = await expect(EndpointError, lambda: client.create(BODY))
        assert error.status in (404, 405)
        assert error.fatal

    with_client(fast(), check, api_url=lambda sim: sim.url + "/not/the/api")


@pytest.mark.parametrize("fault", ["create_5xx_rate", "reset_rate"])
def test_create_server_trouble_is_transient(fault: str) -> None:
    async def check(sim: Simulator, client: Client) -> None:
        for _ in range(4):
            error = await expect(TransientError, lambda: client.create(BODY))
            assert error.retryable
        assert sim.tasks() == []

    with_client(fast(**{fault: 1.0}), check)


def test_create_during_an_outage_is_transient() -> None:
    async def check(sim: Simulator, client: Client) -> None:
        sim.configure(outage_for=30.0)
        error = await expect(TransientError, lambda: client.create(BODY))
        assert "503" in str(error)
        sim.configure(outage_for=0.0)
        assert isinstance(await client.create(BODY), Created)

    with_client(fast(), check)


def test_create_with_nothing_listening_is_transient() -> None:
    async def main() -> None:
        async with Simulator(fast()) as sim:
            url = sim.api_url
        async with Client(url, KEY, timeout=2.0) as client:
            await expect(TransientError, lambda: client.create(BODY))

    anyio.run(main)


# -- status -----------------------------------------------------------------------------------


def test_status_of_a_pending_task() -> None:
    async def check(sim: Simulator, client: Client) -> None:
        created = await client.create(BODY)
        words = [await status_of(client, created.task_id) for _ in range(4)]
        assert words == [
            Pending("queued"),
            Pending("processing"),
            Pending("queued"),
            Pending("processing"),
        ]

    config = fast(processing_median=60.0, pending_words=("queued", "processing"))
    with_client(config, check)


@pytest.mark.parametrize(
    "extra",
    [{}, {"format": "png"}, {"format": "tiff"}, {"georeference": "world"}, {"georeference": "kmz"}],
    ids=["jpeg", "png", "tiff", "world-zip", "kmz"],
)
@pytest.mark.parametrize("form", ["bytes", "redirect", "json-url"])
def test_status_of_a_done_task_is_its_exact_result(form: str, extra: dict[str, Any]) -> None:
    params = {**PARAMS, **extra}

    async def check(sim: Simulator, client: Client) -> None:
        created = await created_and_ready(client, {"type": "jpeg", "params": params})
        async with client.status(created.task_id) as answer:
            assert isinstance(answer, Ready)
            expected = render_result(params)
            assert answer.content_length == len(expected)
            assert answer.content_type.startswith(result_content_type(params))
            assert await read_all(answer) == expected
        assert sim.counters()["results_served"] == 1

    with_client(fast(result_form=form), check)


def test_big_result_streams_in_chunks() -> None:
    async def check(sim: Simulator, client: Client) -> None:
        params = {**PARAMS, "format": "tiff"}
        created = await created_and_ready(client, {"type": "jpeg", "params": params})
        async with client.status(created.task_id) as answer:
            assert isinstance(answer, Ready)
            sizes = [len(c) async for c in answer.chunks(size=64 * 1024)]
        assert sum(sizes) == answer.content_length
        assert sum(sizes) >= 2_000_000
        assert len(sizes) > 10

    with_client(fast(big_result_bytes=2_000_000), check)


def test_failed_task_keeps_the_servers_message() -> None:
    async def check(sim: Simulator, client: Client) -> None:
        created = await created_and_ready(client)
        answer = await status_of(client, created.task_id)
        assert isinstance(answer, Failed)
        assert "simulated task error" in answer.message
        assert PARAMS["view_id"] in answer.message

    with_client(fast(task_error_rate=1.0), check)


def test_unknown_task_is_gone() -> None:
    async def check(sim: Simulator, client: Client) -> None:
        error = await expect(TaskGone, lambda: status_of(client, "no-such-task"))
        assert error.status == 404
        assert error.retryable

    with_client(fast(), check)


def test_expired_task_is_gone() -> None:
    async def check(sim: Simulator, client: Client) -> None:
        created = await client.create(BODY)
        await anyio.sleep(0.25)
        await expect(TaskGone, lambda: status_of(client, created.task_id))
        assert sim.counters()["polls_expired"] == 1

    with_client(fast(task_timeout=0.2), check)


def test_status_5xx_is_transient() -> None:
    async def check(sim: Simulator, client: Client) -> None:
        messages = set()
        for _ in range(8):
            error = await expect(TransientError, lambda: status_of(client, "t"))
            assert error.retryable
            messages.add(str(error))
        assert any("HTTP 500" in m for m in messages)
        assert any("HTTP 502" in m or "HTTP 503" in m for m in messages)

    with_client(fast(status_5xx_rate=1.0), check)


def test_status_reset_is_transient() -> None:
    async def check(sim: Simulator, client: Client) -> None:
        for _ in range(3):
            await expect(TransientError, lambda: status_of(client, "t"))
        assert sim.counters()["resets"] >= 3  # aiohttp may resend a GET once on a reset

    with_client(fast(reset_rate=1.0), check)


@pytest.mark.parametrize("form", ["bytes", "redirect"])
def test_truncated_result_raises_while_reading(form: str) -> None:
    async def check(sim: Simulator, client: Client) -> None:
        created = await created_and_ready(client)
        async with client.status(created.task_id) as answer:
            assert isinstance(answer, Ready)
            error = await expect(TransientError, lambda: read_all(answer))
            assert "downloading the result" in str(error)
        assert sim.counters()["truncated"] == 1

    with_client(fast(truncate_rate=1.0, result_form=form), check)


def test_empty_result_is_transient() -> None:
    async def check(sim: Simulator, client: Client) -> None:
        created = await created_and_ready(client)
        error = await expect(TransientError, lambda: status_of(client, created.task_id))
        assert "empty" in str(error)

    with_client(fast(empty_200_rate=1.0), check)


def test_json_done_without_result_is_transient() -> None:
    async def check(sim: Simulator, client: Client) -> None:
        created = await created_and_ready(client)
        error = await expect(TransientError, lambda: status_of(client, created.task_id))
        assert "carries no result" in str(error)

    with_client(fast(json_instead_rate=1.0), check)


def test_slow_body_times_out_as_transient() -> None:
    async def check(sim: Simulator, client: Client) -> None:
        created = await created_and_ready(client)
        with anyio.fail_after(5):
            async with client.status(created.task_id) as answer:
                assert isinstance(answer, Ready)
                await expect(TransientError, lambda: read_all(answer))

    with_client(fast(slow_body_seconds=1.0, chunk_size=200), check, timeout=0.2)


def test_the_key_goes_in_a_header_never_in_the_url() -> None:
    seen: list[tuple[str, str | None]] = []

    async def status(request: web.Request) -> web.Response:
        seen.append((str(request.rel_url), request.headers.get("x-api-key")))
        return web.json_response({"status": "created"})

    async def create(request: web.Request) -> web.Response:
        seen.append((str(request.rel_url), request.headers.get("x-api-key")))
        return web.json_response({"status": "created", "task_id": "t1", "req_id": "r1"})

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/api/gdw/api", create)
        app.router.add_get("/api/gdw/api/{task_id}", status)
        async with serve(app) as url, Client(url + "/api/gdw/api", KEY) as client:
            assert await client.create(BODY) == Created("t1", "r1", 172800.0)
            assert await status_of(client, "t1") == Pending("created")

    anyio.run(main)
    assert seen == [("/api/gdw/api", TEST_API_KEY), ("/api/gdw/api/t1", TEST_API_KEY)]


# -- redirects to other origins ---------------------------------------------------------------


@contextlib.asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    """Serve ``app`` on a free loopback port for the block; yields its root URL."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    try:
        await site.start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("form", ["redirect", "json-url"])
def test_result_on_another_origin_is_fetched_without_the_key(form: str) -> None:
    image = render_result(PARAMS)
    api_seen: list[str | None] = []
    storage_seen: list[dict[str, str]] = []

    async def result(request: web.Request) -> web.Response:
        storage_seen.append(dict(request.headers) | {"query": request.query_string})
        return web.Response(body=image, content_type="image/jpeg")

    async def main() -> None:
        storage = web.Application()
        storage.router.add_get("/bucket/r.jpg", result)
        async with serve(storage) as storage_url:
            target = storage_url + "/bucket/r.jpg?X-Amz-Signature=abc"

            async def hop(request: web.Request) -> web.Response:
                api_seen.append(request.headers.get("x-api-key"))
                return web.Response(status=302, headers={"Location": "/api/gdw/api/t1/final"})

            async def final(request: web.Request) -> web.Response:
                api_seen.append(request.headers.get("x-api-key"))
                if form == "redirect":
                    return web.Response(status=307, headers={"Location": target})
                return web.json_response({"status": "done", "url": target})

            api = web.Application()
            api.router.add_get("/api/gdw/api/t1", hop)
            api.router.add_get("/api/gdw/api/t1/final", final)
            async with serve(api) as api_url, Client(api_url + "/api/gdw/api", KEY) as client:
                assert await status_of(client, "t1") == image

    anyio.run(main)
    # Same-origin hops carry the key; the storage host never sees it.
    assert api_seen == [TEST_API_KEY, TEST_API_KEY]
    assert len(storage_seen) == 1
    assert {k.lower() for k in storage_seen[0]}.isdisjoint({"x-api-key", "authorization"})
    assert not any(TEST_API_KEY in v for v in storage_seen[0].values())


def test_endless_redirects_are_transient() -> None:
    async def loop(request: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": str(request.rel_url)})

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/api/gdw/api/{task_id}", loop)
        async with serve(app) as url, Client(url + "/api/gdw/api", KEY) as client:
            error = await expect(TransientError, lambda: status_of(client, "t1"))
            assert "redirects" in str(error)

    anyio.run(main)


def test_redirect_to_a_non_http_location_is_transient() -> None:
    async def away(request: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": "file:///etc/passwd"})

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/api/gdw/api/{task_id}", away)
        async with serve(app) as url, Client(url + "/api/gdw/api", KEY) as client:
            await expect(TransientError, lambda: status_of(client, "t1"))

    anyio.run(main)


def test_rate_limit_words_on_another_code_are_rate_limited() -> None:
    async def limited(request: web.Request) -> web.Response:
        return web.json_response({"error": "Rate limit exceeded"}, status=400)

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/api/gdw/api/{task_id}", limited)
        async with serve(app) as url, Client(url + "/api/gdw/api", KEY) as client:
            error = await expect(RateLimited, lambda: status_of(client, "t1"))
            assert error.retry_after is None

    anyio.run(main)


@pytest.mark.parametrize("status", [401, 400, 500])
def test_a_server_echoing_the_key_does_not_leak_it(status: int) -> None:
    async def echo(request: web.Request) -> web.Response:
        key = request.headers.get("x-api-key", "")
        return web.json_response({"error": f"api key {key} is not valid"}, status=status)

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/api/gdw/api", echo)
        async with serve(app) as url, Client(url + "/api/gdw/api", KEY) as client:
            await expect(ApiError, lambda: client.create(BODY))

    anyio.run(main)


# -- proxies and .netrc from the environment, looked up once per origin -----------------------


def test_route_takes_the_proxy_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://user:pw@proxy.example:3128")
    client = Client("https://eos.example/api/gdw/api", KEY)
    route = client.route(URL("https://eos.example/api/gdw/api/task-1"))
    assert route["proxy"] == URL("http://proxy.example:3128")
    assert route["proxy_headers"] == {"Proxy-Authorization": "Basic dXNlcjpwdw=="}
    # NO_PROXY (127.0.0.1 in the tests' environment) is honoured.
    assert "proxy" not in client.route(URL("https://127.0.0.1:8443/x"))


def test_route_takes_credentials_from_netrc_once_per_origin(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine files.example login me password secret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    client = Client("https://eos.example/api", KEY)
    first = client.route(URL("https://files.example/a.jpg"))
    assert first["auth"].login == "me"
    assert "auth" not in client.route(URL("https://eos.example/api/t"))
    netrc.unlink()  # kept from the first look-up: read once per origin, not per request
    assert client.route(URL("https://files.example/b.jpg")) is first
    # A URL with credentials of its own gets none from .netrc, as with aiohttp.
    assert "auth" not in client.route(URL("https://u:p@other.example/c.jpg"))
