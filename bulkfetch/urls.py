"""Where a run talks to and writes to, checked before anything is created or sent.

* ``check_service_url``: ``--api-url`` and ``--search-url`` must be ``http(s)://host/...``;
  anything else (``not-a-url``, ``ftp://...``) is a usage error naming the flag.
* ``check_out``: ``--out`` is a local folder; a URL (``s3://bucket/prefix``, ``gs://``,
  ``az://``...) is refused until such destinations are supported, rather than written
  into a local folder named ``s3:``.
* ``display_url``: a URL as messages show it: no query, fragment or credentials (a user
  may have put a key there).
"""

from __future__ import annotations

import re
from pathlib import Path

from yarl import URL

from .errors import UsageError

__all__ = ["check_out", "check_service_url", "display_url"]

#: ``scheme:/`` at the start: a pathlib.Path keeps one slash of ``s3://``. One letter is
#: a Windows drive (``C:/``), not a scheme.
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]+):/")


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


def check_out(path: Path | str) -> None:
    """Refuse an output that is a URL rather than a local folder."""
    text = str(path)
    match = _SCHEME.match(text)
    if match:
        scheme = match.group(1)
        shown = f"{scheme}://{text[match.end() :].lstrip('/')}"
        raise UsageError(
            f"--out {shown!r} is a URL ({scheme}://): writing to object storage is not "
            "supported yet; give a local folder (and copy it there afterwards)"
        )
