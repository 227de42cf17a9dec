"""The STAC catalog of a destination's done jobs, refreshed from the ledger and the manifests.

``bulkfetch stac`` and ``run --stac`` call :func:`refresh_catalog` (the commands are the CLI's).

Where each Item's facts come from. The ledger says which jobs are done, with each result's
path, size and sha256, but not what was asked (AOI, view_id, bm_type, px_size): the
manifest says that, and its ``_`` notes say what the search knew (``_date``,
``_cloud``). So :func:`refresh_catalog` reads, newest first:

1. the manifests given (``--manifest``, repeatable), or else every manifest the ledger
   remembers a run of (``run`` records the manifest's path with each run; the manifest
   cache beside the ledger spares validating a large one again); a remembered manifest
   that is gone or no longer valid is passed over with a warning;
2. for a done job none of them holds any more (a search that rewrote the manifest, an old
   manifest deleted), the Item the catalog already has for it, recognised by its
   ``bulkfetch:key`` and kept if its checksum and path still match the ledger's.

A done job found nowhere, or whose file is missing or has another size than the
ledger's, or whose scene has no date, gets no Item, and the command says how many and
why. Each manifest is a Collection, named after its file.

Errors: :class:`UsageError` (no ledger), :class:`ManifestError` (a bad manifest given),
:class:`StorageError` (the catalog cannot be written), :class:`LedgerError` (a damaged
ledger), :class:`LedgerLocked` (another refresh is writing this catalog).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pystac
from PIL import Image

from bulkfetch.durable import FileLock
from bulkfetch.errors import LedgerLocked, ManifestError, UsageError
from bulkfetch.ledger import JobRecord, JobState, Ledger
from bulkfetch.ledger_meta import LedgerMeta
from bulkfetch.manifest.cache import cache_path, load_manifest_cached
from bulkfetch.manifest.jobs import Manifest
from bulkfetch.manifest.notes import job_notes
from bulkfetch.sink.destination import display, store_url
from bulkfetch.stac.catalog import (
    ASSET_PREFIX,
    CATALOG,
    Destination,
    Entry,
    Group,
    LocalFolder,
    Published,
    collection_path,
    scan,
    write_catalog,
)
from bulkfetch.stac.items import (
    ASSET_KEY,
    Described,
    href_for,
    item_id,
    make_item,
    multihash,
    scene_time,
)

__all__ = ["Refreshed", "collection_id", "refresh_catalog"]

_UNSAFE = re.compile(r"[^\w.-]+")
_FALLBACK_COLLECTION = "bulkfetch"


def open_destination(out: Path) -> Destination:
    """The :class:`~bulkfetch.stac.catalog.Destination` ``out`` names."""
    url = store_url(out)
    if url is not None:
        from bulkfetch.sink.object_store import ObjectStore

        return ObjectStore(url)
    return LocalFolder(out)


@dataclass(slots=True)
class Refreshed:
    """What a refresh did: Items per Collection, files written, and done jobs left out."""

    items: int = 0
    collections: int = 0
    published: Published = field(default_factory=Published)
    kept: int = 0  # Items kept from the catalog: their manifest is no longer at hand
    unknown: int = 0  # done jobs no manifest describes (and no Item of the catalog)
    missing: list[str] = field(default_factory=list)  # done jobs whose file is gone or changed
    undated: list[str] = field(default_factory=list)  # view_ids with no date known
    notes: list[str] = field(default_factory=list)  # warnings for the user


@dataclass(slots=True)
class _Source:
    """A manifest as a Collection: its id, and the jobs it describes with their notes."""

    collection: str
    manifest: Manifest
    notes: dict[str, dict[str, Any]] = field(default_factory=dict)


def collection_id(manifest: Path, taken: Iterable[str]) -> str:
    """A Collection id from the manifest's file name, made unique among ``taken``."""
    name = _UNSAFE.sub("-", manifest.stem).strip("-") or "manifest"
    if name in set(taken):
        name += "-" + hashlib.sha256(str(manifest).encode()).hexdigest()[:8]
    return name


def _recorded_manifests(meta: LedgerMeta) -> list[str]:
    """The manifests the ledger remembers runs of, newest first, each once."""
    paths = [meta.manifest, *(run.manifest for run in reversed(meta.runs))]
    return list(dict.fromkeys(p for p in paths if p))


