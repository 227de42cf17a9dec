"""What an answer from the task API's URL is, in pure functions over its parts (no I/O).

The real service's answers are known only in part (``eos-api.md``), and a wrong
``--api-url`` leads to servers that answer anything. These decisions read an answer's
status, Content-Type and first bytes, or a connection failure, and say what it is:

* ``find_result_url``: where a finished task's JSON keeps its result's URL, under any of
  the names public clients and storage services use (``url``, ``download_url``,
  ``downloadUrl``, ``result``, ``link``... compared without case, ``_`` or ``-``), also
  one level down (``{"result": {"url": ...}}``, ``{"files": [{"href": ...}]}``);
* ``is_html`` and ``body_text``: an HTML page is never the task API's answer; ``body_text``
  is what a message quotes of a body (an HTML page's title, not its markup);
* ``not_the_api``: why an answer cannot come from the task API (an HTML page, a 2xx that
  is not its JSON), and whether that settles it at once;
* ``connection_trouble``: a connection failure in the words a user acts on ("connection
  refused", "DNS lookup failed for host ...", "TLS failure ...").
"""

from __future__ import annotations

import re
import socket
import ssl
from collections.abc import Mapping
from typing import Any

import aiohttp

__all__ = [
    "URL_HOLDERS",
    "URL_NAMES",
    "body_text",
    "connection_trouble",
    "find_result_url",
    "is_html",
    "not_the_api",
]

#: Names a finished answer may keep its result's URL under, normalised (lower case, no
#: ``_`` or ``-``), most specific first. Never ``thumbnail``/``preview``/``self``: a
#: thumbnail is a valid JPEG, and would be kept as the result.
URL_NAMES = (
    "downloadurl",
    "resulturl",
    "imageurl",
    "fileurl",
    "presignedurl",
    "signedurl",
    "s3url",
    "outputurl",
    "url",
    "downloadlink",
    "resultlink",
    "filelink",
    "result",
    "download",
    "link",
    "href",
    "location",
    "file",
    "image",
    "output",
)
#: Members a URL may sit one level down in (their value an object, or a list of one).
URL_HOLDERS: tuple[str, ...] = ("result", "results", "data", "output", "file", "files")
URL_HOLDERS += ("image", "download", "links", "response", "urls", "task")

_HTML = re.compile(rb"^\s*(?:<!doctype\s+html|<html|<head|<body|<title|<!--)", re.I)
_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.I | re.S)


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _usable(value: Any) -> str | None:
    """``value`` if it is a URL to fetch: absolute http(s), or a path on the API's host."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    if text.lower().startswith(("http://", "https://")):
        return text
    if text.startswith("/") and not text.startswith("//"):
        return text
    return None


def _named(data: Mapping[str, Any]) -> dict[str, Any]:
    return {_norm(k): v for k, v in data.items() if isinstance(k, str)}


def _direct(named: Mapping[str, Any]) -> str | None:
    for name in URL_NAMES:
        url = _usable(named.get(name))
        if url is not None:
            return url
    return None


def find_result_url(data: Mapping[str, Any]) -> str | None:
    """The result's URL in a finished task's JSON answer, or None if it holds none.

    A URL directly under one of ``URL_NAMES`` wins; then one level down, in a member
    named in ``URL_HOLDERS`` whose value is an object, or a list of exactly one object or
    URL (several would be several files: not a result bulkfetch knows how to keep).
    """
    named = _named(data)
    url = _direct(named)
    if url is not None:
        return url
    for holder in URL_HOLDERS:
        inner = named.get(holder)
        if isinstance(inner, list) and len(inner) == 1:
            inner = inner[0]
            url = _usable(inner)
            if url is not None:
                return url
        if isinstance(inner, Mapping):
            url = _direct(_named(inner))
            if url is not None:
                return url
    return None


#: First bytes of the results EOS makes: never an HTML page, whatever the Content-Type says.
_IMAGE_MAGIC: tuple[bytes, ...] = (b"\xff\xd8\xff", b"\x89PNG", b"II*\x00", b"MM\x00*")
_IMAGE_MAGIC += (b"II+\x00", b"MM\x00+", b"PK\x03\x04")


def is_html(content_type: str, head: bytes) -> bool:
    """Whether a body is an HTML page, by its first bytes or its Content-Type (unless
    the bytes are an image's: a result mislabelled ``text/html`` is still the result)."""
    if head.startswith(_IMAGE_MAGIC):
        return False
    return "html" in content_type.lower() or bool(_HTML.match(head[:512]))


def body_text(raw: bytes, content_type: str = "") -> str:
    """At most 200 characters of a body for a message; an HTML page by its title."""
    if is_html(content_type, raw):
        title = _TITLE.search(raw[:65536].decode("utf-8", "replace"))
        name = " ".join(title.group(1).split())[:120] if title else ""
        return f"an HTML page ({name!r})" if name else "an HTML page"
    return " ".join(raw[:200].decode("utf-8", "replace").split())


def not_the_api(status: int, content_type: str, head: bytes) -> tuple[str, bool] | None:
    """Why an answer cannot be the task API's, and whether that settles it at once.

    The task API answers in JSON (a status, an error) or with a result's bytes. An HTML
    page is another server's (a wrong URL, a login portal, a proxy): settled at once,
    except a 5xx page other than 501, which a proxy in front of the real API also sends
    while it is down. Called only for answers that are not a result already known.
    """
    if is_html(content_type, head):
        at_once = status < 500 or status == 501
        return f"{body_text(head, content_type)} (HTTP {status})", at_once
    return None


def connection_trouble(exc: BaseException) -> str:
    """A connection failure as a user reads it: what went wrong, not aiohttp's class."""
    if isinstance(exc, aiohttp.ClientConnectorDNSError) or isinstance(
        getattr(exc, "os_error", None), socket.gaierror
    ):
        host = getattr(exc, "host", "")
        return f"DNS lookup failed for host {host!r}" if host else "DNS lookup failed"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return f"TLS failure: the server's certificate is not trusted ({exc.certificate_error})"
    if isinstance(exc, aiohttp.ClientSSLError | ssl.SSLError):
        return "TLS failure: " + _first_line(exc)
    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(exc.os_error, ConnectionRefusedError):
            return "connection refused"
        return "cannot connect: " + _first_line(exc)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection without answering"
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return "no answer in time"
    return f"{type(exc).__name__}" + (f": {_first_line(exc)}" if str(exc) else "")


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
