"""The contact sheet's pictures: a scene's date, the AOI outline, and thumbnails of every kind."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bulkfetch.manifest.jobs import Job, load_manifest
from bulkfetch.report.thumbnails import ThumbnailError, aoi_svg, thumbnail, view_date
from bulkfetch.simulator.images import render_result

DEMO = Path(__file__).resolve().parents[2] / "manifests" / "demo.jsonl"


def _kind(job: Job) -> str:
    return job.georeference or job.format


@pytest.mark.parametrize(
    ("view_id", "expected"),
    [
        ("S2/13/R/EL/2023/7/19/0", "2023-07-19"),
        ("S2/13/R/EL/2023/12/1/0", "2023-12-01"),
        ("L8/LC80260312023202LGN00", "2023-07-21"),
        ("L9/LC09_L1TP_026031_20230721_20230722_02_T1", "2023-07-21"),
        ("MODIS/12/04/2017204/2017204034223", "2017-07-23"),
        ("MODIS/12/04/2017366/2017366000000", ""),
        ("S2/13/R/EL/2023/2/30/0", ""),
        ("CBERS/whatever", ""),
        ("", ""),
    ],
)
def test_view_date(view_id: str, expected: str) -> None:
    assert view_date(view_id) == expected


def _points(svg: str) -> list[list[tuple[float, float]]]:
    return [
        [(float(x), float(y)) for x, y in (p.split(",") for p in pts.split())]
        for pts in re.findall(r'points="([^"]*)"', svg)
    ]


def test_aoi_svg_keeps_the_aspect_ratio_and_fits() -> None:
    wide = {
        "type": "Polygon",
        "coordinates": [[[0, 0], [0.04, 0], [0.04, 0.01], [0, 0.01], [0, 0]]],
    }
    svg = aoi_svg(wide, 100)
    assert svg.startswith('<svg class="aoi" viewBox="0 0 100 100"')
    [ring] = _points(svg)
    xs, ys = [x for x, _ in ring], [y for _, y in ring]
    assert all(0 <= v <= 100 for v in xs + ys)
    assert (max(xs) - min(xs)) / (max(ys) - min(ys)) == pytest.approx(4, rel=0.02)
    assert (min(xs) + max(xs)) / 2 == pytest.approx(50, abs=0.2)  # centred
    assert (min(ys) + max(ys)) / 2 == pytest.approx(50, abs=0.2)
    # North is up: the ring's northern edge (lat 0.01) is drawn at the smaller y.
    assert ring[2][1] < ring[0][1]


def test_aoi_svg_draws_every_part_and_holes() -> None:
    square = [[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]
    hole = [[0.4, 0.4], [0.6, 0.4], [0.6, 0.6], [0.4, 0.4]]
    far = [[[5, 5], [6, 5], [6, 6], [5, 5]]]
    svg = aoi_svg({"type": "MultiPolygon", "coordinates": [[square, hole], far]}, 50)
    assert svg.count("<polygon") == 3
    assert svg.count('class="hole"') == 1


@pytest.mark.parametrize(
    "geometry", [None, {}, {"type": "Point", "coordinates": [1, 2]}, {"type": "Polygon"}, "x"]
)
def test_aoi_svg_of_nothing_is_empty(geometry: Any) -> None:
    assert aoi_svg(geometry, 40) == ""


def _decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def test_thumbnail_of_every_kind(tmp_path: Path) -> None:
    seen = set()
    for job in load_manifest(DEMO).jobs:
        if _kind(job) in seen:
            continue
        seen.add(_kind(job))
        path = tmp_path / f"r{len(seen)}{job.extension}"
        path.write_bytes(render_result(job.params, image_size=300))
        thumb = _decoded(thumbnail(path, 120))
        assert thumb.format == "JPEG" and max(thumb.size) == 120
    assert seen == {"jpeg", "png", "tiff", "world", "kmz"}


def test_thumbnail_shows_transparency_on_white(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    Image.new("RGBA", (40, 40), (255, 0, 0, 0)).save(path)
    thumb = _decoded(thumbnail(path, 20)).convert("RGB")
    pixel = thumb.getpixel((10, 10))
    assert isinstance(pixel, tuple) and min(pixel) > 240


def _zip_with(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (10, 10), "green").save(out, "PNG")
    return out.getvalue()


@pytest.mark.parametrize("name", ["../evil.png", "/abs/evil.png", "a/../../evil.png", "C:/e.png"])
def test_thumbnail_refuses_unsafe_zip_members(tmp_path: Path, name: str) -> None:
    path = _zip_with(tmp_path / "r.zip", {name: _png(), "doc.kml": b"<kml/>"})
    with pytest.raises(ThumbnailError, match="unsafe member"):
        thumbnail(path, 50)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "file missing"),
        (b"hello", "not an image"),
        (_png()[:30], "cannot decode|damaged|not an image"),
        ("zip-no-image", "no image in the archive"),
    ],
)
def test_thumbnail_says_why_it_cannot(tmp_path: Path, content: Any, reason: str) -> None:
    path = tmp_path / "r.png"
    if content == "zip-no-image":
        _zip_with(path, {"doc.kml": b"<kml/>"})
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(ThumbnailError, match=reason):
        thumbnail(path, 50)
