"""Tests for bulkfetch.scene_search.client's reading of answers to a search, over real
sockets to a small server (the search lane's retries are tested with the finder)."""

from __future__ import annotations

import anyio
import pytest
from aiohttp import web

from bulkfetch.config import ApiKey
from bulkfetch.errors import ApiError, BadRequest, EndpointError, NotTheApi, RateLimited
from bulkfetch.scene_search.client import SearchClient
from bulkfetch.simulator import TEST_API_KEY
from tests.test_client import expect, serve


def answer_with(status: int, body: bytes, headers: dict[str, str]) -> ApiError:
    """What ``SearchClient.page`` raises when the search URL answers so."""

    async def handle(request: web.Request) -> web.Response:
        assert request.headers["x-api-key"] == TEST_API_KEY
        return web.Response(status=status, body=body, headers=headers)

    async def main() -> ApiError:
        app = web.Application()
        app.router.add_post("/search/{dataset}", handle)
        async with serve(app) as url, SearchClient(url + "/search", ApiKey(TEST_API_KEY)) as c:
            return await expect(ApiError, lambda: c.page("sentinel2", {"page": 1}))

    return anyio.run(main)


@pytest.mark.parametrize("status", [404, 405, 410])
def test_a_dataset_the_url_does_not_serve_names_the_dataset_and_the_flag(status: int) -> None:
    error = answer_with(status, b'{"message": "unknown dataset"}', {})
    assert isinstance(error, EndpointError) and error.fatal
    assert str(error) == (
        f"the search URL answered HTTP {status} for dataset 'sentinel2': check the dataset "
        "name and --search-url (unknown dataset)"
    )


def test_a_refused_query_quotes_the_server() -> None:
    error = answer_with(422, b'{"error": "date_from after date_to"}', {})
    assert isinstance(error, BadRequest) and not error.retryable
    assert str(error) == "EOS refused the search (HTTP 422): date_from after date_to"


def test_a_gateway_saying_rate_limit_pauses_the_lane_rather_than_failing() -> None:
    error = answer_with(400, b"Rate limit exceeded", {"Retry-After": "2"})
    assert isinstance(error, RateLimited)
    assert error.retry_after == 2.0


def test_an_html_page_is_not_the_search_api() -> None:
    page = b"<html><head><title>Sign in</title></head></html>"
    error = answer_with(200, page, {"Content-Type": "text/html"})
    assert isinstance(error, NotTheApi) and error.at_once
    assert str(error) == "the search answer is an HTML page ('Sign in') (HTTP 200)"
