"""Areas of interest: check, normalise and parse the geometries a manifest gives.

Pure functions over plain data; no dependencies, no I/O.

Contract:

* :func:`check_geometry` takes what a job gave as ``geometry`` (a GeoJSON object, or text
  holding GeoJSON or WKT) and returns ``(normalised, problems)``. ``normalised`` is ``None``
  when there is any problem. Each problem is ``(field, message)`` where ``field`` points at
  the place, e.g. ``geometry.coordinates[0][5]`` (ring 0, position 5; one more index level
  first for a MultiPolygon).
* Accepted: GeoJSON ``Polygon`` or ``MultiPolygon`` in WGS 84 degrees. EOS's current
  Download visual page lists only ``Polygon`` (older pages accept ``MultiPolygon``), so a
  one-part MultiPolygon is sent as its Polygon (:func:`multipolygon_parts` counts the
  parts of one that is left). Each position holds 2 or 3 finite numbers (a third,
  height, is dropped), lon in [-180, 180], lat in [-90, 90]; each ring is closed (first
  position == last), has at least 4 positions and 3 distinct ones, and does not touch or
  cross itself (two edges meeting anywhere except where neighbours share a vertex, or a
  neighbour doubling back along its predecessor). Consecutive repeated positions are
  tolerated, as GEOS does. Holes are checked on their own only, not against their shell.
* The normalised form is ``{"type": ..., "coordinates": ...}`` with every other member
  (``bbox``, ``crs``, ...) dropped, a one-part MultiPolygon made a Polygon, positions as
  ``(lon, lat)`` tuples of floats and ``-0.0`` as ``0.0``, so equal areas give equal job
  keys whatever their spelling.
* WKT text is read by :func:`bulkfetch.manifest.wkt.parse_wkt` first.

Self-intersection is O(n²) pairs for rings up to 500 vertices (the usual case, and the
fastest in Python there); longer rings use a sweep over edges sorted by their west end,
so a 10,000-vertex ring checks in well under a second. A triangle or quadrilateral (a box,
the usual AOI) that turns the same way at every vertex is convex, so simple, and is passed
without the pairwise test.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

from bulkfetch.manifest.values import describe
from bulkfetch.manifest.wkt import parse_wkt
from bulkfetch.units import counted

__all__ = [
    "check_geometry",
    "multipolygon_advice",
    "multipolygon_parts",
    "normalise",
    "ring_self_intersection",
]

Position = tuple[float, float]
Issue = tuple[str, str]  # (field, message)

_SWEEP_ABOVE = 500  # vertices; below this the plain double loop is faster in Python
# A ring of 10,000 bad positions needs one fix, not 10,000 lines of report.
_MAX_PER_RING = 5
_MAX_ISSUES = 20  # per geometry


def check_geometry(
    value: object, field: str = "geometry"
) -> tuple[dict[str, Any] | None, list[Issue]]:
    """Validate ``value`` as an area of interest; return ``(normalised or None, problems)``."""
    if isinstance(value, str):
        text = value.strip()
        try:
            value = orjson.loads(text) if text.startswith("{") else parse_wkt(text)
        except ValueError as exc:  # orjson.JSONDecodeError is a ValueError too
            kind = "GeoJSON" if text.startswith("{") else "WKT"
            return None, [(field, f"not valid {kind}: {exc}")]
    if not isinstance(value, dict):
        return None, [
            (
                field,
                f"expected a GeoJSON Polygon or MultiPolygon object, got {describe(value)}",
            )
        ]
    gtype = value.get("type")
    coords = value.get("coordinates")
    issues: list[Issue] = []
    norm: Any
    if gtype == "Polygon":
        norm = _check_polygon(coords, f"{field}.coordinates", issues)
    elif gtype == "MultiPolygon":
        if not isinstance(coords, list | tuple) or not coords:
            issues.append((f"{field}.coordinates", "expected a non-empty list of polygons"))
        else:
            norm = tuple(
                _check_polygon(poly, f"{field}.coordinates[{p}]", issues)
                for p, poly in enumerate(coords)
            )
    else:
        got = repr(gtype) if isinstance(gtype, str) else describe(gtype)
        issues.append((f"{field}.type", f"expected 'Polygon' or 'MultiPolygon', got {got[:60]}"))
    if issues:
        if len(issues) > _MAX_ISSUES:
            extra = len(issues) - _MAX_ISSUES
            more = f"... and {counted(extra, 'more problem')}"
            issues = [*issues[:_MAX_ISSUES], (field, more)]
        return None, issues
    if gtype == "MultiPolygon" and len(norm) == 1:
        return {"type": "Polygon", "coordinates": norm[0]}, []
    return {"type": gtype, "coordinates": norm}, []


def normalise(geometry: dict[str, Any]) -> dict[str, Any]:
    """Return the canonical form of an already valid Polygon or MultiPolygon."""
    coords = geometry["coordinates"]
    if geometry["type"] == "Polygon":
        return {"type": "Polygon", "coordinates": _norm_polygon(coords)}
    if len(coords) == 1:
        return {"type": "Polygon", "coordinates": _norm_polygon(coords[0])}
    return {"type": "MultiPolygon", "coordinates": tuple(_norm_polygon(p) for p in coords)}


def multipolygon_parts(geometry: object) -> int:
    """How many polygons a MultiPolygon has (0 for anything else): one of more than one
    part is a shape EOS's current documentation does not list (see the module docstring)."""
    if isinstance(geometry, dict) and geometry.get("type") == "MultiPolygon":
        coords = geometry.get("coordinates")
        return len(coords) if isinstance(coords, list | tuple) else 0
    return 0


