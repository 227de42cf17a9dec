"""From fields and dates to a manifest: EOS's Search API, so users never hand-write view_ids.

:func:`search` (and :func:`search_async`) searches each field over each dataset, keeps the
scenes the user's :class:`~bulkfetch.scene_search.scenes.Selection` asks for, and returns
the jobs, one per field × scene × bm_type, named from a template;
:func:`write_manifest` writes them as a manifest ready for ``bulkfetch run``.
``bulkfetch search`` is the same from the shell.

Everything the user gave is checked before the first request (the fields file, the dates,
the name template, the job parameters, through the manifest's own validation), so a typo
never costs a request. Each request is one page of one calendar year for one field (EOS
recommends at most a year per request), over every dataset asked for: several datasets
share each request through EOS's multi-dataset endpoint (``search.satellites``), while
the cache keeps each dataset's ranges apart (see :mod:`bulkfetch.scene_search.plan`); a server
that refuses that endpoint, or answers scenes whose dataset cannot be told, is asked one
dataset at a time. Pages are followed until ``found`` is reached. Requests go through a
lane of their own in the limiter, at ``search_rate`` (EOS does not document the Search
API's limits: 5/min by default, learned down on 429s). A 429 pauses the lane
(``Retry-After`` honoured); connection errors, 5xx and malformed answers are retried
``max_attempts`` times with exponential back-off; 401/403 stop the search; any other
refusal fails that field with the server's message. A field that
fails makes the whole search fail (``SearchResult.failed``): a manifest missing a field
would look complete. The cache (:mod:`bulkfetch.scene_search.cache`) keeps what was found, so a
re-run asks only about what it cannot know yet.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import orjson
from yarl import URL

from bulkfetch.config import ApiKey, Rate, api_root, load_api_key
from bulkfetch.durable import atomic_write
from bulkfetch.errors import (
    ApiError,
    ManifestError,
    UsageError,
    first_error,
)
from bulkfetch.limiter.lane import Limiter
from bulkfetch.manifest.jobs import parse_manifest
from bulkfetch.scene_search.cache import SearchCache, default_cache_path
from bulkfetch.scene_search.client import SearchClient, SearchLane, SearchStats
from bulkfetch.scene_search.fields import Field, load_fields
from bulkfetch.scene_search.scenes import (
    DEFAULT_TEMPLATE,
    Scene,
    Selection,
    check_template,
    job_names,
    select,
)
from bulkfetch.scene_search.searcher import Searcher
from bulkfetch.urls import check_service_url

__all__ = [
    "DEFAULT_SEARCH_URL",
    "SearchResult",
    "SearchStats",
    "check_output",
    "search",
    "search_async",
    "search_url_for",
    "write_manifest",
]

log = logging.getLogger(__name__)

DEFAULT_SEARCH_URL = "https://api-connect.eos.com/api/lms/search/v2"
_SEARCH_PATH = "/api/lms/search/v2"


def search_url_for(api_url: str) -> str:
    """The Search API beside a task API URL (same host), or EOS's own."""
    return api_root(api_url) + _SEARCH_PATH


def _service(url: str) -> str:
    """The catalogue a URL names, for cache keys: host and path. Not the port, so the
    simulator a demo or test starts on a new port each time is the same catalogue; not
    the query, which could hold a key."""
    parsed = URL(url)
    return f"{parsed.host}{parsed.path}"


@dataclass(slots=True)
class SearchResult:
    """The jobs found, ready to write; ``failed`` maps a field id to why its search failed."""

    jobs: list[dict[str, Any]]
    defaults: dict[str, Any]
    stats: SearchStats
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed


def _check_dates(date_from: dt.date, date_to: dt.date) -> None:
    if date_to < date_from:
        raise UsageError(f"--to {date_to} is before --from {date_from}")


def _filters(max_cloud: float | None, min_coverage: float | None) -> dict[str, Any]:
    filters: dict[str, Any] = {}
    if max_cloud is not None:
        filters["cloudCoverage"] = {"from": 0, "to": max_cloud}
    if min_coverage is not None:
        filters["dataCoveragePercentage"] = {"from": min_coverage, "to": 100}
    return filters


