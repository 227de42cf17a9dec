"""Manifests: the jobs a run must do, read, validated and keyed.

Contract: :func:`load_manifest` (a file) and :func:`parse_manifest` (bytes) return a
:class:`Manifest` of :class:`Job` records, or raise :class:`~bulkfetch.errors.ManifestError`
holding *every* problem found, each naming the file, the place and the field. No other
exception escapes for any file content. Each job carries the EOS "Download visual"
parameters to send (defaults applied, geometry normalised, no ``reference``) and a
``key``: the sha256 of those parameters in canonical JSON, so the same request has the
same key whatever the format, key order, ``10`` vs ``10.0``, or run. The ``reference``
sent to EOS is derived from the key; one a user gives is ignored, with a warning.
The records and :func:`job_key` live in :mod:`bulkfetch.manifest.job`, the format readers
in :mod:`bulkfetch.manifest.readers`, and the rules below are applied by the private
``_build``; this module picks the reader and places problems by line.

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

Fields, a job's members (the EOS Download visual parameters, :data:`PARAMS`, plus
``name``; not the farm fields a search reads): ``view_id``, ``bm_type``, ``geometry``,
``px_size`` are required, the rest optional with the value sets EOS documents;
``geometry`` is a GeoJSON Polygon/MultiPolygon, or text holding one or 2D WKT (see
:mod:`bulkfetch.manifest.geometry`): a one-part MultiPolygon is sent as its Polygon, and
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
import io
import os
from pathlib import Path

from bulkfetch.errors import ManifestError, Problem
from bulkfetch.manifest._build import build
from bulkfetch.manifest._checks import did_you_mean
from bulkfetch.manifest.job import PARAMS, Job, Manifest, job_key
from bulkfetch.manifest.names import safe_name
from bulkfetch.manifest.readers import READERS, Reader, job_lines, read_geojson, read_json

# Job, Manifest, job_key, PARAMS (manifest.job), safe_name (manifest.names) and
# did_you_mean are the manifest's public face too: callers need only this module.
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


def load_manifest(path: Path | str) -> Manifest:
    """Read and validate the manifest at ``path``; see the module docstring for formats."""
    name = os.fspath(path)
    reader = _reader_for(name)
    if reader in _ITEMS:  # parsed whole anyway; the bytes also place problems by line
        return parse_manifest(read_manifest_bytes(path), filename=name)
    issues: list[tuple[str, str, str]] = []
    try:
        with Path(path).open("rb") as stream:
            return build(reader(stream, issues), name, issues)
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
        manifest = build(reader(io.BytesIO(data), issues), filename, issues)
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
