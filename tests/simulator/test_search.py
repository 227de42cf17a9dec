"""The simulator's Search API and its catalogue: the wire contract, over real sockets."""

from __future__ import annotations

import datetime as dt
import itertools
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from bulkfetch.simulator import (
    DATASETS,
    TEST_API_KEY,
    SimConfig,
    Simulator,
    run_in_thread,
    search_scenes,
    shape_bbox,
)
from bulkfetch.simulator.app import SEARCH_PATH
from bulkfetch.simulator.catalogue import tiles_for
from tests.conftest import serve

KEY = {"x-api-key": TEST_API_KEY}
TODAY = "2024-06-30"
FIELDS = orjson.loads((Path(__file__).parents[2] / "manifests" / "fields.geojson").read_bytes())
SHAPES = {f["id"]: f["geometry"] for f in FIELDS["features"]}
SHAPE = SHAPES["kansas-wheat-01"]
BBOX = shape_bbox(SHAPE)
VIEW_IDS = {
    "sentinel2": r"S2/\d{1,2}/[C-X]/[A-Z]{2}/\d{4}/[1-9]\d?/[1-9]\d?/0",
    "sentinel2l2a": r"S2L2A/\d{1,2}/[C-X]/[A-Z]{2}/\d{4}/[1-9]\d?/[1-9]\d?/0",
    "landsat8": r"L8/LC8\d{3}\d{3}\d{4}\d{3}LGN00",
    "landsat9": r"L9/LC9\d{3}\d{3}\d{4}\d{3}LGN00",
    "modis": r"MODIS/\d{2}/\d{2}/\d{7}/\d{13}",
    "sentinel1": r"S1/S1[AB]_IW_GRDH_1SDV_\d{8}T0\d{6}",
}


def fast(**changes: Any) -> SimConfig:
    base: dict[str, Any] = {
        "search_limit": 1000,
        "search_window": 1.0,
        "catalogue_today": TODAY,
    }
    return SimConfig(**{**base, **changes})


def body(
    date_from: str = "2023-01-01", date_to: str = "2023-12-31", shape: Any = SHAPE, **more: Any
) -> dict[str, Any]:
    search = {"date": {"from": date_from, "to": date_to}, "shape": shape}
    search |= more.pop("search", {})
    return {"search": search, **more}


async def post(
    session: aiohttp.ClientSession, url: str, data: Any, headers: dict[str, str] = KEY
) -> tuple[int, Any]:
    raw = data if isinstance(data, bytes) else orjson.dumps(data)
    async with session.post(url, data=raw, headers=headers) as response:
        text = await response.read()
        if response.content_type == "application/json":
            return response.status, orjson.loads(text)
        return response.status, text


def expected(dataset: str, a: str, b: str, *, today: str = TODAY, seed: int = 0) -> list[Any]:
    return search_scenes(
        dataset,
        BBOX,
        dt.date.fromisoformat(a),
        dt.date.fromisoformat(b),
        today=dt.date.fromisoformat(today),
        seed=seed,
    )


# --- the catalogue, without sockets ---------------------------------------------------------


def test_catalogue_is_deterministic_and_only_the_numbers_follow_the_seed() -> None:
    first = expected("sentinel2", "2023-01-01", "2023-12-31")
    assert first == expected("sentinel2", "2023-01-01", "2023-12-31")
    other = expected("sentinel2", "2023-01-01", "2023-12-31", seed=7)
    assert [s["view_id"] for s in other] == [s["view_id"] for s in first]
    assert [s["cloudCoverage"] for s in other] != [s["cloudCoverage"] for s in first]
    assert first == sorted(first, key=lambda s: (s["date"], s["view_id"]))


