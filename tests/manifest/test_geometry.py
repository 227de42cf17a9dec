"""Tests for bulkfetch.manifest.geometry: checks, normalisation, self-intersection."""

from __future__ import annotations

import math
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bulkfetch.manifest.geometry import (
    _all_pairs,
    _sweep,
    check_geometry,
    multipolygon_parts,
    normalise,
    ring_self_intersection,
)

SQUARE = [[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]


def poly(*rings: Any) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": list(rings)}


def problems(value: object) -> list[tuple[str, str]]:
    geom, issues = check_geometry(value)
    assert (geom is None) == bool(issues)
    return issues


def circle(n: int, r: float = 1.0) -> list[list[float]]:
    pts = [[r * math.cos(2 * math.pi * k / n), r * math.sin(2 * math.pi * k / n)] for k in range(n)]
    return [*pts, pts[0]]


def test_valid_square_is_normalised() -> None:
    geom, issues = check_geometry({**poly(SQUARE), "bbox": [0, 0, 1, 1], "crs": "x"})
    assert issues == []
    assert geom == {
        "type": "Polygon",
        "coordinates": (((0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0), (0.0, 0.0)),),
    }
    assert all(type(c) is float for ring in geom["coordinates"] for p in ring for c in p)


def test_third_coordinate_dropped_and_negative_zero_folded() -> None:
    ring = [[-0.0, 0, 5], [1, 0, 5], [1, 1, 5], [0, 1, 5], [-0.0, 0, 5]]
    geom, issues = check_geometry(poly(ring))
    assert issues == []
    assert geom is not None
    first = geom["coordinates"][0][0]
    assert first == (0.0, 0.0)
    assert math.copysign(1, first[0]) == 1
    assert geom == normalise(poly(ring))


def test_multipolygon_with_hole_is_valid() -> None:
    hole = [[0.2, 0.2], [0.2, 0.4], [0.4, 0.4], [0.4, 0.2], [0.2, 0.2]]
    far = [[[5, 5], [6, 5], [6, 6], [5, 5]]]
    geom, issues = check_geometry({"type": "MultiPolygon", "coordinates": [[SQUARE, hole], far]})
    assert issues == []
    assert geom is not None and geom["type"] == "MultiPolygon"
    assert multipolygon_parts(geom) == 2


def test_a_one_part_multipolygon_is_its_polygon() -> None:
    # EOS's current Download visual page lists Polygon only: one part is sent as a Polygon,
    # and is the same job as that Polygon.
    hole = [[0.2, 0.2], [0.2, 0.4], [0.4, 0.4], [0.4, 0.2], [0.2, 0.2]]
    multi = {"type": "MultiPolygon", "coordinates": [[SQUARE, hole]]}
    geom, issues = check_geometry(multi)
    assert issues == []
    assert geom == check_geometry(poly(SQUARE, hole))[0]
    assert geom is not None and geom["type"] == "Polygon"
    assert normalise(multi) == geom
    assert multipolygon_parts(geom) == 0 and multipolygon_parts(multi) == 1
    wkt, _ = check_geometry("MULTIPOLYGON (((0 0, 1 0, 1 1, 0 0)))")
    assert wkt is not None and wkt["type"] == "Polygon"


@pytest.mark.parametrize(
    ("value", "field", "text"),
    [
        ({"type": "Point", "coordinates": [0, 0]}, "geometry.type", "'Point'"),
        ([1, 2], "geometry", "GeoJSON Polygon"),
        ({"coordinates": [SQUARE]}, "geometry.type", "null"),
        (poly(), "geometry.coordinates", "non-empty list of rings"),
        ({"type": "Polygon", "coordinates": 5}, "geometry.coordinates", "rings"),
        (poly([0, 0]), "geometry.coordinates[0][0]", "position"),
        (poly([[0, 0], [1, 0], [0, 0]]), "geometry.coordinates[0]", "at least 4"),
        (poly([[0, 0], [1, 0], [1, 1], [0, 1]]), "geometry.coordinates[0]", "not closed"),
        (poly([[0, 0], [1, 0], [1, 91], [0, 0]]), "geometry.coordinates[0][2]", "latitude"),
        (poly([[0, 0], [181, 0], [1, 1], [0, 0]]), "geometry.coordinates[0][1]", "longitude"),
        (poly([[0, 0], [1, math.nan], [1, 1], [0, 0]]), "geometry.coordinates[0][1]", "finite"),
        (poly([[0, 0], [True, 0], [1, 1], [0, 0]]), "geometry.coordinates[0][1]", "boolean"),
        (poly([[0, 0], ["1", 0], [1, 1], [0, 0]]), "geometry.coordinates[0][1]", "string"),
        (poly([[0, 0], [1, 0, 0, 0], [1, 1], [0, 0]]), "geometry.coordinates[0][1]", "4 items"),
        (poly(SQUARE, 1), "geometry.coordinates[1]", "ring"),
        ({"type": "MultiPolygon", "coordinates": []}, "geometry.coordinates", "polygons"),
        (
            {"type": "MultiPolygon", "coordinates": [[SQUARE], [[[0, 0], [1, 0], [1, 1], [0, 9]]]]},
            "geometry.coordinates[1][0]",
            "not closed",
        ),
        ("POLYGON Z ((0 0 0, 1 0 0, 1 1 0, 0 0 0))", "geometry", "2D"),
        ('{"type": "Polygon", ', "geometry", "not valid GeoJSON"),
    ],
)
def test_bad_geometry_names_the_place(value: object, field: str, text: str) -> None:
    issues = problems(value)
    assert issues, value
    assert issues[0][0] == field
    assert text in issues[0][1]


def test_bow_tie_crosses_itself() -> None:
    bow = [[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]
    issues = problems(poly(bow))
    assert len(issues) == 1
    assert issues[0][0] == "geometry.coordinates[0][2]"
    assert "crosses or touches itself" in issues[0][1]
    assert "position 2" in issues[0][1] and "position 0" in issues[0][1]


def test_spike_and_touching_vertex_are_invalid() -> None:
    spike = [[0, 0], [2, 0], [1, 0], [1, 1], [0, 0]]
    assert "doubles back" in problems(poly(spike))[0][1]
    figure8 = [[0, 0], [1, 1], [2, 0], [2, 2], [1, 1], [0, 2], [0, 0]]
    assert "touches" in problems(poly(figure8))[0][1]
    flat = [[0, 0], [1, 0], [2, 0], [0, 0]]
    assert problems(poly(flat))


def test_repeated_consecutive_positions_are_tolerated() -> None:
    ring = [[0, 0], [1, 0], [1, 0], [1, 1], [0, 1], [0, 1], [0, 0]]
    assert problems(poly(ring)) == []
    assert "distinct" in problems(poly([[0, 0], [0, 0], [1, 1], [0, 0]]))[0][1]


def test_too_many_bad_positions_are_summarised() -> None:
    ring = [[500, 0]] * 100
    issues = problems(poly(ring))
    assert len(issues) <= 11
    assert "100 bad positions" in issues[-1][1]


def test_big_circle_is_fast_and_valid() -> None:
    ring = circle(10_000)
    start = time.perf_counter()
    assert problems(poly(ring)) == []
    assert time.perf_counter() - start < 2.0


def test_big_circle_with_a_crossing_is_found_by_the_sweep() -> None:
    ring = circle(10_000)
    ring[5000], ring[5001] = ring[5001], ring[5000]  # two neighbours swapped: a tiny bow-tie
    start = time.perf_counter()
    issues = problems(poly(ring))
    assert time.perf_counter() - start < 2.0
    assert issues and "crosses" in issues[0][1]
    assert issues[0][0].startswith("geometry.coordinates[0][")


small_coord = st.integers(-4, 4).map(float)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(small_coord, small_coord), min_size=3, max_size=12))
def test_sweep_agrees_with_all_pairs(points: list[tuple[float, float]]) -> None:
    # Integer grid points make touching and overlapping edges common.
    vs = [p for i, p in enumerate(points) if i == 0 or p != points[i - 1]]
    if len(vs) > 1 and vs[-1] == vs[0]:
        vs.pop()
    if len(vs) < 3:
        return
    assert (_all_pairs(vs) is None) == (_sweep(vs) is None)
    closed = [*points, points[0]]
    assert ring_self_intersection(closed) is None or True  # never raises


def test_wkt_string_accepted_by_check_geometry() -> None:
    geom, issues = check_geometry("POLYGON ((0 0, 1 0, 1 1, 0 0))")
    assert issues == []
    assert geom is not None and geom["coordinates"][0][1] == (1.0, 0.0)
    geom2, _ = check_geometry('{"type": "Polygon", "coordinates": [[[0,0],[1,0],[1,1],[0,0]]]}')
    assert geom == geom2


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["Polygon", "MultiPolygon", "Point"]), json_values)
def test_check_geometry_never_raises(gtype: str, coords: object) -> None:
    geom, issues = check_geometry({"type": gtype, "coordinates": coords})
    assert (geom is None) == bool(issues)
