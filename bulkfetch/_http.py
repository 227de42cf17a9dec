"""What an EOS answer other than success means: the errors of :mod:`bulkfetch.errors`,
in pure functions over its status, headers and body (no I/O), shared by the task, search
and colormap clients.

``error_for`` reads, in this order:

* ``429``, or a 4xx (not 401/402/403) whose text says "rate limit" or "too many requests"
  (some gateways answer an over-limit request so): ``RateLimited``, with the seconds of
  its ``Retry-After`` (delta-seconds or an HTTP date; None when absent or unreadable);
* ``401``, ``402``, ``403``: ``AuthError`` (fatal), saying what the user can check;
* an HTML page: ``NotTheApi`` (another server's answer: a wrong URL, a portal, a proxy);
* ``404``, ``410`` on a task: ``TaskGone`` (expired or never existed: create it again);
* ``404``, ``405``, ``410`` to a request that creates or searches: ``EndpointError`` (fatal:
  the URL is not the endpoint, and every request would fail the same way);
* ``5xx``, ``408``, ``425``: ``TransientError`` (retried);
* another 4xx to a request that creates or searches: ``BadRequest`` (its parameters are
  wrong: not retried);
* anything else (another 4xx on a task, a 3xx, an unexpected 2xx): ``TransientError``.

What a request is (a task's status, a creation, a search) is an ``Asking``: it says
which of those readings apply and words the messages. Messages quote at most 200
characters of what the server said (an HTML page by its title), never a URL.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from bulkfetch.answers import body_text, not_the_api
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
from bulkfetch.limiter.retry_after import parse_retry_after, retry_after_resolution

__all__ = [
    "AUTH_CODES",
    "CREATING",
    "POLLING",
    "Asking",
    "auth_error",
    "error_for",
    "error_message",
    "header",
    "server_text",
]

#: Answers that refuse the key, or the plan behind it (EODAG's aws_eos: 402 and 403).
AUTH_CODES = frozenset({401, 402, 403})
#: Answers that say the URL itself is not the endpoint, to a request that creates or searches.
_NO_ENDPOINT = frozenset({404, 405, 410})
#: Answers that say a task is gone: expired (410 Gone) or never known (404).
_GONE = frozenset({404, 410})
#: Not the request's fault: the server was slow (408) or did not want it yet (425).
_TRY_AGAIN = frozenset({408, 425})
#: Some gateways answer an over-limit request with another code and a message saying so.
#: Narrow on purpose: "area limit exceeded" is a bad parameter, not a rate limit.
_RATE_WORDS = re.compile(r"rate.?limit|too many requests", re.I)
#: What each refusal means for the user, after "EOS refused the request (HTTP n): ".
_AUTH_HINTS = {
    401: "the API key is missing or wrong: check EOS_API_KEY or --api-key-file",
    402: "the plan behind this API key has no credit left, or does not include this API: "
    "check the plan and its balance in your EOS account",
    403: "the API key is not allowed here: check EOS_API_KEY or --api-key-file, and that "
    "your EOS plan includes this API",
}


@dataclass(frozen=True, slots=True)
class Asking:
    """What a request asks, for the readings and the words of its errors.

    ``refused`` names what a 4xx refuses ("EOS refused {refused} (HTTP 400)") in a request
    that creates or searches; None is a GET of a task, whose 404 and 410 mean the task
    is gone. ``endpoint`` says, after "{url} answered HTTP 404", what to check when the
    URL is not the endpoint; ``answer`` names the answer for ``NotTheApi``.
    """

    refused: str | None = None
    url: str = "the API URL"
    endpoint: str = "to a task creation: check --api-url / EOS_API_URL"
    answer: str = "the answer"


#: A task's status or result (and the colormap GETs): 404 and 410 mean "gone".
POLLING = Asking()
#: A task's creation: a 4xx refuses this job's parameters.
CREATING = Asking(refused="the job's parameters")


def header(headers: Mapping[str, str], name: str) -> str | None:
    """``name``'s value in ``headers``, compared without case as HTTP does (aiohttp's
    headers do so already; a plain dict from a test or a recording may not)."""
    value = headers.get(name)
    if value is not None:
        return value
    lower = name.lower()
    return next((v for k, v in headers.items() if k.lower() == lower), None)


def error_for(
    status: int, headers: Mapping[str, str], body: bytes, asking: Asking = POLLING
) -> ApiError:
    """The error an answer other than success means (the module docstring's order)."""
    content_type = header(headers, "Content-Type") or ""
    text = server_text(body, content_type)
    suffix = f": {text}" if text else ""
    if status == 429 or (status >= 400 and status not in AUTH_CODES and _RATE_WORDS.search(text)):
        value = header(headers, "Retry-After")
        return RateLimited(
            f"rate limited (HTTP {status})",
            retry_after=parse_retry_after(value),
            status=status,
            resolution=retry_after_resolution(value),
        )
    if status in AUTH_CODES:
        return auth_error(status, text)
    wrong = not_the_api(status, content_type, body)
    if wrong is not None:
        what, at_once = wrong
        return NotTheApi(f"{asking.answer} is {what}", what=what, at_once=at_once, status=status)
    creates = asking.refused is not None
    if status in _GONE and not creates:
        return TaskGone(
            f"the task is gone (HTTP {status}: expired or unknown to EOS)", status=status
        )
    if status in _NO_ENDPOINT and creates:
        return EndpointError(
            f"{asking.url} answered HTTP {status} {asking.endpoint}"
            + (f" ({text})" if text else ""),
            status=status,
        )
    if status >= 500 or status in _TRY_AGAIN:
        return TransientError(f"server error (HTTP {status}){suffix}", status=status)
    if creates and 400 <= status < 500:
        return BadRequest(f"EOS refused {asking.refused} (HTTP {status}){suffix}", status=status)
    return TransientError(f"unexpected answer (HTTP {status}){suffix}", status=status)


def auth_error(status: int, text: str) -> AuthError:
    """The fatal error for a 401/402/403, saying what the user can do about it."""
    what = "the API key" if status != 402 else "the request"
    return AuthError(
        f"EOS refused {what} (HTTP {status}): {_AUTH_HINTS[status]}"
        + (f"; server said: {text}" if text else ""),
        status=status,
    )


def error_message(data: Mapping[str, Any]) -> str:
    """The server's message in a JSON error or failed task (at most 500 characters)."""
    msg = data.get("error_message", data.get("error", data.get("message", "")))
    if isinstance(msg, dict):
        msg = msg.get("error", msg.get("message", msg))
    text = msg if isinstance(msg, str) else orjson.dumps(msg).decode()
    return text[:500] or "task failed (no message given)"


def server_text(body: bytes, content_type: str = "") -> str:
    """What a message quotes of an error body: a JSON error's message, else its text."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body_text(body, content_type)
    if isinstance(data, dict):
        return error_message(data)
    return str(data)[:200]
