"""Where results go: a local folder, or a bucket prefix named by a URL.

``--out`` is a folder, or ``s3://bucket/prefix``, ``gs://bucket/prefix`` or
``az://container/prefix`` (object storage, :mod:`bulkfetch.sink.object_store`). Any other
scheme is a usage error rather than a local folder named ``ftp:``.

The run's options keep ``out`` as a :class:`~pathlib.Path`, as every command has so far:
``Path("s3://b/p")`` reads ``s3:/b/p`` and :func:`store_url` recognises both spellings, so
a URL goes through the options, the config file and the Python API unchanged, and only
the places that touch storage ask which kind it is (:func:`display`, and
:func:`bulkfetch.sink.factory.open_sink`, which builds the sink).

With a URL, there is no folder to put the ledger in: it defaults to a file under the
user's state directory named after the destination (:func:`default_ledger`), or
``--ledger PATH``.

Pure: nothing here touches storage (what does is in :mod:`bulkfetch.sink.factory`).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from bulkfetch.errors import UsageError

__all__ = [
    "SCHEMES",
    "StoreUrl",
    "default_ledger",
    "display",
    "store_url",
]

#: URL schemes ``--out`` takes, and the service each names.
SCHEMES = {"s3": "S3", "gs": "Google Cloud Storage", "az": "Azure Blob Storage"}
#: ``scheme:/`` at the start (a Path keeps one slash of ``s3://``). One letter is a
#: Windows drive (``C:/``), not a scheme.
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]+):/+")
_SLUG = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True, slots=True)
class StoreUrl:
    """A bucket (an Azure container) and a prefix in it, without slashes at either end."""

    scheme: str
    bucket: str
    prefix: str = ""

    def __str__(self) -> str:
        return f"{self.scheme}://{self.bucket}" + (f"/{self.prefix}" if self.prefix else "")


def store_url(out: Path | str) -> StoreUrl | None:
    """The bucket ``out`` names, or None for a local folder.

    Raises :class:`UsageError` for a scheme other than s3, gs or az, a URL without a
    bucket, and a prefix with ``.`` or ``..`` parts (keys are never resolved, so
    ``a/../b`` would be a key of its own, not ``b``).
    """
    text = str(out)
    found = _SCHEME.match(text)
    if found is None:
        return None
    scheme = found.group(1).lower()
    rest = text[found.end() :]
    shown = f"{scheme}://{rest}"
    if scheme not in SCHEMES:
        raise UsageError(
            f"--out {shown!r}: {scheme}:// is not a destination bulkfetch writes to; give a "
            "local folder or an s3://, gs:// or az:// URL"
        )
    bucket, _, prefix = rest.partition("/")
    parts = [p for p in prefix.split("/") if p]
    if not bucket or any(c.isspace() for c in bucket):
        raise UsageError(f"--out {shown!r} names no bucket (like {scheme}://bucket/prefix)")
    if any(p in (".", "..") for p in parts):
        raise UsageError(f"--out {shown!r}: a prefix cannot hold '.' or '..' parts")
    return StoreUrl(scheme, bucket, "/".join(parts))


def display(out: Path | str) -> str:
    """``out`` as messages show it: a URL with its ``//``, a folder as given."""
    url = store_url(out)
    return str(url) if url is not None else str(out)


def default_ledger(url: StoreUrl, state_dir: Path | None = None) -> Path:
    """The ledger of a bucket destination: ``STATE/ledgers/{scheme}-{bucket}-{prefix}-{hash}.json``.

    Under the user's state directory (``$XDG_STATE_HOME/bulkfetch`` or
    ``~/.local/state/bulkfetch`` on Linux, ``~/Library/Application Support/bulkfetch`` on
    macOS), from platformdirs rather than a hand-written table of each system's rule.
    The readable part makes ``ls`` tell ledgers apart; the hash keeps two destinations
    whose names only differ in punctuation apart.
    """
    if state_dir is None:
        import platformdirs  # (only commands given a URL pay for the import)

        state_dir = platformdirs.user_state_path("bulkfetch")
    slug = _SLUG.sub("-", f"{url.scheme}-{url.bucket}-{url.prefix}").strip("-")[:80]
    tag = hashlib.sha256(str(url).encode()).hexdigest()[:10]
    return state_dir / "ledgers" / f"{slug}-{tag}.json"


def relative_key(relative: str) -> str | None:
    """``relative`` if it is a plain relative posix path (no ``..``, ``.`` or ``\\``)."""
    parts = PurePosixPath(relative).parts
    if not parts or relative.startswith("/") or "\\" in relative or "\x00" in relative:
        return None
    if any(p in ("..", ".") for p in relative.split("/")) or "" in relative.split("/"):
        return None
    return relative
