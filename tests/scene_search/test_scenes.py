"""The pure decisions over search results: parsing, date splitting, selection, names."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bulkfetch.scene_search.scenes import (
    DEFAULT_TEMPLATE,
    Scene,
    Selection,
    check_template,
    job_names,
    parse_scene,
    select,
    split_dates,
)

D = dt.date


def s2(
    day: dt.date, cloud: float | None, *, tile: str = "14/S/NG", coverage: float | None = 100.0
) -> Scene:
    view_id = f"S2L2A/{tile}/{day.year}/{day.month}/{day.day}/0"
    return Scene(view_id, f"S2A_{day:%Y%m%d}", day, cloud, coverage, "sentinel2l2a")


def test_parse_scene_reads_the_documented_answer() -> None:
    obj = {
        "view_id": "S2/36/U/VA/2018/8/1/0",
        "sceneID": "S2B_tile_20180801_36UVA_0",
        "cloudCoverage": 29.93,
        "date": "2018-08-01",
        "dataCoveragePercentage": 88.5,
        "tms": "https://example/tms",
    }
    scene = parse_scene(obj, "sentinel2")
    assert scene == Scene(
        "S2/36/U/VA/2018/8/1/0",
        "S2B_tile_20180801_36UVA_0",
        D(2018, 8, 1),
        29.93,
        88.5,
        "sentinel2",
    )
    assert (scene.sensor, scene.tile) == ("S2", "36UVA")
    assert parse_scene(scene.to_json(), "other") == scene


@pytest.mark.parametrize(
    ("view_id", "sensor", "tile"),
    [
        ("S2L2A/13/R/EL/2023/7/19/0", "S2L2A", "13REL"),
        ("L8/LC80110312016028LGN00", "L8", "011031"),
        ("L9/LC90270332022100LGN00", "L9", "027033"),
        ("MODIS/12/04/2017204/2017213034223", "MODIS", "h12v04"),
    ],
)
def test_sensor_and_tile_come_from_the_view_id(view_id: str, sensor: str, tile: str) -> None:
    scene = Scene(view_id, "x", D(2020, 1, 1), 0.0, None, "d")
    assert (scene.sensor, scene.tile) == (sensor, tile)


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ([], "not a JSON object"),
        ({"date": "2020-01-01", "cloudCoverage": 1}, "view_id"),
        ({"view_id": "S2/a", "date": "01/02/2020", "cloudCoverage": 1}, "date"),
        ({"view_id": "S2/a", "date": "2020-01-01", "cloudCoverage": 101}, "cloudCoverage"),
        ({"view_id": "S2/a", "date": "2020-01-01", "cloudCoverage": True}, "cloudCoverage"),
        (
            {
                "view_id": "S2/a",
                "date": "2020-01-01",
                "cloudCoverage": 1,
                "dataCoveragePercentage": "x",
            },
            "dataCoveragePercentage",
        ),
    ],
)
def test_parse_scene_names_what_is_wrong(obj: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_scene(obj, "sentinel2")


def test_split_dates_cuts_on_calendar_years() -> None:
    assert split_dates(D(2023, 5, 1), D(2023, 9, 30)) == [(D(2023, 5, 1), D(2023, 9, 30))]
    assert split_dates(D(2022, 11, 1), D(2024, 2, 29)) == [
        (D(2022, 11, 1), D(2022, 12, 31)),
        (D(2023, 1, 1), D(2023, 12, 31)),
        (D(2024, 1, 1), D(2024, 2, 29)),
    ]
    with pytest.raises(ValueError, match="before it starts"):
        split_dates(D(2023, 2, 1), D(2023, 1, 1))


@given(st.dates(D(2000, 1, 1), D(2040, 1, 1)), st.integers(0, 3000))
def test_split_dates_covers_the_range_exactly_in_pieces_of_at_most_a_year(
    start: dt.date, days: int
) -> None:
    end = start + dt.timedelta(days=days)
    pieces = split_dates(start, end)
    assert pieces[0][0] == start and pieces[-1][1] == end
    for (_, b), (c, _) in itertools.pairwise(pieces):
        assert c == b + dt.timedelta(days=1)
    assert all(a <= b and (b - a).days < 366 and a.year == b.year for a, b in pieces)


def test_select_filters_cloud_and_coverage_again() -> None:
    scenes = [s2(D(2023, 6, 1), 5), s2(D(2023, 6, 6), 50), s2(D(2023, 6, 11), 5, coverage=40)]
    kept = select(scenes, Selection(max_cloud=20, min_coverage=90))
    assert [s.date.day for s in kept] == [1]


def test_a_result_without_cloud_or_coverage_is_kept_and_no_limit_applies_to_it() -> None:
    radar = {"view_id": "S1/S1A_IW_GRDH_1SDV_20230705", "date": "2023-07-05"}
    scene = parse_scene(radar, "sentinel1")
    assert (scene.cloud, scene.coverage, scene.dataset) == (None, None, "sentinel1")
    nulls = parse_scene({**radar, "cloudCoverage": None, "dataCoveragePercentage": None}, "s")
    assert (nulls.cloud, nulls.coverage) == (None, None)
    assert scene.to_json()["cloudCoverage"] is None
    assert parse_scene(scene.to_json(), "x") == scene  # as the cache stores it
    cloudy = s2(D(2023, 7, 5), 60)
    kept = select([scene, cloudy], Selection(max_cloud=10, min_coverage=99))
    assert kept == [scene]
    # Radar sees through cloud: in a choice it ranks as clear.
    assert select([cloudy, scene], Selection(one_per_days=30)) == [scene]
    assert job_names("{field}_{cloud}", [("f", scene, "VV")]) == ["f_na"]


def test_select_drops_duplicates_and_sorts_by_date() -> None:
    a, b = s2(D(2023, 6, 11), 5), s2(D(2023, 6, 1), 9)
    assert select([a, b, a], Selection()) == [b, a]


def test_one_per_days_keeps_the_least_cloudy_of_each_period_from_the_start() -> None:
    start = D(2023, 5, 1)
    scenes = [
        s2(start + dt.timedelta(days=5 * i), cloud)
        for i, cloud in enumerate([30, 10, 20, 5, 40, 35])
    ]
    # periods of 10 days from May 1: [May 1-10], [May 11-20], [May 21-30]
    kept = select(scenes, Selection(one_per_days=10, since=start))
    assert [(s.date.day, s.cloud) for s in kept] == [(6, 10), (16, 5), (26, 35)]


def test_one_per_days_breaks_ties_by_coverage_then_date() -> None:
    start = D(2023, 5, 1)
    a = s2(start, 10, coverage=80)
    b = s2(start + dt.timedelta(days=2), 10, coverage=95)
    c = s2(start + dt.timedelta(days=4), 10, coverage=95)
    assert select([c, a, b], Selection(one_per_days=7, since=start)) == [b]


def test_best_per_month_keeps_k_per_calendar_month() -> None:
    scenes = [s2(D(2023, 6, d), cloud) for d, cloud in [(1, 50), (6, 5), (11, 9), (16, 1)]]
    scenes += [s2(D(2023, 7, 1), 70)]
    kept = select(scenes, Selection(best_per_month=2))
    assert [(s.date.month, s.date.day) for s in kept] == [(6, 6), (6, 16), (7, 1)]


def test_single_tile_keeps_the_tile_with_the_most_data_per_sensor() -> None:
    day = D(2023, 6, 1)
    west = [s2(day + dt.timedelta(days=5 * i), 5, tile="14/S/MG", coverage=60) for i in range(3)]
    east = [s2(day + dt.timedelta(days=5 * i), 5, tile="14/S/NG", coverage=100) for i in range(3)]
    landsat = Scene("L8/LC80290332023160LGN00", "x", day, 1.0, 100.0, "landsat8")
    kept = select([*west, *east, landsat], Selection(single_tile=True))
    assert {s.tile for s in kept if s.sensor == "S2L2A"} == {"14SNG"}
    assert landsat in kept  # another sensor keeps its own tile


def test_single_tile_ties_go_to_the_smaller_tile_name() -> None:
    day = D(2023, 6, 1)
    kept = select(
        [s2(day, 5, tile="14/S/NG"), s2(day, 5, tile="14/S/MG")], Selection(single_tile=True)
    )
    assert [s.tile for s in kept] == ["14SMG"]


def test_job_names_from_the_default_template() -> None:
    scene = s2(D(2023, 7, 9), 3.6)
    assert job_names(DEFAULT_TEMPLATE, [("field-1", scene, "NDVI")]) == [
        "field-1/2023-07-09_S2L2A_NDVI"
    ]
    template = "{year}/{month}/{field}_{day}_{tile}_{cloud}_{dataset}_{scene}"
    assert job_names(template, [("f", scene, "NDVI")]) == [
        "2023/07/f_09_14SNG_4_sentinel2l2a_S2A_20230709"
    ]


def test_job_names_make_border_collisions_distinct_by_tile() -> None:
    day = D(2023, 7, 9)
    rows = [("f", s2(day, 1, tile="14/S/MG"), "NDVI"), ("f", s2(day, 1, tile="14/S/NG"), "NDVI")]
    assert job_names(DEFAULT_TEMPLATE, rows) == [
        "f/2023-07-09_S2L2A_NDVI_14SMG",
        "f/2023-07-09_S2L2A_NDVI_14SNG",
    ]
    same = [("f", s2(day, 1), "NDVI"), ("F", s2(day, 2), "NDVI"), ("f", s2(day, 3), "NDVI")]
    names = job_names("{field}", same)
    assert len({n.casefold() for n in names}) == 3


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{field}/{nope}", "unknown {nope}"),
        ("{field:>10}", "no format spec"),
        ("{field!r}", "no format spec"),
        ("plain", "uses no"),
        ("{field", "name template"),
    ],
)
def test_check_template_refuses_what_cannot_work(template: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_template(template)
    check_template(DEFAULT_TEMPLATE)


_scene = st.builds(
    s2,
    st.dates(D(2023, 1, 1), D(2023, 12, 31)),
    st.one_of(st.none(), st.floats(0, 100).map(lambda c: round(c, 1))),
    tile=st.sampled_from(["14/S/NG", "14/S/NF", "14/S/MG"]),
    coverage=st.one_of(st.none(), st.floats(0, 100)),
)


@given(
    # One record per view_id: when the cache and a fresh answer both hold a scene, the
    # later record wins, so only distinct scenes are free of order.
    st.lists(_scene, max_size=40, unique_by=lambda s: s.view_id),
    st.one_of(st.none(), st.integers(1, 40)),
    st.one_of(st.none(), st.integers(1, 4)),
    st.booleans(),
    st.one_of(st.none(), st.floats(0, 100)),
)
def test_select_invariants(
    scenes: list[Scene],
    per_days: int | None,
    per_month: int | None,
    one_tile: bool,
    cloud: float | None,
) -> None:
    selection = Selection(
        max_cloud=cloud, single_tile=one_tile, one_per_days=per_days, best_per_month=per_month
    )
    kept = select(scenes, selection)
    unique = {s.view_id: s for s in scenes}
    assert set(kept) <= set(unique.values())
    assert kept == sorted(kept, key=lambda s: (s.date, s.view_id))
    assert len({s.view_id for s in kept}) == len(kept)
    assert select(list(reversed(scenes)), selection) == kept  # answer order does not matter
    if cloud is not None:
        assert all(s.cloud is None or s.cloud <= cloud for s in kept)
    if one_tile:
        assert len({s.tile for s in kept}) <= 1
    if per_days:
        periods = [(s.date - selection.since).days // per_days for s in kept]
        assert len(periods) == len(set(periods))
    if per_month:
        months = [(s.date.year, s.date.month) for s in kept]
        assert all(months.count(m) <= per_month for m in months)
    if not (per_days or per_month or one_tile):
        passes = [s for s in unique.values() if cloud is None or (s.cloud or 0) <= cloud]
        assert len(kept) == len(passes)


@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "A", "b"]), _scene, st.sampled_from(["NDVI", "NDWI"])),
        max_size=30,
    )
)
def test_job_names_are_always_distinct_ignoring_case(rows: list[tuple[str, Scene, str]]) -> None:
    for template in (DEFAULT_TEMPLATE, "{field}", "{date}/{field}"):
        names = job_names(template, rows)
        assert len({n.casefold() for n in names}) == len(rows)


def test_server_words_in_names_cannot_make_folders_or_climb() -> None:
    scene = Scene("../../etc/x/2023/1/1/0", "../../evil/name", D(2023, 1, 1), 1.0, None, "a/b")
    [name] = job_names("{field}/{scene}_{sensor}_{dataset}_{tile}", [("f", scene, "NDVI")])
    assert name.startswith("f/") and name.count("/") == 1 and ".." not in name.split("/")
