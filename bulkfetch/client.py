"""The EOS task API, as two calls: create a task, and ask for its status (or its file).

``create()`` POSTs a Download visual body and returns the task's id and lifetime.
``status()`` GETs the task and yields what the answer means:

* ``Pending``: any status word that is not a failure (``created``, ``processing``, or a
  word never seen before), answered 200 or 202 — the task is not ready;
* ``Ready``: the result, as a stream of bytes not yet read (the sink reads it), whether it
  came in the answer itself (under any Content-Type: the sink checks the bytes), behind a
  redirect, or behind a URL in a JSON answer (``answers.find_result_url``);
* or an exception from ``errors``: ``TaskFailed`` with the server's message, ``TaskGone``
  (404), ``RateLimited`` (429), ``AuthError`` (401/402/403), ``NotTheApi`` (an HTML page,
  a 2xx creation answer that is not the task API's JSON), ``TransientError`` (5xx,
  connection trouble, timeouts, bodies that are neither a status nor a result).

The key travels only in the ``x-api-key`` header, never in a URL (URLs end up in logs and
proxies), and never to another host: redirects are followed by hand, and the key is sent
only while the target has the API's own scheme, host and port.

The decisions (``parse_retry_after``, ``interpret_status``) are pure functions.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Self

import aiohttp
import orjson
from aiohttp.helpers import basicauth_from_netrc, get_env_proxy_for_url, netrc_from_env
from yarl import URL

from bulkfetch import __version__
from bulkfetch.answers import body_text, connection_trouble, find_result_url, not_the_api
from bulkfetch.config import ApiKey
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
from bulkfetch.ledger_meta import DEFAULT_TASK_TIMEOUT
from bulkfetch.limiter.retry_after import parse_retry_after

__all__ = [
    "Client",
    "Created",
    "Failed",
    "Pending",
    "Ready",
    "ResultUrl",
    "interpret_status",
    "parse_retry_after",
]

log = logging.getLogger(__name__)

#: JSON answers are small; anything bigger claiming to be JSON is not a status.
MAX_JSON = 1 << 20
MAX_REDIRECTS = 5
FAILED_WORDS = frozenset({"failed", "error", "failure", "cancelled", "canceled"})
DONE_WORDS = frozenset(
    {"done", "finished", "success", "succeeded", "completed", "complete", "ready", "available"}
)
#: Some gateways answer an over-limit request with another code and a message saying so.
#: Narrow on purpose: "area limit exceeded" is a bad parameter, not a rate limit.
_RATE_WORDS = re.compile(r"rate.?limit|too many requests", re.I)
#: Answers that refuse the key, or the plan behind it (EODAG's aws_eos: 402 and 403).
AUTH_CODES = frozenset({401, 402, 403})
#: What each refusal means for the user, after "EOS refused the request (HTTP n): ".
_AUTH_HINTS = {
    401: "the API key is missing or wrong: check EOS_API_KEY or --api-key-file",
    402: "the plan behind this API key has no credit left, or does not include this API: "
    "check the plan and its balance in your EOS account",
    403: "the API key is not allowed here: check EOS_API_KEY or --api-key-file, and that "
    "your EOS plan includes this API",
}


@dataclass(frozen=True, slots=True)
class Created:
    task_id: str
    req_id: str
    task_timeout: float


@dataclass(frozen=True, slots=True)
class Pending:
    word: str


@dataclass(frozen=True, slots=True)
class Failed:
    message: str


@dataclass(frozen=True, slots=True)
class ResultUrl:
    url: str


@dataclass(slots=True)
class Ready:
    """A finished task's result, not yet read. ``head`` holds the bytes already peeked."""

    response: aiohttp.ClientResponse
    head: bytes
    content_type: str
    content_length: int | None

    async def chunks(self, size: int = 1 << 20) -> AsyncIterator[bytes]:
        """The whole body, ``head`` first, in pieces of at most about ``size`` bytes.

        While the body streams, the connection's socket is read ``size`` bytes per ``recv``
        rather than asyncio's 256 KiB: a quarter of the loop turns for a large result (each
        turn is a parse, a wake-up and a hand-over in Python). Put back afterwards, so a
        pooled connection does not allocate ``size`` for every small JSON answer.
        """
        if self.head:
            yield self.head
        transport = self.response.connection.transport if self.response.connection else None
        # ``max_size`` is the selector transport's recv() size, an attribute rather than an
        # API: left alone where absent (another event loop) or not a plain int.
        before = getattr(transport, "max_size", None)
        if type(before) is int and before < size:
            transport.max_size = size  # type: ignore[union-attr]
        try:
            async for chunk in self.response.content.iter_chunked(size):
                yield chunk
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _transient(exc, "while downloading the result") from None
        finally:
            if type(before) is int and before < size:
                transport.max_size = before  # type: ignore[union-attr]


