"""One job of a manifest: the parameters to send, where the result goes, and its key.

Contract: a :class:`Job` holds EOS "Download visual" parameters already checked and
normalised (by :mod:`bulkfetch.manifest.jobs`, which reads and validates manifests) and
derives everything a run needs from them: the body to send, the ``reference`` (from the
key), the output path and the kind of file to expect. :func:`job_key` is the sha256 of the
parameters in canonical JSON, so the same request has the same key whatever the format,
key order, ``10`` vs ``10.0``, documented defaults spelt out or not, or run. A
:class:`Manifest` is the valid jobs of a file, in file order, with its warnings. Pure.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import orjson

from bulkfetch.errors import Problem

__all__ = ["API_DEFAULTS", "PARAMS", "Job", "Manifest", "checked_key", "job_key"]

PARAMS: frozenset[str] = frozenset(
    {
        "view_id", "geometry", "bm_type", "px_size", "reference", "name_alias", "resample",
        "colormap", "levels", "colors_limit", "calibrate", "size", "georeference", "format",
        "pansharpening", "colors", "thresholds",
    }
)  # fmt: skip
"""Every EOS Download visual parameter name a job may hold (``name`` is bulkfetch's own)."""

_EXT_BY_FORMAT = {"jpeg": ".jpg", "png": ".png", "tiff": ".tif"}
_EXT_BY_GEOREF = {"world": ".zip", "kmz": ".kmz", "tiff": ".tif"}
_KIND_BY_EXT = {".jpg": "jpeg", ".png": "png", ".tif": "tiff", ".zip": "zip", ".kmz": "zip"}
# A name that already ends in a spelling of the right extension keeps it as is.
_SAME_EXT = {".jpg": (".jpg", ".jpeg"), ".tif": (".tif", ".tiff")}
_INT_FIELDS = ("calibrate", "colors_limit")
_SAFE_MAX = 100  # chars per part of a generated file name; keeps it under 255 bytes
_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9._]+")  # ASCII-only ranges, whatever the flags


@dataclass(frozen=True, slots=True)
class Job:
    """One image to fetch: the parameters to send and where its result goes."""

    key: str
    """64 hex chars: :func:`job_key` of ``params``."""
    params: Mapping[str, Any] = field(hash=False)
    """Download visual parameters to send, without ``reference``; read-only."""
    name: str | None
    """The user's output name (a :func:`safe_name`), or None to derive one."""
    where: str
    """Where the job was written, for messages: ``"jobs.jsonl: line 3"``."""

    @property
    def view_id(self) -> str:
        return str(self.params["view_id"])

    @property
    def bm_type(self) -> str:
        return str(self.params["bm_type"])

    @property
    def format(self) -> str:
        return str(self.params.get("format", "jpeg"))

    @property
    def georeference(self) -> str | None:
        value = self.params.get("georeference")
        return None if value is None else str(value)

    @property
    def reference(self) -> str:
        """What is sent to EOS as ``reference``: stable across runs, unique per job."""
        return "bf-" + self.key[:32]

    @property
    def extension(self) -> str:
        georef = self.georeference
        if georef is not None:
            return _EXT_BY_GEOREF[georef]
        return _EXT_BY_FORMAT[self.format]

    @property
    def expected_kind(self) -> str:
        """What the result's magic bytes must be: ``jpeg``, ``png``, ``tiff`` or ``zip``."""
        return _KIND_BY_EXT[self.extension]

    @property
    def slot(self) -> str:
        """The job's identity without its other parameters: view_id, bm_type and AOI.

        A job whose other parameters change keeps its slot, which is how ``plan`` tells a
        changed job from a new one.
        """
        ident = {k: self.params.get(k) for k in ("view_id", "bm_type", "geometry")}
        return hashlib.sha256(orjson.dumps(ident, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]

    def api_body(self) -> dict[str, Any]:
        """The JSON body for task creation."""
        return {"type": "jpeg", "params": {**self.params, "reference": self.reference}}

    def relative_path(self) -> PurePosixPath:
        """Where the result goes under the output folder.

        ``name`` plus the extension (unless it already ends with it, in any case), or
        ``{view_id}_{bm_type}_{key[:12]}{ext}`` with unsafe characters replaced by ``-``.
        """
        return PurePosixPath(self.relative_text())

    def relative_text(self) -> str:
        """:meth:`relative_path` as text, without making a path (validation asks this of
        every job, to find two writing the same file)."""
        ext = self.extension
        if self.name is not None:
            if self.name.lower().endswith(_SAME_EXT.get(ext, (ext,))):
                return self.name
            return self.name + ext
        return f"{_safe(self.view_id)}_{_safe(self.bm_type)}_{self.key[:12]}{ext}"


@functools.lru_cache(maxsize=4096)
def _safe(text: str) -> str:
    """``text`` with every run of characters other than ASCII letters, digits, ``.`` and
    ``_`` (``-`` included) made one ``-``. Cached: a manifest repeats its view_ids and
    bm_types thousands of times."""
    return _UNSAFE_RUN.sub("-", text[: _SAFE_MAX * 2])[:_SAFE_MAX]


@dataclass(frozen=True, slots=True)
class Manifest:
    """A valid manifest: its jobs in file order, and warnings worth showing the user."""

    path: Path
    jobs: tuple[Job, ...]
    warnings: tuple[Problem, ...]


#: Values EOS documents as the defaults: sending one is the same request as leaving it
#: out, so it must not make the job look different (and be created again).
API_DEFAULTS: Mapping[str, Any] = {
    "format": "jpeg",
    "resample": "cubic",
    "calibrate": 0,
    "levels": "-0.5,0.5",
}


def _is_default(name: str, value: Any) -> bool:
    return name in API_DEFAULTS and value == API_DEFAULTS[name] and not isinstance(value, bool)


def job_key(params: Mapping[str, Any]) -> str:
    """Return the sha256 hex of ``params`` in canonical JSON, ``reference`` left out.

    Canonical: keys sorted at every level, every number as a float (so ``10`` and ``10.0``
    agree) with ``-0.0`` as ``0.0``, tuples as lists, and parameters equal to EOS's
    documented defaults left out. Raises :class:`ValueError` for values JSON cannot hold.
    """
    canon = {k: _canon(v) for k, v in params.items() if k != "reference" and not _is_default(k, v)}
    try:
        blob = orjson.dumps(canon, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError as exc:
        raise ValueError(f"parameters are not JSON: {exc}") from exc
    return hashlib.sha256(blob).hexdigest()


def checked_key(params: dict[str, Any]) -> str:
    """``job_key`` of already checked params: only the int fields need canonicalising.

    Checked params hold floats everywhere else (geometry, px_size, thresholds, with -0.0
    already 0.0), so the walk over every coordinate can be skipped; a test holds this
    equal to ``job_key``.
    """
    canon = params
    if any(k in API_DEFAULTS for k in params):
        canon = {k: v for k, v in params.items() if not _is_default(k, v)}
    if "calibrate" in canon or "colors_limit" in canon:
        canon = {k: float(v) if k in _INT_FIELDS else v for k, v in canon.items()}
    return hashlib.sha256(orjson.dumps(canon, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _canon(value: Any) -> Any:
    if value is None or isinstance(value, str | bool):
        return value
    if isinstance(value, int | float):
        try:
            return float(value) + 0.0
        except OverflowError as exc:
            raise ValueError(f"number too large: {value}") from exc
    if isinstance(value, Mapping):
        return {k: _canon(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canon(v) for v in value]
    raise ValueError(f"a {type(value).__name__} is not a JSON value")
