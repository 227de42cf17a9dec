"""The simulator's scene catalogue: deterministic scenes "around any AOI", for the Search API.

Contract:

- Pure: no I/O, no clock. ``today`` is an argument (scenes dated after it do not exist
  yet), and every number comes from a stable hash (``hashlib.blake2b``), so a seed, a
  dataset, an AOI and a date range always give the same scenes, in any process.
- Tiles: the world is cut into 1°×1° cells (cell ``(i, j)`` covers ``lon in [i, i+1]``,
  ``lat in [j, j+1]``); a tile's footprint is its cell grown by ``BORDER`` (0.05°) on every
  side, so an AOI within 0.05° of a cell edge lies in two (or four) tiles, as fields on
  real tile borders do. Names per family:

  - Sentinel-2, MGRS-like ``{zone}{band}{sq}``: UTM zone ``floor((lon+180)/6)+1`` and
    latitude band letter (``"CDEFGHJKLMNPQRSTUVWX"``, 8° bands from -80, clamped at the
    poles) of the cell centre; the square's column letter is ``_LETTERS[8*((zone-1)%3) +
    col + 1]`` and its row letter ``_LETTERS[row]``, where ``col`` (0..5) and ``row``
    (0..17) are the cell's place in its zone × band block. Kansas' cell (-99, 38) is
    ``14SNG``.
  - Landsat, WRS-like ``path = 180 - i`` (1..360, westwards) and ``row = 90 - j`` (1..180,
    southwards), 3 digits each.
  - MODIS, ``h = (i+180)//10`` and ``v = (89-j)//10`` of the 10° cell holding the 1° cell:
    several 1° cells share one MODIS tile.

- Revisits (from each mission's first date on, up to ``min(date_to, today)``):
  Sentinel-2 every 5 days, Landsat 8 and 9 every 16 (Landsat 9 8 days after Landsat 8 on
  the same path), MODIS daily. The phase depends on the orbit, not the seed: on the
  Landsat path, and on the 3°-wide longitude strip for Sentinel-2, so tiles north and
  south of each other are seen the same day, as one orbit sees them.
- ``cloudCoverage`` and ``dataCoveragePercentage`` hash ``(seed, dataset, tile, date)``:
  about a third of scenes are nearly clear (0–10 %), the rest spread over 10–100 %; data
  coverage is 100 for about 80 % of scenes and 15–99 for the rest (swath edges).
- Sentinel-1 (``sentinel1``, radar) has neither: its scenes carry no ``cloudCoverage``
  and no ``dataCoveragePercentage`` key at all, as EODAG's provider configuration says
  of EOS's radar results. Its tiles are the Landsat-like path/row cells, seen every 12
  days; ``view_id`` is ``S1/{sceneID}``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import struct
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

__all__ = ["BORDER", "DATASETS", "MAX_CELLS", "search_scenes", "shape_bbox", "tiles_for"]

#: The datasets the catalogue knows, in the order the Search API lists them.
DATASETS = ("sentinel2", "sentinel2l2a", "landsat8", "landsat9", "modis", "sentinel1")
#: Degrees each 1° cell's footprint extends beyond the cell on every side.
BORDER = 0.05
#: The largest AOI, in 1° cells of its bounding box, the catalogue will answer for.
MAX_CELLS = 400

BBox = tuple[float, float, float, float]

_BANDS = "CDEFGHJKLMNPQRSTUVWX"
_LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"


class _Mission(NamedTuple):
    family: str  # "sentinel2", "landsat" or "modis": how tiles are named
    first: dt.date
    period: int  # days between two acquisitions of one tile
    shift: int  # days added to the family's phase


_MISSIONS: dict[str, _Mission] = {
    "sentinel2": _Mission("sentinel2", dt.date(2015, 6, 23), 5, 0),
    "sentinel2l2a": _Mission("sentinel2", dt.date(2017, 3, 28), 5, 0),
    "landsat8": _Mission("landsat", dt.date(2013, 4, 11), 16, 0),
    "landsat9": _Mission("landsat", dt.date(2021, 10, 31), 16, 8),
    "modis": _Mission("modis", dt.date(2000, 2, 24), 1, 0),
    "sentinel1": _Mission("landsat", dt.date(2014, 10, 3), 12, 3),
}
#: Datasets whose scenes carry no cloud cover nor data coverage (radar).
_NO_COVER = frozenset({"sentinel1"})


class _Tile(NamedTuple):
    name: str  # unique within the family, e.g. "14SNG", "279052", "h08v05"
    orbit: str  # tiles with the same orbit are seen on the same days
    parts: tuple[int | str, ...]  # what the view_id is made of


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


def _units(text: str) -> tuple[float, float, float, float]:
    """Four independent uniform numbers in [0, 1) from ``text``."""
    a, b, c, d = struct.unpack(">4I", _digest(text))
    scale = 2.0**-32
    return a * scale, b * scale, c * scale, d * scale


def _tile(family: str, i: int, j: int) -> _Tile:
    """The tile of ``family`` covering cell ``(i, j)`` (see the module docstring)."""
    if family == "sentinel2":
        zone = (i + 180) // 6 + 1
        band = min(max((j + 80) // 8, 0), len(_BANDS) - 1)
        south = -90 if band == 0 else -80 + 8 * band
        col, row = i - (-180 + 6 * (zone - 1)), j - south
        sq = _LETTERS[8 * ((zone - 1) % 3) + col + 1] + _LETTERS[row]
        return _Tile(f"{zone}{_BANDS[band]}{sq}", str((i + 180) // 3), (zone, _BANDS[band], sq))
    if family == "landsat":
        path, row = 180 - i, 90 - j
        return _Tile(f"{path:03d}{row:03d}", str(path), (path, row))
    h, v = (i + 180) // 10, (89 - j) // 10
    return _Tile(f"h{h:02d}v{v:02d}", "modis", (h, v))


def _cells(bbox: BBox) -> Iterator[tuple[int, int]]:
    west, south, east, north = bbox
    i_lo, i_hi = max(math.ceil(west - 1 - BORDER), -180), min(math.floor(east + BORDER), 179)
    j_lo, j_hi = max(math.ceil(south - 1 - BORDER), -90), min(math.floor(north + BORDER), 89)
    count = max(0, i_hi - i_lo + 1) * max(0, j_hi - j_lo + 1)
    if count > MAX_CELLS:
        raise ValueError(
            f"shape too large: its bounding box touches {count} 1° cells (at most {MAX_CELLS})"
        )
    for i in range(i_lo, i_hi + 1):
        for j in range(j_lo, j_hi + 1):
            yield i, j


def _check_bbox(bbox: BBox) -> None:
    west, south, east, north = bbox
    if not all(math.isfinite(x) for x in bbox) or west > east or south > north:
        raise ValueError(f"bad bounding box {bbox!r}: want (west, south, east, north)")


def tiles_for(dataset: str, bbox: BBox) -> list[str]:
    """The names of the ``dataset`` tiles whose footprint meets ``bbox``, sorted."""
    family = _mission(dataset).family
    _check_bbox(bbox)
    return sorted({_tile(family, i, j).name for i, j in _cells(bbox)})


def _mission(dataset: str) -> _Mission:
    try:
        return _MISSIONS[dataset]
    except KeyError:
        raise ValueError(f"unknown dataset {dataset!r}; known: {', '.join(DATASETS)}") from None


def _view(dataset: str, tile: _Tile, day: dt.date, k: int) -> tuple[str, str]:
    """``(view_id, sceneID)`` of ``tile``'s ``k``-th acquisition, on ``day``."""
    y = day.year
    doy, ymd = (
        day.toordinal() - dt.date(y, 1, 1).toordinal() + 1,
        f"{y}{day.month:02d}{day.day:02d}",
    )
    if dataset in ("sentinel2", "sentinel2l2a"):
        zone, band, sq = tile.parts
        craft = "S2A" if k % 2 == 0 else "S2B"
        if dataset == "sentinel2":
            return (
                f"S2/{zone}/{band}/{sq}/{y}/{day.month}/{day.day}/0",
                f"{craft}_tile_{ymd}_{tile.name}_0",
            )
        return (
            f"S2L2A/{zone}/{band}/{sq}/{y}/{day.month}/{day.day}/0",
            f"{craft}_tile_{ymd}_{tile.name}_0_L2A",
        )
    if dataset == "sentinel1":
        craft = "S1A" if k % 2 == 0 else "S1B"
        scene = f"{craft}_IW_GRDH_1SDV_{ymd}T0{tile.name}"
        return f"S1/{scene}", scene
    if dataset in ("landsat8", "landsat9"):
        n = dataset[-1]
        scene = f"LC{n}{tile.name}{y}{doy:03d}LGN00"
        return f"L{n}/{scene}", scene
    h, v = tile.parts
    seconds = int(_units(f"modis-time|{tile.name}|{day}")[0] * 86400)
    hms = f"{seconds // 3600:02d}{seconds // 60 % 60:02d}{seconds % 60:02d}"
    return (
        f"MODIS/{h:02d}/{v:02d}/{y}{doy:03d}/{y}{doy:03d}{hms}",
        f"MOD09GQ.A{y}{doy:03d}.h{h:02d}v{v:02d}",
    )


