"""Scenes found by a search, and the decisions over them: pure functions, no I/O, no clock.

Contract:

* :func:`parse_scene` turns one result of EOS's Search API into a :class:`Scene`, or raises
  :class:`ValueError` saying what is wrong with it (the caller skips it and says so).
* :func:`split_dates` cuts a date range into requests of at most a year each, on calendar
  years, as EOS recommends; the same range always gives the same pieces, so searches
  repeated by a scheduled job ask the same questions.
* :func:`select` applies the user's choice to one field's scenes: cloud and coverage
  limits (again: a server may ignore a filter), one tile per sensor, at most one scene per
  N days, the best K a month. The least cloudy scene wins every choice; ties go to the
  better data coverage, then the earlier date, then the view_id, so the result never
  depends on the order the server answered in.
* A scene without ``cloudCoverage`` (Sentinel-1 radar has none) or without
  ``dataCoveragePercentage`` is kept: a cloud limit does not apply to a scene without
  cloud cover, nor a coverage limit to one without a coverage figure. Radar sees through
  cloud, so such a scene ranks as clear; an unknown coverage ranks last in a tie.
* :func:`job_names` renders the output names from a template such as
  ``{field}/{date}_{sensor}_{bm_type}``, making names that would collide distinct.
"""

from __future__ import annotations

import datetime as dt
import re
import string
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DEFAULT_TEMPLATE",
    "EPOCH",
    "TEMPLATE_KEYS",
    "Scene",
    "Selection",
    "check_template",
    "job_names",
    "parse_scene",
    "select",
    "split_dates",
]

DEFAULT_TEMPLATE = "{field}/{date}_{sensor}_{bm_type}"
#: What a name template may use, and what each holds.
TEMPLATE_KEYS: Mapping[str, str] = {
    "field": "the field's id",
    "date": "the scene's date, YYYY-MM-DD",
    "year": "YYYY",
    "month": "MM",
    "day": "DD",
    "sensor": "the view_id's first part: S2, S2L2A, L8, L9, MODIS...",
    "dataset": "the dataset searched: sentinel2l2a, landsat8...",
    "tile": "the tile (MGRS square, Landsat path and row, MODIS h and v)",
    "cloud": "cloud cover, whole percent (na for radar)",
    "bm_type": "the band combination",
    "scene": "the scene's sceneID",
}

#: Where ``one_per_days`` periods are counted from unless told otherwise.
EPOCH = dt.date(2000, 1, 1)

_LANDSAT = re.compile(r"L[COTEM]?\d(\d{3})(\d{3})\d{7}")


@dataclass(frozen=True, slots=True)
class Scene:
    """One scene of the catalogue, as much of it as bulkfetch uses."""

    view_id: str
    scene_id: str
    date: dt.date
    #: Cloud cover in percent; None when the dataset has none (radar).
    cloud: float | None
    #: The tile's valid-data percentage, when the server reported it.
    coverage: float | None
    dataset: str

    @property
    def sensor(self) -> str:
        return self.view_id.split("/", 1)[0]

    @property
    def tile(self) -> str:
        """The tile the scene belongs to, from the view_id's shape; the sceneID otherwise."""
        parts = self.view_id.split("/")
        if parts[0].startswith("S2") and len(parts) >= 4:
            return "".join(parts[1:4])
        if parts[0] == "MODIS" and len(parts) >= 3:
            return f"h{parts[1]}v{parts[2]}"
        landsat = _LANDSAT.match(parts[-1])
        if landsat:
            return landsat.group(1) + landsat.group(2)
        return self.scene_id

    def rank(self) -> tuple[float, float, dt.date, str]:
        """Sort key: best first (least cloud, most data, earliest, then view_id)."""
        cloud = 0.0 if self.cloud is None else self.cloud
        return (cloud, -(self.coverage or 0.0), self.date, self.view_id)

    def to_json(self) -> dict[str, Any]:
        return {
            "view_id": self.view_id,
            "sceneID": self.scene_id,
            "date": self.date.isoformat(),
            "cloudCoverage": self.cloud,
            "dataCoveragePercentage": self.coverage,
            "dataset": self.dataset,
        }


def _number(obj: Mapping[str, Any], name: str) -> float | None:
    """A percentage, or None when the result has none (radar has no cloud cover)."""
    value = obj.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 100:
        raise ValueError(f"{name} is not a percentage: {str(value)[:40]!r}")
    return float(value)


def parse_scene(obj: object, dataset: str) -> Scene:
    """A scene from one search result; ``ValueError`` names what is missing or wrong."""
    if not isinstance(obj, dict):
        raise ValueError("a result is not a JSON object")  # noqa: TRY004 - a bad answer, not a bad call
    view_id = obj.get("view_id")
    if not isinstance(view_id, str) or "/" not in view_id or len(view_id) > 200:
        raise ValueError(f"view_id is missing or malformed: {str(view_id)[:60]!r}")
    try:
        date = dt.date.fromisoformat(str(obj.get("date"))[:10])
    except ValueError:
        raise ValueError(
            f"{view_id}: date is not YYYY-MM-DD: {str(obj.get('date'))[:40]!r}"
        ) from None
    scene_id = obj.get("sceneID")
    return Scene(
        view_id=view_id,
        scene_id=scene_id if isinstance(scene_id, str) else view_id,
        date=date,
        cloud=_number(obj, "cloudCoverage"),
        coverage=_number(obj, "dataCoveragePercentage"),
        dataset=str(obj.get("dataset") or dataset),
    )


