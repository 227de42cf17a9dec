"""contact (first contact with an API) and urls (where a run talks to and writes to): pure."""

from __future__ import annotations

from pathlib import Path

import pytest

from bulkfetch.contact import FirstContact
from bulkfetch.errors import (
    AuthError,
    BadRequest,
    EndpointError,
    NotTheApi,
    TransientError,
    UsageError,
)
from bulkfetch.sink.destination import store_url
from bulkfetch.urls import check_service_url, display_url

REFUSED = TransientError("creating a task: connection refused")
HTML = NotTheApi("x", what="an HTML page (HTTP 200)", at_once=True)
PROXY_PAGE = NotTheApi("x", what="an HTML page (HTTP 502)", at_once=False)


def contact() -> FirstContact:
    return FirstContact("https://wrong.example/api", grace=30.0)


def test_an_answer_no_task_api_gives_stops_at_once() -> None:
    stop = contact().failed(HTML, now=0.0)
    assert isinstance(stop, EndpointError)
    assert stop.fatal
    assert str(stop) == (
        "https://wrong.example/api does not answer as the EOS task API "
        "(an HTML page (HTTP 200)): check --api-url"
    )


@pytest.mark.parametrize("exc", [REFUSED, PROXY_PAGE])
def test_other_failures_stop_when_the_grace_runs_out(exc: TransientError) -> None:
    c = contact()
    assert c.failed(exc, now=100.0) is None
    assert c.due() == 130.0
    assert c.failed(exc, now=129.9) is None
    assert c.expired(now=129.9) is None
    stop = c.expired(now=130.0)
    assert stop is not None
    assert "(" + (exc.what if isinstance(exc, NotTheApi) else str(exc)) + ", for 30 s)" in str(stop)
    assert c.failed(exc, now=131.0) is not None


def test_the_grace_counts_from_the_first_request_when_known() -> None:
    c = contact()
    c.begin(now=100.0)
    c.begin(now=110.0)  # the first request counts
    assert c.due() is None  # no failure yet: a slow first answer is not a wrong URL
    assert c.expired(now=1000.0) is None
    # A connect timeout into a firewall fails only after the grace: stop at that failure.
    stop = c.failed(TransientError("creating a task: no answer in time"), now=160.0)
    assert stop is not None
    assert "(creating a task: no answer in time, for 30 s)" in str(stop)


def test_a_failure_within_the_grace_from_the_first_request() -> None:
    c = contact()
    c.begin(now=100.0)
    assert c.failed(REFUSED, now=120.0) is None
    assert c.due() == 130.0


def test_once_the_api_has_answered_nothing_is_about_the_url() -> None:
    c = contact()
    assert c.failed(REFUSED, now=0.0) is None
    c.answered()
    assert c.due() is None
    assert c.expired(now=1e9) is None
    assert c.failed(HTML, now=1e9) is None


@pytest.mark.parametrize("exc", [BadRequest("bad params"), AuthError("key refused", status=401)])
def test_a_jobs_fault_or_a_refused_key_is_not_judged_here(exc: Exception) -> None:
    c = contact()
    assert c.failed(exc, now=0.0) is None  # type: ignore[arg-type]
    assert c.due() is None


def test_the_search_names_its_own_flag_and_service() -> None:
    c = FirstContact("http://h/s", 1.0, flag="--search-url", service="the EOS Search API")
    stop = c.failed(HTML, now=0.0)
    assert str(stop).endswith(
        "does not answer as the EOS Search API (an HTML page (HTTP 200)): check --search-url"
    )


# -- urls --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://api-connect.eos.com/api/gdw/api",
        "http://127.0.0.1:8808/api/gdw/api",
        "https://gate.eos.com/api/gdw/api/",
        "http://[::1]:80/x",
    ],
)
def test_good_service_urls(url: str) -> None:
    assert check_service_url(url, "--api-url") == url


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("not-a-url", "no scheme"),
        ("ftp://example.com/api", "scheme is 'ftp'"),
        ("file:///etc/passwd", "scheme is 'file'"),
        ("http://", "no host"),
        ("https:///api", "no host"),
        ("http://host:99999/api", "not a valid URL"),
        ("http://exa mple.com/", "not a URL"),
        ("", "not a URL"),
    ],
)
def test_bad_service_urls_are_usage_errors_naming_the_flag(url: str, says: str) -> None:
    with pytest.raises(UsageError) as info:
        check_service_url(url, "--search-url")
    assert str(info.value).startswith("--search-url ")
    assert says in str(info.value)


def test_a_key_in_a_bad_url_is_not_repeated() -> None:
    with pytest.raises(UsageError) as info:
        check_service_url("ftp://h/api?api_key=apk.secret", "--api-url")
    assert "secret" not in str(info.value)
    assert display_url("https://u:p@h/api?api_key=apk.secret#f") == "https://h/api"


@pytest.mark.parametrize(
    ("out", "scheme"),
    [
        ("s3://bucket/prefix", "s3"),
        (Path("s3://bucket/prefix"), "s3"),  # what click's Path type makes of it
        ("gs://bucket/p", "gs"),
        ("az://container/p", "az"),
    ],
)
def test_an_out_that_is_a_bucket_url_is_a_bucket(out: str | Path, scheme: str) -> None:
    url = store_url(out)
    assert url is not None and url.scheme == scheme


@pytest.mark.parametrize(
    ("out", "scheme"),
    [
        ("abfss://c@acct.dfs.core.windows.net/p", "abfss"),
        ("https://example.com/upload", "https"),
        ("ftp://host/p", "ftp"),
    ],
)
def test_an_out_that_is_another_url_is_refused(out: str, scheme: str) -> None:
    with pytest.raises(UsageError) as info:
        store_url(out)
    assert f"{scheme}:// is not a destination bulkfetch writes to" in str(info.value)


@pytest.mark.parametrize("out", ["out", "./s3", "/data/images", "C:/images", "a:b/c", "x/s3://y"])
def test_local_folders_are_accepted(out: str) -> None:
    assert store_url(out) is None
