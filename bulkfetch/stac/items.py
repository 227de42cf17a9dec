"""STAC Items for downloaded jobs: pure functions of a job's parameters and its ledger record.

Contract: :func:`make_item` turns one done job (:class:`Described`: its key, result path,
size and sha256 from the ledger; its Download visual parameters and ``_`` notes from the
manifest) into a :class:`pystac.Item`, or raises :class:`Undescribable` saying why it
cannot (no date known). No I/O and no clock: the catalog writer (:mod:`bulkfetch.stac.catalog`)
places and writes what this builds.

What an Item says, and where each value comes from:

* ``id``: the result's path under the destination without its extension, ``/`` made ``_``
  and anything but letters, digits, ``.``, ``_`` and ``-`` made ``-`` (:func:`item_id`): the
  job's ``name``, or ``{view_id}_{bm_type}_{key[:12]}`` for a job without one.
* ``geometry`` and ``bbox``: the job's AOI (lon/lat, as sent to EOS).
* ``datetime``: the scene's, from the view_id (:func:`scene_time`), else the search's
  ``_date`` note. A view_id that spells a day but no time gives midnight UTC, with
  ``start_datetime``/``end_datetime`` spanning that UTC day, so no tool takes the
  midnight for an acquisition time.
* ``eos:view_id``, ``eos:bm_type``: the request; ``bulkfetch:key``: the job's key, which
  lets a later refresh recognise the Item.
* ``gsd`` from ``px_size``; ``platform``, ``constellation`` and ``instruments`` from the
  view_id where it tells them (:func:`platform_of`); ``eo:cloud_cover`` from the search's
  ``_cloud`` note; ``proj:code`` ``EPSG:3857`` (EOS renders every result in it).
* one asset, ``visual``: the result file, with its media type (:func:`media_type`), roles
  ``data`` and ``visual``, ``file:size`` and ``file:checksum`` (the sha256 as a multihash);
  a GeoTIFF's also ``raster:bands`` (one 8-bit band per channel of the render, counted by
  the caller from the file's header), so raster tools load every channel.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pystac
from pystac.extensions.eo import EOExtension
from pystac.extensions.file import FileExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import DataType, RasterBand, RasterExtension

from bulkfetch.report.thumbnails import view_date

__all__ = [
    "ASSET_KEY",
    "EPSG",
    "Described",
    "Platform",
    "Undescribable",
    "href_for",
    "item_id",
    "make_item",
    "media_type",
    "multihash",
    "platform_of",
    "scene_time",
]

ASSET_KEY = "visual"
"""The one asset of every Item: stack or load by this key."""
EPSG = "EPSG:3857"
"""EOS renders every Download visual result in Web Mercator."""
ROLES = ("data", "visual")

_EXTENSIONS = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".zip", ".kmz"}
_MEDIA = {
    ".jpg": pystac.MediaType.JPEG,
    ".jpeg": pystac.MediaType.JPEG,
    ".png": pystac.MediaType.PNG,
    ".tif": pystac.MediaType.TIFF,
    ".tiff": pystac.MediaType.TIFF,
    ".zip": "application/zip",  # the image and its world file (georeference: world)
    ".kmz": "application/vnd.google-earth.kmz",
}
_UNSAFE_ID = re.compile(r"[^\w.-]+")
# Characters that end a URI's path (or start an escape): a file name holding one must have
# it escaped in an href, or readers cut the path there. Spaces and non-ASCII letters are
# left as they are: pystac and GDAL open such relative paths as written.
_HREF_ESCAPES = {"%": "%25", "#": "%23", "?": "%3F"}
# MODIS/12/04/2017204/2017204034223: the folder's year and day of year, then the same
# followed by the acquisition's hour, minute and second.
_MODIS_TIME = re.compile(r"/(\d{4})(\d{3})/\1\2(\d{2})(\d{2})(\d{2})$")
_MODIS_PRODUCT = re.compile(r"(?:^|[/_.])(MOD|MYD)\d")  # MOD09GQ: Terra, MYD09GQ: Aqua


class Undescribable(ValueError):
    """Raised by :func:`make_item` when a job cannot be an Item; the message says why."""


@dataclass(frozen=True, slots=True)
class Described:
    """One done job, as an Item is made of it."""

    key: str
    path: str  # posix, relative to the destination's root
    size: int
    sha256: str
    params: Mapping[str, Any]  # the Download visual parameters (view_id, geometry, ...)
    notes: Mapping[str, Any] = field(default_factory=dict)  # the job's "_" notes
    bands: int = 0  # a GeoTIFF's band count, read from its header (0: not a GeoTIFF, unknown)


@dataclass(frozen=True, slots=True)
class Platform:
    """What a view_id says about who took the scene; None where it does not say."""

    platform: str | None = None
    constellation: str | None = None
    instruments: tuple[str, ...] = ()


def platform_of(view_id: str) -> Platform:
    """Platform, constellation and instruments as STAC names them, from the view_id.

    Sentinel-2 view_ids (``S2/...``, ``S2L2A/...``) do not say 2A from 2B (nor 2C): only
    the constellation is known. Landsat's first part is the satellite (``L8``, ``L9``).
    MODIS flies on Terra and Aqua; the view_id names neither, unless it holds the product
    name (``MOD...`` Terra, ``MYD...`` Aqua).
    """
    head = view_id.split("/", 1)[0].upper()
    if head.startswith("S2"):
        return Platform(None, "sentinel-2", ("msi",))
    landsat = re.fullmatch(r"L(?:ANDSAT)?-?([89])", head)
    if landsat:
        return Platform(f"landsat-{landsat[1]}", "landsat", ("oli", "tirs"))
    if head == "MODIS":
        product = _MODIS_PRODUCT.search(view_id[len(head) :])
        satellite = None if product is None else {"MOD": "terra", "MYD": "aqua"}[product[1]]
        return Platform(satellite, None, ("modis",))
    return Platform()


def scene_time(view_id: str, notes: Mapping[str, Any]) -> tuple[datetime, bool] | None:
    """When the scene was taken, and whether only its day is known; None if nothing says.

    The view_id first (MODIS view_ids carry the time of day), then the search's ``_date``
    note (``YYYY-MM-DD``, or an ISO date and time).
    """
    found = _MODIS_TIME.search(view_id)
    day_text = view_date(view_id)
    if found and day_text:
        hour, minute, second = int(found[3]), int(found[4]), int(found[5])
        day = date.fromisoformat(day_text)
        if hour < 24 and minute < 60 and second < 60:
            return datetime.combine(day, time(hour, minute, second), UTC), False
    if day_text:
        return datetime.combine(date.fromisoformat(day_text), time(), UTC), True
    note = notes.get("_date")
    if isinstance(note, str):
        try:
            if len(note) == 10:
                return datetime.combine(date.fromisoformat(note), time(), UTC), True
            when = datetime.fromisoformat(note)
        except ValueError:
            return None
        return (when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)), False
    return None


def multihash(sha256_hex: str) -> str:
    """The sha256 as a multihash in hex, as ``file:checksum`` wants it: ``12`` is sha2-256's
    code and ``20`` its length (32 bytes)."""
    return "1220" + sha256_hex.lower()


def media_type(path: str, params: Mapping[str, Any]) -> str:
    """The result's media type: by its extension, a GeoTIFF where EOS georeferenced it."""
    ext = _extension(path)
    if ext in (".tif", ".tiff") and params.get("georeference") == "tiff":
        return pystac.MediaType.GEOTIFF
    return str(_MEDIA.get(ext, "application/octet-stream"))


