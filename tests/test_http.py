"""Tests for bulkfetch._http: what an answer other than success means, without sockets."""

from __future__ import annotations

import email.utils
import time

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bulkfetch._http import (
    AUTH_CODES,
    CREATING,
    POLLING,
    Asking,
    auth_error,
    error_for,
    error_message,
    header,
    server_text,
)
from bulkfetch.errors import (
    ApiError,
    AuthError,
    BadRequest,
    EndpointError,
    NotTheApi,
    RateLimited,
    TaskGone,
    TransientError,
)

SEARCHING = Asking(
    refused="the search",
    url="the search URL",
    endpoint="for dataset 'sentinel2': check the dataset name and --search-url",
    answer="the search answer",
)
JSON = {"Content-Type": "application/json"}
HTML = b"<!doctype html><html><head><title>Welcome to nginx</title></head></html>"


def json_error(message: str) -> bytes:
    return orjson.dumps({"task_type": "error", "error_message": {"error": message}})


# -- 429 and Retry-After -------------------------------------------------------------------


@pytest.mark.parametrize("asking", [POLLING, CREATING, SEARCHING])
def test_429_is_rate_limited_with_the_servers_wait(asking: Asking) -> None:
    error = error_for(429, {"Retry-After": "7"}, b"", asking)
    assert isinstance(error, RateLimited)
    assert error.retry_after == 7.0
    assert error.retry_after_resolution == 1.0  # whole seconds: perhaps rounded up
    assert error.retryable and not error.fatal
    assert error.status == 429


def test_retry_after_is_read_whatever_the_headers_case() -> None:
    error = error_for(429, {"retry-after": "0.35"}, b"")
    assert isinstance(error, RateLimited)
    assert error.retry_after == 0.35
    assert error.retry_after_resolution == 0.0  # said exactly


def test_retry_after_as_an_http_date() -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    error = error_for(429, {"Retry-After": when}, b"")
    assert isinstance(error, RateLimited)
    assert error.retry_after is not None
    assert 25 <= error.retry_after <= 31
    assert error.retry_after_resolution == 1.0  # a date has whole seconds


@pytest.mark.parametrize("value", [None, "soon", "NaN", "inf"])
def test_a_429_without_a_usable_retry_after_leaves_the_pause_to_the_limiter(
    value: str | None,
) -> None:
    headers = {} if value is None else {"Retry-After": value}
    error = error_for(429, headers, b"")
    assert isinstance(error, RateLimited)
    assert error.retry_after is None


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (400, b"Rate limit exceeded"),
        (503, json_error("Too Many Requests")),
        (418, b'{"message": "rate-limit reached, slow down"}'),
    ],
)
def test_a_gateway_saying_rate_limit_under_another_code_is_rate_limited(
    status: int, body: bytes
) -> None:
    for asking in (POLLING, CREATING, SEARCHING):
        error = error_for(status, {"Retry-After": "3"}, body, asking)
        assert isinstance(error, RateLimited), asking
        assert error.retry_after == 3.0
        assert error.status == status


def test_a_limit_that_is_not_a_rate_is_the_jobs_parameters() -> None:
    error = error_for(400, JSON, json_error("area limit exceeded"), CREATING)
    assert isinstance(error, BadRequest)
    assert str(error) == "EOS refused the job's parameters (HTTP 400): area limit exceeded"


# -- the key refused -----------------------------------------------------------------------


@pytest.mark.parametrize("status", sorted(AUTH_CODES))
@pytest.mark.parametrize("asking", [POLLING, CREATING, SEARCHING])
def test_401_402_403_stop_the_run(status: int, asking: Asking) -> None:
    # Even when the body says "rate limit": a refused key is never waited out.
    error = error_for(status, {}, b"rate limit: key not allowed", asking)
    assert isinstance(error, AuthError)
    assert error.fatal and not error.retryable
    assert error.status == status
    assert str(error).endswith("server said: rate limit: key not allowed")


def test_each_refusal_says_what_to_check() -> None:
    assert "EOS_API_KEY or --api-key-file" in str(auth_error(401, ""))
    assert "no credit left" in str(auth_error(402, ""))
    assert str(auth_error(402, "")).startswith("EOS refused the request (HTTP 402)")
    assert "plan includes this API" in str(auth_error(403, ""))
    assert "server said" not in str(auth_error(403, ""))


def test_an_html_refusal_is_still_the_key_refused() -> None:
    error = error_for(403, {"Content-Type": "text/html"}, HTML, CREATING)
    assert isinstance(error, AuthError)
    assert "Welcome to nginx" in str(error) and "<html" not in str(error)


# -- not the API ---------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "at_once"), [(200, True), (404, True), (501, True)])
def test_an_html_page_is_not_the_api(status: int, at_once: bool) -> None:
    error = error_for(status, {"Content-Type": "text/html"}, HTML, CREATING)
    assert isinstance(error, NotTheApi)
    assert error.at_once is at_once
    assert error.what == f"an HTML page ('Welcome to nginx') (HTTP {status})"
    assert str(error) == f"the answer is {error.what}"


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_a_proxys_5xx_page_may_be_an_outage(status: int) -> None:
    error = error_for(status, {}, HTML, SEARCHING)
    assert isinstance(error, NotTheApi)
    assert not error.at_once and error.retryable
    assert str(error).startswith("the search answer is an HTML page")


# -- gone, wrong endpoint, wrong parameters --------------------------------------------------


@pytest.mark.parametrize("status", [404, 410])
def test_a_task_answered_404_or_410_is_gone(status: int) -> None:
    error = error_for(status, JSON, b'{"error": "task not found"}', POLLING)
    assert isinstance(error, TaskGone)
    assert error.retryable and not error.fatal
    assert error.status == status


