"""Check and normalise one manifest field at a time; private to :mod:`bulkfetch.manifest`.

Each checker in :data:`CHECKS` takes a JSON value and returns the value to send, or raises
:class:`Invalid` (a ValueError) whose message says what was expected and what came. ``geometry`` is
checked by :mod:`bulkfetch.geometry`; ``reference`` is never checked (it is ignored).
"""

from __future__ import annotations

import difflib
import math
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import PurePosixPath
from typing import Any

from .errors import Problem

__all__ = ["CHECKS", "KNOWN", "REQUIRED", "Invalid", "WarnOnce", "safe_name", "suggest"]

REQUIRED = ("view_id", "bm_type", "geometry", "px_size")

_RESAMPLE: tuple[str, ...] = ("near", "bilinear", "cubic", "cubicspline", "lanczos")
_RESAMPLE += ("average", "mode", "max", "min", "med", "q1", "q3")
# Windows refuses these as file names with any extension, in any case ("con.jpg" too).
_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL"} | {f"{d}{n}" for d in ("COM", "LPT") for n in range(1, 10)}
)
# sensor, then one or more non-empty slash-separated parts; no whitespace anywhere.
_VIEW_ID = re.compile(r"[A-Za-z0-9][^/\s]*(?:/[^/\s]+)+")
_NUMBER = r"\s*[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?\s*"
_LEVELS = re.compile(f"({_NUMBER}),({_NUMBER})")


class Invalid(ValueError):
    """A field's value is wrong; the message says what was expected and what came."""


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return repr(value[:40]) + ("..." if len(value) > 40 else "")
    if isinstance(value, list):
        return "a list"
    return "an object" if isinstance(value, dict) else type(value).__name__


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _has_control(text: str) -> bool:
    return _CONTROL.search(text) is not None


def _view_id(value: object) -> str:
    if not isinstance(value, str) or not _VIEW_ID.fullmatch(value) or _has_control(value):
        raise Invalid(
            f"expected a scene id like 'S2/13/R/EL/2023/7/19/0' (no spaces), got {_kind(value)}"
        )
    return sys.intern(value)


def _text(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Invalid(f"expected a non-empty string, got {_kind(value)}")
    if _has_control(value):
        raise Invalid("contains a control character")
    return sys.intern(value) if len(value) < 100 else value


def _choice(options: tuple[str, ...]) -> Callable[[object], str]:
    def check(value: object) -> str:
        if isinstance(value, str) and value in options:
            return value
        hint = ""
        if isinstance(value, str):
            near = difflib.get_close_matches(value.lower(), options, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
        raise Invalid(f"expected one of {', '.join(options)}, got {_kind(value)}{hint}")

    return check


def _px_size(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Invalid(f"expected a number of metres, got {_kind(value)}")
    if not math.isfinite(value) or value <= 0:
        raise Invalid(f"expected a finite number > 0, got {_kind(value)}")
    return float(value)


def _levels(value: object) -> str:
    mt = _LEVELS.fullmatch(value) if isinstance(value, str) else None
    if mt is None or not isinstance(value, str):
        raise Invalid(f"expected two numbers as 'low,high' like '-1,1', got {_kind(value)}")
    low, high = float(mt.group(1)), float(mt.group(2))
    if not (math.isfinite(low) and math.isfinite(high)) or not low < high:
        raise Invalid(f"expected finite low < high, got {_kind(value)}")
    return sys.intern(value)


def _int_in(low: int, high: int) -> Callable[[object], int]:
    def check(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            want = f"{low} or {high}" if high == low + 1 else f"a whole number >= {low}"
            raise Invalid(f"expected {want}, got {_kind(value)}")
        return value

    return check


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"expected true or false, got {_kind(value)}")
    return value


def _colors(value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(c, str) and c for c in value):
        raise Invalid(f"expected a list of non-empty strings, got {_kind(value)}")
    return value


def _thresholds(value: object) -> list[float]:
    if not isinstance(value, list) or not all(
        isinstance(t, int | float) and not isinstance(t, bool) and math.isfinite(t) for t in value
    ):
        raise Invalid(f"expected a list of finite numbers, got {_kind(value)}")
    return [float(t) + 0.0 for t in value]  # -0.0 -> 0.0, as job_key does


def _name(value: object) -> str:
    if not isinstance(value, str):
        raise Invalid(f"expected a relative file path, got {_kind(value)}")
    check_name(value)
    return value


def safe_name(name: str) -> PurePosixPath:
    """Return ``name`` as a path that stays inside the output folder on any system.

    Relative, ``/`` between folders, no ``..``, ``.`` or empty parts, no control
    characters, backslash or ``:`` (drive letters, Windows streams), no part named as a
    Windows device (``CON``, ``nul.txt``, ``LPT1``...) or ending in ``.`` or a space
    (which Windows drops), each part at most 255 bytes of UTF-8. Raises
    :class:`ValueError` saying why.
    """
    check_name(name)
    return PurePosixPath(name)


def check_name(name: str) -> None:
    """Raise :class:`Invalid` unless ``name`` passes :func:`safe_name` (without a Path)."""
    if not name:
        raise Invalid("is empty")
    if "\x00" in name or _has_control(name):
        raise Invalid("contains a control character")
    if "\\" in name:
        raise Invalid("contains a backslash; use '/' between folders")
    if name.startswith("/"):
        raise Invalid("must be relative to the output folder, not absolute")
    if ":" in name:
        raise Invalid("contains ':' (a drive letter or Windows stream name)")
    for part in name.split("/"):
        if part in ("", "."):
            raise Invalid("has an empty or '.' part ('//', './' or a trailing '/')")
        if part == "..":
            raise Invalid("contains '..', which would leave the output folder")
        if part.split(".")[0].rstrip(" ").upper() in _RESERVED:
            raise Invalid(f"{part!r} is a reserved device name on Windows")
        if part.endswith((".", " ")):
            raise Invalid(f"{part!r} ends with '.' or a space, which Windows drops")
        try:
            size = len(part.encode("utf-8"))
        except UnicodeEncodeError:
            raise Invalid("is not valid Unicode") from None
        if size > 255:
            raise Invalid(f"has a part of {size} bytes; the limit is 255")


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


def suggest(word: str, among: Iterable[str] = KNOWN) -> str:
    """``"; did you mean 'px_size'?"`` for a near miss of ``among`` (the known fields by
    default; a colormap name elsewhere), case ignored, else ``""``."""
    folded = {option.casefold(): option for option in sorted(among)}
    near = difflib.get_close_matches(word.casefold(), folded, n=1)
    return f"; did you mean {folded[near[0]]!r}?" if near else ""


class WarnOnce:
    """Collect warnings once per field name, at the first place seen, counting the rest."""

    __slots__ = ("_file", "_seen")

    def __init__(self, file: str) -> None:
        self._file = file
        self._seen: dict[str, tuple[str, str, int]] = {}

    def add(self, field: str, where: str, message: str) -> None:
        first = self._seen.get(field)
        self._seen[field] = (where, message, 1) if first is None else (*first[:2], first[2] + 1)

    def problems(self) -> tuple[Problem, ...]:
        out = []
        for field, (where, message, count) in self._seen.items():
            more = f" (and {count - 1} more times)" if count > 1 else ""
            out.append(Problem(self._file, where, field, message + more))
        return tuple(out)
