"""Asking EOS about colormaps: the list (cached for a day) and custom ids, in a lane of
their own; and the check ``run``, ``plan`` and ``validate --online`` make before anything
is created.

``GET {root}/api/render/colormap/ALL`` (``INCLUDE_TYPE``, ``TYPE``) lists the colormaps;
``GET {root}/api/render/colormap/{id}`` fetches a custom one. ``root`` comes from the task
API URL as the search URL does (:func:`bulkfetch.config.api_root`). The key goes in the
``x-api-key`` header, to that origin only (:class:`bulkfetch.session.ApiSession`).

The requests are paced by their own :class:`~bulkfetch.limiter.lane.Limiter` (10/min unless
told otherwise: EOS documents no limit for them) and retried within tight bounds: a 429
waits out the server's pause if it is at most a minute, up to 3 times; a transient fault
is tried twice; each request times out after 10 s, and the first id the endpoint cannot
answer ends the asking. The check is a convenience, so when the endpoint cannot answer
(network, 5xx, a refused key, a missing endpoint, an answer of no known shape) it says so
in a note and the run carries on as it would without it. Only EOS saying a name is not
offered, or an id does not exist (404, 400, 410, 422), stops the run: a
:class:`~bulkfetch.errors.ManifestError` naming the jobs (exit 2), before the first
creation. An id's "not found" is believed only where the colormap API is seen to exist
(its list answers, or another id is found): a host without it answers 404 to all.
A manifest without colormaps sends nothing.

The list is kept a day in ``$XDG_CACHE_HOME/bulkfetch/colormaps.json``, per service and
type, written atomically; a cache that cannot be read is ignored, and a file that is not
bulkfetch's is never overwritten. Ids are asked once per run.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import orjson
from yarl import URL

from bulkfetch._cache_file import read_entries, write_entries
from bulkfetch.colormaps.listing import (
    Colormap,
    colormap_problems,
    colormaps_used,
    is_custom_id,
    parse_colormap_list,
    unknown_names,
)
from bulkfetch.config import ApiKey, Rate, api_root
from bulkfetch.errors import ApiError, ManifestError, RateLimited, TransientError
from bulkfetch.limiter.lane import Limiter
from bulkfetch.manifest.jobs import Job
from bulkfetch.scene_search.cache import default_cache_path as _search_cache_path
from bulkfetch.session import ApiSession

__all__ = [
    "COLORMAP_PATH",
    "ColormapCache",
    "ColormapLane",
    "cached_colormaps",
    "check_colormaps",
    "default_cache_path",
    "offered_colormaps",
]

COLORMAP_PATH = "/api/render/colormap"
CACHE_KIND = "bulkfetch-colormap-cache"
_VERSION = 1
MAX_AGE = 86400.0  # a day: the list changes when EOS adds a colormap, rarely
TIMEOUT = 10.0
MAX_ATTEMPTS = 2
MAX_LIMITED = 3
MAX_PAUSE = 60.0
_NOT_FOUND = frozenset({400, 404, 410, 422})


def default_cache_path() -> Path:
    """``$XDG_CACHE_HOME/bulkfetch/colormaps.json`` (``~/.cache`` by default)."""
    return _search_cache_path().with_name("colormaps.json")


class ColormapCache:
    """Colormap lists by service and type, each with when it was fetched."""

    __slots__ = ("_entries", "_writable", "changed", "path")

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.changed = False
        self._writable = True
        self._entries: dict[str, Any] = {}
        if path is not None:
            self._load(path)

    def __repr__(self) -> str:
        return f"<ColormapCache {self.path} lists={len(self._entries)}>"

    def _load(self, path: Path) -> None:
        self._entries, self._writable = read_entries(path, CACHE_KIND, _VERSION, "colormap cache")

    def get(self, key: str, *, now: float, max_age: float = MAX_AGE) -> list[Colormap] | None:
        """The list kept under ``key`` if it is younger than ``max_age`` seconds."""
        entry = self._entries.get(key)
        try:
            if entry is None or not 0 <= now - float(entry["fetched"]) <= max_age:
                return None
            return [Colormap(str(name), kind) for name, kind in entry["colormaps"]]
        except (KeyError, TypeError, ValueError):
            return None

    def put(self, key: str, colormaps: Sequence[Colormap], *, now: float) -> None:
        self._entries[key] = {"fetched": now, "colormaps": [[c.name, c.type] for c in colormaps]}
        self.changed = True

    def save(self) -> None:
        """Write the cache if it changed; a failure is a warning: it is only a cache."""
        if self.path is None or not self.changed or not self._writable:
            return
        if write_entries(self.path, CACHE_KIND, _VERSION, self._entries, "colormap cache"):
            self.changed = False


class ColormapClient(ApiSession):
    """The API root's colormap endpoints: GETs of small JSON answers."""

    async def fetch(self, path: str, query: Mapping[str, str]) -> tuple[int, Any]:
        """``(200, JSON)``, or ``(status, None)`` for a not-found answer; raises otherwise."""
        url = URL(str(self.api_url) + path).with_query(dict(query))
        answer = await self.call("GET", url, doing="asking for colormaps")
        if answer.status in _NOT_FOUND:
            return answer.status, None
        if answer.status != 200:
            raise answer.error()
        try:
            return answer.status, orjson.loads(answer.body)
        except orjson.JSONDecodeError:
            raise TransientError("the colormap answer is not JSON") from None