@pytest.mark.parametrize("status", [404, 405, 410])
def test_a_creation_answered_404_405_410_is_the_wrong_url(status: int) -> None:
    error = error_for(status, {}, b"Not Found", CREATING)
    assert isinstance(error, EndpointError)
    assert error.fatal
    assert str(error) == (
        f"the API URL answered HTTP {status} to a task creation: "
        "check --api-url / EOS_API_URL (Not Found)"
    )


def test_a_search_answered_404_names_the_dataset_and_the_flag() -> None:
    error = error_for(404, JSON, b'{"message": "no such dataset"}', SEARCHING)
    assert isinstance(error, EndpointError)
    assert str(error) == (
        "the search URL answered HTTP 404 for dataset 'sentinel2': check the dataset name "
        "and --search-url (no such dataset)"
    )


def test_405_on_a_task_is_only_unexpected() -> None:
    error = error_for(405, {}, b"", POLLING)
    assert type(error) is TransientError
    assert str(error) == "unexpected answer (HTTP 405)"


@pytest.mark.parametrize("status", [400, 409, 413, 422])
def test_another_4xx_to_a_creation_is_the_jobs_parameters(status: int) -> None:
    body = json_error("Scene S2/55/P/BS/2020/8/15/0 is not available for NDVI")
    error = error_for(status, JSON, body, CREATING)
    assert isinstance(error, BadRequest)
    assert not error.retryable and not error.fatal
    assert str(error) == (
        f"EOS refused the job's parameters (HTTP {status}): "
        "Scene S2/55/P/BS/2020/8/15/0 is not available for NDVI"
    )
    search = error_for(status, JSON, body, SEARCHING)
    assert isinstance(search, BadRequest)
    assert str(search).startswith(f"EOS refused the search (HTTP {status}): Scene")


@pytest.mark.parametrize("status", [400, 409, 422])
def test_another_4xx_to_a_status_call_is_transient(status: int) -> None:
    error = error_for(status, {}, b"odd", POLLING)
    assert type(error) is TransientError
    assert str(error) == f"unexpected answer (HTTP {status}): odd"


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408, 425])
@pytest.mark.parametrize("asking", [POLLING, CREATING, SEARCHING])
def test_5xx_408_425_are_transient(status: int, asking: Asking) -> None:
    error = error_for(status, {}, b"upstream  timed\nout", asking)
    assert type(error) is TransientError
    assert error.retryable
    assert str(error) == f"server error (HTTP {status}): upstream timed out"


@pytest.mark.parametrize("status", [201, 204, 301, 302, 304])
def test_an_unexpected_2xx_or_3xx_is_transient(status: int) -> None:
    for asking in (POLLING, CREATING, SEARCHING):
        error = error_for(status, {}, b"", asking)
        assert type(error) is TransientError
        assert str(error) == f"unexpected answer (HTTP {status})"


# -- every answer ----------------------------------------------------------------------------


@given(
    status=st.integers(100, 599),
    body=st.binary(max_size=300) | st.sampled_from([HTML, json_error("x"), b"rate limit"]),
    retry_after=st.none() | st.text(max_size=30),
    asking=st.sampled_from([POLLING, CREATING, SEARCHING]),
)
def test_every_answer_is_one_error_of_the_tree(
    status: int, body: bytes, retry_after: str | None, asking: Asking
) -> None:
    headers = {} if retry_after is None else {"Retry-After": retry_after}
    error = error_for(status, headers, body, asking)
    assert isinstance(error, ApiError)
    assert error.status == status
    # Retry decisions read attributes: only a refused key or a wrong endpoint stop the run,
    # and only they and a refused job's parameters are never tried again.
    assert error.fatal == isinstance(error, AuthError | EndpointError)
    assert error.retryable == (not isinstance(error, AuthError | EndpointError | BadRequest))
    if status in AUTH_CODES:
        assert isinstance(error, AuthError)
    if isinstance(error, EndpointError | BadRequest):
        assert asking is not POLLING
    if isinstance(error, TaskGone):
        assert asking is POLLING and status in (404, 410)
    if isinstance(error, RateLimited) and error.retry_after is not None:
        assert error.retry_after >= 0
    # What the server said is quoted, never whole.
    assert len(str(error)) < 1000


# -- what the server said --------------------------------------------------------------------


def test_header_lookup_ignores_case() -> None:
    assert header({"content-TYPE": "text/plain"}, "Content-Type") == "text/plain"
    assert header({"Content-Type": "a"}, "content-type") == "a"
    assert header({}, "Retry-After") is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"task_type": "error", "error_message": {"error": "no scene"}}, "no scene"),
        ({"error_message": "plain"}, "plain"),
        ({"error": {"message": "nested"}}, "nested"),
        ({"message": "top"}, "top"),
        ({"error": {"code": 7}}, '{"code":7}'),
        ({"status": "failed"}, "task failed (no message given)"),
        ({"error": "x" * 900}, "x" * 500),
    ],
)
def test_error_message(data: dict[str, object], message: str) -> None:
    assert error_message(data) == message


def test_server_text() -> None:
    assert server_text(b'{"message": "bad band"}') == "bad band"
    assert server_text(b'["a", "b"]') == "['a', 'b']"
    assert server_text(b"line one\n  line two") == "line one line two"
    assert server_text(HTML, "text/html") == "an HTML page ('Welcome to nginx')"
    assert len(server_text(b"y" * 5000)) == 200
    assert server_text(b"") == ""
