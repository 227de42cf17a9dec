"""Tests for bulkfetch.session: the key stays on the API's origin, redirects included,
over real sockets (two loopback servers are two origins)."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from aiohttp import web

from bulkfetch.client import Client
from bulkfetch.config import ApiKey
from bulkfetch.errors import TransientError
from bulkfetch.scene_search.client import SearchClient
from bulkfetch.session import ApiSession
from bulkfetch.simulator import TEST_API_KEY
from tests.test_client import BODY, expect, serve

KEY = ApiKey(TEST_API_KEY)
CREATED = {"status": "created", "task_id": "t-1", "req_id": "r-1", "task_timeout": 60}


def recorder(seen: list[dict[str, Any]], answer: web.Response | None = None) -> Any:
    """A handler that records each request's method, path, key and body."""

    async def handle(request: web.Request) -> web.Response:
        seen.append(
            {
                "method": request.method,
                "path": request.path,
                "key": request.headers.get("x-api-key"),
                "body": await request.read(),
            }
        )
        return answer if answer is not None else web.json_response(CREATED, status=202)

    return handle


@pytest.mark.parametrize("code", [307, 308])
def test_a_creation_redirected_within_the_origin_is_sent_again_there(code: int) -> None:
    seen: list[dict[str, Any]] = []

    async def main() -> None:
        app = web.Application()
        moved = web.Response(status=code, headers={"Location": "/api/gdw/api/"})
        app.router.add_post("/api/gdw/api", recorder([], moved))
        app.router.add_post("/api/gdw/api/", recorder(seen))
        async with serve(app) as url, Client(url + "/api/gdw/api", KEY) as client:
            created = await client.create(BODY)
        assert created.task_id == "t-1"
        assert [s["path"] for s in seen] == ["/api/gdw/api/"]
        assert seen[0]["method"] == "POST" and seen[0]["key"] == TEST_API_KEY
        assert b'"view_id"' in seen[0]["body"]

    anyio.run(main)


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_a_post_redirected_to_another_origin_is_not_followed(code: int) -> None:
    """aiohttp would follow it with the x-api-key header: the key must not leave."""
    elsewhere: list[dict[str, Any]] = []

    async def main() -> None:
        other = web.Application()
        other.router.add_route("*", "/{tail:.*}", recorder(elsewhere))
        async with serve(other) as other_url:
            location = {"Location": other_url + "/steal"}
            app = web.Application()
            for path in ("/api/gdw/api", "/search/s2"):
                moved = web.Response(status=code, headers=location)
                app.router.add_post(path, recorder([], moved))
            async with serve(app) as url:
                async with Client(url + "/api/gdw/api", KEY) as client:
                    error = await expect(TransientError, lambda: client.create(BODY))
                assert str(error) == f"unexpected answer (HTTP {code})"
                async with SearchClient(url + "/search", KEY) as search:
                    await expect(TransientError, lambda: search.page("s2", {"page": 1}))
        assert elsewhere == []

    anyio.run(main)


def test_a_get_follows_redirects_within_the_origin_only_and_within_bounds() -> None:
    seen: list[dict[str, Any]] = []

    async def hop(request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        return web.Response(status=302, headers={"Location": f"/hop/{n + 1}"})

    async def main() -> None:
        app = web.Application()
        app.router.add_get(
            "/start", recorder([], web.Response(status=303, headers={"Location": "/end"}))
        )
        app.router.add_get("/end", recorder(seen, web.json_response({"ok": True})))
        app.router.add_get("/hop/{n}", hop)
        async with serve(app) as url, ApiSession(url, KEY) as session:
            answer = await session.call("GET", session.api_url / "start", doing="testing")
            assert answer.status == 200 and answer.body == b'{"ok": true}'
            assert seen[0]["key"] == TEST_API_KEY
            error = await expect(
                TransientError,
                lambda: session.call("GET", session.api_url / "hop" / "0", doing="hopping"),
            )
            assert str(error) == "more than 5 redirects while hopping"

    anyio.run(main)


def test_an_echoed_key_is_scrubbed_from_what_is_read() -> None:
    async def echo(request: web.Request) -> web.Response:
        return web.Response(status=400, text=f"bad key {request.headers['x-api-key']}")

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/x", echo)
        async with serve(app) as url, ApiSession(url, KEY) as session:
            answer = await session.call("GET", session.api_url / "x", doing="testing")
        assert answer.body == b"bad key ***"
        assert str(answer.error()) == "unexpected answer (HTTP 400): bad key ***"

    anyio.run(main)
