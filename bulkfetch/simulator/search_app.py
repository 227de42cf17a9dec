"""The Search API's logic: from a request body to an answer, over the catalogue.

Contract:

- Pure: no I/O, no clock (``today`` is an argument). ``app`` gates the request (key, rate
  limit, faults), then calls ``parse_query`` and ``run_query``; a ``ValueError`` from either
  is the 400 answer's message.
- The body is ``{"search": {...}, "sort": {"date": "desc"|"asc"}, "fields": [...],
  "limit": int, "page": int}``; see ``parse_query`` for each rule. Filters on
  ``cloudCoverage`` and ``dataCoveragePercentage`` take a range ``{"from": a, "to": b}``
  (inclusive, either end optional), a list of allowed values, or one exact value. A
  scene without the key (Sentinel-1 has no cloud cover) does not pass a filter on it, as
  a search engine's range query leaves out documents without the field: a client must
  not send a cloud filter for a dataset without cloud cover.
- The answer is ``{"results": [...], "meta": {"limit", "found", "page"}}``, results sorted
  by date then view_id (both in the requested direction), so paging is total and stable.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from bulkfetch.simulator.catalogue import DATASETS, search_scenes, shape_bbox

__all__ = ["FILTERABLE", "SearchQuery", "parse_query", "run_query"]

#: The result keys a search may filter on.
FILTERABLE = ("cloudCoverage", "dataCoveragePercentage")
_DEFAULT_LIMIT = 100

Filter = Callable[[float], bool]


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """One checked search request."""

    datasets: tuple[str, ...]
    bbox: tuple[float, float, float, float]
    date_from: dt.date
    date_to: dt.date
    #: (result key, predicate) pairs a result must all pass.
    filters: tuple[tuple[str, Filter], ...]
    descending: bool
    #: The keys each result keeps; None keeps them all.
    fields: tuple[str, ...] | None
    #: Already clamped to the configured maximum.
    limit: int
    page: int


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _filter(name: str, spec: Any) -> Filter:
    """A predicate for ``search.<name>``: a range, a list of values, or one value."""
    where = f"search.{name}"
    if isinstance(spec, dict):
        unknown = sorted(set(spec) - {"from", "to"})
        if unknown:
            raise ValueError(f"{where} takes 'from' and 'to', not {', '.join(unknown)}")
        lo, hi = spec.get("from"), spec.get("to")
        for end, value in (("from", lo), ("to", hi)):
            if value is not None and not _number(value):
                raise ValueError(f"{where}.{end} must be a number, got {value!r}")
        low = -math.inf if lo is None else float(lo)
        high = math.inf if hi is None else float(hi)
        return lambda x: low <= x <= high
    if isinstance(spec, list):
        if not all(_number(v) for v in spec):
            raise ValueError(f"{where} as a list must hold numbers only")
        allowed = frozenset(float(v) for v in spec)
        return lambda x: x in allowed
    if _number(spec):
        exact = float(spec)
        return lambda x: x == exact
    raise ValueError(f"{where} must be a range {{from, to}}, a list of values, or a number")


def _date(value: Any, where: str) -> dt.date:
    if not isinstance(value, str):
        raise ValueError(f"{where} must be a date YYYY-MM-DD")  # noqa: TRY004 - a 400, not a bug
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{where} is not a date YYYY-MM-DD: {value[:40]!r}") from None


def _positive_int(body: Mapping[str, Any], name: str, default: int) -> int:
    value = body.get(name, default)
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def _datasets(dataset: str | None, search: Mapping[str, Any]) -> tuple[str, ...]:
    names = [dataset] if dataset is not None else search.get("satellites")
    if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
        raise ValueError(
            "search.satellites must be a non-empty list of dataset names "
            f"(known: {', '.join(DATASETS)}), or name one in the URL"
        )
    for name in names:
        if name not in DATASETS:
            raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return tuple(dict.fromkeys(names))


def parse_query(raw: bytes, dataset: str | None, *, max_days: int, max_limit: int) -> SearchQuery:
    """Check a search request's body; ``ValueError`` says what is wrong with it.

    ``dataset`` is the one named in the URL, or None for the endpoint that reads
    ``search.satellites``. ``search.date`` needs both ends, ``from <= to``, at most
    ``max_days`` days with both ends counted; ``search.shape`` a GeoJSON Polygon or
    MultiPolygon; ``search.shapeRelation`` may only be ``INTERSECTS``. ``sort.date`` is
    ``desc`` (default) or ``asc``; ``limit`` (default 100) and ``page`` (default 1) are
    integers >= 1, and ``limit`` is clamped to ``max_limit``. ``fields`` is a list of names.
    Other keys are ignored, as filters the simulator does not know.
    """
    if dataset is not None and dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; known: {', '.join(DATASETS)}")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ValueError("body must be a JSON object")  # noqa: TRY004 - a 400, not a bug
    search = body.get("search")
    if not isinstance(search, dict):
        raise ValueError("search must be a JSON object")  # noqa: TRY004 - a 400, not a bug
    datasets = _datasets(dataset, search)
    dates = search.get("date")
    if not (isinstance(dates, dict) and "from" in dates and "to" in dates):
        raise ValueError('search.date is required: {"from": "YYYY-MM-DD", "to": "YYYY-MM-DD"}')
    date_from = _date(dates["from"], "search.date.from")
    date_to = _date(dates["to"], "search.date.to")
    if date_from > date_to:
        raise ValueError(f"search.date.from ({date_from}) is after search.date.to ({date_to})")
    if (date_to - date_from).days + 1 > max_days:
        raise ValueError(f"date range longer than {max_days} days; split it")
    if "shape" not in search:
        raise ValueError("search.shape is required: a GeoJSON Polygon or MultiPolygon")
    bbox = shape_bbox(search["shape"], name="search.shape")
    relation = search.get("shapeRelation", "INTERSECTS")
    if relation != "INTERSECTS":
        raise ValueError(f"search.shapeRelation must be INTERSECTS, got {relation!r}")
    filters = tuple((name, _filter(name, search[name])) for name in FILTERABLE if name in search)
    sort = body.get("sort", {"date": "desc"})
    if not (
        isinstance(sort, dict)
        and set(sort) <= {"date"}
        and sort.get("date", "desc") in ("asc", "desc")
    ):
        raise ValueError('sort must be {"date": "desc"} or {"date": "asc"}')
    fields = body.get("fields")
    if fields is not None and not (
        isinstance(fields, list) and all(isinstance(f, str) for f in fields)
    ):
        raise ValueError("fields must be a list of result key names")
    return SearchQuery(
        datasets=datasets,
        bbox=bbox,
        date_from=date_from,
        date_to=date_to,
        filters=filters,
        descending=sort.get("date", "desc") == "desc",
        fields=tuple(fields) if fields is not None else None,
        limit=min(_positive_int(body, "limit", _DEFAULT_LIMIT), max_limit),
        page=_positive_int(body, "page", 1),
    )


def run_query(query: SearchQuery, *, today: dt.date, seed: int, root: str) -> dict[str, Any]:
    """The answer to ``query``: one page of the matching scenes, with ``meta``.

    ``root`` is the server's root URL, for each result's ``tms`` template.
    """
    found = [
        scene
        for name in query.datasets
        for scene in search_scenes(
            name, query.bbox, query.date_from, query.date_to, today=today, seed=seed
        )
        if all(key in scene and keep(scene[key]) for key, keep in query.filters)
    ]
    found.sort(key=lambda s: (s["date"], s["view_id"]), reverse=query.descending)
    start = (query.page - 1) * query.limit
    results = []
    for scene in found[start : start + query.limit]:
        full = {**scene, "tms": f"{root}/api/render/{scene['view_id']}/{{z}}/{{x}}/{{y}}"}
        if query.fields is not None:
            full = {k: v for k, v in full.items() if k in query.fields}
        results.append(full)
    return {
        "results": results,
        "meta": {"limit": query.limit, "found": len(found), "page": query.page},
    }
