"""A static STAC catalog at a destination: its layout, its files, and replacing them.

Contract: :func:`write_catalog` makes a destination hold the self-contained catalog of
Collections of Items (built by :mod:`bulkfetch.stac.items`), every link relative (so the
folder can be moved, copied or synced as a whole), and nothing else under ``stac/``.
Where the files go is a :class:`Destination`: a few operations on paths relative to its
root, so that another kind of storage (a bucket) is one more class; :class:`LocalFolder`
is a folder.

Layout, under the destination's root (beside the images, which are never touched)::

    catalog.json                               the root Catalog
    stac/{collection}/collection.json          one Collection per manifest
    stac/{collection}/items/{item}.json        one Item per done job

:func:`write_catalog` writes the Items and Collections first and ``catalog.json`` last,
each file atomically (a reader sees the old file or the new one), a file whose bytes are
unchanged is not written again, and only then removes the JSON files under ``stac/``
that the new catalog no longer has (Items of jobs no longer done). A reader walking the
catalog during a refresh therefore never meets a link to a file not written yet.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

import orjson
import pystac

from bulkfetch.durable import atomic_write

__all__ = [
    "CATALOG",
    "TREE",
    "Destination",
    "Entry",
    "Group",
    "LocalFolder",
    "Published",
    "collection_path",
    "item_path",
    "scan",
    "write_catalog",
]

CATALOG = "catalog.json"
TREE = "stac"
"""The folder under the root that holds every Collection and Item, and nothing else."""
ASSET_PREFIX = "../../../"
"""From an Item's file (``stac/{collection}/items/``) back up to the root."""


class Destination(Protocol):
    """Where a catalog's files live: paths are posix and relative to the root."""

    def read(self, relative: str) -> bytes | None:
        """The file's bytes, or None if there is no such file."""

    def write(self, relative: str, data: bytes, *, durable: bool) -> None:
        """Replace the file atomically (creating folders); ``durable``: fsynced on return."""

    def delete(self, relative: str) -> None:
        """Remove the file if it is there."""

    def files(self, prefix: str) -> list[str]:
        """Every file under ``prefix`` (a folder, ``stac/``), as relative paths."""

    def size(self, relative: str) -> int | None:
        """The file's size, or None if it is missing or not a plain file."""

    def local_path(self, relative: str) -> Path | None:
        """The file as a local path to open for reading, or None where there is none."""

    def first_bytes(self, relative: str, length: int) -> bytes | None:
        """Up to ``length`` bytes from the file's start (a header), or None if it is missing."""


class LocalFolder:
    """A :class:`Destination` on a local (or mounted) file system, through ``durable``."""

    __slots__ = ("root",)

    def __init__(self, root: Path) -> None:
        self.root = root

    def __repr__(self) -> str:
        return f"LocalFolder({str(self.root)!r})"

    def _path(self, relative: str) -> Path:
        parts = PurePosixPath(relative).parts
        if not parts or relative.startswith("/") or ".." in parts or "\\" in relative:
            raise ValueError(f"not a path inside the destination: {relative!r}")
        return self.root.joinpath(*parts)

    def read(self, relative: str) -> bytes | None:
        try:
            return self._path(relative).read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def write(self, relative: str, data: bytes, *, durable: bool) -> None:
        path = self._path(relative)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, data, sync=durable)

    def delete(self, relative: str) -> None:
        path = self._path(relative)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        # Folders the catalog emptied go too (a Collection with no Item left), up to the root.
        for parent in path.parents:
            if parent == self.root or self.root not in parent.parents:
                break
            try:
                parent.rmdir()
            except OSError:
                break

    def files(self, prefix: str) -> list[str]:
        top = self._path(prefix)
        found: list[str] = []
        for folder, _, names in os.walk(top):
            base = Path(folder).relative_to(self.root).as_posix()
            found.extend(f"{base}/{name}" for name in names)
        return found

    def local_path(self, relative: str) -> Path | None:
        try:
            return self._path(relative)
        except ValueError:
            return None

    def first_bytes(self, relative: str, length: int) -> bytes | None:
        try:
            with self._path(relative).open("rb") as stream:
                return stream.read(length)
        except (OSError, ValueError):
            return None

    def size(self, relative: str) -> int | None:
        try:
            info = self._path(relative).stat()
        except (OSError, ValueError):
            return None
        return info.st_size if stat.S_ISREG(info.st_mode) else None


@dataclass(frozen=True, slots=True)
class Entry:
    """One Item to be: its id (unique in its Collection) and how to build it.

    Built only when written, one at a time, so a catalog of 100,000 Items never holds
    them all in memory.
    """

    id: str
    build: Callable[[], pystac.Item]


@dataclass(slots=True)
class Group:
    """One Collection of the catalog, and its Items."""

    id: str
    title: str
    description: str
    entries: list[Entry] = field(default_factory=list)


@dataclass(slots=True)
class Published:
    """What :func:`write_catalog` did, counted in files."""

    written: int = 0
    unchanged: int = 0
    removed: int = 0


def collection_path(collection: str) -> str:
    return f"{TREE}/{collection}/collection.json"


def item_path(collection: str, item: str) -> str:
    return f"{TREE}/{collection}/items/{item}.json"


