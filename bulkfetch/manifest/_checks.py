"""Check and normalise one job parameter at a time; private to the manifest's validation.

A parameter is a member of a manifest record (a JSON key, a GeoJSON property, a CSV
column): what the manifest's formats and messages call a *field* ("unknown field"), not
the farm fields a search reads (:mod:`bulkfetch.scene_search.fields`). Each checker in
:data:`CHECKS` takes a JSON value and returns the value to send, or raises a ValueError
(:class:`Invalid`, or the name rules' own, :mod:`bulkfetch.manifest.names`) whose message
says what was expected and what came. ``geometry`` is checked by
:mod:`bulkfetch.manifest.geometry`; ``reference`` is never checked (it is ignored).
"""

from __future__ import annotations

import difflib
import functools
import math
import re
import sys
from collections.abc import Callable, Iterable
from typing import Any

from bulkfetch.errors import Problem
from bulkfetch.manifest.names import check_name, has_control
from bulkfetch.manifest.values import describe
from bulkfetch.units import counted

__all__ = [
    "CHECKS",
    "KNOWN",
    "REQUIRED",
    "Invalid",
    "WarnOnce",
    "costly_typo",
    "did_you_mean",
    "suggest",
]

REQUIRED = ("view_id", "bm_type", "geometry", "px_size")

_RESAMPLE: tuple[str, ...] = ("near", "bilinear", "cubic", "cubicspline", "lanczos")
_RESAMPLE += ("average", "mode", "max", "min", "med", "q1", "q3")
# sensor, then one or more non-empty slash-separated parts; no whitespace anywhere.
_VIEW_ID = re.compile(r"[A-Za-z0-9][^/\s]*(?:/[^/\s]+)+")
_NUMBER = r"\s*[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?\s*"
_LEVELS = re.compile(f"({_NUMBER}),({_NUMBER})")


# Where a field's value helps the user find it, the message shows it ("got 'NVDI'").
_shown = functools.partial(describe, show=True)


class Invalid(ValueError):
    """A field's value is wrong; the message says what was expected and what came."""


def _view_id(value: object) -> str:
    if not isinstance(value, str) or not _VIEW_ID.fullmatch(value) or has_control(value):
        raise Invalid(
            f"expected a scene id like 'S2/13/R/EL/2023/7/19/0' (no spaces), got {_shown(value)}"
        )
    return sys.intern(value)


