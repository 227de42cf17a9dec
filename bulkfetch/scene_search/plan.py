"""How one field's search over several datasets becomes requests: pure decisions, no I/O.

EOS bills its Search API per request on many plans, and its multi-dataset endpoint
(``POST .../search/v2`` with ``search.satellites``) answers for several datasets at once,
so a field searched over three datasets costs one request (and its pages), not three.
The cache still keeps each dataset's settled date ranges apart, so:

* :func:`server_filters` is what to send for one dataset. A dataset without cloud cover
  (Sentinel-1 radar) is sent no ``cloudCoverage`` nor ``dataCoveragePercentage`` filter: a
  search engine's range query leaves out results without the field, so the filter would
  hide every scene. The client filters again anyway (:func:`bulkfetch.scene_search.scenes.select`),
  keeping a scene without the figure.
* :func:`group_requests` turns each dataset's date ranges still to ask (and its filters)
  into requests: one per distinct range and filters, naming every dataset that needs it.
  Datasets whose caches agree (the usual case) share every request.
* :func:`dataset_of` tells which dataset a result of a multi-dataset answer belongs to:
  its own ``dataset`` member when it names one of them, else its view_id's sensor
  (``S2L2A/...`` is sentinel2l2a). ``None`` when it cannot be told: the caller then asks
  each dataset on its own, rather than file a scene under the wrong one.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = ["NO_CLOUD_COVER", "SearchRequest", "dataset_of", "group_requests", "server_filters"]

Range = tuple[dt.date, dt.date]

#: Datasets whose results carry neither cloud cover nor data coverage (radar).
NO_CLOUD_COVER = frozenset({"sentinel1"})
_COVER_FILTERS = ("cloudCoverage", "dataCoveragePercentage")

#: view_id sensor prefix -> EOS dataset name.
_SENSORS = {
    "S2": "sentinel2",
    "S2L2A": "sentinel2l2a",
    "S1": "sentinel1",
    "L4": "landsat4",
    "L5": "landsat5",
    "L7": "landsat7",
    "L8": "landsat8",
    "L9": "landsat9",
    "MODIS": "modis",
    "NAIP": "naip",
    "CBERS4": "cbers4",
}


@dataclass(frozen=True, slots=True)
class SearchRequest:
    """One question to the Search API: a date range, the datasets it covers, the filters."""

    start: dt.date
    end: dt.date
    datasets: tuple[str, ...]
    filters: Mapping[str, Any]


def server_filters(dataset: str, filters: Mapping[str, Any]) -> dict[str, Any]:
    """The search filters to send for ``dataset`` (see the module docstring)."""
    if dataset in NO_CLOUD_COVER:
        return {k: v for k, v in filters.items() if k not in _COVER_FILTERS}
    return dict(filters)


def group_requests(
    todo: Mapping[str, tuple[Sequence[Range], Mapping[str, Any]]],
) -> list[SearchRequest]:
    """One request per distinct (range, filters) among ``todo``'s datasets.

    ``todo`` maps each dataset to the date ranges still to ask about and its filters. The
    requests come in date order; each lists its datasets in ``todo``'s order.
    """
    groups: dict[tuple[Range, bytes], list[str]] = {}
    chosen: dict[bytes, Mapping[str, Any]] = {}
    for dataset, (ranges, filters) in todo.items():
        canon = orjson.dumps(filters, option=orjson.OPT_SORT_KEYS)
        chosen.setdefault(canon, filters)
        for piece in ranges:
            groups.setdefault((piece, canon), []).append(dataset)
    return [
        SearchRequest(a, b, tuple(datasets), chosen[canon])
        for ((a, b), canon), datasets in sorted(groups.items(), key=lambda g: g[0])
    ]


def dataset_of(result: Mapping[str, Any], datasets: Sequence[str]) -> str | None:
    """Which of ``datasets`` a search result belongs to, or None when it cannot be told."""
    named = result.get("dataset")
    if isinstance(named, str):
        for dataset in datasets:
            if dataset.casefold() == named.casefold():
                return dataset
    view_id = result.get("view_id")
    if isinstance(view_id, str):
        sensor = _SENSORS.get(view_id.split("/", 1)[0].upper())
        if sensor in datasets:
            return sensor
    return None
