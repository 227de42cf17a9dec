"""The EOS task API, as two calls: create a task, and ask for its status (or its file).

``create()`` POSTs a Download visual body and returns the task's id and lifetime.
``status()`` GETs the task and yields what the answer means:

* ``Pending``: any status word that is not a failure (``created``, ``processing``, or a
  word never seen before), answered 200 or 202 — the task is not ready;
* ``Ready``: the result, as a stream of bytes not yet read (the sink reads it), whether it
  came in the answer itself (under any Content-Type: the sink checks the bytes), behind a
  redirect, or behind a URL in a JSON answer (``answers.find_result_url``);
* ``Failed``: the task failed on EOS's side, with the server's message (an answer, not
  an error: the engine records the job as failed and never retries it);
* or an exception from ``errors``, as :mod:`bulkfetch._http` reads the answer:
  ``TaskGone`` (404, 410), ``RateLimited`` (429), ``AuthError`` (401/402/403),
  ``NotTheApi`` (an HTML page, a 2xx creation answer that is not the task API's JSON),
  ``TransientError`` (5xx, connection trouble, timeouts, bodies that are neither a status
  nor a result).

The key travels only in the ``x-api-key`` header, and never to another host
(:class:`bulkfetch.session.ApiSession`): redirects are followed by hand, and the key is
sent only while the target has the API's own scheme, host and port.

``create()`` reads its answer the same way, as a creation: another 4xx is ``BadRequest``
(the job's parameters), a 404, 405 or 410 ``EndpointError`` (not the task API's URL).

The decisions are pure functions: ``interpret_status`` and ``_parse_created`` here,
``error_for`` in :mod:`bulkfetch._http`, ``parse_retry_after`` (re-exported) in
:mod:`bulkfetch.limiter.retry_after`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from yarl import URL

from bulkfetch._http import AUTH_CODES, CREATING, POLLING, error_message
from bulkfetch.answers import body_text, find_result_url, not_the_api
from bulkfetch.errors import ApiError, BadRequest, NotTheApi, TransientError
from bulkfetch.ledger_meta import DEFAULT_TASK_TIMEOUT
from bulkfetch.limiter.retry_after import parse_retry_after
from bulkfetch.session import MAX_JSON, MAX_REDIRECTS, Answer, ApiSession, given_url, transient

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

FAILED_WORDS = frozenset({"failed", "error", "failure", "cancelled", "canceled"})
DONE_WORDS = frozenset(
    {"done", "finished", "success", "succeeded", "completed", "complete", "ready", "available"}
)


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
            raise transient(exc, "while downloading the result") from None
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
        return Failed(error_message(data))
    if word and word not in DONE_WORDS:
        return Pending(word)
    url = find_result_url(data)
    if url is not None:
        return ResultUrl(url)
    if word in DONE_WORDS:
        raise TransientError(f"status answer says {word!r} but carries no result")
    return Pending(word or "unknown")


class Client(ApiSession):
    """The EOS task API: create a task, ask for its status (or its file)."""

    async def create(self, body: Mapping[str, Any]) -> Created:
        """Create one task. Raises BadRequest when EOS rejects the job's parameters."""
        answer = await self.call("POST", self.api_url, json=body, doing="creating a task")
        if answer.status in (200, 201, 202):
            return _parse_created(answer.body, answer.status, answer.content_type)
        raise answer.error(CREATING)

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
            resp = await stack.enter_async_context(self.opened(url, "asking for a task's status"))
            if resp.status in (301, 302, 303, 307, 308) and "Location" in resp.headers:
                url = url.join(given_url(resp.headers["Location"]))
                if url.scheme not in ("http", "https"):
                    raise TransientError("redirect to a non-HTTP location")
                continue
            return resp
        raise TransientError(f"more than {MAX_REDIRECTS} redirects for a task's result")

    async def _answer(
        self, resp: aiohttp.ClientResponse, stack: contextlib.AsyncExitStack
    ) -> Pending | Failed | Ready:
        ctype = resp.headers.get("Content-Type", "").lower()
        try:
            if resp.status not in (200, 202):
                raise self._error_at(resp, self.scrub(await resp.content.read(MAX_JSON)))
            head = await _peek(resp, 64)  # enough to know an HTML page by its start
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise transient(exc, "reading a task's status") from None
        if resp.status == 202 and not head:
            return Pending("accepted")  # "accepted, not done": one public client's reading
        wrong = not_the_api(resp.status, ctype, head) if self.own(resp.url) else None
        if wrong is not None:
            raise NotTheApi(f"the status answer is {wrong[0]}", what=wrong[0], at_once=wrong[1])
        if "json" in ctype or head.lstrip()[:1] in (b"{", b"["):
            try:
                rest = await resp.content.read(MAX_JSON)
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise transient(exc, "reading a task's status") from None
            try:
                answer = interpret_status(orjson.loads(self.scrub(head + rest)))
            except orjson.JSONDecodeError:
                raise TransientError("status answer is neither an image nor valid JSON") from None
            if isinstance(answer, ResultUrl):
                resp = await self._follow(resp.url.join(given_url(answer.url)), stack)
                if resp.status != 200:
                    raise self._error_at(resp, self.scrub(await resp.content.read(MAX_JSON)))
                return await self._ready(resp)
            return answer
        if not head:
            raise TransientError("status answer is an empty body")
        return Ready(resp, head, ctype, resp.content_length)

    def _error_at(self, resp: aiohttp.ClientResponse, raw: bytes) -> ApiError:
        """The error for a status or result answer other than 200/202.

        A refusal from another host (a presigned storage URL that expired: S3 answers 403)
        says nothing about the key: it is retried, never a reason to stop the run.
        """
        ctype = resp.headers.get("Content-Type", "")
        if resp.status in AUTH_CODES and not self.own(resp.url):
            return TransientError(
                f"the result's host refused the download (HTTP {resp.status}): "
                + body_text(raw, ctype)
            )
        return Answer(resp.status, resp.headers, raw).error(POLLING)

    async def _ready(self, resp: aiohttp.ClientResponse) -> Ready:
        try:
            head = await _peek(resp, 16)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise transient(exc, "downloading the result") from None
        if not head:
            raise TransientError("the result is an empty body")
        ctype = resp.headers.get("Content-Type", "").lower()
        return Ready(resp, head, ctype, resp.content_length)


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
        raise BadRequest(f"EOS refused the task: {error_message(data)}")
    task_id = data.get("task_id", data.get("taskId"))
    if not isinstance(task_id, str) or not task_id or "/" in task_id or len(task_id) > 200:
        raise not_api("JSON without a usable task_id")
    timeout = data.get("task_timeout", DEFAULT_TASK_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        timeout = DEFAULT_TASK_TIMEOUT
    req_id = data.get("req_id")
    return Created(task_id, req_id if isinstance(req_id, str) else "", float(timeout))
