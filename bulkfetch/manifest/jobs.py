"""Manifests: the jobs a run must do, read, validated and keyed.

Contract: :func:`load_manifest` (a file) and :func:`parse_manifest` (bytes) return a
:class:`Manifest` of :class:`Job` records, or raise :class:`~bulkfetch.errors.ManifestError`
holding *every* problem found, each naming the file, the place and the field. No other
exception escapes for any file content. Each job carries the EOS "Download visual"
parameters to send (defaults applied, geometry normalised, no ``reference``) and a
``key``: the sha256 of those parameters in canonical JSON, so the same request has the
same key whatever the format, key order, ``10`` vs ``10.0``, or run. The ``reference``
sent to EOS is derived from the key; one a user gives is ignored, with a warning.

The format is chosen by the file's extension (any case):

``.jsonl``: one job object per line; blank lines are skipped. An optional first line
``{"defaults": {...}}`` gives values for fields that jobs leave out. Places: ``line N``::

    {"defaults": {"bm_type": "NDVI", "px_size": 10, "format": "png"}}
    {"view_id": "S2/13/R/EL/2023/7/19/0", "geometry": {"type": "Polygon", "coordinates": ...}}
    {"view_id": "S2/13/R/EL/2023/7/24/0", "geometry": ..., "name": "field-7/july-24"}

``.json``: a list of job objects, or ``{"defaults": {...}, "jobs": [...]}``. Places:
``job N (line L)``: the job's place in the list, and the line it starts on::

    {"defaults": {"bm_type": "NDVI", "px_size": 10},
     "jobs": [{"view_id": "S2/13/R/EL/2023/7/19/0", "geometry": {"type": "Polygon", ...}}]}

``.geojson``: a FeatureCollection; each feature's geometry is its area and its properties
hold the other fields. A top-level ``"defaults"`` member is allowed. Places:
``feature N (line L)``::

    {"type": "FeatureCollection", "defaults": {"bm_type": "NDVI", "px_size": 10},
     "features": [{"type": "Feature", "geometry": {"type": "Polygon", ...},
                   "properties": {"view_id": "S2/13/R/EL/2023/7/19/0", "name": "north"}}]}

``.csv``: a header row, one job a row; empty cells mean "not given"; no defaults. The
``geometry`` cell holds GeoJSON or 2D WKT. Cells are coerced by field: numbers for
``px_size``/``calibrate``/``colors_limit``, ``true``/``false``/``1``/``0`` for
``pansharpening``, JSON lists for ``colors``/``thresholds``. Places: ``line N``, the
physical line (the header is line 1)::

    view_id,bm_type,px_size,geometry,name
    S2/13/R/EL/2023/7/19/0,NDVI,10,"POLYGON ((-104.879 27.166, ...))",north

Fields (the EOS Download visual parameters, :data:`PARAMS`, plus ``name``): ``view_id``,
``bm_type``, ``geometry``, ``px_size`` are required, the rest optional with the value sets
EOS documents; ``geometry`` is a GeoJSON Polygon/MultiPolygon, or text holding one or 2D
WKT (see :mod:`bulkfetch.manifest.geometry`): a one-part MultiPolygon is sent as its Polygon, and
one of several parts gets a warning, as EOS's current documentation lists Polygon only.
``name`` is the output file, relative to the output
folder (see :func:`safe_name`); the extension is added unless it is already there
(``.jpeg`` and ``.tiff`` count); without a name the file is named from view_id, bm_type
and key. The key leaves ``name`` out: two jobs differing only by name are the same
request, hence a duplicate. A job's value wins over a default; ``null`` counts as not
given; fields starting with ``_`` are the user's notes and ignored everywhere. An unknown
field is an error in .jsonl and .json (with a "did you mean" hint) but a warning in
.geojson and .csv, whose features and columns carry their own attributes, unless it is
one typo from a job parameter (``pxsize``, ``bm_typ``): that is an error there too,
since the job would quietly go without it. Two jobs with the same key, or writing the
same file (ignoring case, as some file systems do), are errors; so is a manifest without
jobs.

A valid job that EOS is likely to refuse or answer uselessly is a *warning* (the user
decides; each creation is one of ten a minute): a band the view_id's sensor lacks or an
unknown alias in ``bm_type`` (:mod:`bulkfetch.manifest._bands`), an image of a gigapixel
or more, or a ``px_size`` far outside what the sensors offer
(:mod:`bulkfetch.manifest._sizes`). Each kind of warning is given once, at the first job
it concerns, with how many more share it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Any

import orjson

from bulkfetch._gc import gc_paused
from bulkfetch.errors import ManifestError, Problem
from bulkfetch.manifest._bands import bm_type_warning, sensor_for
from bulkfetch.manifest._checks import (
    CHECKS,
    KNOWN,
    REQUIRED,
    WarnOnce,
    costly_typo,
    did_you_mean,
    suggest,
)
from bulkfetch.manifest._sizes import size_warnings
from bulkfetch.manifest.geometry import check_geometry, multipolygon_parts
from bulkfetch.manifest.names import safe_name
from bulkfetch.manifest.readers import READERS, Raw, Reader, job_lines, read_geojson, read_json

__all__ = [
    "PARAMS",
    "Job",
    "Manifest",
    "did_you_mean",
    "job_key",
    "load_manifest",
    "parse_manifest",
    "read_manifest_bytes",
    "safe_name",
]

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
_MULTIPART = (
    "a MultiPolygon of {parts} parts: EOS's current Download visual documentation lists "
    "Polygon only (older pages accept MultiPolygon); if EOS refuses it, split it into one "
    "job per part"
)
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
        return PurePosixPath(self._relative())

    def _relative(self) -> str:
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


def _fast_key(params: dict[str, Any]) -> str:
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


def load_manifest(path: Path | str) -> Manifest:
    """Read and validate the manifest at ``path``; see the module docstring for formats."""
    name = os.fspath(path)
    reader = _reader_for(name)
    if reader in _ITEMS:  # parsed whole anyway; the bytes also place problems by line
        return parse_manifest(read_manifest_bytes(path), filename=name)
    issues: list[tuple[str, str, str]] = []
    try:
        with Path(path).open("rb") as stream:
            return _build(reader(stream, issues), name, issues)
    except OSError as exc:
        raise _unreadable(name, exc) from exc


def read_manifest_bytes(path: Path | str) -> bytes:
    """The bytes of the manifest at ``path``, for :func:`parse_manifest`.

    Raises :class:`~bulkfetch.errors.ManifestError` (as ``load_manifest`` does) if the
    extension names no format or the file cannot be read.
    """
    name = os.fspath(path)
    _reader_for(name)
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise _unreadable(name, exc) from exc


def _unreadable(name: str, exc: OSError) -> ManifestError:
    reason = exc.strerror or str(exc)
    return ManifestError([Problem(name, "whole file", "", f"cannot read: {reason}")])


def parse_manifest(data: bytes, *, filename: str) -> Manifest:
    """Validate manifest ``data``; ``filename`` picks the format and names the file in messages."""
    reader = _reader_for(filename)
    issues: list[tuple[str, str, str]] = []
    try:
        manifest = _build(reader(io.BytesIO(data), issues), filename, issues)
    except ManifestError as exc:
        raise ManifestError(_with_lines(exc.problems, data, reader)) from None
    if manifest.warnings and reader in _ITEMS:
        located = _with_lines(list(manifest.warnings), data, reader)
        manifest = dataclasses.replace(manifest, warnings=tuple(located))
    return manifest


# JSON and GeoJSON name a job by its place in the list ("job 3", "feature 3"); the
# problems found are also given the line the item starts on.
_ITEMS: dict[Reader, str] = {read_json: "job", read_geojson: "feature"}


def _with_lines(problems: list[Problem], data: bytes, reader: Reader) -> list[Problem]:
    """``problems`` with "job N" / "feature N" made "job N (line L)"."""
    word = _ITEMS.get(reader)
    if word is None:
        return problems
    numbers = [_item_number(p.where, word) for p in problems]
    wanted = [n for n in numbers if n is not None]
    if not wanted:
        return problems
    lines = job_lines(data, geojson=reader is read_geojson, upto=max(wanted))
    return [
        Problem(p.file, f"{p.where} (line {lines[n - 1]})", p.field, p.message)
        if n is not None and n <= len(lines)
        else p
        for p, n in zip(problems, numbers, strict=True)
    ]


def _item_number(where: str, word: str) -> int | None:
    head, _, number = where.partition(" ")
    return int(number) if head == word and number.isdigit() else None


def _reader_for(name: str) -> Reader:
    ext = Path(name).suffix.lower()
    if ext not in READERS:
        accepted = ", ".join(READERS)
        got = f"extension {ext!r}" if ext else "no extension"
        message = f"cannot tell the format from {got}; use one of {accepted}"
        raise ManifestError([Problem(name, "whole file", "", message)])
    return READERS[ext]


def _build(records: Iterator[Raw], file: str, issues: list[tuple[str, str, str]]) -> Manifest:
    # (GC held off: a third of the time for 100,000 jobs.)
    with gc_paused():
        return _build_jobs(records, file, issues)


def _build_jobs(records: Iterator[Raw], file: str, issues: list[tuple[str, str, str]]) -> Manifest:
    # Unknown fields are errors only where every field is ours (.jsonl, .json).
    strict = Path(file).suffix.lower() in (".jsonl", ".json")
    problems: list[Problem] = []
    warn = WarnOnce(file)
    defaults: dict[str, Any] = {}
    bad_defaults: set[str] = set()
    jobs: list[Job] = []
    by_key: dict[str, str] = {}
    by_path: dict[str, tuple[str, str]] = {}  # casefolded path -> (where, path as written)
    dirs: dict[str, str] = {}  # casefolded folder -> where first needed
    records_seen = 0

    def drain() -> None:
        # Readers report file-level issues as they meet them; keep them in file order.
        problems.extend(Problem(file, w, f, m) for w, f, m in issues)
        issues.clear()

    for raw in records:
        drain()
        before = len(problems)
        values = _check_record(raw, strict, file, warn, problems)
        if raw.is_defaults:
            # Keep the good defaults so one bad default is one problem, not one per job.
            defaults = values
            bad_defaults = {p.field.split(".")[0] for p in problems[before:]}
            continue
        records_seen += 1
        if len(problems) > before:
            continue
        params = {**defaults, **values}
        missing = [f for f in REQUIRED if f not in params]
        for f in missing:
            if f not in bad_defaults:
                problems.append(Problem(file, raw.where, f, "required, and not given"))
        if missing:
            continue
        name = params.pop("name", None)
        key = _fast_key(params)
        job = Job(key, MappingProxyType(params), name, f"{file}: {raw.where}")
        if key in by_key:
            problems.append(Problem(file, raw.where, "", f"same job as {by_key[key]}"))
            continue
        by_key[key] = raw.where
        path = job._relative()
        if name is not None and len(path.rsplit("/", 1)[-1].encode()) > 255:
            problems.append(Problem(file, raw.where, "name", "with its extension, too long"))
            continue
        if _clashes(path, raw.where, by_path, dirs, problems, file):
            continue
        _advise(params, raw.where, warn)
        jobs.append(job)
    drain()
    if records_seen == 0 and not problems:
        problems.append(Problem(file, "whole file", "", "no jobs in the manifest"))
    if problems:
        raise ManifestError(problems)
    return Manifest(Path(file), tuple(jobs), warn.problems())


def _advise(params: dict[str, Any], where: str, warn: WarnOnce) -> None:
    """Warn about a valid job that EOS is likely to refuse or answer with something
    useless, since each creation is one of ten a minute: a band the sensor lacks, an
    unknown alias, an absurd image size (see _manifest_bands and _manifest_sizes)."""
    prefix = params["view_id"].partition("/")[0]  # all the sensor lookups need
    bad_bands = bm_type_warning(params["bm_type"], prefix)
    if bad_bands is not None:
        warn.add("bm_type", where, bad_bands, kind=bad_bands)
    sensor = sensor_for(prefix)
    fmt = params.get("format", "jpeg")
    for kind, message in size_warnings(params["geometry"], params["px_size"], fmt, sensor):
        warn.add("px_size", where, message, kind=kind)


_TYPO_FIX = "(rename it, or start it with '_' to keep it as a note of yours)"


def _check_record(
    raw: Raw, strict: bool, file: str, warn: WarnOnce, problems: list[Problem]
) -> dict[str, Any]:
    """Check every field of one record: return the good ones normalised; report the rest."""
    for f, message in raw.problems:
        problems.append(Problem(file, raw.where, f, message))
    values: dict[str, Any] = {}
    for k, v in raw.members.items():
        if v is None or k.startswith("_"):
            continue
        if k == "reference":
            warn.add(k, raw.where, "ignored: bulkfetch sends its own, 'bf-' + the job key")
        elif k not in KNOWN:
            if strict or raw.is_defaults:
                problems.append(Problem(file, raw.where, k, "unknown field" + suggest(k)))
            elif (near := costly_typo(k)) is not None:
                # A feature's own attribute is fine; a misspelt parameter would quietly
                # leave the job with the default and cost a creation for the wrong image.
                message = f"not a job parameter; did you mean {near!r}? {_TYPO_FIX}"
                problems.append(Problem(file, raw.where, k, message))
            else:
                warn.add(k, raw.where, "not a bulkfetch field; ignored" + suggest(k))
        elif k == "name" and raw.is_defaults:
            problems.append(Problem(file, raw.where, k, "cannot be a default: names must differ"))
        elif k == "geometry":
            geom, bad = check_geometry(v)
            problems.extend(Problem(file, raw.where, f, m) for f, m in bad)
            if geom is not None:
                values[k] = geom
                parts = multipolygon_parts(geom)
                if parts > 1:
                    warn.add(k, raw.where, _MULTIPART.format(parts=parts))
        else:
            try:
                values[k] = CHECKS[k](v)
            except ValueError as exc:
                problems.append(Problem(file, raw.where, k, str(exc)))
    return values


def _clashes(
    path: str,
    where: str,
    by_path: dict[str, tuple[str, str]],
    dirs: dict[str, str],
    problems: list[Problem],
    file: str,
) -> bool:
    """Record ``path``; report it if another job writes it, or uses it as a folder."""
    folded = path.casefold()
    if folded in by_path:
        other, written = by_path[folded]
        message = f"writes the same file as {other} ({written!r}; case is ignored)"
    elif folded in dirs:
        message = f"file {path!r} is a folder that {dirs[folded]} writes into"
    else:
        cut = [i for i, c in enumerate(folded) if c == "/"] if "/" in folded else []
        parents = [folded[:i] for i in cut]
        hit = next((p for p in parents if p in by_path), None)
        if hit is None:
            by_path[folded] = (where, path)
            for p in parents:
                dirs.setdefault(p, where)
            return False
        message = f"needs folder {hit!r}, which {by_path[hit][0]} writes as a file"
    problems.append(Problem(file, where, "name", message))
    return True
