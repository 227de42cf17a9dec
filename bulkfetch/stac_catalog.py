"""A static STAC catalog at a destination: its layout, its files, and replacing them.

Contract: :func:`catalog_files` turns Collections of Items (from :mod:`bulkfetch.stac`)
into every file of a self-contained catalog, as bytes by relative path, every link
relative (so the folder can be moved, copied or synced as a whole); :func:`publish` makes
the destination hold exactly those files. Where the files go is a :class:`Destination`:
a few operations on paths relative to its root, so that another kind of storage (a
bucket) is one more class; :class:`LocalFolder` is a folder.

Layout, under the destination's root (beside the images, which are never touched)::

    catalog.json                               the root Catalog
    stac/{collection}/collection.json          one Collection per manifest
    stac/{collection}/items/{item}.json        one Item per done job

:func:`publish` writes the Items and Collections first and ``catalog.json`` last, each
file atomically (a reader sees the old file or the new one), a file whose bytes are
unchanged is not written again, and only then removes the JSON files under ``stac/``
that the new catalog no longer has (Items of jobs no longer done). A reader walking the
catalog during a refresh therefore never meets a link to a file not written yet.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

import orjson
import pystac

from .durable import atomic_write

__all__ = [
    "CATALOG",
    "TREE",
    "Destination",
    "Group",
    "LocalFolder",
    "Published",
    "catalog_files",
    "collection_path",
    "item_path",
    "publish",
    "scan",
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

    def size(self, relative: str) -> int | None:
        try:
            info = self._path(relative).stat()
        except (OSError, ValueError):
            return None
        return info.st_size if stat.S_ISREG(info.st_mode) else None


@dataclass(slots=True)
class Group:
    """One Collection of the catalog, and its Items (ids unique within it)."""

    id: str
    title: str
    description: str
    items: list[pystac.Item] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Published:
    """What :func:`publish` did, counted in files."""

    written: int = 0
    unchanged: int = 0
    removed: int = 0


def collection_path(collection: str) -> str:
    return f"{TREE}/{collection}/collection.json"


def item_path(collection: str, item: str) -> str:
    return f"{TREE}/{collection}/items/{item}.json"


def _extent(items: Sequence[pystac.Item]) -> pystac.Extent:
    boxes = [item.bbox for item in items if item.bbox]
    if boxes:
        box = [min(b[0] for b in boxes), min(b[1] for b in boxes)]
        box += [max(b[2] for b in boxes), max(b[3] for b in boxes)]
    else:
        box = [-180.0, -90.0, 180.0, 90.0]
    starts: list[datetime] = []
    ends: list[datetime] = []
    for item in items:
        common = item.common_metadata
        start = common.start_datetime or item.datetime
        end = common.end_datetime or item.datetime
        if start is not None and end is not None:
            starts.append(start)
            ends.append(end)
    interval: list[list[datetime | None]] = [[min(starts), max(ends)] if starts else [None, None]]
    return pystac.Extent(pystac.SpatialExtent([box]), pystac.TemporalExtent(interval))


def catalog_files(groups: Iterable[Group], *, title: str, description: str) -> dict[str, bytes]:
    """Every file of the catalog of ``groups``, by relative path (see the module docstring)."""
    root = pystac.Catalog(
        id="bulkfetch",
        title=title,
        description=description,
        catalog_type=pystac.CatalogType.SELF_CONTAINED,
    )
    placed: list[tuple[str, pystac.STACObject]] = [(CATALOG, root)]
    for group in sorted(groups, key=lambda g: g.id):
        if not group.items:
            continue
        collection = pystac.Collection(
            id=group.id,
            title=group.title,
            description=group.description,
            extent=_extent(group.items),
            license="other",
        )
        root.add_child(collection)
        placed.append((collection_path(group.id), collection))
        for item in sorted(group.items, key=lambda i: i.id):
            collection.add_item(item)
            placed.append((item_path(group.id, item.id), item))
    # Any absolute base will do: only the hrefs relative to one another are written.
    base = "/bulkfetch-catalog/"
    for path, obj in placed:
        obj.set_self_href(base + path)
    return {path: _json(obj.to_dict(include_self_link=False)) for path, obj in placed}


def _json(data: Mapping[str, Any]) -> bytes:
    return orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n"


def digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def publish(
    dest: Destination, files: Mapping[str, bytes], existing: Mapping[str, bytes]
) -> Published:
    """Make ``dest`` hold ``files`` and, under ``stac/``, nothing else of the catalog's.

    ``existing`` maps each JSON file found under ``stac/`` (and ``catalog.json``) to the
    :func:`digest` of its bytes, to skip files that would not change.
    """
    written = unchanged = removed = 0
    # The root last (see the module docstring). Item files are not fsynced one by one
    # (thousands of fsyncs for a file `bulkfetch stac` can rebuild at any time); the
    # Collections and the root are, and each file is still replaced atomically.
    for path in sorted(files, key=lambda p: (p == CATALOG, p)):
        data = files[path]
        if existing.get(path) == digest(data):
            unchanged += 1
            continue
        dest.write(path, data, durable="/items/" not in path)
        written += 1
    for path in sorted(set(existing) - set(files)):
        if path.startswith(TREE + "/") and _ours(path):
            dest.delete(path)
            removed += 1
    return Published(written, unchanged, removed)


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