def _load_sources(
    ledger: Ledger,
    ledger_path: Path,
    given: Sequence[Path],
    loaded: Manifest | None,
    notes: list[str],
) -> list[_Source]:
    manifests: list[Manifest] = [loaded] if loaded is not None else []
    seen = {loaded.path.resolve()} if loaded is not None else set()
    cache = cache_path(ledger_path)
    for path in given:  # errors here are the user's: they stop the command (exit 2)
        manifests.append(load_manifest_cached(path, cache, write=False))
    if not given:
        for recorded in _recorded_manifests(ledger.meta):
            if Path(recorded).resolve() in seen:
                continue
            seen.add(Path(recorded).resolve())
            try:
                manifests.append(load_manifest_cached(Path(recorded), cache, write=False))
            except ManifestError as exc:
                first = exc.problems[0] if exc.problems else exc
                notes.append(f"manifest {recorded} of an earlier run passed over: {first}")
    sources: list[_Source] = []
    for manifest in manifests:
        taken = [s.collection for s in sources]
        sources.append(_Source(collection_id(manifest.path, taken), manifest))
    return sources


def _latest_per_path(records: Iterable[JobRecord]) -> dict[str, JobRecord]:
    """The done records, by key; of two that name one file, the one done last.

    A job whose parameters changed is a new job (a new key) writing the same file: the
    old record stays done in the ledger, but the file is the new job's now.
    """
    latest: dict[str, JobRecord] = {}
    for record in records:
        if record.state is not JobState.DONE:
            continue
        other = latest.get(record.path)
        if other is None or (record.updated_at, record.key) > (other.updated_at, other.key):
            latest[record.path] = record
    return {record.key: record for record in latest.values()}


def _band_count(dest: Destination, path: str) -> int:
    """The bands of the GeoTIFF at ``path``, from its header (0 if it cannot be read)."""
    local = dest.local_path(path)
    try:
        # A bucket's object: its first 64 KiB, where a TIFF's first IFD (the band count)
        # is in the files EOS and GDAL write; an IFD further on gives 0, as unreadable.
        head = None if local is not None else dest.first_bytes(path, 1 << 16)
        if local is None and head is None:
            return 0
        with Image.open(local if local is not None else io.BytesIO(head or b"")) as image:
            return len(image.getbands())
    except (OSError, ValueError, Image.DecompressionBombError):
        return 0


