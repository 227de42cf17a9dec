"""bm_type against the view_id's sensor: bands it lacks, and index names nobody knows.

Private to :mod:`bulkfetch.manifest.jobs`. EOS takes three forms of ``bm_type``, and several
of them comma-separated: a named alias (``NDVI``), a list of bands (``B04,B03,B02``) and
band math (``(B08-B04)/(B08+B04)``, ``sqrt(B04)``). :func:`bm_type_warning` reads the
form, takes the sensor from the view_id's first part (``S2/13/R/EL/...`` is Sentinel-2,
as :attr:`bulkfetch.scene_search.scenes.Scene.sensor` reads it) and says what is very likely wrong:

* a band the sensor does not have, with the bands it has (and the spelling it uses when
  only the zero-padding differs: ``B4`` on Sentinel-2 is ``B04``, ``B04`` on Landsat
  ``B4``);
* a whole part that is neither a band nor a known alias, with a did-you-mean
  (``NDVX`` -> ``NDVI``);
* a name inside band math that is neither a band, an alias nor a generic band name
  (``NIR``), with a did-you-mean (``BO4`` -> ``B04``). A name followed by ``(`` is a
  function (``sqrt``) and is not judged.

Warnings only: the tables (``bulkfetch/data/bands.toml``, sources named inside) are what
the public pages say, EOS may know more. An unknown sensor is only checked for names.
Results are cached per (bm_type, sensor): a manifest repeats a handful of each.
"""

from __future__ import annotations

import functools
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

from bulkfetch.manifest._checks import did_you_mean

__all__ = ["Sensor", "Tables", "bm_type_warning", "parse_tables", "sensor_for", "tables"]

# A number (so the "e" of 1e-3 is not a name), or a name and whether a call follows.
_TOKEN = re.compile(r"(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|(?P<name>[A-Za-z_]\w*)(?P<call>\s*\()?")
_NAME = re.compile(r"[A-Za-z_]\w*")
# How band names look, whatever the sensor: B4, B04, B8A, b12.
_BAND_LIKE = re.compile(r"[Bb](\d{1,2})([A-Za-z]?)")


@dataclass(frozen=True, slots=True)
class Sensor:
    """One sensor of the table: its name for messages, bands, and finest pixel size."""

    name: str
    bands: frozenset[str]
    shown: str
    """The bands as a message lists them: ``B01 to B12 and B8A``."""
    finest_m: float


@dataclass(frozen=True, slots=True)
class Tables:
    """The contents of ``bands.toml``."""

    by_prefix: Mapping[str, Sensor]
    aliases: tuple[str, ...]
    generic: frozenset[str]
    every_band: frozenset[str]
    px_min: float
    px_max: float
    oversample: float


@functools.cache
def tables() -> Tables:
    """The tables, read once from the package's ``bands.toml``."""
    text = (resources.files("bulkfetch") / "data" / "bands.toml").read_text(encoding="utf-8")
    return parse_tables(tomllib.loads(text))


def parse_tables(doc: Mapping[str, Any]) -> Tables:
    """:class:`Tables` from the parsed TOML ``doc`` (a test feeds its own)."""
    by_prefix: dict[str, Sensor] = {}
    for entry in doc["sensors"].values():
        sensor = Sensor(
            entry["name"], frozenset(entry["bands"]), entry["shown"], float(entry["finest_m"])
        )
        for prefix in entry["view_id_prefixes"]:
            by_prefix[prefix] = sensor
    section = doc["aliases"]
    aliases = [*section["names"]]
    for sub in section.values():
        if isinstance(sub, dict):
            aliases.extend(sub["names"])
    px = doc["px_size"]
    return Tables(
        by_prefix=by_prefix,
        aliases=tuple(aliases),
        generic=frozenset(doc["generic_bands"]["names"]),
        every_band=frozenset().union(*(s.bands for s in by_prefix.values())),
        px_min=float(px["min"]),
        px_max=float(px["max"]),
        oversample=float(px["oversample"]),
    )


def sensor_for(view_id: str) -> Sensor | None:
    """The sensor of ``view_id`` (by its first part, which may be all that is given),
    or None if the table lacks it."""
    return tables().by_prefix.get(view_id.partition("/")[0])


def bm_type_warning(bm_type: str, view_id: str) -> str | None:
    """What is likely wrong with ``bm_type`` for ``view_id``'s sensor (or the view_id's
    first part alone), or None."""
    return _warning(bm_type, view_id.partition("/")[0])


@functools.lru_cache(maxsize=4096)
def _warning(bm_type: str, prefix: str) -> str | None:
    t = tables()
    sensor = t.by_prefix.get(prefix)
    known = frozenset(t.aliases) | t.generic
    missing: list[str] = []
    notes: list[str] = []
    for part in _parts(bm_type):
        if _NAME.fullmatch(part):
            if _is_band(part, t):
                missing.extend(_missing(part, sensor))
            elif part not in known:
                hint = did_you_mean(part.upper(), t.aliases)
                notes.append(f"{part!r} is not an alias bulkfetch knows{hint}")
            continue
        for m in _TOKEN.finditer(part):
            name = m.group("name")
            if name is None or m.group("call") or name in known:
                continue
            if _is_band(name, t):
                missing.extend(_missing(name, sensor))
            else:
                notes.append(f"{name!r} in the band math is no band or alias{_hint(name, sensor)}")
    if missing and sensor is not None:
        unique = list(dict.fromkeys(missing))
        word = "band" if len(unique) == 1 else "bands"
        text = f"{sensor.name} has no {word} {', '.join(unique)} (its bands: {sensor.shown})"
        respelt = [_respell(b, sensor) for b in unique]
        if all(respelt):
            text += f"; did you mean {', '.join(r for r in respelt if r)}?"
        notes.insert(0, text)
    if not notes:
        return None
    return "; ".join(dict.fromkeys(notes)) + " (sent as written: EOS may know more)"


def _hint(name: str, sensor: Sensor | None) -> str:
    """A did-you-mean for an unknown name in band math: a band spelt with the letter O
    for zero (``BO4``) first, else the nearest band, alias or generic name."""
    t = tables()
    pool = sorted(sensor.bands) if sensor else []
    digits = name.upper().replace("O", "0")
    if digits in pool:
        return f"; did you mean {digits!r}?"
    return did_you_mean(name, [*pool, *t.aliases, *sorted(t.generic)])


def _parts(bm_type: str) -> list[str]:
    """The comma-separated parts of ``bm_type``, commas inside brackets kept."""
    parts: list[str] = []
    depth = start = 0
    for i, c in enumerate(bm_type):
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == "," and depth == 0:
            parts.append(bm_type[start:i].strip())
            start = i + 1
    parts.append(bm_type[start:].strip())
    return [p for p in parts if p]


def _is_band(name: str, t: Tables) -> bool:
    return name in t.every_band or _BAND_LIKE.fullmatch(name) is not None


def _missing(band: str, sensor: Sensor | None) -> list[str]:
    return [] if sensor is None or band in sensor.bands else [band]


def _respell(band: str, sensor: Sensor) -> str | None:
    """The sensor's spelling of ``band`` when only case or zero-padding differ."""
    m = _BAND_LIKE.fullmatch(band)
    if m is None:
        return None
    number, suffix = int(m.group(1)), m.group(2).upper()
    for candidate in (f"B{number}{suffix}", f"B{number:02d}{suffix}"):
        if candidate in sensor.bands:
            return candidate
    return None