def split_dates(start: dt.date, end: dt.date) -> list[tuple[dt.date, dt.date]]:
    """``[start, end]`` as inclusive pieces, one per calendar year it touches."""
    if end < start:
        raise ValueError(f"the range ends ({end}) before it starts ({start})")
    pieces = []
    year_start = start
    while year_start <= end:
        year_end = min(end, dt.date(year_start.year, 12, 31))
        pieces.append((year_start, year_end))
        year_start = year_end + dt.timedelta(days=1)
    return pieces


@dataclass(frozen=True, slots=True)
class Selection:
    """Which of a field's scenes to keep. ``None`` or ``False``: no such limit."""

    max_cloud: float | None = None
    min_coverage: float | None = None
    single_tile: bool = False
    #: At most one scene in each period of this many days, counted from ``since``. The
    #: default is a fixed day, so that a scheduled search whose ``--from`` moves with the
    #: calendar keeps the periods, and so the choices, of its earlier runs.
    one_per_days: int | None = None
    since: dt.date = EPOCH
    best_per_month: int | None = None


def _best_tiles(scenes: Sequence[Scene]) -> set[tuple[str, str]]:
    """Per sensor, the tile a field should take its scenes from.

    A field on a tile border is seen by both tiles, each covering part of it; the tile
    with the most valid data over the season is the one to keep, then the one with the
    most scenes.
    """
    by_tile: dict[tuple[str, str], list[Scene]] = defaultdict(list)
    for scene in scenes:
        by_tile[(scene.sensor, scene.tile)].append(scene)

    def score(item: tuple[tuple[str, str], list[Scene]]) -> tuple[float, int, str]:
        (_, tile), group = item
        mean = sum(100.0 if s.coverage is None else s.coverage for s in group) / len(group)
        return (-mean, -len(group), tile)

    best: dict[str, str] = {}
    for (sensor, tile), _ in sorted(by_tile.items(), key=score):
        best.setdefault(sensor, tile)
    return set(best.items())


def _best_per_group(scenes: Iterable[Scene], key: Any, k: int) -> list[Scene]:
    groups: dict[Any, list[Scene]] = defaultdict(list)
    for scene in scenes:
        groups[key(scene)].append(scene)
    kept: list[Scene] = []
    for group in groups.values():
        kept.extend(sorted(group, key=Scene.rank)[:k])
    return kept


def select(scenes: Iterable[Scene], selection: Selection) -> list[Scene]:
    """The scenes of one field to download, by date then view_id; duplicates dropped."""
    unique = {s.view_id: s for s in scenes}
    kept = [
        s
        for s in unique.values()
        if (selection.max_cloud is None or s.cloud is None or s.cloud <= selection.max_cloud)
        and (
            selection.min_coverage is None
            or s.coverage is None
            or s.coverage >= selection.min_coverage
        )
    ]
    if selection.single_tile and kept:
        tiles = _best_tiles(kept)
        kept = [s for s in kept if (s.sensor, s.tile) in tiles]
    if selection.one_per_days:
        days = selection.one_per_days
        since = selection.since
        kept = _best_per_group(kept, lambda s: (s.date - since).days // days, 1)
    if selection.best_per_month:
        kept = _best_per_group(
            kept, lambda s: (s.date.year, s.date.month), selection.best_per_month
        )
    return sorted(kept, key=lambda s: (s.date, s.view_id))


class _Values(dict[str, str]):
    def __missing__(self, key: str) -> str:
        raise KeyError(key)


def check_template(template: str) -> None:
    """Raise ``ValueError`` unless ``template`` uses only :data:`TEMPLATE_KEYS`."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"name template {template!r}: {exc}") from None
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in TEMPLATE_KEYS:
            known = ", ".join("{" + k + "}" for k in TEMPLATE_KEYS)
            raise ValueError(f"name template {template!r}: unknown {{{name}}}; known: {known}")
        if spec or conversion:
            raise ValueError(f"name template {template!r}: {{{name}}} takes no format spec")
    if not any(name for _, name, _, _ in parsed):
        raise ValueError(f"name template {template!r} uses no {{...}}: every name would be equal")


_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def _part(text: str) -> str:
    """A server's word as one harmless piece of a file name: it cannot add a folder,
    climb out of one, or hide the file ('.'-led)."""
    return _UNSAFE.sub("_", text).lstrip(".")[:80] or "_"


def _values(field: str, scene: Scene, bm_type: str) -> _Values:
    d = scene.date
    # The field and the bm_type are the user's (checked with the manifest); the rest
    # comes from the server's answer, which is never trusted to name a path.
    return _Values(
        field=field,
        date=d.isoformat(),
        year=f"{d.year:04d}",
        month=f"{d.month:02d}",
        day=f"{d.day:02d}",
        sensor=_part(scene.sensor),
        dataset=_part(scene.dataset),
        tile=_part(scene.tile),
        cloud="na" if scene.cloud is None else str(round(scene.cloud)),
        bm_type=bm_type,
        scene=_part(scene.scene_id),
    )


def job_names(template: str, rows: Sequence[tuple[str, Scene, str]]) -> list[str]:
    """One name per ``(field, scene, bm_type)`` row, all distinct (ignoring case).

    A field on a tile border has two scenes of the same date and sensor; a template
    without ``{tile}`` would give them one name, so the colliding names get ``_TILE``
    added, and ``_2``, ``_3``... if that is still not enough.
    """
    names = [template.format_map(_values(*row)) for row in rows]
    counts = _fold_counts(names)
    names = [
        f"{name}_{_part(row[1].tile)}" if counts[name.casefold()] > 1 else name
        for name, row in zip(names, rows, strict=True)
    ]
    seen: dict[str, int] = {}
    out = []
    for name in names:
        n = seen.get(name.casefold(), 0) + 1
        seen[name.casefold()] = n
        out.append(name if n == 1 else f"{name}_{n}")
    return out


def _fold_counts(names: Iterable[str]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for name in names:
        counts[name.casefold()] += 1
    return counts
