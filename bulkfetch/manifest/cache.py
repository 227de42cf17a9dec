"""A validated manifest remembered beside the ledger, so a resumed run need not check it again.

Validating 100,000 jobs is seconds of pure Python (geometry, every field, a sha256 key per
job), and a resumed run or a nightly cron job validates the very same bytes again. So
``run`` keeps the jobs as validation left them in ``LEDGER.manifest-cache``, stamped with
the sha256 of the manifest's bytes, the name it was given by, and the validation code
itself (the sha256 of its modules' source, or of their bytecode where only that ships).
Any change to the file, or to the rules in a new release, is a miss; a miss validates as
before.

It is only ever a shortcut: a cache that is missing, torn, from another version or not
ours is a miss, and a cache that cannot be written is skipped with a debug message. It is
written only for manifests of :data:`MIN_JOBS` jobs or more, where it saves real time, and
never by a dry run. It holds job parameters, never the API key.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import marshal
import os
from importlib import resources
from importlib.abc import InspectLoader
from pathlib import Path
from types import MappingProxyType, ModuleType
from typing import Any

import orjson

from bulkfetch._gc import gc_paused
from bulkfetch._version import __version__
from bulkfetch.durable import atomic_write, remove_stale_temps
from bulkfetch.errors import Problem, StorageError
from bulkfetch.manifest import (
    _bands,
    _build,
    _checks,
    _sizes,
    geometry,
    job,
    jobs,
    names,
    readers,
    values,
    wkt,
)
from bulkfetch.manifest.jobs import Job, Manifest, parse_manifest, read_manifest_bytes

__all__ = ["MIN_JOBS", "cache_path", "load_manifest_cached"]

log = logging.getLogger(__name__)

KIND = "bulkfetch-manifest-cache"
FORMAT = 1
MIN_JOBS = 1000
"""Smaller manifests validate in milliseconds: a cache file would save nothing."""

# The modules and tables whose rules decide what a valid job is and what it is warned
# about (cached warnings included): a change to any of them must miss. Named as module
# objects, not file names, so a module that moves or is renamed fails here at import
# instead of silently leaving the digest unable to change.
_RULES: tuple[ModuleType, ...] = (
    jobs, job, _build, _checks, readers, names, values, geometry, wkt, _bands, _sizes,
)  # fmt: skip
_TABLES = ("bands.toml",)


def cache_path(ledger_path: Path) -> Path:
    """Where the cache of the manifest run into ``ledger_path`` lives."""
    return ledger_path.with_name(ledger_path.name + ".manifest-cache")


def load_manifest_cached(path: Path | str, cache: Path, *, write: bool = True) -> Manifest:
    """:func:`~bulkfetch.manifest.jobs.load_manifest`, served from ``cache`` when it matches.

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
    digest = hashlib.sha256(__version__.encode())
    for module in _RULES:
        digest.update(_source(module))
    data = resources.files("bulkfetch") / "data"
    for table in _TABLES:
        digest.update((data / table).read_bytes())
    return digest.hexdigest()


def _source(module: ModuleType) -> bytes:
    """A rules module's source, or its bytecode where only that ships (a frozen install)."""
    loader = module.__spec__.loader if module.__spec__ else None
    if not isinstance(loader, InspectLoader):
        raise TypeError(f"{module.__name__}: no loader to read its rules from")
    source = loader.get_source(module.__name__)
    if source is not None:
        return source.encode()
    code = loader.get_code(module.__name__)
    if code is None:
        raise TypeError(f"{module.__name__}: neither source nor code to digest")
    return marshal.dumps(code)


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
