"""A validated manifest remembered beside the ledger, so a resumed run need not check it again.

Validating 100,000 jobs is seconds of pure Python (geometry, every field, a sha256 key per
job), and a resumed run or a nightly cron job validates the very same bytes again. So
``run`` keeps the jobs as validation left them in ``LEDGER.manifest-cache``, stamped with
the sha256 of the manifest's bytes, the name it was given by, and the validation code
itself (the sha256 of its source files, or the bulkfetch version where they cannot be
read). Any change to the file, or to the rules in a new release, is a miss; a miss
validates as before.

It is only ever a shortcut: a cache that is missing, torn, from another version or not
ours is a miss, and a cache that cannot be written is skipped with a debug message. It is
written only for manifests of :data:`MIN_JOBS` jobs or more, where it saves real time, and
never by a dry run. It holds job parameters, never the API key.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from pathlib import Path
from types import MappingProxyType
from typing import Any

import orjson

from . import __version__
from ._gc import gc_paused
from .durable import atomic_write, remove_stale_temps
from .errors import Problem, StorageError
from .manifest import Job, Manifest, parse_manifest, read_manifest_bytes

__all__ = ["MIN_JOBS", "cache_path", "load_manifest_cached"]

log = logging.getLogger(__name__)

KIND = "bulkfetch-manifest-cache"
FORMAT = 1
MIN_JOBS = 1000
"""Smaller manifests validate in milliseconds: a cache file would save nothing."""

# The modules and tables whose rules decide what a valid job is and what it is warned
# about (cached warnings included): a change to any of them must miss.
_RULES = (
    "manifest.py",
    "_manifest_fields.py",
    "_manifest_readers.py",
    "_manifest_bands.py",
    "_manifest_sizes.py",
    "geometry.py",
    "data/bands.toml",
)


def cache_path(ledger_path: Path) -> Path:
    """Where the cache of the manifest run into ``ledger_path`` lives."""
    return ledger_path.with_name(ledger_path.name + ".manifest-cache")


def load_manifest_cached(path: Path | str, cache: Path, *, write: bool = True) -> Manifest:
    """:func:`~bulkfetch.manifest.load_manifest`, served from ``cache`` when it matches.

    With ``write``, a manifest that had to be validated is then cached (if large enough).
    Raises :class:`~bulkfetch.errors.ManifestError` exactly as ``load_manifest`` does.
    """
    name = os.fspath(path)
    data = read_manifest_bytes(path)
    stamp = {
        "kind": KIND,
        "format": FORMAT,
        "rules": _rules_digest(),
        "file": name,
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    cached = _read(cache, stamp)
    if cached is not None:
        log.debug("manifest %s: validated jobs read from %s", name, cache)
        return cached
    manifest = parse_manifest(data, filename=name)
    if write and len(manifest.jobs) >= MIN_JOBS:
        _write(cache, stamp, manifest)
    return manifest


@functools.cache
def _rules_digest() -> str:
    here = Path(__file__).parent
    digest = hashlib.sha256(__version__.encode())
    try:
        for module in _RULES:
            digest.update((here / module).read_bytes())
    except OSError:  # a frozen or zipped install: the release number has to do
        return __version__
    return digest.hexdigest()


def _read(cache: Path, stamp: dict[str, Any]) -> Manifest | None:
    try:
        blob = cache.read_bytes()
    except OSError:
        return None
    try:
        with gc_paused():
            data = orjson.loads(blob)
            if not isinstance(data, dict) or data.get("stamp") != stamp:
                return None
            rows = data["jobs"]
            jobs = tuple(Job(k, MappingProxyType(_thaw(p)), n, w) for k, p, n, w in rows)
            warnings = tuple(Problem(*p) for p in data["warnings"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        log.debug("manifest cache %s unusable (%s); validating", cache, exc)
        return None
    return Manifest(Path(stamp["file"]), jobs, warnings)


def _thaw(params: dict[str, Any]) -> dict[str, Any]:
    """Give ``params`` back the tuples JSON turned into lists: validated geometry holds
    positions as tuples, so a cached job is equal to a freshly validated one."""
    geometry = params["geometry"]
    coords = geometry["coordinates"]
    if geometry["type"] == "Polygon":
        geometry["coordinates"] = tuple(map(_rings, coords))
    else:
        geometry["coordinates"] = tuple(tuple(map(_rings, polygon)) for polygon in coords)
    return params


def _rings(ring: list[list[float]]) -> tuple[tuple[float, ...], ...]:
    return tuple(map(tuple, ring))


def _write(cache: Path, stamp: dict[str, Any], manifest: Manifest) -> None:
    body = {
        "stamp": stamp,
        "warnings": [[p.file, p.where, p.field, p.message] for p in manifest.warnings],
        "jobs": [[j.key, dict(j.params), j.name, j.where] for j in manifest.jobs],
    }
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(cache)
        # No fsync: a cache lost in a crash costs one validation; a torn one is a miss.
        atomic_write(cache, orjson.dumps(body), sync=False)
    except (OSError, StorageError) as exc:
        log.debug("manifest cache %s not written: %s", cache, exc)
    else:
        log.debug("manifest %s: %d jobs cached in %s", stamp["file"], len(manifest.jobs), cache)
