"""How big a job's image would be, and whether its px_size is one any sensor offers.

Private to :mod:`bulkfetch.manifest.jobs`; pure functions over a checked geometry.

EOS writes its images in EPSG:3857 (Web Mercator), so ``px_size`` is taken in that
projection's metres, as GDAL takes a target resolution in the target's units: the image
is the AOI's extent *in EPSG:3857* divided by ``px_size``. That projected extent is not
the ground's: Web Mercator stretches both axes by 1/cos(latitude) (x1.4 at 45°, x2 at
60°), so at 60° a 10 m px_size holds 5 m of ground and the image has four times the
pixels the ground area suggests. The projected extent is used directly because it is
the raster EOS has to make; latitudes are clamped to Web Mercator's ±85.0511°.

:func:`size_warnings` gives ``(kind, message)`` pairs, warnings only (the user decides):

* ``px_size:fine``: below the finest pixel any satellite EOS resells offers, or far
  below the view_id's sensor's own finest band (the tables in ``data/bands.toml``);
* ``px_size:coarse``: above 10 km, where no sensor has pixels;
* ``size:huge``: a gigapixel image or more, or a JPEG wider or taller than the 65,535
  pixels the format can hold, with the estimate (``about 1.2 gigapixels (40000 x
  30000)``);
* ``size:tiny``: an image under one pixel across.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from bulkfetch.manifest._bands import Sensor, tables

__all__ = ["GIGAPIXEL", "JPEG_MAX_SIDE", "mercator_extent", "output_pixels", "size_warnings"]

GIGAPIXEL = 1e9
"""From here an image is absurd for one request (a whole Sentinel-2 tile at 10 m is 0.12)."""
JPEG_MAX_SIDE = 65_535
"""The largest width or height a JPEG can hold (its header stores them in 16 bits)."""

_R = 6_378_137.0  # the WGS 84 semi-major axis: Web Mercator's sphere
_MAX_LAT = 85.051_128_78  # where Web Mercator's square world ends


def mercator_extent(geometry: Mapping[str, Any]) -> tuple[float, float]:
    """``(width, height)`` in EPSG:3857 metres of the bounding box of a checked geometry.

    Only outer rings count (holes are inside them). A geometry across the antimeridian
    spans the long way round, as the raster EOS makes of it does.
    """
    coords = geometry["coordinates"]
    if geometry["type"] == "Polygon":
        outer = coords[0]
    else:
        outer = [position for polygon in coords for position in polygon[0]]
    # (Run for every job of a manifest: a transpose by zip beats a loop over positions.)
    xs, ys = zip(*outer, strict=True)
    width = _R * math.radians(max(xs) - min(xs))
    return width, _mercator_y(max(ys)) - _mercator_y(min(ys))


def _mercator_y(lat: float) -> float:
    lat = max(-_MAX_LAT, min(_MAX_LAT, lat))
    return _R * math.asinh(math.tan(math.radians(lat)))  # = R ln tan(pi/4 + lat/2)


def output_pixels(geometry: Mapping[str, Any], px_size: float) -> tuple[float, float]:
    """``(width, height)`` in pixels of the image of ``geometry`` at ``px_size`` metres."""
    width, height = mercator_extent(geometry)
    return width / px_size, height / px_size


def size_warnings(
    geometry: Mapping[str, Any], px_size: float, fmt: str, sensor: Sensor | None
) -> list[tuple[str, str]]:
    """``(kind, message)`` for each way the job's image size is likely a mistake."""
    # (Run for every job: nothing is formatted unless there is something to say.)
    t = tables()
    out: list[tuple[str, str]] = []
    floor = t.px_min if sensor is None else max(t.px_min, sensor.finest_m / t.oversample)
    if px_size < floor or px_size > t.px_max:
        out.append(_px_warning(px_size, sensor))
    width, height = output_pixels(geometry, px_size)
    too_wide = fmt == "jpeg" and (width > JPEG_MAX_SIDE or height > JPEG_MAX_SIDE)
    if width * height >= GIGAPIXEL or too_wide:
        why = "EOS may refuse it, or take very long"
        if too_wide:
            why = f"a JPEG holds at most {JPEG_MAX_SIDE} pixels a side"
        estimate = estimate_text(width, height)
        message = (
            f"at {px_size:g} m the image would be {estimate}: {why}; check px_size and the area"
        )
        out.append(("size:huge", message))
    elif width < 1 or height < 1:
        message = (
            f"at {px_size:g} m the image would be under one pixel across "
            f"({width:.2g} x {height:.2g}): check px_size"
        )
        out.append(("size:tiny", message))
    return out


def _px_warning(px_size: float, sensor: Sensor | None) -> tuple[str, str]:
    t = tables()
    px = f"{px_size:g} m"
    if px_size > t.px_max:
        return "px_size:coarse", f"{px} is coarser than any sensor's pixels"
    if px_size < t.px_min or sensor is None:
        return "px_size:fine", f"{px} is finer than any satellite offers ({t.px_min:g} m)"
    best = f"{sensor.finest_m:g} m at best"
    return "px_size:fine", f"{px} is far finer than {sensor.name} offers ({best})"


def estimate_text(width: float, height: float) -> str:
    """``about 1.2 gigapixels (40000 x 30000)``, or megapixels below a gigapixel."""
    pixels = width * height
    if not math.isfinite(pixels):  # a px_size of 1e-300 m
        return "too many pixels to count"
    unit, value = ("gigapixels", pixels / 1e9) if pixels >= 1e9 else ("megapixels", pixels / 1e6)
    return f"about {_number(value, 1)} {unit} ({_number(width)} x {_number(height)})"


def _number(x: float, decimals: int = 0) -> str:
    """``x`` as a person reads it: ``1.2``, ``15,000``, ``4452780``, or ``3.1e+22`` once
    the digits stop meaning anything."""
    if x >= 1e9:
        return f"{x:.2g}"
    if decimals and x < 100:
        return f"{x:.{decimals}f}"
    return f"{x:,.0f}" if decimals else f"{x:.0f}"