def _existing_items(dest: Destination, existing: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The Items the catalog holds now, by their ``bulkfetch:key``."""
    found: dict[str, dict[str, Any]] = {}
    for path in existing:
        if "/items/" not in path or not path.endswith(".json"):
            continue
        with contextlib.suppress(orjson.JSONDecodeError, TypeError):
            data = orjson.loads(dest.read(path) or b"")
            key = data.get("properties", {}).get("bulkfetch:key")
            if isinstance(key, str) and data.get("type") == "Feature":
                found[key] = data
    return found


def _kept_item(data: dict[str, Any], record: JobRecord) -> pystac.Item | None:
    """The catalog's Item for ``record``'s job, if it still describes the ledger's file."""
    asset = data.get("assets", {}).get(ASSET_KEY, {})
    href = ASSET_PREFIX + href_for(record.path)
    if asset.get("href") != href or asset.get("file:checksum") != multihash(record.sha256):
        return None
    try:
        # Without its links: they point where it was; the new catalog links it afresh.
        return pystac.Item.from_dict({**data, "links": []}, preserve_dict=False)
    except (KeyError, TypeError, ValueError, pystac.STACError):
        return None


def _entries(members: list[tuple[str, str, Callable[[], pystac.Item]]]) -> list[Entry]:
    """Entries of one Collection from ``(key, id, build)``; ids that clash (ignoring case)
    get ``-{key[:12]}`` each."""
    counts = Counter(name.casefold() for _, name, _ in members)
    return [
        Entry(f"{name}-{key[:12]}" if counts[name.casefold()] > 1 else name, build)
        for key, name, build in members
    ]


def _same(item: pystac.Item) -> pystac.Item:
    return item


def _groups(
    sources: Sequence[_Source],
    done: Mapping[str, JobRecord],
    dest: Destination,
    existing: Mapping[str, bytes],
    result: Refreshed,
) -> list[Group]:
    groups = {
        s.collection: Group(
            s.collection,
            s.manifest.path.name,
            f"Images bulkfetch downloaded for the jobs of {s.manifest.path.name}",
        )
        for s in sources
    }
    members: dict[str, list[tuple[str, str, Callable[[], pystac.Item]]]] = {}
    placed: set[str] = set()
    for source in sources:
        wanted = [job for job in source.manifest.jobs if job.key in done and job.key not in placed]
        notes = job_notes(source.manifest) if wanted else {}
        for job in wanted:
            placed.add(job.key)
            record = done[job.key]
            # (A path that would leave the destination has no size: the ledger is not trusted.)
            if dest.size(record.path) != record.size:
                result.missing.append(record.path)
                continue
            noted = notes.get(job.key, {})
            if scene_time(job.view_id, noted) is None:
                result.undated.append(job.view_id)
                continue
            bands = _band_count(dest, record.path) if job.georeference == "tiff" else 0
            described = Described(
                job.key, record.path, record.size, record.sha256, job.params, noted, bands
            )
            build = functools.partial(make_item, described, ASSET_PREFIX + href_for(record.path))
            members.setdefault(source.collection, []).append((job.key, item_id(record.path), build))
    left = [key for key in done if key not in placed]
    previous = _existing_items(dest, existing) if left else {}
    for key in left:
        record = done[key]
        kept = _kept_item(previous[key], record) if key in previous else None
        if kept is None or dest.size(record.path) != record.size:
            result.unknown += 1
            continue
        collection = kept.collection_id or _FALLBACK_COLLECTION
        if collection not in groups:
            groups[collection] = _old_group(dest, collection)
        result.kept += 1
        build = functools.partial(_same, kept)
        members.setdefault(collection, []).append((key, item_id(record.path), build))
    for collection, entries in members.items():
        groups[collection].entries = _entries(entries)
    return [g for g in groups.values() if g.entries]


def _old_group(dest: Destination, collection: str) -> Group:
    """A Collection no manifest at hand names: its title and description as last written."""
    title, description = collection, "Images bulkfetch downloaded (their manifest is gone)"
    with contextlib.suppress(orjson.JSONDecodeError, TypeError, AttributeError):
        data = orjson.loads(dest.read(collection_path(collection)) or b"")
        title = str(data.get("title") or title)
        description = str(data.get("description") or description)
    return Group(collection, title, description)


def refresh_catalog(
    out: Path,
    ledger_path: Path,
    *,
    manifests: Sequence[Path] = (),
    loaded: Manifest | None = None,
) -> Refreshed:
    """Write (or bring up to date) the catalog of ``ledger_path``'s done jobs under ``out``.

    ``manifests``: read these instead of the ones the ledger remembers; ``loaded``: a
    manifest already in memory (the run's). Raises :class:`UsageError` (no ledger),
    :class:`ManifestError` (a given manifest), :class:`LedgerLocked` (another refresh of
    this catalog is going on), :class:`StorageError` or :class:`LedgerError`.
    """
    if not ledger_path.is_file():
        raise UsageError(f"no ledger at {ledger_path}")
    result = Refreshed()
    dest = open_destination(out)
    # One writer at a time: two refreshes interleaving could remove each other's new Items.
    lock = FileLock(ledger_path.with_name(ledger_path.name + ".stac-lock"), target=out / CATALOG)
    try:
        lock.acquire()
    except LedgerLocked:
        raise LedgerLocked(f"another bulkfetch stac is writing {out / CATALOG}") from None
    with lock, Ledger.open(ledger_path, readonly=True) as ledger:
        done = _latest_per_path(ledger.records().values())
        sources = _load_sources(ledger, ledger_path, manifests, loaded, result.notes)
        existing = scan(dest)
        groups = _groups(sources, done, dest, existing, result)
        result.published = write_catalog(
            dest,
            groups,
            existing,
            title=f"bulkfetch: {display(out) if store_url(out) else out.resolve().name or out}",
            description="EOS Download visual results, as bulkfetch downloaded them "
            "(8-bit rendered images in EPSG:3857).",
        )
    result.items = sum(len(g.entries) for g in groups)
    result.collections = len(groups)
    if result.unknown:
        result.notes.append(
            f"{result.unknown} done jobs are in no manifest at hand and not in the catalog: "
            "no Item; give their manifest with --manifest"
        )
    if result.missing:
        result.notes.append(
            f"{len(result.missing)} done jobs' files are missing or changed (e.g. "
            f"{result.missing[0]}): no Item; 'bulkfetch run' fetches them again"
        )
    if result.undated:
        result.notes.append(
            f"{len(result.undated)} jobs' scenes have no date (e.g. view_id "
            f"{result.undated[0]!r}): no Item; give the job a _date note (YYYY-MM-DD)"
        )
    return result