class ColormapLane:
    """Colormap requests, paced by their own limiter, retried within tight bounds."""

    __slots__ = ("client", "limiter", "requests")

    def __init__(self, client: ColormapClient, limiter: Limiter) -> None:
        self.client = client
        self.limiter = limiter
        self.requests = 0

    def __repr__(self) -> str:
        return f"<ColormapLane requests={self.requests} {self.limiter!r}>"

    async def get(self, path: str, query: Mapping[str, str] | None = None) -> tuple[int, Any]:
        failures = limited = 0
        while True:
            sent = await self.limiter.sending(await self.limiter.acquire())
            self.requests += 1
            try:
                answer = await self.client.fetch(path, query or {})
            except RateLimited as exc:
                limited += 1
                pause = self.limiter.rate_limited_by_server(
                    exc.retry_after, sent, resolution=exc.retry_after_resolution
                )
                if limited >= MAX_LIMITED or pause > MAX_PAUSE:
                    raise
                continue
            except ApiError as exc:
                self.limiter.succeeded(sent)
                failures += 1
                if not exc.retryable or failures >= MAX_ATTEMPTS:
                    raise
                await anyio.sleep(1.0)
                continue
            self.limiter.succeeded(sent)
            return answer


def _cache_key(root: str, kind: str | None) -> str:
    # Host and path, not the port: a simulator on a new port each time is the same service.
    url = URL(root)
    return f"{url.host}{url.path.rstrip('/')}|{kind or 'all'}"


def cached_colormaps(
    cache: ColormapCache, root: str, kind: str | None, *, now: float, max_age: float = MAX_AGE
) -> list[Colormap] | None:
    """The list of ``kind`` the cache holds for the API at ``root``, if young enough."""
    cached = cache.get(_cache_key(root, kind), now=now, max_age=max_age)
    if cached is not None or not kind:
        return cached
    every = cache.get(_cache_key(root, None), now=now, max_age=max_age)
    if every and all(c.type for c in every):  # typed: filter it here, ask nothing
        return [c for c in every if (c.type or "").lower() == kind]
    return None


async def offered_colormaps(
    lane: ColormapLane,
    cache: ColormapCache,
    *,
    kind: str | None = None,
    refresh: bool = False,
    now: float | None = None,
) -> list[Colormap]:
    """The colormaps EOS offers (of ``kind``, continuous or discrete), from the cache when
    it holds a list of the day. Raises ``ApiError`` or ``ValueError`` (an answer of no
    known shape, or a not-found answer for the list)."""
    now = time.time() if now is None else now
    root = str(lane.client.api_url)
    if not refresh:
        cached = cached_colormaps(cache, root, kind, now=now)
        if cached is not None:
            return cached
    query = {"INCLUDE_TYPE": "true"} | ({"TYPE": kind} if kind else {})
    status, data = await lane.get(COLORMAP_PATH + "/ALL", query)
    if data is None:
        raise ValueError(f"the colormap list answered HTTP {status}")
    colormaps = parse_colormap_list(data)
    if not colormaps:
        raise ValueError("the colormap list is empty")
    cache.put(_cache_key(root, kind), colormaps, now=now)
    return colormaps


async def _lists(lane: ColormapLane, cache: ColormapCache) -> bool:
    """Whether the colormap list answers here (from the cache, or asked)."""
    try:
        await offered_colormaps(lane, cache)
    except (ApiError, ValueError):
        return False
    return True


async def check_colormaps(
    jobs: Sequence[Job],
    *,
    api_url: str,
    key: ApiKey,
    rate: Rate = Rate(10, 60.0),  # noqa: B008 - frozen, so a safe default
    cache: Path | bool | None = True,
    request_timeout: float = TIMEOUT,
) -> list[str]:
    """Check every colormap the jobs use (see the module docstring); return the notes to
    show (what could not be checked), or raise ``ManifestError`` naming the jobs."""
    used = colormaps_used(jobs)
    if not used:
        return []
    names = [value for value in used if not is_custom_id(value)]
    ids = [value for value in used if is_custom_id(value)]
    store = ColormapCache(default_cache_path() if cache is True else cache or None)
    notes: list[str] = []
    unknown: dict[str, str] = {}
    missing: dict[str, str] = {}
    async with ColormapClient(api_root(api_url), key, timeout=request_timeout) as client:
        lane = ColormapLane(client, Limiter("colormap", rate))
        listed = down = False
        if names:
            try:
                offered = await offered_colormaps(lane, store)
            except (ApiError, ValueError) as exc:
                notes.append(f"colormap names not checked: {exc}")
                down = isinstance(exc, ApiError)  # not just an odd list: unreachable
            else:
                listed = True
                unknown = unknown_names(names, {c.name for c in offered})
        if down and ids:
            notes.append(f"colormap ids not checked either ({', '.join(ids)})")
        found = False
        for n, value in enumerate([] if down else ids):
            try:
                status, _ = await lane.get(f"{COLORMAP_PATH}/{value}")
            except ApiError as exc:
                # The endpoint is down or refuses us: the other ids would wait it out too,
                # each delaying the run for a check that is only a convenience.
                notes.append(f"colormap ids not checked ({', '.join(ids[n:])}): {exc}")
                break
            if status in _NOT_FOUND:
                missing[value] = ""
            else:
                found = True
        if missing and not (listed or found or await _lists(lane, store)):
            # Every id "not found", and no sign the endpoint exists here: not believed.
            notes.append(f"colormap ids not checked: HTTP 404 for each ({', '.join(missing)})")
            missing.clear()
    store.save()
    problems = colormap_problems(unknown, used, what="not a colormap EOS offers")
    problems += colormap_problems(
        missing,
        used,
        what="not the id of a custom colormap EOS knows (custom colormaps are made in EOS, "
        "then used here by id)",
    )
    if problems:
        raise ManifestError(problems)
    return notes