@pytest.mark.parametrize("dataset", DATASETS)
def test_catalogue_view_ids_and_values(dataset: str) -> None:
    scenes = expected(dataset, "2023-01-01", "2023-12-31")
    assert scenes
    # Radar has no cloud cover, and EOS gives no data coverage for it either.
    covers = () if dataset == "sentinel1" else ("cloudCoverage", "dataCoveragePercentage")
    for scene in scenes:
        assert set(scene) == {"view_id", "sceneID", "date", "dataset", *covers}
        assert re.fullmatch(VIEW_IDS[dataset], scene["view_id"]), scene["view_id"]
        assert scene["dataset"] == dataset
        for key in covers:
            assert isinstance(scene[key], float)
            assert 0.0 <= scene[key] <= 100.0
            assert round(scene[key], 2) == scene[key]
    one = scenes[0]
    day = dt.date.fromisoformat(one["date"])
    if dataset.startswith("sentinel2"):
        assert one["view_id"].endswith(f"/{day.year}/{day.month}/{day.day}/0")
        assert re.fullmatch(r"S2[AB]_tile_\d{8}_14SNG_0(_L2A)?", one["sceneID"])
        assert ("_L2A" in one["sceneID"]) == (dataset == "sentinel2l2a")
    elif dataset.startswith("landsat"):
        assert one["view_id"] == f"{'L8' if dataset == 'landsat8' else 'L9'}/{one['sceneID']}"
        assert one["view_id"].endswith(f"{day.year}{day.timetuple().tm_yday:03d}LGN00")


@pytest.mark.parametrize(
    ("dataset", "period", "first"),
    [
        ("sentinel2", 5, "2015-06-23"),
        ("sentinel2l2a", 5, "2017-03-28"),
        ("landsat8", 16, "2013-04-11"),
        ("landsat9", 16, "2021-10-31"),
        ("modis", 1, "2000-02-24"),
        ("sentinel1", 12, "2014-10-03"),
    ],
)
def test_catalogue_revisits_and_mission_starts(dataset: str, period: int, first: str) -> None:
    start = dt.date.fromisoformat(first)
    year = f"{start.year}-01-01", f"{start.year}-12-31"
    dates = [dt.date.fromisoformat(s["date"]) for s in expected(dataset, *year)]
    assert dates[0] >= start
    assert dates[0] - start < dt.timedelta(days=period)
    assert {(b - a).days for a, b in itertools.pairwise(dates)} == {period}
    before = start - dt.timedelta(days=1)
    assert expected(dataset, f"{start.year - 1}-01-01", before.isoformat()) == []


def test_catalogue_landsat9_is_8_days_after_landsat8_and_s2_alternates() -> None:
    l8 = {dt.date.fromisoformat(s["date"]) for s in expected("landsat8", "2022-12-01", TODAY)}
    l9 = [dt.date.fromisoformat(s["date"]) for s in expected("landsat9", "2023-01-01", TODAY)]
    assert l9
    assert all(d - dt.timedelta(days=8) in l8 for d in l9)
    crafts = [s["sceneID"][:3] for s in expected("sentinel2", "2023-01-01", "2023-03-01")]
    assert all(a != b for a, b in itertools.pairwise(crafts))
    l2a = expected("sentinel2l2a", "2023-01-01", "2023-12-31")
    l1c = expected("sentinel2", "2023-01-01", "2023-12-31")
    assert [s["date"] for s in l2a] == [s["date"] for s in l1c]


def test_catalogue_today_is_the_end_of_time() -> None:
    scenes = expected("modis", "2024-06-01", "2024-12-31")
    assert scenes[-1]["date"] == TODAY
    assert expected("modis", "2024-07-01", "2024-12-31") == []


def test_catalogue_numbers_look_real() -> None:
    scenes = search_scenes(
        "sentinel2",
        BBOX,
        dt.date(2016, 1, 1),
        dt.date(2023, 12, 31),
        today=dt.date(2024, 1, 1),
        seed=3,
    )
    clouds = [s["cloudCoverage"] for s in scenes]
    coverage = [s["dataCoveragePercentage"] for s in scenes]
    assert 0.25 < sum(c <= 10 for c in clouds) / len(clouds) < 0.42
    assert max(clouds) > 90
    assert 0.7 < sum(c == 100 for c in coverage) / len(coverage) < 0.9
    assert min(coverage) >= 15