@dataclass(slots=True)
class _Extent:
    """The running spatial and temporal extent of a Collection's Items."""

    box: list[float] = field(default_factory=list)
    start: datetime | None = None
    end: datetime | None = None

    def add(self, item: pystac.Item) -> None:
        if item.bbox:
            b = item.bbox
            self.box = b[:4] if not self.box else [
                min(self.box[0], b[0]), min(self.box[1], b[1]),
                max(self.box[2], b[2]), max(self.box[3], b[3]),
            ]  # fmt: skip
        start = item.common_metadata.start_datetime or item.datetime
        end = item.common_metadata.end_datetime or item.datetime
        if start is not None and end is not None:
            self.start = start if self.start is None else min(self.start, start)
            self.end = end if self.end is None else max(self.end, end)

    def extent(self) -> pystac.Extent:
        box = self.box or [-180.0, -90.0, 180.0, 90.0]
        interval: list[list[datetime | None]] = [[self.start, self.end]]
        return pystac.Extent(pystac.SpatialExtent([box]), pystac.TemporalExtent(interval))


def _link(rel: str, href: str, media: str, title: str = "") -> dict[str, str]:
    link = {"rel": rel, "href": href, "type": media}
    return link | {"title": title} if title else link


def _json(data: Mapping[str, Any]) -> bytes:
    return orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n"


def digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


class _Writer:
    """Writes files whose bytes differ from what the destination holds; counts."""

    __slots__ = ("dest", "existing", "kept", "published")

    def __init__(self, dest: Destination, existing: Mapping[str, bytes]) -> None:
        self.dest = dest
        self.existing = existing
        self.kept: set[str] = set()
        self.published = Published()

    def put(self, path: str, data: bytes, *, durable: bool) -> None:
        self.kept.add(path)
        if self.existing.get(path) == digest(data):
            self.published.unchanged += 1
            return
        self.dest.write(path, data, durable=durable)
        self.published.written += 1


def write_catalog(
    dest: Destination,
    groups: Iterable[Group],
    existing: Mapping[str, bytes],
    *,
    title: str,
    description: str,
) -> Published:
    """Make ``dest`` hold the catalog of ``groups`` and, under ``stac/``, nothing else.

    ``existing`` is :func:`scan`'s: what the destination holds now. Items are written
    first, then their Collection, the root last, then what is no longer part of it is
    removed (see the module docstring). The links are written here, as pystac writes
    those of a SELF_CONTAINED catalog: pystac's own linking finds an object's href by
    scanning its links for every link it writes, which is quadratic in a Collection's
    Items (6 s for 5,000, hours for 100,000); the layout is fixed, so each is known.
    Item files are not fsynced one by one (thousands of fsyncs, for files any refresh
    rebuilds); the Collections and the root are; every file is replaced atomically.
    """
    json_type, geojson_type = str(pystac.MediaType.JSON), str(pystac.MediaType.GEOJSON)
    out = _Writer(dest, existing)
    root_links = [_link("root", "./" + CATALOG, json_type, title)]
    for group in sorted(groups, key=lambda g: g.id):
        if not group.entries:
            continue
        up = [
            _link("root", ASSET_PREFIX + CATALOG, json_type, title),
            _link("parent", "../collection.json", json_type, group.title),
            _link("collection", "../collection.json", json_type, group.title),
        ]
        links = [_link("root", "../../" + CATALOG, json_type, title)]
        links.append(_link("parent", "../../" + CATALOG, json_type, title))
        extent = _Extent()
        for entry in sorted(group.entries, key=lambda e: e.id):
            item = entry.build()
            item.id, item.collection_id = entry.id, group.id
            extent.add(item)
            data = item.to_dict(include_self_link=False, transform_hrefs=False)
            out.put(item_path(group.id, entry.id), _json(data | {"links": up}), durable=False)
            links.append(_link("item", f"./items/{entry.id}.json", geojson_type))
        collection = pystac.Collection(
            id=group.id,
            title=group.title,
            description=group.description,
            extent=extent.extent(),
            license="other",
        )
        data = collection.to_dict(include_self_link=False, transform_hrefs=False)
        out.put(collection_path(group.id), _json(data | {"links": links}), durable=True)
        root_links.append(_link("child", "./" + collection_path(group.id), json_type, group.title))
    root = pystac.Catalog(id="bulkfetch", title=title, description=description)
    data = root.to_dict(include_self_link=False, transform_hrefs=False)
    out.put(CATALOG, _json(data | {"links": root_links}), durable=True)
    for path in sorted(set(existing) - out.kept):
        if path.startswith(TREE + "/") and _ours(path):
            dest.delete(path)
            out.published.removed += 1
    return out.published


def _ours(path: str) -> bool:
    """A catalog file, or a temporary file a crashed write of one left behind."""
    name = path.rsplit("/", 1)[-1]
    return name.endswith(".json") or (name.startswith(".") and ".json.tmp-" in name)


def scan(dest: Destination) -> dict[str, bytes]:
    """The catalog files ``dest`` holds now, each path with the :func:`digest` of its bytes."""
    found: dict[str, bytes] = {}
    for path in [CATALOG, *dest.files(TREE)]:
        if path != CATALOG and not _ours(path):
            continue
        data = dest.read(path)
        if data is not None:
            found[path] = digest(data)
    return found