def search_scenes(
    dataset: str,
    bbox: BBox,
    date_from: dt.date,
    date_to: dt.date,
    *,
    today: dt.date,
    seed: int,
) -> list[dict[str, Any]]:
    """Every ``dataset`` scene whose tile meets ``bbox`` (west, south, east, north), dated in
    ``[date_from, min(date_to, today)]``, sorted by date then view_id.

    Each scene is ``{"view_id", "sceneID", "date" (YYYY-MM-DD), "cloudCoverage",
    "dataCoveragePercentage" (floats, 2 decimals, 0..100; neither for sentinel1),
    "dataset"}``. ``ValueError`` for an unknown dataset, a malformed bbox, or one over
    ``MAX_CELLS`` cells.
    """
    mission = _mission(dataset)
    _check_bbox(bbox)
    start, end = max(date_from, mission.first), min(date_to, today)
    if start > end:
        return []
    tiles = {t.name: t for t in (_tile(mission.family, i, j) for i, j in _cells(bbox))}
    found = []
    for tile in tiles.values():
        phase = int.from_bytes(_digest(f"{mission.family}|{tile.orbit}")[:4], "big")
        phase = (phase + mission.shift) % mission.period
        first = start.toordinal() + (phase - start.toordinal()) % mission.period
        for ordinal in range(first, end.toordinal() + 1, mission.period):
            day = dt.date.fromordinal(ordinal)
            view_id, scene_id = _view(dataset, tile, day, (ordinal - phase) // mission.period)
            c1, c2, d1, d2 = _units(f"{seed}|{dataset}|{tile.name}|{ordinal}")
            cloud = 10.0 * c2 if c1 < 1 / 3 else 10.0 + 90.0 * c2
            coverage = 100.0 if d1 < 0.8 else 15.0 + 84.0 * d2
            scene: dict[str, Any] = {"view_id": view_id, "sceneID": scene_id}
            if dataset not in _NO_COVER:
                scene["cloudCoverage"] = round(cloud, 2)
            scene["date"] = day.isoformat()
            if dataset not in _NO_COVER:
                scene["dataCoveragePercentage"] = round(coverage, 2)
            scene["dataset"] = dataset
            found.append(scene)
    found.sort(key=lambda s: (s["date"], s["view_id"]))
    return found


def _position(value: Any, where: str) -> tuple[float, float]:
    if not (
        isinstance(value, list | tuple)
        and len(value) >= 2
        and all(isinstance(x, int | float) and not isinstance(x, bool) for x in value)
    ):
        raise ValueError(f"{where} must be a [lon, lat] pair of numbers")
    lon, lat = float(value[0]), float(value[1])
    if not (math.isfinite(lon) and math.isfinite(lat) and -180 <= lon <= 180 and -90 <= lat <= 90):
        raise ValueError(f"{where} is not a lon/lat position: {value[:2]!r}")
    return lon, lat


def _polygon(rings: Any, where: str) -> Iterator[tuple[float, float]]:
    if not isinstance(rings, list | tuple) or not rings:
        raise ValueError(f"{where} must be a non-empty list of linear rings")
    for r, ring in enumerate(rings):
        if not isinstance(ring, list | tuple) or len(ring) < 3:
            raise ValueError(f"{where}[{r}] must be a ring of at least 3 positions")
        for p, position in enumerate(ring):
            yield _position(position, f"{where}[{r}][{p}]")


def shape_bbox(shape: Any, *, name: str = "shape") -> BBox:
    """The lon/lat bounding box ``(west, south, east, north)`` of a GeoJSON Polygon or
    MultiPolygon (lists or tuples); ``ValueError`` naming the first problem (``name``
    prefixes its path)."""
    if not isinstance(shape, Mapping):
        raise ValueError(f"{name} must be a GeoJSON Polygon or MultiPolygon object")  # noqa: TRY004 - bad input, not a bad call
    kind, coordinates = shape.get("type"), shape.get("coordinates")
    where = f"{name}.coordinates"
    if kind == "Polygon":
        points = list(_polygon(coordinates, where))
    elif kind == "MultiPolygon":
        if not isinstance(coordinates, list | tuple) or not coordinates:
            raise ValueError(f"{where} must be a non-empty list of polygons")
        points = [
            pt for k, poly in enumerate(coordinates) for pt in _polygon(poly, f"{where}[{k}]")
        ]
    else:
        raise ValueError(f"{name}.type must be Polygon or MultiPolygon, got {kind!r}")
    lons, lats = [p[0] for p in points], [p[1] for p in points]
    return min(lons), min(lats), max(lons), max(lats)
