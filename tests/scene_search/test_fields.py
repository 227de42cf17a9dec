"""Reading the fields a search runs over: GeoJSON and JSON Lines, with located errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from bulkfetch.errors import FieldsError, ManifestError
from bulkfetch.scene_search.fields import load_fields
from tests.conftest import square, write_jsonl

REPO = Path(__file__).resolve().parents[2]


def feature(
    geometry: Any, properties: dict[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    return {"type": "Feature", "geometry": geometry, "properties": properties or {}, **extra}


def collection(path: Path, *features: dict[str, Any]) -> Path:
    path.write_bytes(orjson.dumps({"type": "FeatureCollection", "features": list(features)}))
    return path


def test_the_shipped_fields_file_loads() -> None:
    fields = load_fields(REPO / "manifests" / "fields.geojson")
    assert len(fields) >= 5
    assert len({f.id for f in fields}) == len(fields)


def test_ids_from_the_feature_id_then_the_usual_properties(tmp_path: Path) -> None:
    path = collection(
        tmp_path / "f.geojson",
        feature(square(10, 50), {"id": "from-prop"}, id="from-feature"),
        feature(square(11, 50), {"field_id": 7}),
        feature(square(12, 50), {"name": "north"}),
    )
    assert [f.id for f in load_fields(path)] == ["from-feature", "7", "north"]


def test_id_property_names_the_property(tmp_path: Path) -> None:
    path = collection(
        tmp_path / "f.geojson",
        feature(square(10, 50), {"code": "a1"}, id="x"),
        feature(square(11, 50), {"code": "a2"}),
    )
    fields = load_fields(path, id_property="code")
    assert [f.id for f in fields] == ["a1", "a2"]
    assert fields[0].geometry["type"] == "Polygon"


def test_every_problem_is_reported_with_its_place(tmp_path: Path) -> None:
    bad_ring = {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 2]]]}
    path = collection(
        tmp_path / "f.geojson",
        feature(square(10, 50), {}),  # no id
        feature(bad_ring, {"id": "ring"}),
        feature(square(11, 50), {"id": "../up"}),
        feature(square(12, 50), {"id": "dup"}),
        feature(square(13, 50), {"id": "DUP"}),
        feature(square(14, 50), {"id": ["list"]}),
    )
    with pytest.raises(FieldsError) as info:
        load_fields(path)
    text = str(info.value)
    assert isinstance(info.value, ManifestError)  # the CLI treats both alike: exit 2
    assert f"{path}: feature 1: id: no id" in text
    assert f"{path}: feature 2: geometry.coordinates[0]" in text
    assert f"{path}: feature 3: id: '../up'" in text
    assert f"{path}: feature 5: id: id 'DUP' is also used by feature 4" in text
    assert f"{path}: feature 6: id: expected a string or integer id" in text


def test_a_named_id_property_that_is_missing(tmp_path: Path) -> None:
    path = collection(tmp_path / "f.geojson", feature(square(10, 50), {"id": "a"}))
    with pytest.raises(FieldsError, match="feature 1: code: no 'code' property"):
        load_fields(path, id_property="code")


def test_jsonl_fields_and_a_manifest_count_each_field_once(tmp_path: Path) -> None:
    rows = [
        {"id": "a", "geometry": square(10, 50)},
        {"id": "b", "geometry": square(11, 50), "view_id": "S2/1/C/AA/2020/1/1/0"},
        {"id": "a", "geometry": square(10, 50), "view_id": "S2/1/C/AA/2020/1/2/0"},
    ]
    fields = load_fields(write_jsonl(tmp_path / "f.jsonl", rows))
    assert [f.id for f in fields] == ["a", "b"]
    rows.append({"id": "b", "geometry": square(12, 50)})
    with pytest.raises(FieldsError, match="line 4: id: id 'b' is also used by line 2"):
        load_fields(write_jsonl(tmp_path / "g.jsonl", rows))


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("f.geojson", b"{not json", "line 1: not valid JSON"),
        ("f.geojson", b'{"type": "Feature"}', "expected a GeoJSON FeatureCollection"),
        ("f.geojson", b'{"type": "FeatureCollection", "features": []}', "holds no fields"),
        ("f.csv", b"id,geometry\n", "expected a .geojson, .json or .jsonl file"),
        ("f.jsonl", b"[1]\n", "line 1: expected a JSON object"),
    ],
)
def test_files_that_are_not_fields(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(FieldsError, match=message):
        load_fields(path)


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FieldsError, match="cannot read"):
        load_fields(tmp_path / "nope.geojson")
