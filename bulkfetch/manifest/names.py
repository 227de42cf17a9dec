"""Output names: a path a user gives that must stay inside the output folder on any system.

A job's ``name`` (:mod:`bulkfetch.manifest.jobs`) and a search's field ids
(:mod:`bulkfetch.scene_search.fields`, the first folder of every name a search writes)
follow the same rules: :func:`safe_name` returns the path or raises :class:`ValueError`
saying why; :func:`check_name` only checks. Pure.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

__all__ = ["check_name", "has_control", "safe_name"]

# Windows refuses these as file names with any extension, in any case ("con.jpg" too).
_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL"} | {f"{d}{n}" for d in ("COM", "LPT") for n in range(1, 10)}
)

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def has_control(text: str) -> bool:
    """Whether ``text`` holds a control character (C0, DEL or C1), which no name or
    parameter may: terminals and file systems treat them differently."""
    return _CONTROL.search(text) is not None


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
    """Raise :class:`ValueError` saying why, unless ``name`` passes :func:`safe_name`
    (without making a Path)."""
    if not name:
        raise ValueError("is empty")
    if "\x00" in name or has_control(name):
        raise ValueError("contains a control character")
    if "\\" in name:
        raise ValueError("contains a backslash; use '/' between folders")
    if name.startswith("/"):
        raise ValueError("must be relative to the output folder, not absolute")
    if ":" in name:
        raise ValueError("contains ':' (a drive letter or Windows stream name)")
    for part in name.split("/"):
        if part in ("", "."):
            raise ValueError("has an empty or '.' part ('//', './' or a trailing '/')")
        if part == "..":
            raise ValueError("contains '..', which would leave the output folder")
        if part.split(".")[0].rstrip(" ").upper() in _RESERVED:
            raise ValueError(f"{part!r} is a reserved device name on Windows")
        if part.endswith((".", " ")):
            raise ValueError(f"{part!r} ends with '.' or a space, which Windows drops")
        try:
            size = len(part.encode("utf-8"))
        except UnicodeEncodeError:
            raise ValueError("is not valid Unicode") from None
        if size > 255:
            raise ValueError(f"has a part of {size} bytes; the limit is 255")