def multipolygon_advice(geometry: object) -> str:
    """What to add to EOS's refusal of a job whose geometry has several parts ("" if not
    one): how to split it, since the current documentation lists Polygon only."""
    parts = multipolygon_parts(geometry)
    if parts < 2:
        return ""
    return (
        f"; the job's geometry is a MultiPolygon of {parts} parts, and EOS's current "
        "Download visual documentation lists Polygon only: split it into one job per part "
        "(each part's polygon as the job's geometry, each with its own name)"
    )


def _norm_polygon(rings: list[Any]) -> tuple[tuple[Position, ...], ...]:
    # "+ 0.0" turns -0.0 into 0.0 so the two spellings share a key.
    return tuple(tuple((float(p[0]) + 0.0, float(p[1]) + 0.0) for p in ring) for ring in rings)


def _check_polygon(rings: object, field: str, issues: list[Issue]) -> tuple[Any, ...]:
    if not isinstance(rings, list | tuple) or not rings:
        issues.append((field, f"expected a non-empty list of rings, got {describe(rings)}"))
        return ()
    return tuple(_check_ring(ring, f"{field}[{r}]", issues) for r, ring in enumerate(rings))


def _check_ring(ring: object, field: str, issues: list[Issue]) -> tuple[Position, ...]:
    """Check one ring; return its normalised positions (meaningless if issues were added)."""
    if not isinstance(ring, list | tuple):
        issues.append((field, f"expected a ring (a list of positions), got {describe(ring)}"))
        return ()
    pts = _fast_ring(ring)
    nbad = 0
    if pts is None:
        pts = []
        for i, pos in enumerate(ring):
            bad = _position_problem(pos)
            if bad:
                nbad += 1
                if nbad <= _MAX_PER_RING:
                    issues.append((f"{field}[{i}]", bad))
            else:
                assert isinstance(pos, list | tuple)
                pts.append((float(pos[0]) + 0.0, float(pos[1]) + 0.0))
    if nbad > _MAX_PER_RING:
        issues.append((field, f"{nbad} bad positions in this ring; the first are shown"))
    if nbad:
        return ()
    if len(pts) < 4:
        issues.append((field, f"a ring needs at least 4 positions, got {len(pts)}"))
    elif pts[0] != pts[-1]:
        issues.append((field, "ring is not closed: its last position must equal its first"))
    else:
        hit = ring_self_intersection(pts)
        if hit is not None:
            i, j, message = hit
            issues.append((f"{field}[{j}]", message.format(i=i, j=j)))
    return tuple(pts)


_NUMBER_TYPES = frozenset({int, float})


def _fast_ring(ring: list[Any] | tuple[Any, ...]) -> list[Position] | None:
    """Normalise a ring of plain ``[lon, lat]`` lists in bulk, or None to check one by one.

    This runs for every vertex of every job, so it leans on builtins: one pass for the
    shape, one for the types, and sums to catch NaN and infinity (a sum of finite
    in-range numbers is finite) before min/max, which NaN would fool.
    """
    if not all(type(p) is list and len(p) == 2 for p in ring):
        return None
    xs = [p[0] for p in ring]
    ys = [p[1] for p in ring]
    if not xs or not {*map(type, xs), *map(type, ys)} <= _NUMBER_TYPES:
        return None
    if not math.isfinite(sum(xs) + sum(ys)):
        return None
    if min(xs) < -180 or max(xs) > 180 or min(ys) < -90 or max(ys) > 90:
        return None
    # "+ 0.0" turns -0.0 into 0.0 so the two spellings share a key.
    return [(x + 0.0, y + 0.0) for x, y in ring]


def _position_problem(pos: object) -> str:
    if not isinstance(pos, list | tuple) or len(pos) not in (2, 3):
        return f"expected a position [lon, lat], got {describe(pos)}" + (
            f" of {len(pos)} items" if isinstance(pos, list | tuple) else ""
        )
    for v in pos:
        if isinstance(v, bool) or not isinstance(v, int | float):
            return f"coordinates must be numbers, got {describe(v)}"
        if not math.isfinite(v):
            return "coordinates must be finite"
    lon, lat = pos[0], pos[1]
    if not -180 <= lon <= 180:
        return f"longitude {lon} is outside [-180, 180]"
    if not -90 <= lat <= 90:
        return f"latitude {lat} is outside [-90, 90]"
    return ""


