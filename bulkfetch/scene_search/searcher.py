"""One field's scenes over a date range: what the cache knows, and the requests for the rest.

:class:`Searcher` answers "which scenes of these datasets over this field" for
:mod:`bulkfetch.scene_search.finder`: it asks the cache first (:mod:`.cache`), plans the
requests for the date ranges the cache cannot answer (:mod:`.plan`: a calendar year at
most, several datasets sharing one multi-dataset request), sends them through the search
lane (:mod:`.client`) and stores what comes back. A server that refuses the multi-dataset
endpoint, or answers scenes whose dataset cannot be told, is asked one dataset at a time
from then on. A result that is not a scene is skipped, counted and logged.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bulkfetch.errors import EndpointError
from bulkfetch.scene_search.cache import SearchCache, query_key
from bulkfetch.scene_search.client import PAGE_SIZE, SearchLane, SearchStats
from bulkfetch.scene_search.fields import Field
from bulkfetch.scene_search.plan import SearchRequest, dataset_of, group_requests, server_filters
from bulkfetch.scene_search.scenes import Scene, parse_scene, split_dates

__all__ = ["Searcher"]

log = logging.getLogger(__name__)

#: What each result must hold (the Search API's "fields" member: members of a result, not
#: the user's fields); asking only for these keeps pages small.
_RESULT_MEMBERS = ["view_id", "sceneID", "date", "cloudCoverage", "dataCoveragePercentage"]
Range = tuple[dt.date, dt.date]


@dataclass(slots=True)
class Searcher:
    """Answers "which scenes of these datasets over this field" from the cache and the lane."""

    lane: SearchLane | None  # None: plan only (a dry run sends nothing)
    stats: SearchStats
    cache: SearchCache
    service: str
    settled_until: dt.date
    #: Several datasets in one request, until a server refuses the multi-dataset endpoint.
    multi: bool = True

    def plan(
        self,
        fld: Field,
        datasets: Sequence[str],
        start: dt.date,
        end: dt.date,
        filters: dict[str, Any],
    ) -> tuple[dict[str, str], dict[str, list[dict[str, Any]]], list[SearchRequest]]:
        """Per dataset, the cache key and the scenes the cache knows; and the requests
        still to send, each covering every dataset that needs its date range."""
        keys: dict[str, str] = {}
        known: dict[str, list[dict[str, Any]]] = {}
        todo: dict[str, tuple[list[Range], dict[str, Any]]] = {}
        for dataset in datasets:
            sent = server_filters(dataset, filters)
            keys[dataset] = query_key(
                {"url": self.service, "dataset": dataset, "shape": fld.geometry, **sent}
            )
            known[dataset], gaps = self.cache.lookup(keys[dataset], start, end)
            if not gaps:
                self.stats.from_cache += 1
            todo[dataset] = ([piece for gap in gaps for piece in split_dates(*gap)], sent)
        requests = group_requests(todo)
        self.stats.questions += len(requests)
        return keys, known, requests

    async def field_scenes(
        self,
        fld: Field,
        datasets: Sequence[str],
        start: dt.date,
        end: dt.date,
        filters: dict[str, Any],
    ) -> list[Scene]:
        """The scenes of the datasets over one field, from the cache and the API."""
        keys, known, requests = self.plan(fld, datasets, start, end, filters)
        raw = {dataset: list(known[dataset]) for dataset in datasets}
        for request in requests:
            found = await self._ask(fld, request)
            for dataset in request.datasets:
                self.cache.store(
                    keys[dataset],
                    (request.start, request.end),
                    found[dataset],
                    settled_until=self.settled_until,
                )
                raw[dataset].extend(found[dataset])
        scenes: list[Scene] = []
        for dataset in datasets:
            by_view = {}
            for obj in raw[dataset]:
                scene = parse_scene(obj, dataset)
                by_view[scene.view_id] = scene
            scenes.extend(by_view.values())
        return scenes

    async def _ask(self, fld: Field, request: SearchRequest) -> dict[str, list[dict[str, Any]]]:
        """The scenes found for one request, by dataset: one multi-dataset search when it
        covers several, else (or when that cannot be used) one search per dataset."""
        assert self.lane is not None
        search: dict[str, Any] = {
            "date": {"from": request.start.isoformat(), "to": request.end.isoformat()},
            "shape": fld.geometry,
            "shapeRelation": "INTERSECTS",
            **request.filters,
        }
        query = {
            "search": search,
            "sort": {"date": "asc"},
            "fields": _RESULT_MEMBERS,
            "limit": PAGE_SIZE,
        }
        if len(request.datasets) > 1 and self.multi:
            satellites = {**search, "satellites": list(request.datasets)}
            try:
                results = await self.lane.pages(None, {**query, "search": satellites})
            except EndpointError as exc:
                self.multi = False
                log.warning("multi-dataset search refused (%s); asking each dataset alone", exc)
            else:
                by_dataset = self._sorted(fld, results, request.datasets)
                if by_dataset is not None:
                    return by_dataset
                log.warning(
                    "%s: a multi-dataset answer does not say which dataset each scene is "
                    "from; asking each dataset alone",
                    fld.id,
                )
        found: dict[str, list[dict[str, Any]]] = {}
        for dataset in request.datasets:
            found[dataset] = [
                scene.to_json()
                for obj in await self.lane.pages(dataset, query)
                if (scene := self._parse(fld, obj, dataset)) is not None
            ]
        return found

    def _sorted(
        self, fld: Field, results: list[dict[str, Any]], datasets: Sequence[str]
    ) -> dict[str, list[dict[str, Any]]] | None:
        """A multi-dataset answer's scenes by dataset, or None if one cannot be placed."""
        found: dict[str, list[dict[str, Any]]] = {dataset: [] for dataset in datasets}
        for obj in results:
            if self._parse(fld, obj, datasets[0]) is None:
                continue
            dataset = dataset_of(obj, datasets)
            if dataset is None:
                return None
            found[dataset].append(parse_scene(obj, dataset).to_json())
        return found

    def _parse(self, fld: Field, obj: object, dataset: str) -> Scene | None:
        try:
            return parse_scene(obj, dataset)
        except ValueError as exc:
            self.stats.bad_results += 1
            log.warning("%s: %s: skipped a search result: %s", fld.id, dataset, exc)
            return None
