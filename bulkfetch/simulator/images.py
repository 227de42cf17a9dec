"""Result files: real, small, deterministic pictures of a job's parameters.

Contract:

- ``render_result(params)`` returns the bytes EOS would return for a finished ``jpeg`` task with
  these params: a jpeg, png or (Geo)TIFF picture (``format``), or a zip of the picture and its
  world file (``georeference: world``), or a kmz (``georeference: kmz``).
- The bytes depend only on the params minus ``reference`` (and the picture size): never on the
  task id, the time, or the process. Same params, same bytes; so a client's re-download of a job
  can be compared byte for byte. Zip members carry a fixed 1980 timestamp for that reason.
- Pictures differ visibly between jobs: a colour ramp seeded from the sha256 of the canonical
  params, with the AOI polygon drawn scaled into the frame.
- ``big_body`` makes a baseline uncompressed TIFF of any size from a constant amount of memory,
  for streaming benchmarks; ``ResultBody`` hands out any result as chunks.
"""

from __future__ import annotations

import functools
import hashlib
import io
import math
import struct
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape

import orjson
from PIL import Image, ImageDraw, TiffImagePlugin, TiffTags

__all__ = [
    "FORMATS",
    "GEOREFERENCES",
    "ResultBody",
    "big_body",
    "canonical_params",
    "render_result",
    "result_body",
    "result_content_type",
]

#: ``format`` value -> (Pillow format, file extension, Content-Type).
FORMATS: dict[str, tuple[str, str, str]] = {
    "jpeg": ("JPEG", "jpg", "image/jpeg"),
    "png": ("PNG", "png", "image/png"),
    "tiff": ("TIFF", "tif", "image/tiff"),
}
GEOREFERENCES = ("world", "kmz", "tiff")
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest a zip can say: fixed, so zips are repeatable
_EARTH_RADIUS = 6378137.0  # EPSG:3857 sphere, metres
_MAX_LAT = 85.05112878


def canonical_params(params: Mapping[str, Any]) -> bytes:
    """The params as sorted JSON, without ``reference``: what the result depends on."""
    return orjson.dumps(
        {k: v for k, v in params.items() if k != "reference"}, option=orjson.OPT_SORT_KEYS
    )


def result_format(params: Mapping[str, Any]) -> str:
    """The picture format a job asks for: ``georeference: tiff`` forces tiff."""
    if params.get("georeference") == "tiff":
        return "tiff"
    fmt = params.get("format", "jpeg")
    return fmt if fmt in FORMATS else "jpeg"


def result_content_type(params: Mapping[str, Any]) -> str:
    """The Content-Type EOS would send with this job's result."""
    georeference = params.get("georeference")
    if georeference == "world":
        return "application/zip"
    if georeference == "kmz":
        return "application/vnd.google-earth.kmz"
    return FORMATS[result_format(params)][2]


def render_result(params: Mapping[str, Any], *, image_size: int = 64) -> bytes:
    """The finished result for ``params``; see the module docstring. Cached (LRU, 256)."""
    return _render_cached(canonical_params(params), image_size)


@functools.lru_cache(maxsize=256)
def _render_cached(canonical: bytes, size: int) -> bytes:
    params: dict[str, Any] = orjson.loads(canonical)
    digest = hashlib.sha256(canonical).digest()
    rings = _rings(params.get("geometry"))
    bbox = _mercator_bbox(rings)
    picture = _draw(digest, rings, size)
    fmt = result_format(params)
    georeference = params.get("georeference")
    image = _encode(picture, fmt, bbox if georeference == "tiff" else None)
    ext = FORMATS[fmt][1]
    if georeference == "world":
        world = _world_file(bbox, size, params.get("px_size"))
        return _zip({f"image.{ext}": image, f"image.{ext}w": world})
    if georeference == "kmz":
        kml = _kml(str(params.get("view_id", "")), f"image.{ext}", rings)
        return _zip({"doc.kml": kml, f"image.{ext}": image})
    return image