def _text(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Invalid(f"expected a non-empty string, got {_shown(value)}")
    if has_control(value):
        raise Invalid("contains a control character")
    return sys.intern(value) if len(value) < 100 else value


def _choice(options: tuple[str, ...]) -> Callable[[object], str]:
    def check(value: object) -> str:
        if isinstance(value, str) and value in options:
            return value
        hint = did_you_mean(value.lower(), options) if isinstance(value, str) else ""
        raise Invalid(f"expected one of {', '.join(options)}, got {_shown(value)}{hint}")

    return check


def _px_size(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Invalid(f"expected a number of metres, got {_shown(value)}")
    if not math.isfinite(value) or value <= 0:
        raise Invalid(f"expected a finite number > 0, got {_shown(value)}")
    return float(value)


def _levels(value: object) -> str:
    mt = _LEVELS.fullmatch(value) if isinstance(value, str) else None
    if mt is None or not isinstance(value, str):
        raise Invalid(f"expected two numbers as 'low,high' like '-1,1', got {_shown(value)}")
    low, high = float(mt.group(1)), float(mt.group(2))
    if not (math.isfinite(low) and math.isfinite(high)) or not low < high:
        raise Invalid(f"expected finite low < high, got {_shown(value)}")
    return sys.intern(value)


def _int_in(low: int, high: int) -> Callable[[object], int]:
    def check(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            want = f"{low} or {high}" if high == low + 1 else f"a whole number >= {low}"
            raise Invalid(f"expected {want}, got {_shown(value)}")
        return value

    return check


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"expected true or false, got {_shown(value)}")
    return value


def _colors(value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(c, str) and c for c in value):
        raise Invalid(f"expected a list of non-empty strings, got {_shown(value)}")
    return value


def _thresholds(value: object) -> list[float]:
    if not isinstance(value, list) or not all(
        isinstance(t, int | float) and not isinstance(t, bool) and math.isfinite(t) for t in value
    ):
        raise Invalid(f"expected a list of finite numbers, got {_shown(value)}")
    return [float(t) + 0.0 for t in value]  # -0.0 -> 0.0, as job_key does


def _name(value: object) -> str:
    if not isinstance(value, str):
        raise Invalid(f"expected a relative file path, got {_shown(value)}")
    check_name(value)
    return value


CHECKS: dict[str, Callable[[Any], Any]] = {
    "view_id": _view_id,
    "bm_type": _text,
    "px_size": _px_size,
    "name_alias": _text,
    "resample": _choice(_RESAMPLE),
    "colormap": _text,
    "levels": _levels,
    "colors_limit": _int_in(1, 2**31 - 1),
    "calibrate": _int_in(0, 1),
    "size": _choice(("S", "M", "L", "XL")),
    "georeference": _choice(("world", "kmz", "tiff")),
    "format": _choice(("jpeg", "tiff", "png")),
    "pansharpening": _bool,
    "colors": _colors,
    "thresholds": _thresholds,
    "name": _name,
}
KNOWN = frozenset({*CHECKS, "geometry", "reference"})


_KNOWN_SORTED = sorted(KNOWN)


def did_you_mean(word: str, options: Iterable[str]) -> str:
    """``"; did you mean 'NDVI'?"`` for the option nearest ``word``, else ``""``."""
    near = difflib.get_close_matches(word, list(options), n=1)
    return f"; did you mean {near[0]!r}?" if near else ""


def suggest(field: str) -> str:
    """``"; did you mean 'px_size'?"`` for a near miss of a known field, else ``""``."""
    return did_you_mean(field, _KNOWN_SORTED)


# Fields whose silent absence changes the image asked for: a near miss of one of these in
# a GeoJSON property or CSV column is refused. ``name`` (a file name is generated), ``size``
# (logged only) and ``reference`` (ignored) cost nothing when missed, and GIS layers often
# carry a ``Name`` or ``SIZE`` of their own.
_COSTLY = tuple(sorted(KNOWN - {"name", "size", "reference"}))
_SEPARATORS = str.maketrans("", "", "_- ")


@functools.lru_cache(maxsize=1024)
def costly_typo(field: str) -> str | None:
    """The job parameter ``field`` is a typo of (``pxsize`` → ``px_size``), or None.

    Within a typo: equal once case and ``_``/``-``/space are ignored, or one edit away
    (a letter added, dropped, changed, or two swapped; two edits for names over 8
    letters). Tighter than :func:`suggest`'s difflib ratio, which finds ``site`` near
    ``size``: this decides an error, not a hint. Cached: every feature repeats its keys.
    """
    word = field.lower().translate(_SEPARATORS)
    for known in _COSTLY:
        target = known.translate(_SEPARATORS)
        if _edits(word, target, 1 if len(target) <= 8 else 2):
            return known
    return None


def _edits(a: str, b: str, limit: int) -> bool:
    """Whether ``a`` is at most ``limit`` edits from ``b`` (optimal string alignment)."""
    if abs(len(a) - len(b)) > limit:
        return False
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        row = [i]
        for j, cb in enumerate(b, 1):
            cost = 0 if ca == cb else 1
            d = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                d = min(d, prev2[j - 2] + 1)
            row.append(d)
        if min(row) > limit:
            return False
        prev2, prev = prev, row
    return prev[-1] <= limit


class WarnOnce:
    """Collect warnings once per field and kind, at the first place seen, counting the
    rest. The kind tells apart warnings about one field ("image too big" and "px_size
    too fine" are both about ``px_size``); unknown fields have none."""

    __slots__ = ("_file", "_seen")

    def __init__(self, file: str) -> None:
        self._file = file
        self._seen: dict[tuple[str, str], tuple[str, str, str, int]] = {}

    def add(self, field: str, where: str, message: str, kind: str = "") -> None:
        first = self._seen.get((field, kind))
        self._seen[field, kind] = (
            (field, where, message, 1) if first is None else (*first[:3], first[3] + 1)
        )

    def problems(self) -> tuple[Problem, ...]:
        out = []
        for field, where, message, count in self._seen.values():
            more = ""
            if count > 1:
                more = f" (and {counted(count - 1, 'more time')})"
            out.append(Problem(self._file, where, field, message + more))
        return tuple(out)
