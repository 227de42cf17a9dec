"""One JSON cache file: read it if it is ours, write it atomically. Shared by the caches.

A cache is only a cache: a file that cannot be read is reported and started afresh; a
file that is not this kind of bulkfetch cache, or of another version, is reported and
never overwritten; a failed write is reported, never raised. The file is
``{"kind": KIND, "version": N, "entries": {...}}``, replaced with
:func:`~bulkfetch.durable.atomic_write`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import orjson

from bulkfetch.durable import atomic_write
from bulkfetch.errors import StorageError

__all__ = ["read_entries", "write_entries"]

log = logging.getLogger(__name__)


def read_entries(path: Path, kind: str, version: int, what: str) -> tuple[dict[str, Any], bool]:
    """``(entries, writable)`` of the cache at ``path``; ``what`` names it in warnings."""
    try:
        data = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return {}, True
    except (OSError, orjson.JSONDecodeError) as exc:
        log.warning("%s %s cannot be read (%s); starting afresh", what, path, exc)
        return {}, True
    if not isinstance(data, dict) or data.get("kind") != kind:
        log.warning("%s is not a bulkfetch %s; it is left alone", path, what)
        return {}, False
    if data.get("version") != version or not isinstance(data.get("entries"), dict):
        log.warning("%s %s is of another version; it is left alone", what, path)
        return {}, False
    return data["entries"], True


def write_entries(path: Path, kind: str, version: int, entries: dict[str, Any], what: str) -> bool:
    """Write the cache; False (and a warning) if it could not be written."""
    data = orjson.dumps({"kind": kind, "version": version, "entries": entries})
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, data)
    except (OSError, StorageError) as exc:
        log.warning("%s %s not saved: %s", what, path, exc)
        return False
    return True
