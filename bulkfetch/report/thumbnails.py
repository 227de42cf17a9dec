"""The pictures of the report's contact sheet, as pure functions of a file or a value.

:func:`thumbnail` makes a small JPEG of a result file (jpeg, png, tiff, and the image
inside a world-file zip or a kmz), decoding at most :data:`MAX_PIXELS` and never
trusting a member name; :func:`aoi_svg` draws a job's area as an inline SVG outline (Web
Mercator, so it looks like the map); :func:`view_date` reads the acquisition date a
view_id spells (Sentinel-2, Landsat, MODIS). Used by :mod:`bulkfetch.report.page`.
"""

from __future__ import annotations

import io
import math
import re
import warnings
import zipfile
from collections.abc import Mapping
from datetime import date, timedelta
from pathlib import Path
from typing import IO, Any

from PIL import Image, UnidentifiedImageError

__all__ = ["MAX_PIXELS", "ThumbnailError", "aoi_svg", "thumbnail", "view_date"]

MAX_PIXELS = 200_000_000
"""A non-JPEG image larger than this is not decoded (JPEG decodes at a reduced scale)."""
_IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
_ZIP_EXTS = (".zip", ".kmz")


class ThumbnailError(Exception):
    """Raised by :func:`thumbnail` when a file cannot be shown; the message says why."""


_YMD_PARTS = re.compile(r"(?:^|/)(\d{4})/(\d{1,2})/(\d{1,2})(?:/|$)")
_LANDSAT_ID = re.compile(r"L[A-Z]\d{7}(\d{4})(\d{3})[A-Z]{3}\d{2}")
_YMD_DIGITS = re.compile(r"(?<!\d)(\d{4})(\d{2})(\d{2})(?!\d)")
_YEAR_DOY = re.compile(r"/(\d{4})(\d{3})(?:/|$)")  # MODIS/12/04/2017204/...: year, day of year


def view_date(view_id: str) -> str:
    """The acquisition date ``view_id`` spells, ``YYYY-MM-DD``, or "" if it spells none.

    ``S2/13/R/EL/2023/7/19/0`` (Sentinel), ``L8/LC80260312023202LGN00`` (Landsat scene id:
    year and day of year), ``MODIS/12/04/2017204/2017204034223`` (a ``YYYYDDD`` part) and
    ``..._20230721_...`` (8 digits) are understood.
    """
    found = _YMD_PARTS.search(view_id)
    if found:
        y, m, d = (int(g) for g in found.groups())
        return _iso(y, m, d)
    found = _LANDSAT_ID.search(view_id) or _YEAR_DOY.search(view_id)
    if found:
        year, doy = int(found[1]), int(found[2])
        if 1970 <= year <= 2200 and 1 <= doy <= 366:
            day = date(year, 1, 1) + timedelta(days=doy - 1)
            return day.isoformat() if day.year == year else ""
        return ""
    found = _YMD_DIGITS.search(view_id)
    return _iso(int(found[1]), int(found[2]), int(found[3])) if found else ""


def _iso(year: int, month: int, day: int) -> str:
    if not 1970 <= year <= 2200:
        return ""
    try:
        return date(year, month, day).isoformat()
    except ValueError:
        return ""


def _rings(geometry: Any) -> list[tuple[bool, list[tuple[float, float]]]]:
    """(is a hole, ring) of a GeoJSON Polygon or MultiPolygon; [] for anything else."""
    if not isinstance(geometry, Mapping):
        return []
    kind, coords = geometry.get("type"), geometry.get("coordinates")
    polygons = [coords] if kind == "Polygon" else coords if kind == "MultiPolygon" else None
    out = []
    for polygon in polygons if isinstance(polygons, list | tuple) else ():
        for index, ring in enumerate(polygon if isinstance(polygon, list | tuple) else ()):
            try:
                points = [(float(p[0]), float(p[1])) for p in ring]
            except (TypeError, ValueError, IndexError, KeyError):
                continue
            points = [p for p in points if math.isfinite(p[0]) and math.isfinite(p[1])]
            if len(points) >= 2:
                out.append((index > 0, points))
    return out


def _mercator(lon: float, lat: float) -> tuple[float, float]:
    lat = max(-85.05112878, min(85.05112878, lat))
    return math.radians(lon), math.log(math.tan(math.pi / 4 + math.radians(lat) / 2))