def item_id(path: str) -> str:
    """The Item id for the result at ``path`` (see the module docstring)."""
    ext = _extension(path)
    stem = path[: -len(ext)] if ext else path
    return _UNSAFE_ID.sub("-", stem.replace("/", "_")).strip("-") or "item"


def _extension(path: str) -> str:
    dot = path.rfind(".")
    ext = path[dot:].lower() if dot > path.rfind("/") else ""
    return ext if ext in _EXTENSIONS else ""


def href_for(relative: str) -> str:
    """``relative`` (a posix path) as an href: the few characters a URI cannot hold escaped."""
    return "".join(_HREF_ESCAPES.get(c, c) for c in relative)


def _bbox(geometry: Mapping[str, Any]) -> list[float]:
    polygons = geometry["coordinates"]
    if geometry["type"] == "Polygon":
        polygons = [polygons]
    lons = [p[0] for polygon in polygons for ring in polygon for p in ring]
    lats = [p[1] for polygon in polygons for ring in polygon for p in ring]
    return [min(lons), min(lats), max(lons), max(lats)]


def _as_lists(value: Any) -> Any:
    """GeoJSON coordinates as lists (validated jobs hold tuples)."""
    if isinstance(value, list | tuple):
        return [_as_lists(v) for v in value]
    return value


def _percentage(value: Any) -> float | None:
    """A note's 0..100 value (a CSV manifest's notes are text), or None."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if 0 <= number <= 100 else None


def make_item(job: Described, asset_href: str) -> pystac.Item:
    """The Item of ``job``, its asset at ``asset_href`` (relative to where the Item is written).

    Raises :class:`Undescribable` when no date is known for the scene.
    """
    view_id = str(job.params["view_id"])
    when = scene_time(view_id, job.notes)
    if when is None:
        raise Undescribable(f"no date in view_id {view_id!r} and no _date note")
    moment, day_only = when
    geometry = {"type": job.params["geometry"]["type"]}
    geometry["coordinates"] = _as_lists(job.params["geometry"]["coordinates"])
    properties: dict[str, Any] = {
        "eos:view_id": view_id,
        "eos:bm_type": str(job.params["bm_type"]),
        "bulkfetch:key": job.key,
    }
    item = pystac.Item(
        id=item_id(job.path),
        geometry=geometry,
        bbox=_bbox(geometry),
        datetime=moment,
        properties=properties,
    )
    common = item.common_metadata
    if day_only:
        common.start_datetime = moment
        common.end_datetime = moment + timedelta(days=1) - timedelta(microseconds=1)
    px_size = job.params.get("px_size")
    if isinstance(px_size, int | float) and not isinstance(px_size, bool) and px_size > 0:
        common.gsd = float(px_size)
    who = platform_of(view_id)
    if who.platform:
        common.platform = who.platform
    if who.constellation:
        common.constellation = who.constellation
    if who.instruments:
        common.instruments = list(who.instruments)
    cloud = _percentage(job.notes.get("_cloud"))
    if cloud is not None:
        EOExtension.ext(item, add_if_missing=True).cloud_cover = cloud
    ProjectionExtension.ext(item, add_if_missing=True).code = EPSG
    asset = pystac.Asset(
        href=asset_href,
        media_type=media_type(job.path, job.params),
        roles=list(ROLES),
        title=f"{job.params['bm_type']} of {view_id}",
    )
    item.add_asset(ASSET_KEY, asset)  # first: the extension is declared on its owner
    files = FileExtension.ext(asset, add_if_missing=True)
    files.size = job.size
    files.checksum = multihash(job.sha256)
    if job.bands and asset.media_type == pystac.MediaType.GEOTIFF:
        # Raster tools load one band per asset unless told how many it has: odc-stac
        # reads visual.1, visual.2, visual.3 of an RGB render only with these.
        band = RasterBand.create(data_type=DataType.UINT8)
        RasterExtension.ext(asset, add_if_missing=True).bands = [band] * job.bands
    return item
