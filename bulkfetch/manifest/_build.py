"""Raw records to jobs: every member checked, defaults applied, clashes found.

Private to :mod:`bulkfetch.manifest.jobs`, which documents the rules; this is where they
are applied to what a reader (:mod:`bulkfetch.manifest.readers`) gives. :func:`build`
returns the :class:`~bulkfetch.manifest.job.Manifest` or raises
:class:`~bulkfetch.errors.ManifestError` holding every problem, each naming the file, the
place and the member ("field"); warnings of one kind come once, counted.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import MappingProxyType
from typing import Any

from bulkfetch._gc import gc_paused
from bulkfetch.errors import ManifestError, Problem
from bulkfetch.manifest._bands import bm_type_warning, sensor_for
from bulkfetch.manifest._checks import CHECKS, KNOWN, REQUIRED, WarnOnce, costly_typo, suggest
from bulkfetch.manifest._sizes import size_warnings
from bulkfetch.manifest.geometry import check_geometry, multipolygon_parts
from bulkfetch.manifest.job import Job, Manifest, checked_key
from bulkfetch.manifest.readers import Raw

__all__ = ["build"]

_MULTIPART = (
    "a MultiPolygon of {parts} parts: EOS's current Download visual documentation lists "
    "Polygon only (older pages accept MultiPolygon); if EOS refuses it, split it into one "
    "job per part"
)


def build(records: Iterator[Raw], file: str, issues: list[tuple[str, str, str]]) -> Manifest:
    """The manifest of ``records`` read from ``file``; ``issues`` collects the reader's
    file-level problems as it goes, and they come first, in file order."""
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
        key = checked_key(params)
        job = Job(key, MappingProxyType(params), name, f"{file}: {raw.where}")
        if key in by_key:
            problems.append(Problem(file, raw.where, "", f"same job as {by_key[key]}"))
            continue
        by_key[key] = raw.where
        path = job.relative_text()
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
    unknown alias, an absurd image size (see manifest._bands and manifest._sizes)."""
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
