"""Image size estimates and px_size bounds: the warnings about jobs that cost a night."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bulkfetch.manifest._bands import sensor_for
from bulkfetch.manifest._sizes import (
    estimate_text,
    mercator_extent,
    output_pixels,
    size_warnings,
)

R = 6_378_137.0


def box(west: float, south: float, east: float, north: float) -> dict[str, Any]:
    ring = ((west, south), (east, south), (east, north), (west, north), (west, south))
    return {"type": "Polygon", "coordinates": (ring,)}


def kinds(
    geometry: dict[str, Any], px: float, fmt: str = "jpeg", view: str = "S2/1/C/AA"
) -> set[str]:
    return {kind for kind, _ in size_warnings(geometry, px, fmt, sensor_for(view))}


def test_extent_is_web_mercator_metres() -> None:
    width, height = mercator_extent(box(0, 0, 1, 1))
    assert width == pytest.approx(R * math.radians(1))
    assert height == pytest.approx(R * math.log(math.tan(math.pi / 4 + math.radians(1) / 2)))
    # At 60 degrees the projection stretches both axes twice over: the image is bigger.
    far_north = mercator_extent(box(0, 59.995, 0.01, 60.005))
    assert far_north[1] / far_north[0] == pytest.approx(2.0, rel=1e-3)


def test_extent_of_a_multipolygon_spans_all_its_parts_and_ignores_holes() -> None:
    hole = ((0.2, 0.2), (0.8, 0.2), (0.8, 0.8), (0.2, 0.2))
    with_hole = {"type": "Polygon", "coordinates": (box(0, 0, 1, 1)["coordinates"][0], hole)}
    assert mercator_extent(with_hole) == mercator_extent(box(0, 0, 1, 1))
    two = {
        "type": "MultiPolygon",
        "coordinates": (box(0, 0, 1, 1)["coordinates"], box(2, 2, 3, 3)["coordinates"]),
    }
    assert mercator_extent(two) == pytest.approx(mercator_extent(box(0, 0, 3, 3)))


def test_poles_are_clamped_to_web_mercators_edge() -> None:
    _, to_pole = mercator_extent(box(0, 80, 1, 90))
    _, to_edge = mercator_extent(box(0, 80, 1, 85.0511287798))
    assert to_pole == pytest.approx(to_edge) and math.isfinite(to_pole)


@given(
    st.floats(-179, 178),
    st.floats(-84, 83),
    st.floats(1e-4, 1),
    st.floats(1e-4, 1),
    st.floats(0.5, 1000),
)
def test_pixels_scale_with_the_area_and_inversely_with_px_size(
    west: float, south: float, dx: float, dy: float, px: float
) -> None:
    small = box(west, south, west + dx, south + dy)
    big = box(west, south, west + 2 * dx, south + 2 * dy)
    w, h = output_pixels(small, px)
    w2, h2 = output_pixels(small, 2 * px)
    assert w2 == pytest.approx(w / 2) and h2 == pytest.approx(h / 2)
    bw, bh = output_pixels(big, px)
    assert bw >= w and bh >= h
    # The projection never shrinks: a pixel holds at most px_size metres of ground.
    assert h * px >= R * math.radians(dy) * (1 - 1e-9)


def test_estimate_text() -> None:
    assert estimate_text(40000, 30000) == "about 1.2 gigapixels (40000 x 30000)"
    assert estimate_text(8000, 5000) == "about 40.0 megapixels (8000 x 5000)"
    assert "15,000 gigapixels" in estimate_text(5e6, 3e6)


def test_a_40_by_30_degree_aoi_at_1_m_is_a_gigapixel_warning() -> None:
    ((kind, message),) = size_warnings(box(-100, 10, -60, 40), 1, "png", None)
    assert kind == "size:huge"
    assert message.startswith("at 1 m the image would be about ")
    assert "gigapixels (4452780 x " in message and "EOS may refuse it" in message


def test_sensible_jobs_pass() -> None:
    field = box(-104.879, 27.166, -104.870, 27.172)
    assert kinds(field, 10) == set()
    assert kinds(field, 4) == set()  # EOS's own example upsamples Sentinel-2 to 4 m
    tile = box(-105, 27, -104, 28)  # a whole Sentinel-2 tile at 10 m: 0.12 gigapixels
    assert kinds(tile, 10) == set()
    assert kinds(box(-105, 20, -95, 30), 250, view="MODIS/12/04/2017204/1") == set()


@pytest.mark.parametrize(
    ("px", "view", "kind", "text"),
    [
        (0.1, "S2/1/C/AA", "px_size:fine", "finer than any satellite offers (0.3 m)"),
        (0.5, "S2/1/C/AA", "px_size:fine", "far finer than Sentinel-2 offers (10 m at best)"),
        (1, "L8/LC80110312016028LGN00", "px_size:fine", "Landsat 8/9 offers (15 m at best)"),
        (20, "MODIS/12/04/2017204/1", "px_size:fine", "MODIS offers (250 m at best)"),
        (20_000, "S2/1/C/AA", "px_size:coarse", "coarser than any sensor's pixels"),
    ],
)
def test_px_size_far_from_what_the_sensor_offers(
    px: float, view: str, kind: str, text: str
) -> None:
    found = size_warnings(box(0, 0, 5, 5), px, "png", sensor_for(view))
    assert found[0][0] == kind and text in found[0][1]


def test_an_unknown_sensor_is_held_to_the_global_bounds_only() -> None:
    assert kinds(box(0, 0, 0.01, 0.01), 0.5, view="XX/1") == set()
    assert kinds(box(0, 0, 0.01, 0.01), 0.2, view="XX/1") == {"px_size:fine"}


def test_a_jpeg_too_wide_for_the_format_is_warned_a_png_is_not() -> None:
    strip = box(0, 0, 1, 0.01)  # 111 km x 1.1 km: 0.12 gigapixels at 1 m
    ((kind, message),) = size_warnings(strip, 1, "jpeg", None)
    assert kind == "size:huge" and "a JPEG holds at most 65535 pixels a side" in message
    assert size_warnings(strip, 1, "png", None) == []


def test_an_image_under_a_pixel_is_warned() -> None:
    ((kind, message),) = size_warnings(box(0, 0, 0.001, 0.001), 5000, "png", None)
    assert kind == "size:tiny" and "under one pixel across" in message


@given(
    st.floats(-179, 178),
    st.floats(-89, 88),
    st.floats(1e-9, 1),
    st.floats(1e-9, 1),
    st.floats(min_value=5e-324, max_value=1e308),
    st.sampled_from(["jpeg", "png", "tiff"]),
)
def test_any_valid_job_gets_short_warnings_and_never_an_exception(
    west: float, south: float, dx: float, dy: float, px: float, fmt: str
) -> None:
    found = size_warnings(box(west, south, west + dx, south + dy), px, fmt, None)
    assert len(found) <= 2
    for kind, message in found:
        assert kind in {"px_size:fine", "px_size:coarse", "size:huge", "size:tiny"}
        assert len(message) < 200, message
