"""answers: what an answer from the task API's URL is, from its parts (pure, no sockets),
plus connection failures as aiohttp really raises them (real sockets, no server mocks)."""

from __future__ import annotations

import socket
import threading
from typing import Any

import aiohttp
import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bulkfetch.answers import (
    body_text,
    connection_trouble,
    find_result_url,
    is_html,
    not_the_api,
)

URL = "https://bucket.s3.amazonaws.com/r.jpg?X-Amz-Signature=abc"


@pytest.mark.parametrize(
    "data",
    [
        {"url": URL},
        {"image_url": URL},
        {"imageUrl": URL},
        {"file_url": URL},
        {"download_url": URL},
        {"downloadUrl": URL},
        {"Download-URL": URL},
        {"result_url": URL},
        {"resultUrl": URL},
        {"presigned_url": URL},
        {"result": URL},
        {"link": URL},
        {"href": URL},
        {"location": URL},
        {"status": "done", "result": {"url": URL}},
        {"status": "done", "result": {"downloadUrl": URL}},
        {"data": {"download_url": URL}},
        {"output": {"link": URL}},
        {"files": [{"href": URL}]},
        {"urls": [URL]},
        {"result": [URL]},
        {"links": {"download": URL}},
    ],
)
def test_the_url_is_found_under_any_plausible_name(data: dict[str, Any]) -> None:
    assert find_result_url(data) == URL


def test_a_specific_name_wins_over_a_generic_one() -> None:
    data = {"link": "https://api.example/task/1", "download_url": URL}
    assert find_result_url(data) == URL


def test_a_direct_url_wins_over_a_nested_one() -> None:
    assert find_result_url({"result": {"url": "https://x/nested"}, "url": URL}) == URL


def test_a_path_on_the_apis_host_is_a_url_to_fetch() -> None:
    assert find_result_url({"url": "/results/abc.jpg"}) == "/results/abc.jpg"


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"status": "done"},
        {"url": ""},
        {"url": "ftp://x/r.jpg"},
        {"url": "javascript:alert(1)"},
        {"url": "//other.host/r.jpg"},
        {"url": 5},
        {"thumbnail": URL},
        {"thumbnail_url": URL},
        {"preview": URL},
        {"self": URL},
        {"files": [{"url": URL}, {"url": URL}]},  # several files: not one result
        {"result": {"result": {"url": URL}}},  # two levels down: not looked for
        {"meta": {"url": URL}},  # not a member a result sits in
    ],
)
def test_no_url_where_there_is_none_or_it_is_not_the_result(data: dict[str, Any]) -> None:
    assert find_result_url(data) is None


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text() | st.sampled_from([URL, "/r", "//x"]),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(["url", "result", "files", "x", "Link"]), children)
    ),
    max_leaves=12,
)


@given(JSON)
def test_find_result_url_never_raises_and_returns_a_fetchable_string(data: Any) -> None:
    if not isinstance(data, dict):
        data = {"result": data}
    url = find_result_url(data)
    assert url is None or url.lower().startswith(("http://", "https://", "/"))


@pytest.mark.parametrize(
    ("ctype", "head", "html"),
    [
        ("text/html; charset=utf-8", b"<!DOCTYPE html><html>", True),
        ("", b"  <!doctype html>\n<html>", True),
        ("", b"<html><head><title>x</title>", True),
        ("text/plain", b"<HTML>", True),
        ("text/html", b"", True),
        ("application/json", b'{"status": "created"}', False),
        ("text/plain", b"403: Forbidden", False),
        ("text/html", b"\xff\xd8\xff\xe0\x00\x10JFIF", False),  # a result mislabelled
        ("image/png", b"\x89PNG\r\n\x1a\n", False),
    ],
)
def test_is_html(ctype: str, head: bytes, html: bool) -> None:
    assert is_html(ctype, head) is html


def test_body_text_names_an_html_page_by_its_title() -> None:
    page = b"<!DOCTYPE html><html><head><title>\n  Welcome to  nginx!</title></head><body>"
    assert body_text(page, "text/html") == "an HTML page ('Welcome to nginx!')"
    assert body_text(b"<html><body>hi</body></html>") == "an HTML page"
    assert body_text(b"403: Forbidden\n", "text/plain") == "403: Forbidden"
    assert len(body_text(b"x" * 10_000)) == 200


@pytest.mark.parametrize(
    ("status", "at_once"), [(200, True), (404, True), (501, True), (502, False), (503, False)]
)
def test_an_html_page_is_not_the_api(status: int, at_once: bool) -> None:
    verdict = not_the_api(status, "text/html", b"<html><title>Hi</title>")
    assert verdict == (f"an HTML page ('Hi') (HTTP {status})", at_once)


@pytest.mark.parametrize(
    ("ctype", "head"),
    [("application/json", b'{"error": "x"}'), ("text/plain", b"503 proxy error"), ("", b"")],
)
def test_other_answers_are_left_to_the_client(ctype: str, head: bytes) -> None:
    assert not_the_api(503, ctype, head) is None


# -- connection failures, as aiohttp raises them on real sockets ------------------------------


def _failure(url: str) -> BaseException:
    async def main() -> BaseException:
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            try:
                async with session.get(url):
                    pass
            except (aiohttp.ClientError, TimeoutError) as exc:
                return exc
        raise AssertionError("the request should have failed")

    return anyio.run(main)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_connection_refused() -> None:
    exc = _failure(f"http://127.0.0.1:{_closed_port()}/api")
    assert connection_trouble(exc) == "connection refused"


def test_dns_failure_names_the_host() -> None:
    exc = _failure("http://no-such-host.invalid/api")
    assert connection_trouble(exc) == "DNS lookup failed for host 'no-such-host.invalid'"


def test_tls_failure() -> None:
    # TLS spoken to a plain-HTTP listener: the handshake fails.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]

        def answer_in_plain_http() -> None:
            conn, _ = server.accept()
            with conn:
                conn.recv(4096)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

        thread = threading.Thread(target=answer_in_plain_http, daemon=True)
        thread.start()
        exc = _failure(f"https://127.0.0.1:{port}/api")
        thread.join(5)
    assert connection_trouble(exc).startswith("TLS failure: ")