def test_catalogue_tiles_names_and_borders() -> None:
    assert tiles_for("sentinel2", BBOX) == ["14SNG"]  # as in manifests/demo.jsonl
    border = shape_bbox(SHAPES["kansas-border-01"])
    assert tiles_for("sentinel2", border) == ["14SNF", "14SNG"]
    assert tiles_for("landsat8", border) == ["279052", "279053"]
    assert tiles_for("modis", border) == ["h08v05"]
    assert len(tiles_for("sentinel2", (-98.02, 37.97, -97.98, 38.03))) == 4
    assert len(tiles_for("sentinel2", (-98.5, 38.4, -98.5, 38.4))) == 1
    # Tile names are unique: one per cell, over the whole world.
    names = {
        dataset: [
            tiles_for(dataset, (i + 0.5, j + 0.5, i + 0.5, j + 0.5))[0]
            for i in range(-180, 180, 1)
            for j in range(-90, 90, 3)
        ]
        for dataset in ("sentinel2", "landsat8")
    }
    assert all(len(set(n)) == len(n) for n in names.values())
    assert all(re.fullmatch(r"\d{1,2}[C-X][A-Z]{2}", n) for n in names["sentinel2"])


def test_catalogue_is_fast() -> None:
    best = min(_timed(lambda: expected("sentinel2", "2023-01-01", "2023-12-31")) for _ in range(5))
    assert best < 0.01