def _rings(geometry: Any) -> list[list[tuple[float, float]]]:
    """Outer rings of a GeoJSON Polygon or MultiPolygon; [] for anything else.

    The simulator must never crash on odd geometry: EOS validates that, not the renderer.
    """
    if not isinstance(geometry, Mapping):
        return []
    coordinates = geometry.get("coordinates")
    polygons = [coordinates] if geometry.get("type") == "Polygon" else coordinates
    if geometry.get("type") not in ("Polygon", "MultiPolygon") or not isinstance(polygons, list):
        return []
    rings = []
    for polygon in polygons:
        try:
            ring = [(float(p[0]), float(p[1])) for p in polygon[0]]
        except (TypeError, ValueError, IndexError, KeyError):
            continue
        if len(ring) >= 2:
            rings.append(ring)
    return rings


def _mercator(lon: float, lat: float) -> tuple[float, float]:
    lat = max(-_MAX_LAT, min(_MAX_LAT, lat))
    x = _EARTH_RADIUS * math.radians(lon)
    y = _EARTH_RADIUS * math.log(math.tan(math.pi / 4 + math.radians(lat) / 2))
    return x, y


def _mercator_bbox(rings: list[list[tuple[float, float]]]) -> tuple[float, float, float, float]:
    """(min x, min y, max x, max y) in EPSG:3857 metres; a 1 km box at 0,0 without geometry."""
    points = [_mercator(lon, lat) for ring in rings for lon, lat in ring]
    if not points:
        return (0.0, 0.0, 1000.0, 1000.0)
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return (min(xs), min(ys), max(xs), max(ys))


