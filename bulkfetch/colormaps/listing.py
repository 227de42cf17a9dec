"""Colormaps: what EOS's list of them means, and which of a manifest's are unknown. Pure.

A job's ``colormap`` is a colormap name (the Matplotlib set EOS offers: ``RdYlGn``,
``viridis``...) or the 32-hex id of a custom colormap made in EOS. A typo costs a
creation per job, so ``run``, ``plan`` and ``validate --online`` check them first
(:mod:`bulkfetch.colormaps.check` does the requests).

Contract:

* :func:`parse_colormap_list` reads ``GET .../colormap/ALL``'s answer in any form seen or
  plausible: ``{"colormap_list": [...]}`` (also under ``colormaps``, ``data``, ``items``
  or ``results``), a bare list, or a name-to-type map; list items are names, or objects
  naming the colormap under ``name``, ``id``, ``colormap``, ``key`` or ``title`` (type
  under ``type``, ``colormap_type`` or ``kind``), or one-member ``{name: type}`` objects.
  Items it cannot read are left out; an answer of no known shape is a ``ValueError``.
* :func:`is_custom_id`: 32 hex digits (any case) is an id, anything else a name.
* :func:`unknown_names` says which names are not offered, each with a did-you-mean. A
  name is offered when the list has it exactly, or (Matplotlib's reversal) it is an
  offered name plus ``_r``. Case counts: Matplotlib's names are case-sensitive.
* :func:`colormap_problems` turns the unknown colormaps into manifest problems, one per
  colormap, placed at the first job using it and naming the others.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bulkfetch.errors import Problem
from bulkfetch.manifest.jobs import Job, did_you_mean

__all__ = [
    "Colormap",
    "colormap_problems",
    "colormaps_used",
    "is_custom_id",
    "parse_colormap_list",
    "unknown_names",
]

_ID = re.compile(r"[0-9a-fA-F]{32}")
_LIST_KEYS = ("colormap_list", "colormaps", "data", "items", "results")
_NAME_KEYS = ("name", "id", "colormap", "key", "title")
_TYPE_KEYS = ("type", "colormap_type", "kind")
_SHOWN = 10  # jobs named per unknown colormap


@dataclass(frozen=True, slots=True)
class Colormap:
    """One colormap EOS offers: its name (or id) and its type, when the answer gave one."""

    name: str
    type: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type}


def is_custom_id(value: str) -> bool:
    """Whether ``value`` is a custom colormap's id (32 hex digits) rather than a name."""
    return _ID.fullmatch(value) is not None


def _text(value: object) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _item(item: object) -> Colormap | None:
    if isinstance(item, str):
        name = _text(item)
        return Colormap(name) if name else None
    if not isinstance(item, dict):
        return None
    for key in _NAME_KEYS:
        name = _text(item.get(key))
        if name:
            kind = next((_text(item.get(k)) for k in _TYPE_KEYS if _text(item.get(k))), None)
            return Colormap(name, kind)
    if len(item) == 1:  # {"RdYlGn": "continuous"}
        ((name, kind),) = item.items()
        if _text(name) and (kind is None or isinstance(kind, str)):
            return Colormap(name.strip(), _text(kind))
    return None


def _from_map(data: Mapping[str, Any]) -> list[Colormap]:
    out = []
    for name, value in data.items():
        if not _text(name):
            continue
        if isinstance(value, dict):
            kind = next((_text(value.get(k)) for k in _TYPE_KEYS if _text(value.get(k))), None)
        else:
            kind = _text(value)
        if value is None or isinstance(value, str | dict):
            out.append(Colormap(name.strip(), kind))
    return out


def parse_colormap_list(data: object) -> list[Colormap]:
    """The colormaps in an answer of any known form (see the module docstring), in the
    answer's order, each name once."""
    if isinstance(data, dict):
        inner = next((data[k] for k in _LIST_KEYS if k in data), None)
        if inner is not None:
            return parse_colormap_list(inner)
        found = _from_map(data)
    elif isinstance(data, list):
        found = [c for c in map(_item, data) if c is not None]
    else:
        raise ValueError("the colormap list is neither a list nor an object")  # noqa: TRY004
    if data and not found:
        raise ValueError("the colormap list holds nothing that names a colormap")
    unique: dict[str, Colormap] = {}
    for colormap in found:
        unique.setdefault(colormap.name, colormap)
    return list(unique.values())


def colormaps_used(jobs: Iterable[Job]) -> dict[str, list[Job]]:
    """Each colormap value the jobs use, with the jobs using it, in manifest order."""
    used: dict[str, list[Job]] = {}
    for job in jobs:
        value = job.params.get("colormap")
        if isinstance(value, str):
            used.setdefault(value, []).append(job)
    return used


def unknown_names(names: Iterable[str], offered: Collection[str]) -> dict[str, str]:
    """The names not offered, each with its did-you-mean hint (``""`` when none is near)."""
    known = set(offered)
    options = sorted(known)
    folded = {option.casefold(): option for option in options}
    unknown = {}
    for name in names:
        if name in known or (name.endswith("_r") and name[:-2] in known):
            continue
        # A name wrong only in case is told its right spelling ('rdylgn': 'RdYlGn').
        same = folded.get(name.casefold())
        unknown[name] = did_you_mean(same, [same]) if same else did_you_mean(name, options)
    return unknown


def colormap_problems(
    unknown: Mapping[str, str], used: Mapping[str, Sequence[Job]], *, what: str
) -> list[Problem]:
    """One problem per unknown colormap, at its first job, naming the others.

    ``unknown`` maps a colormap to the hint to add; ``what`` says what it is not
    (``"not a colormap EOS offers"``, ``"no custom colormap has this id"``).
    """
    problems = []
    for value, hint in unknown.items():
        jobs = used[value]
        file, _, where = jobs[0].where.partition(": ")
        others = [job.where.partition(": ")[2] for job in jobs[1 : 1 + _SHOWN]]
        more = len(jobs) - 1 - len(others)
        also = ""
        if others:
            also = " (also " + ", ".join(others) + (f" and {more} more jobs" if more else "") + ")"
        message = f"{value[:60]!r} is {what}{hint}{also}"
        problems.append(Problem(file, where, "colormap", message))
    return problems
