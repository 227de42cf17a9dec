"""Tests for bulkfetch.manifest.job: the job key, output paths and the body sent.

Jobs are made the way a run makes them, from a manifest line (``job``).
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

import orjson
import pytest

from bulkfetch.manifest.job import PARAMS, job_key
from bulkfetch.manifest.jobs import parse_manifest
from tests.manifest.test_jobs import JOB, RING, job, jsonl

# --- keys ------------------------------------------------------------------------------


def test_key_is_canonical() -> None:
    base = job()
    assert len(base.key) == 64 and int(base.key, 16) >= 0
    assert job(px_size=10.0).key == base.key
    three_d = {"type": "Polygon", "coordinates": [[[*p, 7] for p in RING]], "bbox": [0, 0, 1, 1]}
    assert job(geometry=three_d).key == base.key
    assert job_key({**base.params, "reference": "x"}) == base.key
    assert job_key(dict(reversed(list(base.params.items())))) == base.key
    assert job_key({"a": 1, "b": [-0.0]}) == job_key({"b": [0], "a": 1.0})
    assert job(calibrate=1).key == job_key({**job(calibrate=1).params})


def test_reference_is_ignored_with_one_warning() -> None:
    m = parse_manifest(
        jsonl({**JOB, "reference": "mine"}, {**JOB, "bm_type": "NDWI", "reference": "m2"}),
        filename="m.jsonl",
    )
    assert m.jobs[0].key == job().key
    (w,) = m.warnings
    assert (w.where, w.field) == ("line 1", "reference") and "1 more" in w.message
    assert m.jobs[0].api_body()["params"]["reference"] == "bf-" + m.jobs[0].key[:32]


@pytest.mark.parametrize(
    "change",
    [
        {"view_id": "S2/13/R/EL/2023/7/19/1"},
        {"bm_type": "NDWI"},
        {"px_size": 10.5},
        {
            "geometry": {
                "type": "Polygon",
                "coordinates": [[[*RING[0]], [0, 0], [1, 0], [*RING[0]]]],
            }
        },
        {"name_alias": "x"},
        {"resample": "near"},
        {"colormap": "abc"},
        {"levels": "-1,1"},
        {"colors_limit": 5},
        {"calibrate": 1},
        {"size": "L"},
        {"georeference": "world"},
        {"format": "png"},
        {"pansharpening": False},
        {"colors": ["red"]},
        {"thresholds": [0.5]},
    ],
)
def test_any_param_change_changes_the_key(change: dict[str, Any]) -> None:
    changed = job(**change)
    assert changed.key != job().key
    assert job_key(changed.params) == changed.key  # the fast path agrees with job_key


def test_job_key_rejects_non_json() -> None:
    with pytest.raises(ValueError, match="not a JSON value"):
        job_key({"a": object()})
    with pytest.raises(ValueError, match="too large"):
        job_key({"a": 10**400})


# --- output paths ----------------------------------------------------------------------


def test_default_relative_path_never_uses_raw_slashes() -> None:
    j = job(bm_type="NDVI (raw)")
    path = j.relative_path()
    assert path == PurePosixPath(f"S2-13-R-EL-2023-7-19-0_NDVI-raw-_{j.key[:12]}.jpg")
    assert len(path.parts) == 1


@pytest.mark.parametrize(
    ("fields", "path", "ext", "kind"),
    [
        ({"name": "x/y"}, "x/y.jpg", ".jpg", "jpeg"),
        ({"name": "x/y.JPG"}, "x/y.JPG", ".jpg", "jpeg"),
        ({"name": "y.jpeg"}, "y.jpeg", ".jpg", "jpeg"),
        ({"name": "y.png"}, "y.png.jpg", ".jpg", "jpeg"),
        ({"name": "y", "format": "png"}, "y.png", ".png", "png"),
        ({"name": "y", "format": "tiff"}, "y.tif", ".tif", "tiff"),
        ({"name": "y", "georeference": "world"}, "y.zip", ".zip", "zip"),
        ({"name": "y", "georeference": "kmz", "format": "png"}, "y.kmz", ".kmz", "zip"),
        ({"name": "y.tiff", "georeference": "tiff"}, "y.tiff", ".tif", "tiff"),
    ],
)
def test_named_paths_and_kinds(fields: dict[str, Any], path: str, ext: str, kind: str) -> None:
    j = job(**fields)
    assert (str(j.relative_path()), j.extension, j.expected_kind) == (path, ext, kind)
    assert j.georeference == fields.get("georeference")


def test_api_body() -> None:
    j = job(calibrate=1, name="n")
    body = j.api_body()
    assert body["type"] == "jpeg" and "name" not in body["params"]
    assert body["params"]["calibrate"] == 1 and body["params"]["reference"] == j.reference
    assert set(body["params"]) <= PARAMS
    orjson.dumps(body)


def test_job_is_frozen_and_hashable() -> None:
    j = job()
    assert hash(j) == hash(job())
    with pytest.raises(AttributeError):
        j.key = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        j.params["px_size"] = 1  # type: ignore[index]


def test_documented_defaults_do_not_change_the_key() -> None:
    base = {
        "view_id": "S2/13/R/EL/2023/7/19/0",
        "bm_type": "NDVI",
        "px_size": 10,
        "geometry": {
            "type": "Polygon",
            "coordinates": [[[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.0, 0.0]]],
        },
    }
    explicit = base | {"format": "jpeg", "resample": "cubic", "calibrate": 0, "levels": "-0.5,0.5"}
    plain_job = parse_manifest(orjson.dumps(base), filename="a.jsonl").jobs[0]
    explicit_job = parse_manifest(orjson.dumps(explicit), filename="a.jsonl").jobs[0]
    assert plain_job.key == explicit_job.key == job_key(base) == job_key(explicit)
    other = parse_manifest(orjson.dumps(base | {"calibrate": 1}), filename="a.jsonl").jobs[0]
    assert other.key != plain_job.key