def aoi_svg(geometry: Any, size: int) -> str:
    """An inline ``<svg>`` of ``geometry``'s outline fitting a ``size`` px square.

    Web Mercator, so the shape is the one the image shows; the aspect ratio is kept and the
    outline centred. Every ring of every polygon is a ``<polygon>`` (holes get class
    ``hole``). "" when there is nothing to draw.
    """
    rings = _rings(geometry)
    if not rings or size <= 0:
        return ""
    projected = [(hole, [_mercator(lon, lat) for lon, lat in ring]) for hole, ring in rings]
    xs = [x for _, ring in projected for x, _ in ring]
    ys = [y for _, ring in projected for _, y in ring]
    x0, y0, span_x, span_y = min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)
    pad = max(1.0, size * 0.06)
    scale = (size - 2 * pad) / max(span_x, span_y, 1e-12)
    dx = (size - span_x * scale) / 2
    dy = (size - span_y * scale) / 2
    parts = []
    for hole, ring in projected:
        points = " ".join(
            f"{dx + (x - x0) * scale:.1f},{size - dy - (y - y0) * scale:.1f}" for x, y in ring
        )
        css = ' class="hole"' if hole else ""
        parts.append(f'<polygon{css} points="{points}"/>')
    return (
        f'<svg class="aoi" viewBox="0 0 {size} {size}" width="{size}" height="{size}" '
        f'role="img" aria-label="area of interest">{"".join(parts)}</svg>'
    )


def _safe_member(name: str) -> bool:
    """A zip member name that stays inside the archive: no absolute path, no ``..``."""
    if not name or name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return False
    return ".." not in re.split(r"[/\\]", name)


def _open_image_member(archive: zipfile.ZipFile) -> IO[bytes]:
    names = [info.filename for info in archive.infolist() if not info.is_dir()]
    images = [n for n in names if n.lower().endswith(_IMAGE_EXTS)]
    unsafe = [n for n in images if not _safe_member(n)]
    if unsafe:
        raise ThumbnailError(f"the archive holds an unsafe member name: {unsafe[0]!r}")
    if not images:
        raise ThumbnailError("no image in the archive")
    return archive.open(sorted(images, key=lambda n: (n.count("/"), n))[0])


def thumbnail(path: Path, size: int) -> bytes:
    """A JPEG no larger than ``size`` px either way of the image at ``path``.

    ``path`` is a jpeg, png or tiff, or a zip/kmz holding one (the shallowest image
    member; a member with an absolute path or ``..`` is refused). Transparency is shown on
    white. Raises :class:`ThumbnailError` saying why it cannot.
    """
    try:
        with path.open("rb") as stream:
            if zipfile.is_zipfile(stream):
                stream.seek(0)
                with zipfile.ZipFile(stream) as archive, _open_image_member(archive) as member:
                    return _thumb_of(member, size)
            stream.seek(0)
            return _thumb_of(stream, size)
    except FileNotFoundError:
        raise ThumbnailError("file missing") from None
    except IsADirectoryError:
        raise ThumbnailError("a folder, not a file") from None
    except OSError as exc:
        raise ThumbnailError(f"cannot read: {exc.strerror or exc}") from None
    except (zipfile.BadZipFile, EOFError, ValueError) as exc:
        raise ThumbnailError(f"damaged file: {exc}") from None


def _thumb_of(stream: IO[bytes], size: int) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(stream) as image:
                if image.format == "JPEG":
                    image.draft("RGB", (size, size))  # decode at 1/2..1/8 scale: fast, small
                elif image.width * image.height > MAX_PIXELS:
                    raise ThumbnailError(f"too large to thumbnail ({image.width}x{image.height})")
                return _encode_thumb(image, size)
        except UnidentifiedImageError:
            raise ThumbnailError("not an image Pillow can read") from None
        except Image.DecompressionBombError:
            raise ThumbnailError("too large to thumbnail") from None
        except OSError as exc:
            raise ThumbnailError(f"cannot decode the image: {exc}") from None


def _encode_thumb(image: Image.Image, size: int) -> bytes:
    image.thumbnail((size, size))
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        image = image.convert("F").point(lambda v: v / 256).convert("L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        image = background
    out = io.BytesIO()
    image.convert("RGB").save(out, "JPEG", quality=80)
    return out.getvalue()
