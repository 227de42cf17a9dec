"""One aiohttp session to one EOS API (task, search or colormap), the key only to its origin.

``ApiSession`` is the base of the three clients (:class:`bulkfetch.client.Client`, the
search and the colormap clients): an async context manager over one session, with what
each request to the API needs:

* the key, in the ``x-api-key`` header only (never in a URL: URLs end up in logs and
  proxies), and only to the API's own scheme, host and port (``headers``). Redirects are
  followed by hand (``call``: within the origin only; the task client's result: anywhere,
  without the key), never by aiohttp, which would carry the header to any host;
* the environment's proxy and ``~/.netrc`` credentials for each origin, looked up once
  (``route``), since the session does not trust the environment itself;
* a server that echoes the key gets it replaced by ``***`` in what is read (``scrub``);
* ``call``: one request whose (small) answer is read whole, as an ``Answer`` whose
  ``error`` is what it means when it is not a success, for the kind of request an
  ``Asking`` describes (:func:`bulkfetch._http.error_for`, private to this layer);
  connection trouble and timeouts are ``TransientError`` in a user's words (``transient``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Self

import aiohttp
import orjson
from aiohttp.helpers import basicauth_from_netrc, get_env_proxy_for_url, netrc_from_env
from yarl import URL

from bulkfetch._http import POLLING, Asking, error_for, header, server_text
from bulkfetch._version import __version__
from bulkfetch.answers import connection_trouble
from bulkfetch.config import ApiKey
from bulkfetch.errors import ApiError, TransientError

__all__ = [
    "MAX_JSON",
    "MAX_REDIRECTS",
    "Answer",
    "ApiSession",
    "Asking",
    "given_url",
    "same_origin",
    "transient",
]

#: JSON answers are small; anything bigger claiming to be JSON is not a status.
MAX_JSON = 1 << 20
MAX_REDIRECTS = 5


@dataclass(frozen=True, slots=True)
class Answer:
    """An answer read whole: its status, headers and (scrubbed) body."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def content_type(self) -> str:
        return header(self.headers, "Content-Type") or ""

    @property
    def text(self) -> str:
        """What a message quotes of the body (a JSON error's message, an HTML page's title)."""
        return server_text(self.body, self.content_type)

    def error(self, asking: Asking = POLLING) -> ApiError:
        """What this answer means when it is not the success asked for."""
        return error_for(self.status, self.headers, self.body, asking)


def transient(exc: BaseException, doing: str) -> TransientError:
    """Connection trouble or a timeout while ``doing`` something, as a retryable error."""
    # aiohttp's messages can quote URLs; ours never hold the key, but keep them short.
    return TransientError(f"{doing}: {connection_trouble(exc)}")


def same_origin(a: URL, b: URL) -> bool:
    return (a.scheme, a.host, a.port) == (b.scheme, b.host, b.port)


class ApiSession:
    """One aiohttp session to the API at ``api_url``. Use as an async context manager."""

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
        # trust_env=False: route() applies the environment's proxies and ~/.netrc instead.
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
            raise RuntimeError(f"use the {type(self).__name__} inside 'async with'")
        return self._session

    def own(self, url: URL) -> bool:
        """Whether ``url`` is on the API's own origin (not a storage host's)."""
        return same_origin(url, self.api_url)

    def scrub(self, raw: bytes) -> bytes:
        """A server that echoes the key in an error must not put it into our messages."""
        return raw.replace(self._key.reveal().encode(), b"***")

    def headers(self, url: URL) -> dict[str, str]:
        """The key's header for a request to ``url``: none unless it is the API's origin."""
        return {"x-api-key": self._key.reveal()} if self.own(url) else {}

    def route(self, url: URL) -> dict[str, Any]:
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

    @contextlib.asynccontextmanager
    async def opened(self, url: URL, doing: str) -> AsyncIterator[aiohttp.ClientResponse]:
        """GET ``url``, its body left to read; a redirect is an answer like any other."""
        try:
            async with self.session.get(
                url, headers=self.headers(url), allow_redirects=False, **self.route(url)
            ) as resp:
                yield resp
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise transient(exc, doing) from None

    async def call(
        self,
        method: str,
        url: URL,
        *,
        doing: str,
        json: Mapping[str, Any] | None = None,
        limit: int = MAX_JSON,
    ) -> Answer:
        """One request (``json`` its body), its answer read whole up to ``limit`` bytes.

        A redirect is followed only within the API's own origin, and only where it keeps
        the method (307 and 308; any redirect of a GET): the key never leaves the origin,
        and a POST is never turned into a GET. Any other redirect is the answer.
        """
        data = None if json is None else orjson.dumps(json)
        for _ in range(MAX_REDIRECTS + 1):
            answer = await self._call_once(method, url, data, doing, limit)
            location = header(answer.headers, "Location")
            keeps = answer.status in (307, 308) or (
                method == "GET" and answer.status in (301, 302, 303)
            )
            if not (keeps and location):
                return answer
            target = url.join(given_url(location))
            if not self.own(target):
                return answer
            url = target
        raise TransientError(f"more than {MAX_REDIRECTS} redirects while {doing}")

    async def _call_once(
        self, method: str, url: URL, data: bytes | None, doing: str, limit: int
    ) -> Answer:
        headers = self.headers(url)
        if data is not None:
            headers["Content-Type"] = "application/json"
        try:
            async with self.session.request(
                method, url, data=data, headers=headers, allow_redirects=False, **self.route(url)
            ) as resp:
                body = self.scrub(await resp.content.read(limit))
                return Answer(resp.status, resp.headers, body)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise transient(exc, doing) from None


def given_url(text: str) -> URL:
    """A URL the server gave us; a malformed one is the server's transient fault."""
    try:
        url = URL(text)
        _ = url.port  # yarl checks the port only when asked
    except (ValueError, TypeError):
        raise TransientError("the server gave a malformed location") from None
    return url
