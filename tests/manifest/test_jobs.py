"""Tests for bulkfetch.manifest.jobs: formats, validation, keys, output paths, duplicates."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bulkfetch.errors import ManifestError, Problem
from bulkfetch.manifest._checks import costly_typo
from bulkfetch.manifest.jobs import (
    PARAMS,
    Job,
    Manifest,
    job_key,
    load_manifest,
    parse_manifest,
)

VIEW = "S2/13/R/EL/2023/7/19/0"
RING = [[-104.879, 27.166], [-104.870, 27.166], [-104.870, 27.172], [-104.879, 27.166]]
GEOM = {"type": "Polygon", "coordinates": [RING]}
WKT = "POLYGON ((-104.879 27.166, -104.870 27.166, -104.870 27.172, -104.879 27.166))"
JOB: dict[str, Any] = {"view_id": VIEW, "bm_type": "NDVI", "geometry": GEOM, "px_size": 10}


def jsonl(*objs: dict[str, Any]) -> bytes:
    return b"".join(orjson.dumps(o) + b"\n" for o in objs)


def geojson(*props: dict[str, Any], **top: Any) -> bytes:
    feats = [{"type": "Feature", "geometry": GEOM, "properties": p} for p in props]
    return orjson.dumps({"type": "FeatureCollection", "features": feats, **top})


def csv_bytes(header: list[str], *rows: list[str]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode()


def errors(data: bytes, filename: str = "m.jsonl") -> list[Problem]:
    with pytest.raises(ManifestError) as info:
        parse_manifest(data, filename=filename)
    return info.value.problems


def one_error(data: bytes, filename: str = "m.jsonl") -> Problem:
    found = errors(data, filename)
    assert len(found) == 1, found
    return found[0]


def job(**fields: Any) -> Job:
    (only,) = parse_manifest(jsonl({**JOB, **fields}), filename="m.jsonl").jobs
    return only


# --- formats ---------------------------------------------------------------------------


def test_jsonl_with_defaults() -> None:
    data = jsonl(
        {"defaults": {"bm_type": "NDVI", "px_size": 10, "format": "png"}},
        {"view_id": VIEW, "geometry": GEOM},
        {"view_id": VIEW, "geometry": GEOM, "bm_type": "NDWI", "format": "jpeg"},
    )
    m = parse_manifest(b"\n" + data + b"\n\n", filename="jobs.JSONL")
    assert isinstance(m, Manifest) and m.path == Path("jobs.JSONL")
    a, b = m.jobs
    assert (a.bm_type, a.format, a.where) == ("NDVI", "png", "jobs.JSONL: line 3")
    assert (b.bm_type, b.format, b.where) == ("NDWI", "jpeg", "jobs.JSONL: line 4")
    assert a.params["px_size"] == 10.0 and "reference" not in a.params
    assert m.warnings == ()


def test_json_list_and_object_forms() -> None:
    listed = parse_manifest(orjson.dumps([JOB]), filename="m.json")
    assert listed.jobs[0].where == "m.json: job 1"
    doc = {
        "defaults": {"px_size": 10, "bm_type": "NDVI"},
        "jobs": [{"view_id": VIEW, "geometry": GEOM}],
    }
    assert parse_manifest(orjson.dumps(doc), filename="m.json").jobs[0].key == listed.jobs[0].key


def test_geojson_with_defaults() -> None:
    data = geojson({"view_id": VIEW, "name": "north"}, defaults={"bm_type": "NDVI", "px_size": 10})
    (j,) = parse_manifest(data, filename="aoi.geojson").jobs
    assert j.where == "aoi.geojson: feature 1" and j.name == "north" and j.bm_type == "NDVI"


def test_csv_reads_and_coerces() -> None:
    header = ["view_id", "bm_type", "px_size", "geometry", "calibrate", "pansharpening"]
    header += ["colors", "thresholds", "colors_limit", "name", "colormap"]
    row = [VIEW, "NDVI", "10", WKT, "1", "TRUE", '["red","green"]', "[0, 0.5]", "8", "a/b", ""]
    (j,) = parse_manifest(csv_bytes(header, row), filename="jobs.csv").jobs
    assert j.where == "jobs.csv: line 2"
    p = j.params
    assert p["px_size"] == 10.0 and p["calibrate"] == 1 and p["pansharpening"] is True
    assert p["colors"] == ["red", "green"] and p["thresholds"] == [0.0, 0.5]
    assert p["colors_limit"] == 8 and "colormap" not in p and j.name == "a/b"


def test_csv_locations_are_physical_lines_and_handle_bom_crlf() -> None:
    geo = orjson.dumps(GEOM).decode().replace(",", ",\n", 1)  # a cell spanning two lines
    quoted = geo.replace('"', '""')
    text = f'view_id,bm_type,px_size,geometry\r\n{VIEW},NDVI,10,"{quoted}"\r\n\r\n'
    text += f"{VIEW},NDWI,0,{WKT!r}\r\n".replace("'", '"')
    problems = errors(b"\xef\xbb\xbf" + text.encode(), "m.csv")
    assert [(p.where, p.field) for p in problems] == [("line 5", "px_size")]


def test_same_job_in_all_formats_has_the_same_key() -> None:
    keys = {
        parse_manifest(jsonl(JOB), filename="a.jsonl").jobs[0].key,
        parse_manifest(orjson.dumps([JOB]), filename="a.json").jobs[0].key,
        parse_manifest(
            geojson({"view_id": VIEW, "bm_type": "NDVI", "px_size": 10}), filename="a.geojson"
        )
        .jobs[0]
        .key,
        parse_manifest(
            csv_bytes(["view_id", "bm_type", "px_size", "geometry"], [VIEW, "NDVI", "10.0", WKT]),
            filename="a.csv",
        )
        .jobs[0]
        .key,
    }
    assert len(keys) == 1


# --- validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field", "text"),
    [
        ({"view_id": None}, "view_id", "required"),
        ({"px_size": None}, "px_size", "required"),
        ({"geometry": None}, "geometry", "required"),
        ({"bm_type": None}, "bm_type", "required"),
        ({"view_id": "S2 13/R"}, "view_id", "scene id"),
        ({"view_id": "S2"}, "view_id", "scene id"),
        ({"view_id": "S2//x"}, "view_id", "scene id"),
        ({"view_id": 5}, "view_id", "got 5"),
        ({"bm_type": "  "}, "bm_type", "non-empty"),
        ({"px_size": True}, "px_size", "got true"),
        ({"px_size": 0}, "px_size", "> 0"),
        ({"px_size": -1.5}, "px_size", "> 0"),
        ({"px_size": "10"}, "px_size", "number"),
        ({"resample": "cubik"}, "resample", "did you mean 'cubic'?"),
        ({"levels": "1,0"}, "levels", "low < high"),
        ({"levels": "a,b"}, "levels", "two numbers"),
        ({"levels": [0, 1]}, "levels", "two numbers"),
        ({"colors_limit": 0}, "colors_limit", ">= 1"),
        ({"colors_limit": 2.5}, "colors_limit", "whole number"),
        ({"calibrate": 2}, "calibrate", "0 or 1"),
        ({"calibrate": True}, "calibrate", "0 or 1"),
        ({"size": "XXL"}, "size", "S, M, L, XL"),
        ({"georeference": "png"}, "georeference", "world"),
        ({"format": "jpg"}, "format", "did you mean 'jpeg'?"),
        ({"pansharpening": 1}, "pansharpening", "true or false"),
        ({"colors": ["red", 1]}, "colors", "strings"),
        ({"colors": "red"}, "colors", "list"),
        ({"thresholds": [0, True]}, "thresholds", "finite numbers"),
        ({"name": "../x"}, "name", "'..'"),
        ({"name": 5}, "name", "relative file path"),
        ({"name": "a" * 254}, "name", "too long"),
        ({"colormap": ""}, "colormap", "non-empty"),
        ({"name_alias": "a\nb"}, "name_alias", "control"),
        ({"px_sise": 10}, "px_sise", "did you mean 'px_size'?"),
        ({"geometry": {"type": "Point", "coordinates": [0, 0]}}, "geometry.type", "'Point'"),
    ],
)
def test_each_rule_names_line_and_field(change: dict[str, Any], field: str, text: str) -> None:
    fields = {k: v for k, v in {**JOB, **change}.items() if v is not None}
    found = errors(jsonl({**JOB, "bm_type": "OK"}, fields))
    assert [(p.file, p.where, p.field) for p in found] == [("m.jsonl", "line 2", field)]
    assert text in found[0].message
    assert str(found[0]).startswith(f"m.jsonl: line 2: {field}: ")


def test_all_problems_are_reported_at_once() -> None:
    data = jsonl({**JOB, "px_size": 0, "format": "gif"}, {"view_id": VIEW}, {**JOB, "bm_type": 3})
    found = errors(data)
    assert [(p.where, p.field) for p in found] == [
        ("line 1", "px_size"),
        ("line 1", "format"),
        ("line 2", "bm_type"),
        ("line 2", "geometry"),
        ("line 2", "px_size"),
        ("line 3", "bm_type"),
    ]


def test_notes_and_nulls_are_ignored() -> None:
    assert job(_note="mine", _x={"deep": [1]}, colormap=None).key == job().key


def test_unknown_fields_warn_in_geojson_and_csv() -> None:
    props = {"view_id": VIEW, "bm_type": "NDVI", "px_size": 10, "crop": "wheat", "_n": 1}
    m = parse_manifest(
        geojson(props, {**props, "bm_type": "NDWI"}, {**props, "bm_type": "EVI"}),
        filename="a.geojson",
    )
    (w,) = m.warnings
    assert (w.where, w.field) == ("feature 1 (line 1)", "crop") and "2 more" in w.message
    c = csv_bytes(
        ["view_id", "bm_type", "px_size", "geometry", "farm"], [VIEW, "NDVI", "1", WKT, "x"]
    )
    (w,) = parse_manifest(c, filename="a.csv").warnings
    assert (w.where, w.field) == ("line 2", "farm")


def test_defaults_rules() -> None:
    p = one_error(jsonl(JOB, {"defaults": {"px_size": 1}}))
    assert (p.where, p.field) == ("line 2", "defaults") and "first" in p.message
    p = one_error(jsonl({"defaults": {"name": "x"}}, JOB))
    assert (p.where, p.field) == ("line 1", "name")
    p = one_error(jsonl({"defaults": {"crop": 1}}, JOB))
    assert (p.where, p.field) == ("line 1", "crop")
    p = one_error(jsonl({"defaults": 3}, JOB))
    assert (p.where, p.field) == ("line 1", "defaults")
    p = one_error(jsonl({"defaults": {}, "px_size": 1}, JOB))
    assert "only" in p.message
    p = one_error(orjson.dumps({"defaults": {"px_size": -1}, "jobs": [JOB]}), "m.json")
    assert (p.where, p.field) == ("defaults", "px_size")
    p = one_error(
        geojson({"view_id": VIEW}, defaults={"bm_type": "N", "px_size": 1, "zz": 1}), "a.geojson"
    )
    assert (p.where, p.field) == ("defaults", "zz")


def test_jsonl_line_errors() -> None:
    found = errors(b'{"a": \n[1]\n' + jsonl(JOB) + b"\xff\n")
    assert [(p.where, p.field) for p in found] == [("line 1", ""), ("line 2", ""), ("line 4", "")]
    assert "not valid JSON" in found[0].message and "got a list" in found[1].message


def test_json_shape_errors() -> None:
    assert "list of jobs" in one_error(b'"x"', "m.json").message
    assert one_error(b'{"jobs": 5}', "m.json").field == ""
    data = orjson.dumps([JOB, 7], option=orjson.OPT_INDENT_2)
    p = one_error(data, "m.json")
    seven = data.splitlines().index(b"  7") + 1
    assert (p.where, p.message) == (f"job 2 (line {seven})", "expected a JSON object, got a number")
    p = one_error(orjson.dumps({"jobs": [JOB], "job": []}), "m.json")
    assert (p.where, p.field) == ("top level", "job")
    p = one_error(b'[\n{"a": }]', "m.json")
    assert p.where == "line 2" and "not valid JSON" in p.message


def test_geojson_shape_errors() -> None:
    assert one_error(orjson.dumps(GEOM), "a.geojson").field == "type"
    feats = {
        "type": "FeatureCollection",
        "features": [{"type": "Feature", "geometry": None, "properties": None}],
    }
    found = errors(orjson.dumps(feats), "a.geojson")
    assert {(p.where, p.field) for p in found} == {
        ("feature 1 (line 1)", f) for f in ("view_id", "bm_type", "geometry", "px_size")
    }
    p = one_error(
        geojson({"view_id": VIEW, "bm_type": "N", "px_size": 1, "geometry": GEOM}), "a.geojson"
    )
    assert p.field == "properties.geometry"


def test_csv_errors() -> None:
    header = ["view_id", "bm_type", "px_size", "geometry"]
    p = one_error(csv_bytes(header, [VIEW, "NDVI", "abc", WKT]), "a.csv")
    assert (p.where, p.field) == ("line 2", "px_size") and "'abc'" in p.message
    p = one_error(
        csv_bytes(header, [VIEW, "NDVI", "1", "POLYGON Z ((0 0 0, 1 0 0, 1 1 0, 0 0 0))"]), "a.csv"
    )
    assert (p.where, p.field) == ("line 2", "geometry") and "2D" in p.message
    p = one_error(csv_bytes(header, [VIEW, "NDVI", "1"]), "a.csv")
    assert "3 cells" in p.message
    p = one_error(csv_bytes([*header, "px_size"], [VIEW, "NDVI", "1", WKT, "2"]), "a.csv")
    assert (p.where, p.field) == ("line 1", "px_size")
    p = one_error(csv_bytes([*header, "pansharpening"], [VIEW, "N", "1", WKT, "yes"]), "a.csv")
    assert p.field == "pansharpening"
    p = one_error(csv_bytes([*header, "colors"], [VIEW, "N", "1", WKT, "red,green"]), "a.csv")
    assert p.field == "colors" and "JSON list" in p.message
    assert "UTF-8" in one_error(b"view_id\n\xff\n", "a.csv").message
    assert one_error(b"view_id,geometry,bm_type,px_size\na/\x00b,,,\n", "a.csv").field == "view_id"


@pytest.mark.parametrize(
    ("data", "filename"),
    [
        *((b"", "m.jsonl"), (b"\n\n", "m.jsonl"), (b"[]", "m.json"), (geojson(), "m.geojson")),
        *((b"view_id,geometry\n", "m.csv"), (b"", "m.csv"), (jsonl({"defaults": {}}), "m.jsonl")),
    ],
)
def test_empty_manifest_is_an_error(data: bytes, filename: str) -> None:
    p = errors(data, filename)[-1]
    assert "no jobs" in p.message or "no header" in p.message


@pytest.mark.parametrize("filename", ["m.txt", "m", "m.yaml"])
def test_unknown_extension(filename: str) -> None:
    p = one_error(jsonl(JOB), filename)
    assert ".jsonl, .json, .geojson, .csv" in p.message and p.file == filename


def test_duplicates() -> None:
    p = one_error(jsonl(JOB, {**JOB, "px_size": 10.0, "name": "other"}))
    assert (p.where, p.message) == ("line 2", "same job as line 1")
    p = one_error(jsonl({**JOB, "name": "A/b"}, {**JOB, "bm_type": "X", "name": "a/B.JPG"}))
    assert (p.where, p.field) == ("line 2", "name") and "line 1" in p.message
    p = one_error(jsonl({**JOB, "name": "a.jpg/b"}, {**JOB, "bm_type": "X", "name": "a"}))
    assert "folder" in p.message
    p = one_error(jsonl({**JOB, "name": "a"}, {**JOB, "bm_type": "X", "name": "a.jpg/b"}))
    assert "folder" in p.message


def test_load_manifest(tmp_path: Path) -> None:
    path = tmp_path / "jobs.jsonl"
    path.write_bytes(jsonl(JOB))
    m = load_manifest(path)
    assert m.path == path and m.jobs[0].where == f"{path}: line 1"
    assert load_manifest(str(path)).jobs == m.jobs
    with pytest.raises(ManifestError, match="cannot read"):
        load_manifest(tmp_path / "missing.jsonl")
    (tmp_path / "dir.csv").mkdir()
    with pytest.raises(ManifestError, match="cannot read"):
        load_manifest(tmp_path / "dir.csv")


# --- never anything but ManifestError ------------------------------------------------

EXTS = ["jsonl", "json", "geojson", "csv"]


def parses_or_manifest_error(data: bytes, filename: str) -> None:
    try:
        m = parse_manifest(data, filename=filename)
    except ManifestError as exc:
        assert exc.problems and all(isinstance(p, Problem) for p in exc.problems)
        str(exc)
    else:
        assert m.jobs
        for j in m.jobs:
            assert j.key == job_key(j.params)
            j.relative_path()
            orjson.dumps(j.api_body())


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.sampled_from(EXTS))
def test_any_bytes(data: bytes, ext: str) -> None:
    parses_or_manifest_error(data, f"x.{ext}")


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
    | st.sampled_from(
        ["S2/1/2", "NDVI", "POLYGON ((0 0, 1 0, 1 1, 0 0))", "a/b", "", "1,2", "cubic"]
    ),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)
field_names = st.sampled_from(sorted({*PARAMS, "name", "_x", "defaults", "jobs", "zzz"}))


def encode(jobs: list[dict[str, Any]], ext: str) -> bytes:
    if ext == "jsonl":
        return jsonl(*jobs)
    if ext == "json":
        return orjson.dumps(jobs)
    if ext == "geojson":
        feats = [
            {"type": "Feature", "geometry": j.pop("geometry", None), "properties": j} for j in jobs
        ]
        return orjson.dumps({"type": "FeatureCollection", "features": feats})
    names = sorted({k for j in jobs for k in j})
    cells = [
        [
            v if isinstance(v, str) else orjson.dumps(v).decode()
            for v in (j.get(n, "") for n in names)
        ]
        for j in jobs
    ]
    return csv_bytes(names, *cells)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(EXTS),
    st.lists(
        st.tuples(
            st.lists(field_names, max_size=3),
            st.dictionaries(field_names, json_values, max_size=3),
        ),
        min_size=1,
        max_size=3,
    ),
)
def test_mangled_manifests(ext: str, edits: list[tuple[list[str], dict[str, Any]]]) -> None:
    jobs = []
    for n, (drop, replace) in enumerate(edits):
        j = {**JOB, "bm_type": f"B{n}", "name": f"n{n}"}
        for k in drop:
            j.pop(k, None)
        j.update(replace)
        jobs.append(j)
    parses_or_manifest_error(encode(jobs, ext), f"x.{ext}")


def test_valid_manifests_pass_the_fuzz_helper() -> None:
    for ext in EXTS:
        data = encode([{**JOB, "geometry": WKT if ext == "csv" else GEOM, "name": "n"}], ext)
        assert parse_manifest(data, filename=f"x.{ext}").jobs


@pytest.mark.parametrize(
    "line",
    [
        b'{"px_size": 1e400}',
        b'{"px_size": 1' + b"0" * 400 + b"}",
        b'{"px_size": NaN}',
        b'{"_x": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        b'{"view_id": "\\ud800"}',
    ],
)
def test_hostile_json_is_a_located_problem(line: bytes) -> None:
    p = errors(line + b"\n" + jsonl(JOB))[0]
    assert p.where == "line 1"


def test_big_csv_geometry_cell_is_read() -> None:
    n = 10_000
    pts = [(math.cos(2 * math.pi * k / n), math.sin(2 * math.pi * k / n)) for k in range(n)]
    wkt = "POLYGON ((" + ", ".join(f"{x!r} {y!r}" for x, y in [*pts, pts[0]]) + "))"
    assert len(wkt) > 131072  # bigger than the csv module's default cell limit
    data = csv_bytes(["view_id", "bm_type", "px_size", "geometry"], [VIEW, "NDVI", "1", wkt])
    (j,) = parse_manifest(data, filename="big.csv").jobs
    assert len(j.params["geometry"]["coordinates"][0]) == n + 1


def test_json_and_geojson_problems_name_the_line_the_item_starts_on(tmp_path: Path) -> None:
    # Written as people write them: indented, one job or feature spanning many lines.
    jobs = [JOB, {**JOB, "px_size": -1}, JOB | {"view_id": "nope"}]
    data = orjson.dumps({"defaults": {"format": "png"}, "jobs": jobs}, option=orjson.OPT_INDENT_2)
    starts = [n for n, line in enumerate(data.splitlines(), 1) if line == b"    {"]
    found = errors(data, "m.json")
    assert {(p.where, p.field) for p in found} == {
        (f"job 2 (line {starts[1]})", "px_size"),
        (f"job 3 (line {starts[2]})", "view_id"),
    }
    path = tmp_path / "m.json"
    path.write_bytes(data)
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    assert [(p.where, p.field) for p in caught.value.problems] == [
        (p.where, p.field) for p in found
    ]
    feats = [
        {"type": "Feature", "geometry": GEOM, "properties": {"view_id": VIEW, "bm_type": "N"}},
        {"type": "Feature", "geometry": GEOM, "properties": {"view_id": VIEW, "px_size": 1}},
    ]
    text = orjson.dumps(
        {"type": "FeatureCollection", "features": feats}, option=orjson.OPT_INDENT_2
    )
    starts = [n for n, line in enumerate(text.splitlines(), 1) if line == b"    {"]
    assert {(p.where, p.field) for p in errors(text, "a.geojson")} == {
        (f"feature 1 (line {starts[0]})", "px_size"),
        (f"feature 2 (line {starts[1]})", "bm_type"),
    }


# --- near misses of job parameters, bad UTF-8, counts ------------------------------------


@pytest.mark.parametrize(
    ("prop", "meant"),
    [("pxsize", "px_size"), ("bm_typ", "bm_type"), ("PX_SIZE", "px_size"), ("formats", "format")],
)
def test_a_misspelt_parameter_in_geojson_or_csv_is_an_error(prop: str, meant: str) -> None:
    props = {"view_id": VIEW, "bm_type": "NDVI", "px_size": 10, prop: "png"}
    p = one_error(geojson(props), "a.geojson")
    assert (p.where, p.field) == ("feature 1 (line 1)", prop)
    assert f"did you mean {meant!r}?" in p.message and "'_'" in p.message
    c = csv_bytes(
        ["view_id", "bm_type", "px_size", "geometry", prop], [VIEW, "NDVI", "1", WKT, "x"]
    )
    p = one_error(c, "a.csv")
    assert (p.where, p.field) == ("line 2", prop) and f"did you mean {meant!r}?" in p.message


def test_a_fields_own_attributes_stay_warnings() -> None:
    # Name/SIZE are GIS attributes as often as typos, and missing them costs nothing.
    props = {"view_id": VIEW, "bm_type": "NDVI", "px_size": 10}
    extra = {"Name": "north", "SIZE": "12 ha", "site": "A", "crop": "wheat", "_pxsize": 3}
    m = parse_manifest(geojson(props | extra), filename="a.geojson")
    assert {w.field for w in m.warnings} == {"Name", "SIZE", "site", "crop"}
    (name,) = [w for w in m.warnings if w.field == "Name"]
    assert "did you mean 'name'?" in name.message


@pytest.mark.parametrize(
    ("word", "meant"),
    [
        ("pxsize", "px_size"),
        ("px-size", "px_size"),
        ("bmtype", "bm_type"),
        ("bm_tpye", "bm_type"),
        ("threshold", "thresholds"),
        ("georefrence", "georeference"),
        ("Calibrated", "calibrate"),
        ("crop", None),
        ("Name", None),
        ("site", None),
        ("sample", None),
        ("description", None),
    ],
)
def test_costly_typo(word: str, meant: str | None) -> None:
    assert costly_typo(word) == meant


def test_warnings_repeated_say_how_often() -> None:
    props = {"view_id": VIEW, "bm_type": "NDVI", "px_size": 10, "crop": "wheat"}
    two = parse_manifest(geojson(props, props | {"bm_type": "NDWI"}), filename="a.geojson")
    assert two.warnings[0].message.endswith("(and 1 more time)")
    three = parse_manifest(
        geojson(props, props | {"bm_type": "NDWI"}, props | {"bm_type": "EVI"}),
        filename="a.geojson",
    )
    assert three.warnings[0].message.endswith("(and 2 more times)")


def test_bad_utf8_names_line_and_byte_in_every_format() -> None:
    good = orjson.dumps(JOB)
    bad = orjson.dumps(JOB | {"name": "caf\u00e9"}).replace(b"\xc3\xa9", b"\xe9")
    offset = bad.index(b"\xe9") + 1
    p = one_error(good + b"\n" + bad + b"\n", "m.jsonl")
    assert (p.where, p.message) == ("line 2", f"not valid UTF-8 (byte {offset})")
    doc = b"[\n" + good + b",\n" + bad + b"\n]"
    p = one_error(doc, "m.json")
    assert (p.where, p.message) == ("line 3", f"not valid UTF-8 (byte {offset})")
    feat = geojson({"view_id": VIEW, "bm_type": "NDVI", "px_size": 10, "name": "caf\u00e9"})
    p = one_error(feat.replace(b"\xc3\xa9", b"\xe9"), "m.geojson")
    assert p.where == "line 1" and p.message.startswith("not valid UTF-8 (byte ")
    c = csv_bytes(
        ["view_id", "bm_type", "px_size", "geometry", "name"], [VIEW, "NDVI", "1", WKT, "ca"]
    )
    p = one_error(c.replace(b",ca\n", b",ca\xe9\n"), "m.csv")
    assert p.where == "line 2" and p.message.startswith("not valid UTF-8 (byte ")


def test_a_row_of_one_cell_says_cell() -> None:
    p = one_error(csv_bytes(["view_id", "bm_type"], ["x"]), "m.csv")
    assert "row has 1 cell;" in p.message


def test_costly_job_warnings_come_once_per_kind_with_a_count() -> None:
    wide = {"type": "Polygon", "coordinates": [[[-100, 10], [-60, 10], [-60, 40], [-100, 10]]]}
    huge = [{**JOB, "view_id": f"S2/13/R/EL/2023/7/{d}/0", "geometry": wide} for d in (1, 2, 3)]
    m = parse_manifest(
        jsonl(
            *huge, {**JOB, "bm_type": "NDVX"}, {**JOB, "bm_type": "NDWX"}, {**JOB, "px_size": 0.1}
        ),
        filename="m.jsonl",
    )
    assert len(m.jobs) == 6
    found = [(w.where, w.field, w.message) for w in m.warnings]
    assert [(where, f) for where, f, _ in found] == [
        ("line 1", "px_size"),
        ("line 4", "bm_type"),
        ("line 5", "bm_type"),
        ("line 6", "px_size"),
    ]
    assert found[0][2].startswith("at 10 m the image would be about ")
    assert found[0][2].endswith("(and 2 more times)")
    assert "'NDVX'" in found[1][2] and "'NDWX'" in found[2][2]
    assert "0.1 m is finer than any satellite offers" in found[3][2]