def _timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ([1], "must be a GeoJSON Polygon"),
        ({"type": "Point", "coordinates": [1, 2]}, "Polygon or MultiPolygon, got 'Point'"),
        ({"type": "Polygon", "coordinates": []}, "non-empty list of linear rings"),
        ({"type": "Polygon", "coordinates": [[[1, 2], [3, 4]]]}, "at least 3 positions"),
        ({"type": "Polygon", "coordinates": [[[1, 2], [3, "4"], [5, 6]]]}, "[0][1]"),
        ({"type": "Polygon", "coordinates": [[[1, 2], [3, 94], [5, 6]]]}, "not a lon/lat"),
        ({"type": "MultiPolygon", "coordinates": [[[[1, 2], [3, 4]]]]}, "coordinates[0][0]"),
    ],
)
def test_shape_bbox_names_the_problem(shape: Any, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        shape_bbox(shape)


def test_shape_bbox_and_bad_calls() -> None:
    ring = (
        (1.0, 2.0),
        (3.0, 2.0),
        (3.0, 5.0),
        (1.0, 2.0),
    )  # tuples, as bulkfetch.scene_search.fields gives
    multi = {"type": "MultiPolygon", "coordinates": [[ring], [[[-1, -1], [0, 0], [0, -1]]]]}
    assert shape_bbox({"type": "Polygon", "coordinates": (ring,)}) == (1.0, 2.0, 3.0, 5.0)
    assert shape_bbox(multi) == (-1.0, -1.0, 3.0, 5.0)
    with pytest.raises(ValueError, match="unknown dataset 'sentinel3'"):
        search_scenes(
            "sentinel3",
            BBOX,
            dt.date(2023, 1, 1),
            dt.date(2023, 2, 1),
            today=dt.date(2024, 1, 1),
            seed=0,
        )
    with pytest.raises(ValueError, match="too large"):
        tiles_for("modis", (-100, 0, 0, 50))


# --- the server --------------------------------------------------------------------------------


def test_answer_shape_and_order() -> None:
    async def check(sim: Simulator, session: aiohttp.ClientSession) -> None:
        assert sim.search_url == sim.url + SEARCH_PATH == sim.url + "/api/lms/search/v2"
        async with session.post(sim.search_url + "/sentinel2", json=body(), headers=KEY) as r:
            assert (r.status, r.content_type) == (200, "application/json")
            answer = await r.json()
        want = expected("sentinel2", "2023-01-01", "2023-12-31")
        assert answer["meta"] == {"limit": 100, "found": len(want), "page": 1}
        results = answer["results"]
        assert [r["view_id"] for r in results] == [s["view_id"] for s in reversed(want)]
        for got, scene in zip(results, reversed(want), strict=True):
            assert got["tms"].startswith(sim.url + "/")
            assert {k: v for k, v in got.items() if k != "tms"} == scene
        _, asc = await post(session, sim.search_url + "/sentinel2", body(sort={"date": "asc"}))
        assert asc["results"] == results[::-1]
        assert sim.counters()["search_results"] == 2 * len(want)

    serve(fast(), check)


def test_same_request_same_answer_across_simulators_with_one_seed() -> None:
    answers: list[Any] = []

    async def check(sim: Simulator, session: aiohttp.ClientSession) -> None:
        for _ in range(2):
            answer = await post(
                session, sim.search_url + "/landsat8", body(fields=["view_id", "cloudCoverage"])
            )
            answers.append(answer)

    serve(fast(seed=5), check)
    serve(fast(seed=5), check)
    assert answers[0] == answers[1] == answers[2] == answers[3]
    assert answers[0][0] == 200
    assert all(set(r) == {"view_id", "cloudCoverage"} for r in answers[0][1]["results"])
    serve(fast(seed=6), check)
    assert answers[4] != answers[0]


def test_paging_covers_found_exactly_once() -> None:
    async def check(sim: Simulator, session: aiohttp.ClientSession) -> None:
        url = sim.search_url + "/modis"
        pages: list[Any] = []
        for page in range(1, 100):
            status, answer = await post(session, url, body(limit=40, page=page, fields=["view_id"]))
            assert status == 200
            assert answer["meta"]["page"] == page
            if not answer["results"]:
                break
            pages.extend(r["view_id"] for r in answer["results"])
        want = expected("modis", "2023-01-01", "2023-12-31")
        assert answer["meta"] == {"limit": 40, "found": len(want), "page": page}
        assert page == -(-len(want) // 40) + 1
        assert pages == [s["view_id"] for s in reversed(want)]
        assert len(set(pages)) == len(pages)
        _, clamped = await post(session, url, body(limit=1000))
        assert clamped["meta"]["limit"] == 100
        assert len(clamped["results"]) == 100
        sim.configure(search_max_limit=7)
        _, clamped = await post(session, url, body(limit=50))
        assert (clamped["meta"]["limit"], len(clamped["results"])) == (7, 7)

    serve(fast(), check)


@pytest.mark.parametrize("key", ["cloudCoverage", "dataCoveragePercentage"])
def test_every_filter_form(key: str) -> None:
    want = expected("sentinel2", "2023-01-01", "2023-12-31")
    values = sorted({s[key] for s in want})
    some = [values[0], values[len(values) // 2], 12.345]
    forms: list[tuple[Any, Callable[[float], bool]]] = [
        ({"from": 10, "to": 50}, lambda x: 10 <= x <= 50),
        ({"from": values[1]}, lambda x: x >= values[1]),
        ({"to": values[1]}, lambda x: x <= values[1]),
        ({"from": values[-1], "to": values[-1]}, lambda x: x == values[-1]),
        (some, lambda x: x in some),
        (values[2], lambda x: x == values[2]),
        (100, lambda x: x == 100),
    ]

    async def check(sim: Simulator, session: aiohttp.ClientSession) -> None:
        for spec, keep in forms:
            query = body(search={key: spec}, sort={"date": "asc"}, fields=["view_id"])
            status, answer = await post(session, sim.search_url + "/sentinel2", query)
            assert status == 200, answer
            got = [r["view_id"] for r in answer["results"]]
            assert got == [s["view_id"] for s in want if keep(s[key])], spec
            assert answer["meta"]["found"] == len(got)

    serve(fast(), check)


def test_a_filter_leaves_out_scenes_without_the_key_as_a_search_engine_does() -> None:
    radar = expected("sentinel1", "2023-01-01", "2023-12-31")
    optical = expected("sentinel2", "2023-01-01", "2023-12-31")

    async def check(sim: Simulator, session: aiohttp.ClientSession) -> None:
        url = sim.search_url + "/sentinel1"
        _, plain = await post(session, url, body())
        assert plain["meta"]["found"] == len(radar) > 0
        assert all("cloudCoverage" not in r for r in plain["results"])
        for key in ("cloudCoverage", "dataCoveragePercentage"):
            _, filtered = await post(session, url, body(search={key: {"from": 0, "to": 100}}))
            assert filtered["meta"]["found"] == 0
        both = body(search={"satellites": ["sentinel2", "sentinel1"]}, limit=100)
        _, mixed = await post(session, sim.search_url, both)
        assert mixed["meta"]["found"] == len(radar) + len(optical)
        both["search"]["cloudCoverage"] = {"from": 0, "to": 100}
        _, clouded = await post(session, sim.search_url, both)
        assert clouded["meta"]["found"] == len(optical)

    serve(fast(), check)


def test_date_bounds_are_inclusive_and_today_hides_the_future() -> None:
    async def check(sim: Simulator, session: aiohttp.ClientSession) -> None:
        url = sim.search_url + "/sentinel2"
        day = expected("sentinel2", "2023-06-01", "2023-06-30")[0]["date"]
        after = (dt.date.fromisoformat(day) + dt.timedelta(days=1)).isoformat()
        before = (dt.date.fromisoformat(day) - dt.timedelta(days=1)).isoformat()
        assert (await post(session, url, body(day, day)))[1]["meta"]["found"] == 1
        assert (await post(session, url, body(after, "2023-06-30")))[1]["meta"]["found"] == 5
        assert (await post(session, url, body("2023-06-01", before)))[1]["meta"]["found"] == 0
        _, now = await post(session, url, body("2024-06-01", "2024-12-31"))
        assert max(r["date"] for r in now["results"]) <= TODAY
        sim.configure(catalogue_today="2024-07-20")
        _, later = await post(session, url, body("2024-06-01", "2024-12-31"))
        assert later["meta"]["found"] == now["meta"]["found"] + 4
        assert {r["view_id"] for r in now["results"]} < {r["view_id"] for r in later["results"]}

    serve(fast(), check)


def test_the_border_field_is_seen_by_two_tiles_on_one_date() -> None:
    async def check(sim: Simulator, session: aiohttp.ClientSession) -> None:
        query = body(shape=SHAPES["kansas-border-01"], sort={"date": "asc"})
        for dataset in ("sentinel2", "landsat8"):
            _, answer = await post(session, f"{sim.search_url}/{dataset}", query)
            first, second = answer["results"][:2]
            assert first["date"] == second["date"]
            assert first["view_id"] != second["view_id"]

    serve(fast(), check)


@pytest.mark.parametrize("dataset", DATASETS)
def test_view_id_shapes_over_the_wire(dataset: str) -> None:
    async def check(sim: Simulator, session: aiohttp.ClientSession) -> None:
        _, answer = await post(session, f"{sim.search_url}/{dataset}", body())
        assert answer["results"]
        for result in answer["results"]:
            assert re.fullmatch(VIEW_IDS[dataset], result["view_id"])
            assert result["dataset"] == dataset

    serve(fast(), check)


def test_multi_dataset_endpoint() -> None:
    async def check(sim: Simulator, session: aiohttp.ClientSession) -> None:
        query = body(search={"satellites": ["landsat8", "sentinel2", "landsat8"]}, limit=100)
        status, answer = await post(session, sim.search_url, query)
        assert status == 200
        want = expected("landsat8", "2023-01-01", "2023-12-31") + expected(
            "sentinel2", "2023-01-01", "2023-12-31"
        )
        want.sort(key=lambda s: (s["date"], s["view_id"]), reverse=True)
        assert answer["meta"]["found"] == len(want)
        assert [r["view_id"] for r in answer["results"]] == [s["view_id"] for s in want][:100]
        assert {r["dataset"] for r in answer["results"]} == {"landsat8", "sentinel2"}

    serve(fast(), check)


BAD = [
    (b"{not json", "not valid JSON"),
    (b"", "not valid JSON"),
    ([1, 2], "body must be a JSON object"),
    ({"search": 1}, "search must be a JSON object"),
    ({"search": {"shape": SHAPE}}, "search.date is required"),
    (body(date_to="2023"), "search.date.to is not a date"),
    (body("2023-02-01", "2023-01-31"), "is after"),
    (body("2023-01-01", "2024-01-02"), "date range longer than 366 days; split it"),
    ({"search": {"date": {"from": "2023-01-01", "to": "2023-01-02"}}}, "search.shape is required"),
    (body(shape={"type": "Point", "coordinates": [1, 2]}), "search.shape.type must be"),
    (body(shape={"type": "Polygon", "coordinates": [[[1, 2]]]}), "search.shape.coordinates[0]"),
    (body(search={"shapeRelation": "WITHIN"}), "shapeRelation must be INTERSECTS"),
    (body(search={"cloudCoverage": "low"}), "search.cloudCoverage must be"),
    (body(search={"cloudCoverage": {"max": 3}}), "takes 'from' and 'to'"),
    (body(search={"dataCoveragePercentage": {"from": "9"}}), "from must be a number"),
    (body(sort={"date": "up"}), "sort must be"),
    (body(fields="view_id"), "fields must be a list"),
    *((body(limit=v), "limit must be an integer >= 1") for v in (0, -1, "5", 1.5, True)),
    *((body(page=v), "page must be an integer >= 1") for v in (0, "2", None)),
]


@pytest.mark.parametrize(("data", "message"), BAD)
def test_bad_searches_get_400(data: Any, message: str) -> None:
    async def check(sim: Simulator, session: aiohttp.ClientSession) -> None:
        status, answer = await post(session, sim.search_url + "/sentinel2", data)
        assert status == 400
        assert message in answer["error"]

    serve(fast(), check)


def test_unknown_datasets_get_400() -> None:
    known = "known: sentinel2, sentinel2l2a, landsat8, landsat9, modis, sentinel1"

    async def check(sim: Simulator, session: aiohttp.ClientSession) -> None:
        status, answer = await post(session, sim.search_url + "/sentinel3", body())
        assert (status, answer) == (400, {"error": f"unknown dataset 'sentinel3'; {known}"})
        status, answer = await post(session, sim.search_url, body(search={"satellites": ["x"]}))
        assert (status, answer["error"]) == (400, f"unknown dataset 'x'; {known}")
        for satellites in (None, [], "sentinel2", [1]):
            query = body(search={"satellites": satellites})
            status, answer = await post(session, sim.search_url, query)
            assert status == 400
            assert "search.satellites must be a non-empty list" in answer["error"]
        # Exactly the limit is fine: a leap year, both ends counted.
        assert (await post(session, sim.search_url + "/modis", body("2024-01-01", "2024-12-31")))[
            0
        ] == 200
        sim.configure(search_max_days=31)
        status, answer = await post(
            session, sim.search_url + "/modis", body("2023-01-01", "2023-02-01")
        )
        assert (status, answer["error"]) == (400, "date range longer than 31 days; split it")

    serve(fast(), check)


def test_key_in_header_or_query() -> None:
    async def check(sim: Simulator, session: aiohttp.ClientSession) -> None:
        url = sim.search_url + "/landsat9"
        assert (await post(session, url, body(), headers={}))[0] == 401
        assert (await post(session, url, body(), headers={"x-api-key": "apk." + "0" * 64}))[
            0
        ] == 401
        assert (await post(session, f"{url}?api_key={TEST_API_KEY}", body(), headers={}))[0] == 200
        assert (await post(session, url, body()))[0] == 200
        sim.configure(forbidden=True)
        assert (await post(session, url, body()))[0] == 403
        sim.configure(forbidden=False, outage_for=5.0)
        assert (await post(session, url, body()))[0] == 503

    serve(fast(), check)


def test_search_lane_has_its_own_rate_limit() -> None:
    async def check(sim: Simulator, session: aiohttp.ClientSession) -> None:
        url = sim.search_url + "/sentinel2"
        assert [(await post(session, url, body()))[0] for _ in range(2)] == [200, 200]
        async with session.post(url, json=body(), headers=KEY) as response:
            assert response.status == 429
            assert response.headers["Retry-After"] == "30"
        assert (await post(session, sim.search_url, body(search={"satellites": ["modis"]})))[
            0
        ] == 429
        create = {
            "type": "jpeg",
            "params": {"view_id": "x", "bm_type": "NDVI", "geometry": SHAPE, "px_size": 10},
        }
        assert (await post(session, sim.api_url, create))[0] == 202
        counters = sim.counters()
        assert (counters["search_calls"], counters["search_429"]) == (4, 2)
        assert (counters["create_calls"], counters["create_429"], counters["status_429"]) == (
            1,
            0,
            0,
        )
        assert counters["status_calls"] == 0

    serve(fast(search_limit=2, search_window=30.0), check)


def test_search_faults_and_counters() -> None:
    async def check(sim: Simulator, session: aiohttp.ClientSession) -> None:
        url = sim.search_url + "/landsat8"
        assert (await post(session, url, body()))[0] in (500, 502, 503)
        sim.configure(search_5xx_rate=0.0, reset_rate=1.0)
        with pytest.raises((aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
            await post(session, url, body())
        sim.configure(reset_rate=0.0)
        _, answer = await post(session, url, body(limit=5))
        assert (await post(session, url, b"{"))[0] == 400
        assert (await post(session, url, body(), headers={}))[0] == 401
        counters = sim.counters()
        assert (counters["search_calls"], counters["search_5xx"], counters["resets"]) == (5, 1, 1)
        assert counters["search_results"] == len(answer["results"]) == 5
        assert (counters["create_5xx"], counters["status_5xx"]) == (0, 0)
        assert counters["first_request_at"] is None  # searches are not part of the makespan

    serve(fast(search_5xx_rate=1.0), check)


def test_config_over_http_and_validation() -> None:
    for bad in (
        {"catalogue_today": "2024-13-01"},
        {"catalogue_today": "20240101"},
        {"search_max_days": 0},
        {"search_max_limit": 1.5},
        {"search_limit": 0},
        {"search_window": 0},
        {"search_5xx_rate": 2},
    ):
        with pytest.raises(ValueError, match=next(iter(bad))):
            SimConfig(**bad)

    async def check(sim: Simulator, session: aiohttp.ClientSession) -> None:
        config_url = sim.url + "/_sim/config"
        assert (await post(session, config_url, {"catalogue_today": "2024-01-31"}))[0] == 200
        assert (await post(session, config_url, {"catalogue_today": "soon"}))[0] == 400
        _, answer = await post(session, sim.search_url + "/modis", body("2024-01-01", "2024-12-31"))
        assert answer["meta"]["found"] == 31

    serve(fast(), check)


def test_thread_handle_and_cli_name_the_search_url() -> None:
    with run_in_thread(fast()) as handle:
        assert handle.search_url == handle.url + SEARCH_PATH
    command = [sys.executable, "-c", "from bulkfetch.simulator.cli import simulate; simulate()"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    env.pop("EOS_API_KEY", None)
    flags = ["--port", "0", "--search-rate", "1/min", "--catalogue-today", TODAY]
    process = subprocess.Popen(
        [*command, *flags], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().startswith("EOS simulator on http://127.0.0.1:")
        line = process.stdout.readline()
        assert line.startswith("EOS search API on http://127.0.0.1:")
        url = line.split()[-1] + "/sentinel2"
        data = orjson.dumps(body("2024-06-01", "2024-12-31"))
        request = urllib.request.Request(url, data=data, headers=KEY, method="POST")
        with urllib.request.urlopen(request, timeout=5) as response:
            assert max(r["date"] for r in orjson.loads(response.read())["results"]) <= TODAY
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)
        assert refused.value.code == 429
        refused.value.close()
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=10)
    assert process.returncode == 0