def _manifest_bytes(defaults: Mapping[str, Any], jobs: Sequence[Mapping[str, Any]]) -> bytes:
    lines = [orjson.dumps({"defaults": dict(defaults)})] if defaults else []
    lines.extend(orjson.dumps(job) for job in jobs)
    return b"\n".join(lines) + b"\n"


def _check_params(
    fields: Sequence[Field], bm_types: Sequence[str], params: Mapping[str, Any], template: str
) -> None:
    """Validate what every job will carry by building a sample manifest of it, so a bad
    ``px_size`` or ``format`` is found before any request, by the manifest's own rules."""
    try:
        check_template(template)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if not bm_types:
        raise UsageError("give at least one --bm-type")
    if "view_id" in params or "geometry" in params or "name" in params:
        raise UsageError("view_id, geometry and name come from the search, not from --param")
    sample = [
        {"view_id": "S2/1/C/AA/2020/1/1/0", "bm_type": bm, "geometry": fields[0].geometry}
        for bm in bm_types
    ]
    try:
        parse_manifest(_manifest_bytes(params, sample), filename="parameters.jsonl")
    except ManifestError as exc:
        said = "; ".join(f"{p.field}: {p.message}" if p.field else p.message for p in exc.problems)
        raise UsageError(f"the job parameters are not valid: {said}") from None


def _build_jobs(
    chosen: Sequence[tuple[Field, list[Scene]]], bm_types: Sequence[str], template: str
) -> list[dict[str, Any]]:
    rows = [(fld, scene, bm) for fld, scenes in chosen for scene in scenes for bm in bm_types]
    names = job_names(template, [(fld.id, scene, bm) for fld, scene, bm in rows])
    return [
        {
            "view_id": scene.view_id,
            "bm_type": bm,
            "geometry": fld.geometry,
            "name": name,
            "_field": fld.id,
            "_date": scene.date.isoformat(),
            "_cloud": scene.cloud,
            "_dataset": scene.dataset,
        }
        for (fld, scene, bm), name in zip(rows, names, strict=True)
    ]


