"""What earlier searches found, so a scheduled search asks only about what it cannot know.

Contract: a cache entry belongs to one question without its dates (the search URL, the
dataset, the field's area, the cloud and coverage filters: :func:`query_key`). It holds
the scenes found and the date ranges that are *settled*: searched after the catalogue
could still change them. A range is settled up to ``settle_days`` before the day it was
searched, because EOS publishes a scene a few days after it is taken; the days after
that stay open and are asked again next time. So a daily search over a season asks one
question per field about the last few days, and picks up the scenes published since.

The file is JSON, replaced atomically (:func:`~bulkfetch.durable.atomic_write`). It is
only a cache: one that cannot be read is reported and started afresh, never trusted, and
a file that is not a bulkfetch search cache is never overwritten. It holds no key.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from bulkfetch._cache_file import read_entries, write_entries

__all__ = ["CACHE_KIND", "SearchCache", "default_cache_path", "gaps", "query_key"]

CACHE_KIND = "bulkfetch-search-cache"
_VERSION = 1

Range = tuple[dt.date, dt.date]


def default_cache_path() -> Path:
    """``$XDG_CACHE_HOME/bulkfetch/search-cache.json`` (``~/.cache`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "bulkfetch" / "search-cache.json"


def query_key(question: Mapping[str, Any]) -> str:
    """A stable key for a search question (everything but its dates)."""
    canonical = orjson.dumps(question, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


def gaps(start: dt.date, end: dt.date, settled: list[Range]) -> list[Range]:
    """The parts of ``[start, end]`` that no settled range covers, in order."""
    out: list[Range] = []
    at = start
    for a, b in sorted(settled):
        if b < at:
            continue
        if a > end:
            break
        if a > at:
            out.append((at, a - dt.timedelta(days=1)))
        at = max(at, b + dt.timedelta(days=1))
        if at > end:
            return out
    if at <= end:
        out.append((at, end))
    return out


def _merge(ranges: list[Range]) -> list[Range]:
    merged: list[Range] = []
    for a, b in sorted(ranges):
        if merged and a <= merged[-1][1] + dt.timedelta(days=1):
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


class SearchCache:
    """Settled date ranges and scenes per question; ``path=None`` keeps it in memory only."""

    __slots__ = ("_entries", "_writable", "changed", "path")

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.changed = False
        self._entries: dict[str, dict[str, Any]] = {}
        self._writable = True
        if path is not None:
            self._load(path)

    def __repr__(self) -> str:
        return f"<SearchCache {self.path} questions={len(self._entries)}>"

    def _load(self, path: Path) -> None:
        self._entries, self._writable = read_entries(path, CACHE_KIND, _VERSION, "search cache")

    def lookup(
        self, key: str, start: dt.date, end: dt.date
    ) -> tuple[list[dict[str, Any]], list[Range]]:
        """Scenes already known in ``[start, end]``, and the ranges still to ask about."""
        entry = self._entries.get(key)
        if entry is None:
            return [], [(start, end)]
        settled = [
            (dt.date.fromisoformat(a), dt.date.fromisoformat(b)) for a, b in entry["settled"]
        ]
        lo, hi = start.isoformat(), end.isoformat()
        known = [s for s in entry["scenes"].values() if lo <= s["date"] <= hi]
        return known, gaps(start, end, settled)

    def store(
        self,
        key: str,
        searched: Range,
        scenes: list[dict[str, Any]],
        *,
        settled_until: dt.date,
    ) -> None:
        """Remember ``scenes`` found over ``searched``, settled up to ``settled_until``."""
        entry = self._entries.setdefault(key, {"settled": [], "scenes": {}})
        for scene in scenes:
            entry["scenes"][scene["view_id"]] = scene
        start, end = searched
        end = min(end, settled_until)
        if start <= end:
            ranges = [
                (dt.date.fromisoformat(a), dt.date.fromisoformat(b)) for a, b in entry["settled"]
            ]
            entry["settled"] = [
                [a.isoformat(), b.isoformat()] for a, b in _merge([*ranges, (start, end)])
            ]
        self.changed = True

    def save(self) -> None:
        """Write the cache if it changed; a failure is reported, not raised: it is a cache."""
        if self.path is None or not self.changed or not self._writable:
            return
        if write_entries(self.path, CACHE_KIND, _VERSION, self._entries, "search cache"):
            self.changed = False