def _draw(digest: bytes, rings: list[list[tuple[float, float]]], size: int) -> Image.Image:
    start, end, ink = digest[0:3], digest[3:6], bytes(255 - b for b in digest[0:3])
    picture = Image.new("RGB", (size, size))
    draw = ImageDraw.Draw(picture)
    for x in range(size):
        t = x / max(1, size - 1)
        colour = tuple(round(a + (b - a) * t) for a, b in zip(start, end, strict=True))
        draw.line([(x, 0), (x, size - 1)], fill=(colour[0], colour[1], colour[2]))
    points = [[_mercator(lon, lat) for lon, lat in ring] for ring in rings]
    if points:
        x0, y0, x1, y1 = _mercator_bbox(rings)
        margin = size * 0.1
        scale = (size - 2 * margin) / max(x1 - x0, y1 - y0, 1e-9)
        for ring in points:
            xy = [(margin + (x - x0) * scale, size - margin - (y - y0) * scale) for x, y in ring]
            draw.line([*xy, xy[0]], fill=(ink[0], ink[1], ink[2]), width=max(1, size // 32))
    return picture


def _encode(
    picture: Image.Image, fmt: str, bbox: tuple[float, float, float, float] | None
) -> bytes:
    out = io.BytesIO()
    if fmt == "tiff" and bbox is not None:
        # The three GeoTIFF tags that make a north-up EPSG:3857 raster: pixel scale, the
        # tie point of the upper-left corner, and the key directory naming the CRS.
        ifd = TiffImagePlugin.ImageFileDirectory_v2()
        width, height = picture.size
        ifd[33550] = ((bbox[2] - bbox[0]) / width, (bbox[3] - bbox[1]) / height, 0.0)
        ifd.tagtype[33550] = TiffTags.DOUBLE
        ifd[33922] = (0.0, 0.0, 0.0, bbox[0], bbox[3], 0.0)
        ifd.tagtype[33922] = TiffTags.DOUBLE
        ifd[34735] = (1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, 3857)
        ifd.tagtype[34735] = TiffTags.SHORT
        picture.save(out, "TIFF", tiffinfo=ifd)
    elif fmt == "jpeg":
        picture.save(out, "JPEG", quality=90)
    else:
        picture.save(out, FORMATS[fmt][0])
    return out.getvalue()


def _world_file(bbox: tuple[float, float, float, float], size: int, px_size: Any) -> bytes:
    """Six lines: x pixel size, two rotations, negative y size, centre of the top-left pixel."""
    dx = (bbox[2] - bbox[0]) / size
    dy = (bbox[3] - bbox[1]) / size
    if dx <= 0 or dy <= 0:  # a degenerate AOI: fall back on the asked pixel size
        dx = dy = float(px_size) if isinstance(px_size, int | float) and px_size > 0 else 10.0
    lines = [dx, 0.0, 0.0, -dy, bbox[0] + dx / 2, bbox[3] - dy / 2]
    return "".join(f"{v:.10f}\n" for v in lines).encode()


def _kml(name: str, href: str, rings: list[list[tuple[float, float]]]) -> bytes:
    lons = [lon for ring in rings for lon, _ in ring] or [0.0, 0.01]
    lats = [lat for ring in rings for _, lat in ring] or [0.0, 0.01]
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<kml xmlns="http://www.opengis.net/kml/2.2"><GroundOverlay>'
        f"<name>{escape(name)}</name><Icon><href>{escape(href)}</href></Icon>"
        f"<LatLonBox><north>{max(lats)}</north><south>{min(lats)}</south>"
        f"<east>{max(lons)}</east><west>{min(lons)}</west></LatLonBox>"
        "</GroundOverlay></kml>\n"
    ).encode()


def _zip(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in members.items():
            info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return out.getvalue()


@dataclass(frozen=True, slots=True)
class ResultBody:
    """A result ready to send: its Content-Type, exact length, and a chunk source."""

    content_type: str
    length: int
    _chunks: Callable[[int], Iterator[bytes]]

    def chunks(self, chunk_size: int) -> Iterator[bytes]:
        """The body in pieces of at most ``chunk_size`` bytes, ``length`` bytes in all."""
        return self._chunks(chunk_size)

    @classmethod
    def of_bytes(cls, data: bytes, content_type: str) -> ResultBody:
        """A body held in memory."""

        def chunks(chunk_size: int) -> Iterator[bytes]:
            view = memoryview(data)
            for start in range(0, len(data), chunk_size):
                yield bytes(view[start : start + chunk_size])

        return cls(content_type, len(data), chunks)


def result_body(
    params: Mapping[str, Any], *, image_size: int, big_result_bytes: int, wrong_format: bool
) -> ResultBody:
    """What the simulator sends for a finished task with these params.

    ``wrong_format`` swaps the picture format (jpeg -> png, png -> jpeg, tiff -> png) and
    drops georeferencing, but keeps the Content-Type the job asked for: only a client that
    checks magic bytes notices. ``big_result_bytes`` applies to tiff results.
    """
    content_type = result_content_type(params)
    if wrong_format:
        swapped = {"jpeg": "png", "png": "jpeg", "tiff": "png"}[result_format(params)]
        params = {**params, "format": swapped, "georeference": None}
    elif big_result_bytes > 0 and result_format(params) == "tiff":
        return big_body(params, big_result_bytes)
    return ResultBody.of_bytes(render_result(params, image_size=image_size), content_type)


def big_body(params: Mapping[str, Any], approx_bytes: int) -> ResultBody:
    """A baseline uncompressed RGB TIFF of about ``approx_bytes``, generated while streamed.

    Layout: 8-byte header, one IFD of 10 entries, the BitsPerSample triple, then a single
    strip of rows 1024 pixels wide, each row a pattern from the params' sha256.
    """
    width = 1024
    row = width * 3
    height = max(1, -(-approx_bytes // row))
    entries = 10
    ifd_size = 2 + entries * 12 + 4
    bits_at = 8 + ifd_size
    data_at = bits_at + 6
    data_size = row * height
    tags = [  # (tag, type, count, value); type 3 = SHORT, 4 = LONG
        (256, 4, 1, width),
        (257, 4, 1, height),
        (258, 3, 3, bits_at),
        (259, 3, 1, 1),  # no compression
        (262, 3, 1, 2),  # RGB
        (273, 4, 1, data_at),
        (277, 3, 1, 3),
        (278, 4, 1, height),
        (279, 4, 1, data_size),
        (284, 3, 1, 1),  # chunky
    ]
    header = bytearray(b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", entries))
    for tag, kind, count, value in tags:
        packed = struct.pack("<HH", value, 0) if kind == 3 and count == 1 else None
        header += struct.pack("<HHI", tag, kind, count) + (packed or struct.pack("<I", value))
    header += struct.pack("<I", 0) + struct.pack("<HHH", 8, 8, 8)
    assert len(header) == data_at
    seed = hashlib.sha256(canonical_params(params)).digest()
    head = bytes(header)

    def chunks(chunk_size: int) -> Iterator[bytes]:
        yield head
        # One block reused for every chunk: memory stays constant however big the body.
        block = (seed * (chunk_size // len(seed) + 1))[:chunk_size]
        left = data_size
        while left > 0:
            piece = block if left >= chunk_size else block[:left]
            left -= len(piece)
            yield piece

    return ResultBody("image/tiff", data_at + data_size, chunks)
