"""Tests for bulkfetch.manifest.wkt: 2D WKT polygons read into GeoJSON, errors placed."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bulkfetch.manifest.geometry import check_geometry
from bulkfetch.manifest.wkt import parse_wkt


def test_parse_wkt_polygon_and_multipolygon() -> None:
    assert parse_wkt("POLYGON ((0 0, 1 0, 1 1, 0 0))") == {
        "type": "Polygon",
        "coordinates": [[[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]]],
    }
    multi = parse_wkt(
        "multipolygon(((0 0,1 0,1 1,0 0)),((2 2,3 2,3 3,2 2),(2.1 2.1,2.2 2.1,2.2 2.2,2.1 2.1)))"
    )
    assert multi["type"] == "MultiPolygon"
    assert len(multi["coordinates"]) == 2 and len(multi["coordinates"][1]) == 2
    assert parse_wkt("SRID=4326;POLYGON((0 0,1 0,1 1,0 0))")["type"] == "Polygon"
    assert parse_wkt("  Polygon ( ( -1.5e0 +2 , .5 2, 1 3 , -1.5 2 ) )  ")["coordinates"][0][0] == [
        -1.5,
        2.0,
    ]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("POLYGON Z ((0 0 0, 1 0 0, 1 1 0, 0 0 0))", "2D"),
        ("POLYGONM ((0 0 0, 1 0 0, 1 1 0, 0 0 0))", "2D"),
        ("MULTIPOLYGON ZM (((0 0 0 0)))", "2D"),
        ("POLYGON ((0 0 0, 1 0 0, 1 1 0, 0 0 0))", "only 2D"),
        ("POLYGON ((0, 1 0, 1 1, 0 0))", "expected 2 numbers"),
        ("POLYGON EMPTY", "EMPTY"),
        ("POINT (1 2)", "expected POLYGON or MULTIPOLYGON"),
        ("POLYGON ((0 0, 1 0, 1 1, 0 0)) x", "after the geometry"),
        ("POLYGON ((0 0, 1 0, 1 1, 0 0)", "expected ')'"),
        ("POLYGON ((0 0, 1 0, @ 1, 0 0))", "at character 21"),
        ("SRID=3857;POLYGON ((0 0, 1 0, 1 1, 0 0))", "SRID=4326"),
        ("", "expected POLYGON"),
    ],
)
def test_parse_wkt_errors_name_the_position(text: str, words: str) -> None:
    with pytest.raises(ValueError, match="at character") as info:
        parse_wkt(text)
    assert words in str(info.value)


@settings(max_examples=300, deadline=None)
@given(
    st.text(alphabet="POLYGONMULTI ()0123456789.,-+eEZ;=SRID\t", max_size=60) | st.text(max_size=30)
)
def test_parse_wkt_raises_only_value_error(text: str) -> None:
    with contextlib.suppress(ValueError):
        parse_wkt(text)
    geom, issues = check_geometry(text)
    assert (geom is None) == bool(issues)
