"""Fields: the user's named areas that a search looks for scenes over.

Contract: :func:`load_fields` reads a file of fields and returns them in file order, or
raises :class:`~bulkfetch.errors.FieldsError` holding *every* problem found, each naming
the file, the place (``feature N``, ``line N``) and the member. Nothing else escapes for
any file content.

Formats, chosen by the extension:

``.geojson`` / ``.json``: a GeoJSON FeatureCollection of Polygon or MultiPolygon features.
``.jsonl``: one object a line holding ``geometry`` and an id (a bulkfetch manifest
qualifies: its lines for one field share the id and the area, and count once).

The id is the member ``id_property`` names (a property of a feature). Without one, a
feature's own ``id``, else the first of the properties ``id``, ``field_id``, ``name``.
Ids become the first folder of every output name, so each must be a safe, unique name.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bulkfetch.errors import FieldsError, Problem
from bulkfetch.manifest.geometry import check_geometry
from bulkfetch.manifest.names import check_name
from bulkfetch.manifest.readers import Raw, read_geojson, read_jsonl

__all__ = ["ID_MEMBERS", "Field", "load_fields"]

#: Members tried for a field's id when the user names none.
ID_MEMBERS = ("id", "field_id", "name")


@dataclass(frozen=True, slots=True)
class Field:
    """One area to search over: its id and its normalised GeoJSON geometry."""

    id: str
    geometry: dict[str, Any]
    where: str


def _records(path: Path, data: bytes, problems: list[tuple[str, str, str]]) -> Iterator[Raw]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        yield from read_jsonl(io.BytesIO(data), problems)
        return
    if suffix not in (".geojson", ".json"):
        problems.append(("file", "", "expected a .geojson, .json or .jsonl file of fields"))
        return
    yield from _geojson_with_ids(data, problems)


def _geojson_with_ids(data: bytes, problems: list[tuple[str, str, str]]) -> Iterator[Raw]:
    # The manifest reader keeps properties only; a feature's own "id" is the common place
    # for a field id, so it is added under a name no property can take.
    try:
        doc = orjson.loads(data)
        features = doc.get("features") if isinstance(doc, dict) else None
    except orjson.JSONDecodeError:
        features = None
    for n, raw in enumerate(read_geojson(io.BytesIO(data), problems)):
        feature = features[n] if isinstance(features, list) and n < len(features) else None
        if isinstance(feature, dict) and "id" in feature:
            raw.members["\0feature id"] = feature["id"]
        yield raw


def _field_id(raw: Raw, id_property: str | None) -> tuple[str, object]:
    if id_property is not None:
        return id_property, raw.members.get(id_property)
    if raw.members.get("\0feature id") is not None:
        return "id", raw.members["\0feature id"]
    for name in ID_MEMBERS:
        if raw.members.get(name) is not None:
            return name, raw.members[name]
    return "id", None


def load_fields(path: Path | str, *, id_property: str | None = None) -> list[Field]:
    """The fields in ``path``, each with a unique, file-name-safe id and a valid area."""
    path = Path(path)
    file = str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FieldsError([Problem(file, "file", "", f"cannot read: {exc.strerror}")]) from None
    issues: list[tuple[str, str, str]] = []
    fields: dict[str, Field] = {}
    problems: list[Problem] = []
    for raw in _records(path, data, issues):
        if raw.is_defaults:
            continue
        for member, message in raw.problems:
            problems.append(Problem(file, raw.where, member, message))
        member, value = _field_id(raw, id_property)
        if value is None:
            hint = (
                f"no {id_property!r} property"
                if id_property
                else "no id: give the features an 'id' (or name the property with --id-property)"
            )
            problems.append(Problem(file, raw.where, member, hint))
            continue
        if isinstance(value, bool) or not isinstance(value, str | int):
            problems.append(Problem(file, raw.where, member, "expected a string or integer id"))
            continue
        field_id = str(value).strip()
        try:
            check_name(field_id)
        except ValueError as exc:
            problems.append(Problem(file, raw.where, member, f"{field_id[:40]!r} {exc}"))
            continue
        geometry, geometry_issues = check_geometry(raw.members.get("geometry"))
        for place, message in geometry_issues:
            problems.append(Problem(file, raw.where, place, message))
        if geometry is None:
            continue
        earlier = fields.get(field_id.casefold())
        if earlier is None:
            fields[field_id.casefold()] = Field(field_id, geometry, raw.where)
        elif earlier.geometry != geometry:
            problems.append(
                Problem(
                    file,
                    raw.where,
                    member,
                    f"id {field_id!r} is also used by {earlier.where} for another area",
                )
            )
    problems[:0] = [Problem(file, where, member, message) for where, member, message in issues]
    if problems:
        raise FieldsError(problems)
    if not fields:
        raise FieldsError([Problem(file, "file", "", "holds no fields")])
    return list(fields.values())
