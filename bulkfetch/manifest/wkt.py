"""WKT: the text form of a polygon, read into the GeoJSON a manifest job sends.

Contract: :func:`parse_wkt` turns 2D WKT ``POLYGON ((...))`` / ``MULTIPOLYGON (((...)))``
text (any case, an optional EWKT ``SRID=4326;`` prefix) into the GeoJSON dict, and raises
:class:`ValueError` naming the 1-based character position for anything else. Checking the
area itself (closed rings, self-intersection) is :mod:`bulkfetch.manifest.geometry`'s.
Pure; no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["parse_wkt"]

_T = TypeVar("_T")

_TOKEN = re.compile(
    r"\s*(?:(?P<num>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)|(?P<word>[A-Za-z]+)|(?P<punct>[(),;=]))"
)


class _Wkt:
    """A tiny recursive-descent reader; nesting is fixed by the grammar, so no deep recursion."""

    def __init__(self, text: str) -> None:
        self.toks: list[tuple[str, str, int]] = []
        pos = 0
        while pos < len(text):
            mt = _TOKEN.match(text, pos)
            if mt is None:
                if text[pos:].strip() == "":
                    break
                bad = text[pos:].lstrip()[:1]
                raise ValueError(
                    f"at character {len(text) - len(text[pos:].lstrip()) + 1}: unexpected {bad!r}"
                )
            kind = mt.lastgroup
            assert kind is not None
            self.toks.append((kind, mt.group(kind), mt.start(kind) + 1))
            pos = mt.end()
        self.i = 0
        self.end = len(text) + 1

    def peek(self) -> tuple[str, str, int]:
        return self.toks[self.i] if self.i < len(self.toks) else ("end", "end of text", self.end)

    def take(self, want: str) -> tuple[str, str, int]:
        tok = self.peek()
        if tok[1].upper() != want and tok[0] != want:
            raise ValueError(f"at character {tok[2]}: expected {want!r}, got {tok[1]!r}")
        self.i += 1
        return tok

    def position(self) -> list[float]:
        nums = []
        while self.peek()[0] == "num":
            nums.append(float(self.take("num")[1]))
        if len(nums) != 2:
            tok = self.peek()
            why = "only 2D coordinates are supported" if len(nums) > 2 else "expected 2 numbers"
            raise ValueError(f"at character {tok[2]}: {why}, got {len(nums)}")
        return nums

    def group(self, item: Callable[[], _T]) -> list[_T]:
        """``(item, item, ...)``: one or more items, comma-separated, in parentheses."""
        self.take("(")
        items = [item()]
        while self.peek()[1] == ",":
            self.take(",")
            items.append(item())
        self.take(")")
        return items

    def ring(self) -> list[list[float]]:
        return self.group(self.position)

    def polygon(self) -> list[list[list[float]]]:
        return self.group(self.ring)


def parse_wkt(text: str) -> dict[str, Any]:
    """Parse 2D WKT ``POLYGON`` or ``MULTIPOLYGON`` (any case) into a GeoJSON dict.

    An EWKT ``SRID=4326;`` prefix is accepted; any other SRID, ``Z``/``M`` dimensions and
    ``EMPTY`` are refused with a :class:`ValueError` naming the 1-based character position.
    """
    p = _Wkt(text)
    if p.peek()[1].upper() == "SRID":
        p.take("SRID")
        p.take("=")
        kind, srid, at = p.peek()
        if srid != "4326":
            raise ValueError(f"at character {at}: only SRID=4326 (WGS 84 degrees) is supported")
        p.take("num")
        p.take(";")
    kind, word, at = p.peek()
    name = word.upper()
    if kind != "word" or name not in (
        "POLYGON",
        "MULTIPOLYGON",
        "POLYGONZ",
        "POLYGONM",
        "POLYGONZM",
        "MULTIPOLYGONZ",
        "MULTIPOLYGONM",
        "MULTIPOLYGONZM",
    ):
        raise ValueError(f"at character {at}: expected POLYGON or MULTIPOLYGON, got {word[:40]!r}")
    p.take(name)
    dim = p.peek()
    if name.endswith(("Z", "M")):
        raise ValueError(f"at character {at}: only 2D WKT is supported (no Z or M)")
    if dim[0] == "word" and dim[1].upper() in ("Z", "M", "ZM"):
        raise ValueError(f"at character {dim[2]}: only 2D WKT is supported (no Z or M)")
    if dim[1].upper() == "EMPTY":
        raise ValueError(f"at character {dim[2]}: an EMPTY geometry has no area")
    if name == "POLYGON":
        geom: dict[str, Any] = {"type": "Polygon", "coordinates": p.polygon()}
    else:
        geom = {"type": "MultiPolygon", "coordinates": p.group(p.polygon)}
    tail = p.peek()
    if tail[0] != "end":
        raise ValueError(f"at character {tail[2]}: unexpected {tail[1]!r} after the geometry")
    return geom
