"""Where a run talks to, checked before anything is sent (where it writes to is
:mod:`bulkfetch.sink.destination`'s: a folder, or an s3/gs/az URL, any other scheme refused).

* ``check_service_url``: ``--api-url`` and ``--search-url`` must be ``http(s)://host/...``;
  anything else (``not-a-url``, ``ftp://...``) is a usage error naming the flag.
* ``display_url``: a URL as messages show it: no query, fragment or credentials (a user
  may have put a key there).
"""

from __future__ import annotations

from yarl import URL

from bulkfetch.errors import UsageError

__all__ = ["check_service_url", "display_url"]


def display_url(text: str) -> str:
    """``text`` without its query, fragment or user info, for messages and logs."""
    try:
        url = URL(text)
        return str(url.with_query(None).with_fragment(None).with_user(None))
    except (ValueError, TypeError):
        return text.split("?", 1)[0].split("#", 1)[0]


def check_service_url(text: str, flag: str) -> str:
    """``text`` if it is an ``http(s)://host[:port]/path`` URL, else ``UsageError``."""
    shown = display_url(text)
    example = "like https://api-connect.eos.com/api/gdw/api"
    if not text or any(c.isspace() for c in text):
        raise UsageError(f"{flag} {shown!r} is not a URL ({example})")
    try:
        url = URL(text)
        _ = url.port  # yarl checks the port only when asked
    except (ValueError, TypeError):
        raise UsageError(f"{flag} {shown!r} is not a valid URL ({example})") from None
    if url.scheme not in ("http", "https"):
        what = f"its scheme is {url.scheme!r}" if url.scheme else "it has no scheme"
        raise UsageError(f"{flag} {shown!r} must be an http(s) URL ({example}); {what}")
    if not url.host:
        raise UsageError(f"{flag} {shown!r} has no host ({example})")
    return text