async def search_async(
    fields: Path | str | Sequence[Field],
    *,
    date_from: dt.date,
    date_to: dt.date,
    datasets: Sequence[str] = ("sentinel2l2a",),
    bm_types: Sequence[str] = ("NDVI",),
    params: Mapping[str, Any] | None = None,
    max_cloud: float | None = None,
    min_coverage: float | None = None,
    one_per_days: int | None = None,
    best_per_month: int | None = None,
    single_tile: bool = False,
    name_template: str = DEFAULT_TEMPLATE,
    id_property: str | None = None,
    api_key: ApiKey | str | None = None,
    search_url: str | None = None,
    search_rate: Rate | str = Rate(5, 60.0),  # noqa: B008 - frozen, so a safe default
    cache: Path | bool | None = True,
    settle_days: int = 10,
    today: dt.date | None = None,
    max_attempts: int = 6,
    request_timeout: float = 60.0,
    concurrency: int = 4,
    dry_run: bool = False,
) -> SearchResult:
    """Search every field and return the jobs to run. See the module docstring.

    ``dry_run``: check everything, consult the cache, send nothing and need no key; the
    result has no jobs, and ``stats.questions`` says how many requests at least a real
    search would send (one more per extra page).

    ``cache``: ``True`` for the default file (``~/.cache/bulkfetch/search-cache.json``), a
    path, or ``False``/``None`` for none. ``today`` (default: the UTC date) is when the
    catalogue is seen from: the last ``settle_days`` before it are never taken as settled.
    """
    field_list = (
        load_fields(fields, id_property=id_property)
        if isinstance(fields, Path | str)
        else list(fields)
    )
    if not field_list:
        raise UsageError("no fields to search")
    _check_dates(date_from, date_to)
    params = dict(params or {"px_size": 10})
    datasets = list(dict.fromkeys(datasets))
    if not datasets:
        raise UsageError("give at least one --dataset")
    _check_params(field_list, bm_types, params, name_template)
    rate = Rate.parse(search_rate) if isinstance(search_rate, str) else search_rate
    url = check_service_url(search_url, "search_url") if search_url else DEFAULT_SEARCH_URL
    today = today or dt.datetime.now(dt.UTC).date()
    store = SearchCache(default_cache_path() if cache is True else cache or None)
    stats = SearchStats(fields=len(field_list))
    filters = _filters(max_cloud, min_coverage)
    settled_until = today - dt.timedelta(days=settle_days)
    if dry_run:
        planner = Searcher(None, stats, store, _service(url), settled_until)
        for fld in field_list:
            planner.plan(fld, datasets, date_from, date_to, filters)
        return SearchResult(jobs=[], defaults=params, stats=stats)
    if api_key is None:
        api_key = load_api_key(None)
    key = ApiKey(api_key) if isinstance(api_key, str) else api_key
    selection = Selection(
        max_cloud=max_cloud,
        min_coverage=min_coverage,
        single_tile=single_tile,
        one_per_days=one_per_days,
        best_per_month=best_per_month,
    )
    chosen: dict[str, list[Scene]] = {}
    failed: dict[str, str] = {}
    try:
        async with SearchClient(url, key, timeout=request_timeout) as client:
            lane = SearchLane(client, Limiter("search", rate), stats, max_attempts)
            searcher = Searcher(lane, stats, store, _service(url), settled_until)
            gate = anyio.Semaphore(concurrency)

            async def one(fld: Field) -> None:
                async with gate:
                    try:
                        found = await searcher.field_scenes(
                            fld, datasets, date_from, date_to, filters
                        )
                    except ApiError as exc:
                        if exc.fatal:
                            raise
                        failed[fld.id] = str(exc)
                        log.error("field %s: search failed: %s", fld.id, exc)  # noqa: TRY400 - no traceback
                        return
                    stats.scenes_found += len(found)
                    chosen[fld.id] = select(found, selection)
                    log.info(
                        "field %s: %d scenes, %d kept", fld.id, len(found), len(chosen[fld.id])
                    )

            try:
                async with anyio.create_task_group() as tg:
                    for fld in field_list:
                        tg.start_soon(one, fld)
            except BaseExceptionGroup as group:
                raise first_error(group) from None
    finally:
        store.save()
    ordered = [(fld, chosen[fld.id]) for fld in field_list if fld.id in chosen]
    stats.scenes_kept = sum(len(scenes) for _, scenes in ordered)
    jobs = _build_jobs(ordered, bm_types, name_template) if not failed else []
    return SearchResult(jobs=jobs, defaults=params, stats=stats, failed=failed)


def check_output(path: Path) -> None:
    """Refuse an output the manifest cannot be written to, before any request is sent."""
    if path.suffix.lower() != ".jsonl":
        raise UsageError(f"{path}: the manifest is written as JSON Lines; name it *.jsonl")
    if not path.parent.is_dir():
        raise UsageError(f"{path}: the folder {path.parent} does not exist")


def search(fields: Path | str | Sequence[Field], **options: Any) -> SearchResult:
    """:func:`search_async` for synchronous code (runs its own event loop)."""

    async def main() -> SearchResult:
        return await search_async(fields, **options)

    return anyio.run(main)


def write_manifest(result: SearchResult, path: Path) -> int:
    """Write ``result``'s jobs as a JSON Lines manifest, atomically; returns the job count.

    The bytes are validated as a manifest first, so the file is always one ``bulkfetch run``
    accepts; an old manifest at ``path`` is replaced only by a complete new one.
    """
    check_output(path)
    data = _manifest_bytes(result.defaults, result.jobs)
    manifest = parse_manifest(data, filename=str(path))
    atomic_write(path, data)
    return len(manifest.jobs)