def interpret_status(data: Any) -> Pending | Failed | ResultUrl:
    """What a JSON answer to a status call means.

    Failure is explicit (``task_type: error`` or a failure word); a URL with a done word (or
    no word) points at the result (under any name ``find_result_url`` knows); anything
    else, including words never seen, means "not ready yet" — even with a link in it,
    which may be a link to the task itself. A done word with no URL is not a result: it
    is a malformed answer.
    """
    if not isinstance(data, dict):
        raise TransientError("status answer is JSON but not an object")
    word = str(data.get("status", "")).strip().lower()
    if str(data.get("task_type", "")).lower() == "error" or word in FAILED_WORDS:
        return Failed(_error_message(data))
    if word and word not in DONE_WORDS:
        return Pending(word)
    url = find_result_url(data)
    if url is not None:
        return ResultUrl(url)
    if word in DONE_WORDS:
        raise TransientError(f"status answer says {word!r} but carries no result")
    return Pending(word or "unknown")


def _error_message(data: Mapping[str, Any]) -> str:
    msg = data.get("error_message", data.get("error", data.get("message", "")))
    if isinstance(msg, dict):
        msg = msg.get("error", msg.get("message", msg))
    text = msg if isinstance(msg, str) else orjson.dumps(msg).decode()
    return text[:500] or "task failed (no message given)"


def _transient(exc: BaseException, doing: str) -> TransientError:
    # aiohttp's messages can quote URLs; ours never hold the key, but keep them short.
    return TransientError(f"{doing}: {connection_trouble(exc)}")


def _same_origin(a: URL, b: URL) -> bool:
    return (a.scheme, a.host, a.port) == (b.scheme, b.host, b.port)


