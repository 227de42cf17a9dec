"""Tests for bulkfetch.scene_search.searcher: what one field's search asks, without sockets.

The requests themselves (pages, multi-dataset answers and their fallbacks) go through the
simulator in tests/scene_search/test_finder.py and test_datasets.py.
"""

from __future__ import annotations

import datetime as dt

from bulkfetch.scene_search.cache import SearchCache
from bulkfetch.scene_search.client import SearchStats
from bulkfetch.scene_search.fields import Field
from bulkfetch.scene_search.searcher import Searcher
from tests.conftest import square

FIELD = Field("north", square(-104.9, 27.1), "feature 1")
SETTLED = dt.date(2024, 6, 1)


def planner(cache: SearchCache | None = None) -> Searcher:
    return Searcher(None, SearchStats(), cache or SearchCache(None), "eos/search", SETTLED)


def test_a_field_over_two_years_and_two_datasets_is_two_shared_requests() -> None:
    searcher = planner()
    keys, known, requests = searcher.plan(
        FIELD, ["sentinel2l2a", "landsat8"], dt.date(2022, 11, 1), dt.date(2023, 2, 1), {}
    )
    assert set(keys) == set(known) == {"sentinel2l2a", "landsat8"}
    assert keys["sentinel2l2a"] != keys["landsat8"]
    assert known == {"sentinel2l2a": [], "landsat8": []}
    # One request per calendar year, each for both datasets.
    assert [(r.start, r.end) for r in requests] == [
        (dt.date(2022, 11, 1), dt.date(2022, 12, 31)),
        (dt.date(2023, 1, 1), dt.date(2023, 2, 1)),
    ]
    assert all(set(r.datasets) == {"sentinel2l2a", "landsat8"} for r in requests)
    assert searcher.stats.questions == 2 and searcher.stats.from_cache == 0


def test_what_the_cache_has_settled_is_not_asked_again() -> None:
    cache = SearchCache(None)
    searcher = planner(cache)
    start, end = dt.date(2023, 5, 1), dt.date(2023, 9, 30)
    keys, _, _ = searcher.plan(FIELD, ["sentinel2l2a"], start, end, {})
    scene = {"view_id": "S2/13/R/EL/2023/7/19/0", "date": "2023-07-19"}
    cache.store(keys["sentinel2l2a"], (start, end), [scene], settled_until=SETTLED)
    again = planner(cache)
    _, known, requests = again.plan(FIELD, ["sentinel2l2a"], start, end, {})
    assert known == {"sentinel2l2a": [scene]}
    assert requests == []
    assert again.stats.from_cache == 1 and again.stats.questions == 0


def test_cloud_filters_are_part_of_the_question() -> None:
    searcher = planner()
    span = (dt.date(2023, 5, 1), dt.date(2023, 9, 30))
    clear, _, _ = searcher.plan(FIELD, ["sentinel2l2a"], *span, {})
    cloudy, _, _ = searcher.plan(
        FIELD, ["sentinel2l2a"], *span, {"cloudCoverage": {"from": 0, "to": 20}}
    )
    assert clear["sentinel2l2a"] != cloudy["sentinel2l2a"]