def ring_self_intersection(ring: list[Position]) -> tuple[int, int, str] | None:
    """Find where a closed ring touches or crosses itself.

    Returns ``(i, j, message)`` where ``i`` and ``j`` index the first positions of the two
    offending edges in ``ring`` as given, and ``message`` is a template over ``{i}`` and
    ``{j}``; or ``None`` when the ring is simple.
    """
    if len(ring) in (4, 5) and _convex(ring):
        return None
    # Drop consecutive repeats (zero-length edges), remembering original indices.
    vs: list[Position] = []
    idx: list[int] = []
    for n, p in enumerate(ring[:-1]):
        if not vs or p != vs[-1]:
            vs.append(p)
            idx.append(n)
    if len(vs) > 1 and vs[-1] == vs[0]:
        vs.pop()
        idx.pop()
    m = len(vs)
    if m < 3:
        return (0, 0, "a ring needs at least 3 distinct positions")
    # Neighbouring edges share a vertex by construction; they are wrong only when the
    # second doubles back along the first (a zero-width spike).
    for k in range(m):
        a, b, c = vs[k - 1], vs[k], vs[(k + 1) % m]
        if (
            _cross(a, b, c) == 0
            and (a[0] - b[0]) * (c[0] - b[0]) + (a[1] - b[1]) * (c[1] - b[1]) > 0
        ):
            return (idx[k - 1], idx[k], "ring doubles back on itself at position {j}")
    pair = _sweep(vs) if m > _SWEEP_ABOVE else _all_pairs(vs)
    if pair is None:
        return None
    i, j = pair
    return (
        idx[i],
        idx[j],
        "ring crosses or touches itself: edge from position {j} meets edge from position {i}",
    )


def _convex(ring: list[Position]) -> bool:
    """Whether a closed triangle or quadrilateral turns the same way, strictly, at every
    vertex: then it is convex, so simple (a quadrilateral's turns add up to one full turn
    at most twice over, and a bow tie turns both ways). The usual AOI, a box, is one; this
    settles it without the pairwise test. A zero turn (a repeat, a spike) says nothing."""
    vs = ring[:-1]
    m = len(vs)
    positive = negative = False
    for k in range(m):
        (ax, ay), (bx, by), (cx, cy) = vs[k - 1], vs[k], vs[(k + 1) % m]
        turn = (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)
        if turn > 0:
            positive = True
        elif turn < 0:
            negative = True
        else:
            return False
    return positive != negative


def _all_pairs(vs: list[Position]) -> tuple[int, int] | None:
    m = len(vs)
    for i in range(m - 2):
        a, b = vs[i], vs[i + 1]
        # Edge i neighbours i-1 and i+1; edge 0 also neighbours edge m-1.
        for j in range(i + 2, m - 1 if i == 0 else m):
            if _edges_meet(a, b, vs[j], vs[(j + 1) % m]):
                return i, j
    return None


def _sweep(vs: list[Position]) -> tuple[int, int] | None:
    m = len(vs)
    edges = []
    for k in range(m):
        a, b = vs[k], vs[(k + 1) % m]
        edges.append((min(a[0], b[0]), max(a[0], b[0]), min(a[1], b[1]), max(a[1], b[1]), k))
    edges.sort()
    active: list[tuple[float, float, float, float, int]] = []
    for e in edges:
        x0, _, y0, y1, k = e
        active = [o for o in active if o[1] >= x0]
        for o in active:
            j = o[4]
            if o[2] > y1 or o[3] < y0 or abs(j - k) in (1, m - 1):
                continue
            if _edges_meet(vs[k], vs[(k + 1) % m], vs[j], vs[(j + 1) % m]):
                return (min(j, k), max(j, k))
        active.append(e)
    return None


def _cross(a: Position, b: Position, c: Position) -> float:
    return (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])


def _within(a: Position, b: Position, p: Position) -> bool:
    # p is collinear with a-b; is it inside the edge's box?
    return min(a[0], b[0]) <= p[0] <= max(a[0], b[0]) and min(a[1], b[1]) <= p[1] <= max(a[1], b[1])


def _edges_meet(a: Position, b: Position, c: Position, d: Position) -> bool:
    if max(a[0], b[0]) < min(c[0], d[0]) or max(c[0], d[0]) < min(a[0], b[0]):
        return False
    if max(a[1], b[1]) < min(c[1], d[1]) or max(c[1], d[1]) < min(a[1], b[1]):
        return False
    d1, d2 = _cross(c, d, a), _cross(c, d, b)
    d3, d4 = _cross(a, b, c), _cross(a, b, d)
    if ((d1 > 0 > d2) or (d1 < 0 < d2)) and ((d3 > 0 > d4) or (d3 < 0 < d4)):
        return True
    return (
        (d1 == 0 and _within(c, d, a))
        or (d2 == 0 and _within(c, d, b))
        or (d3 == 0 and _within(a, b, c))
        or (d4 == 0 and _within(a, b, d))
    )