class Client:
    """The EOS task API over one aiohttp session. Use as an async context manager."""

    def __init__(self, api_url: str, key: ApiKey, *, timeout: float = 60.0) -> None:
        self.api_url = URL(api_url.rstrip("/"))
        if self.api_url.scheme not in ("http", "https") or not self.api_url.host:
            raise ValueError("the API URL must be http(s)://host/...")
        self._key = key
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=timeout, sock_connect=timeout, sock_read=timeout
        )
        self._session: aiohttp.ClientSession | None = None
        self._routes: dict[tuple[str, str | None, int | None, bool], dict[str, Any]] = {}

    async def __aenter__(self) -> Self:
        # trust_env=False: _route() applies the environment's proxies and ~/.netrc instead.
        self._session = aiohttp.ClientSession(
            timeout=self._timeout,
            headers={"User-Agent": f"bulkfetch/{__version__}"},
            connector=aiohttp.TCPConnector(limit=32),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("use the Client inside 'async with'")
        return self._session

    def _scrub(self, raw: bytes) -> bytes:
        """A server that echoes the key in an error must not put it into our messages."""
        return raw.replace(self._key.reveal().encode(), b"***")

    def _headers(self, url: URL) -> dict[str, str]:
        return {"x-api-key": self._key.reveal()} if _same_origin(url, self.api_url) else {}

    def _route(self, url: URL) -> dict[str, Any]:
        """What aiohttp's ``trust_env`` adds to a request for ``url``: the proxy the
        environment names for it (``HTTPS_PROXY``, ``NO_PROXY``...) and credentials from
        ``~/.netrc`` for its host. Looked up once per origin and kept: ``trust_env`` looks
        both up again at every request, each in a worker thread (two thread hand-offs and
        a read of ``~/.netrc`` per request, the bulk of a request's system CPU).
        """
        origin = (url.scheme, url.host, url.port, url.user is None)
        route = self._routes.get(origin)
        if route is None:
            route = {}
            with contextlib.suppress(LookupError):
                proxy, proxy_auth = get_env_proxy_for_url(url)
                route["proxy"] = proxy
                if proxy_auth is not None:
                    route["proxy_headers"] = {"Proxy-Authorization": proxy_auth.encode()}
            # As aiohttp: .netrc only when the URL carries no credentials of its own.
            if url.host is not None and url.user is None:
                with contextlib.suppress(LookupError):
                    route["auth"] = basicauth_from_netrc(netrc_from_env(), url.host)
            self._routes[origin] = route
        return route

    async def create(self, body: Mapping[str, Any]) -> Created:
        """Create one task. Raises BadRequest when EOS rejects the job's parameters."""
        data = orjson.dumps(body)
        headers = self._headers(self.api_url) | {"Content-Type": "application/json"}
        try:
            async with self.session.post(
                self.api_url, data=data, headers=headers, **self._route(self.api_url)
            ) as resp:
                raw = self._scrub(await resp.content.read(MAX_JSON))
                status = resp.status
                retry_after = resp.headers.get("Retry-After")
                ctype = resp.headers.get("Content-Type", "")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _transient(exc, "creating a task") from None
        if status in (200, 201, 202):
            return _parse_created(raw, status, ctype)
        raise _error_for(status, raw, retry_after, creating=True, content_type=ctype)

    @contextlib.asynccontextmanager
    async def status(self, task_id: str) -> AsyncIterator[Pending | Failed | Ready]:
        """Ask for a task's status; a finished task's answer is its file, left unread."""
        url = self.api_url / task_id
        async with contextlib.AsyncExitStack() as stack:
            resp = await self._follow(url, stack)
            yield await self._answer(resp, stack)

    async def _follow(self, url: URL, stack: contextlib.AsyncExitStack) -> aiohttp.ClientResponse:
        """GET ``url``, following redirects by hand (the key only to the API's origin)."""
        for _ in range(MAX_REDIRECTS + 1):
            resp = await stack.enter_async_context(self._get(url))
            if resp.status in (301, 302, 303, 307, 308) and "Location" in resp.headers:
                url = url.join(_url(resp.headers["Location"]))
                if url.scheme not in ("http", "https"):
                    raise TransientError("redirect to a non-HTTP location")
                continue
            return resp
        raise TransientError(f"more than {MAX_REDIRECTS} redirects for a task's result")

    @contextlib.asynccontextmanager
    async def _get(self, url: URL) -> AsyncIterator[aiohttp.ClientResponse]:
        try:
            async with self.session.get(
                url, headers=self._headers(url), allow_redirects=False, **self._route(url)
            ) as resp:
                yield resp
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _transient(exc, "asking for a task's status") from None

    async def _answer(
        self, resp: aiohttp.ClientResponse, stack: contextlib.AsyncExitStack
    ) -> Pending | Failed | Ready:
        ctype = resp.headers.get("Content-Type", "").lower()
        try:
            if resp.status not in (200, 202):
                raise self._error_at(resp, self._scrub(await resp.content.read(MAX_JSON)))
            head = await _peek(resp, 64)  # enough to know an HTML page by its start
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _transient(exc, "reading a task's status") from None
        if resp.status == 202 and not head:
            return Pending("accepted")  # "accepted, not done": one public client's reading
        wrong = not_the_api(resp.status, ctype, head) if self._own(resp) else None
        if wrong is not None:
            raise NotTheApi(f"the status answer is {wrong[0]}", what=wrong[0], at_once=wrong[1])
        if "json" in ctype or head.lstrip()[:1] in (b"{", b"["):
            try:
                rest = await resp.content.read(MAX_JSON)
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise _transient(exc, "reading a task's status") from None
            try:
                answer = interpret_status(orjson.loads(self._scrub(head + rest)))
            except orjson.JSONDecodeError:
                raise TransientError("status answer is neither an image nor valid JSON") from None
            if isinstance(answer, ResultUrl):
                resp = await self._follow(resp.url.join(_url(answer.url)), stack)
                if resp.status != 200:
                    raise self._error_at(resp, self._scrub(await resp.content.read(MAX_JSON)))
                return await self._ready(resp)
            return answer
        if not head:
            raise TransientError("status answer is an empty body")
        return Ready(resp, head, ctype, resp.content_length)

    def _own(self, resp: aiohttp.ClientResponse) -> bool:
        """Whether ``resp`` came from the API's own origin (not a storage host's)."""
        return _same_origin(resp.url, self.api_url)

    def _error_at(self, resp: aiohttp.ClientResponse, raw: bytes) -> ApiError:
        """The error for a status or result answer other than 200/202.

        A refusal from another host (a presigned storage URL that expired: S3 answers 403)
        says nothing about the key: it is retried, never a reason to stop the run.
        """
        ctype = resp.headers.get("Content-Type", "")
        if resp.status in AUTH_CODES and not self._own(resp):
            return TransientError(
                f"the result's host refused the download (HTTP {resp.status}): "
                + body_text(raw, ctype)
            )
        return _error_for(resp.status, raw, resp.headers.get("Retry-After"), content_type=ctype)

    async def _ready(self, resp: aiohttp.ClientResponse) -> Ready:
        try:
            head = await _peek(resp, 16)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _transient(exc, "downloading the result") from None
        if not head:
            raise TransientError("the result is an empty body")
        ctype = resp.headers.get("Content-Type", "").lower()
        return Ready(resp, head, ctype, resp.content_length)


def _url(text: str) -> URL:
    """A URL the server gave us; a malformed one is the server's transient fault."""
    try:
        url = URL(text)
        _ = url.port  # yarl checks the port only when asked
    except (ValueError, TypeError):
        raise TransientError("the server gave a malformed result location") from None
    return url


async def _peek(resp: aiohttp.ClientResponse, n: int) -> bytes:
    """At least ``n`` bytes of the body (fewer only at its end), to tell JSON from image."""
    head = b""
    while len(head) < n:
        chunk = await resp.content.readany()
        if not chunk:
            break
        head += chunk
    return head


def _parse_created(raw: bytes, status: int = 202, content_type: str = "") -> Created:
    """A 2xx creation answer: the task, or ``NotTheApi`` (no task API answers otherwise)."""

    def not_api(what: str) -> NotTheApi:
        what = f"{what} (HTTP {status})"
        return NotTheApi(f"the task creation answer is {what}", what=what, at_once=True)

    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise not_api(body_text(raw, content_type) or "an empty body") from None
    if not isinstance(data, dict):
        raise not_api("JSON but not an object")
    if str(data.get("task_type", "")).lower() == "error" or data.get("status") in FAILED_WORDS:
        raise BadRequest(f"EOS refused the task: {_error_message(data)}")
    task_id = data.get("task_id", data.get("taskId"))
    if not isinstance(task_id, str) or not task_id or "/" in task_id or len(task_id) > 200:
        raise not_api("JSON without a usable task_id")
    timeout = data.get("task_timeout", DEFAULT_TASK_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        timeout = DEFAULT_TASK_TIMEOUT
    req_id = data.get("req_id")
    return Created(task_id, req_id if isinstance(req_id, str) else "", float(timeout))


def _error_for(
    status: int,
    raw: bytes,
    retry_after: str | None,
    *,
    creating: bool = False,
    content_type: str = "",
) -> ApiError:
    text = _server_text(raw, content_type)
    if status == 429 or (status >= 400 and _RATE_WORDS.search(text) and status not in AUTH_CODES):
        return RateLimited(
            f"rate limited (HTTP {status})", retry_after=parse_retry_after(retry_after)
        )
    if status in AUTH_CODES:
        return auth_error(status, text)
    wrong = not_the_api(status, content_type, raw)
    if wrong is not None:
        what, at_once = wrong
        return NotTheApi(f"the answer is {what}", what=what, at_once=at_once, status=status)
    if status == 404 and not creating:
        return TaskGone("the task is gone (expired or unknown to EOS)", status=status)
    if status in (404, 405) and creating:
        return EndpointError(
            f"the API URL answered HTTP {status} to a task creation: check --api-url / EOS_API_URL",
            status=status,
        )
    if status >= 500 or status in (408, 425):
        return TransientError(f"server error (HTTP {status})" + (f": {text}" if text else ""))
    if creating and 400 <= status < 500:
        return BadRequest(
            f"EOS refused the job's parameters (HTTP {status})" + (f": {text}" if text else ""),
            status=status,
        )
    return TransientError(f"unexpected answer (HTTP {status})" + (f": {text}" if text else ""))


def auth_error(status: int, text: str) -> AuthError:
    """The fatal error for a 401/402/403, saying what the user can do about it."""
    what = "the API key" if status != 402 else "the request"
    return AuthError(
        f"EOS refused {what} (HTTP {status}): {_AUTH_HINTS[status]}"
        + (f"; server said: {text}" if text else ""),
        status=status,
    )


def _server_text(raw: bytes, content_type: str = "") -> str:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return body_text(raw, content_type)
    if isinstance(data, dict):
        return _error_message(data)
    return str(data)[:200]
