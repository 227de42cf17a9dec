"""The STAC catalog: pure pieces, then `bulkfetch run` and `bulkfetch stac` for real.

Every file the catalog holds is validated offline against the STAC 1.1.0 core schemas and
the extensions' schemas vendored in tests/stac/stac_schemas (see its README for their sources),
and the catalog is loaded back with pystac, every asset opened and checked.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pystac
import pytest
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource

from bulkfetch.durable import FileLock
from bulkfetch.ledger import JobState, Ledger
from bulkfetch.manifest.jobs import load_manifest
from bulkfetch.manifest.notes import job_notes
from bulkfetch.simulator import SimulatorThread
from bulkfetch.stac.catalog import Entry, Group, LocalFolder, scan, write_catalog
from bulkfetch.stac.items import (
    Described,
    Platform,
    Undescribable,
    href_for,
    item_id,
    make_item,
    media_type,
    multihash,
    platform_of,
    scene_time,
)
from tests.conftest import bulkfetch_cli, run_cli, square, write_jsonl

SCHEMAS = Path(__file__).resolve().parent / "stac_schemas"
CORE = "https://schemas.stacspec.org/v1.1.0/"
EXT = "https://stac-extensions.github.io/"


# -- offline validation ----------------------------------------------------------------------


def _registry() -> Registry[Any]:
    """Every vendored schema under its canonical URL; anything else is refused, not fetched."""
    urls = {
        "geojson/Feature.json": "https://geojson.org/schema/Feature.json",
        "geojson/Geometry.json": "https://geojson.org/schema/Geometry.json",
        "extensions/eo-v1.1.0.json": EXT + "eo/v1.1.0/schema.json",
        "extensions/projection-v2.0.0.json": EXT + "projection/v2.0.0/schema.json",
        "extensions/file-v2.1.0.json": EXT + "file/v2.1.0/schema.json",
        "extensions/raster-v1.1.0.json": EXT + "raster/v1.1.0/schema.json",
    }
    for name in ("catalog", "collection"):
        urls[f"stac-spec-v1.1.0/{name}.json"] = CORE + f"{name}-spec/json-schema/{name}.json"
    for path in (SCHEMAS / "stac-spec-v1.1.0").glob("*.json"):
        if path.stem not in ("catalog", "collection"):
            urls[f"stac-spec-v1.1.0/{path.name}"] = CORE + f"item-spec/json-schema/{path.name}"

    def refuse(uri: str) -> Resource[Any]:
        raise NoSuchResource(uri)  # offline: a schema not vendored is a test failure

    resources = [
        (url, Resource.from_contents(json.loads((SCHEMAS / file).read_text())))
        for file, url in urls.items()
    ]
    return Registry(retrieve=refuse).with_resources(resources)  # type: ignore[call-arg]


REGISTRY = _registry()


def validate(data: dict[str, Any]) -> None:
    """Validate one STAC object against its core schema and each extension it declares."""
    kind = {"Feature": "item", "Catalog": "catalog", "Collection": "collection"}[data["type"]]
    assert data["stac_version"] == "1.1.0"
    core = CORE + f"{kind}-spec/json-schema/{kind}.json"
    for url in [core, *data.get("stac_extensions", [])]:
        schema = REGISTRY.contents(url)
        validator = jsonschema.Draft7Validator(schema, registry=REGISTRY)
        errors = sorted(validator.iter_errors(data), key=lambda e: list(e.path))
        assert not errors, f"{data.get('id')} against {url}: {errors[0].message}"


# -- pure pieces -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("view_id", "expected"),
    [
        ("S2/13/R/EL/2023/7/19/0", Platform(None, "sentinel-2", ("msi",))),
        ("S2L2A/13/R/EL/2023/7/19/0", Platform(None, "sentinel-2", ("msi",))),
        ("L8/LC80110312016028LGN00", Platform("landsat-8", "landsat", ("oli", "tirs"))),
        ("L9/LC90260312023202LGN00", Platform("landsat-9", "landsat", ("oli", "tirs"))),
        ("MODIS/12/04/2017204/2017204034223", Platform(None, None, ("modis",))),
        ("MODIS/MYD09GQ/2017204", Platform("aqua", None, ("modis",))),
        ("MODIS/MOD09GQ.A2017204", Platform("terra", None, ("modis",))),
        ("CBERS/whatever", Platform()),
    ],
)
def test_platform_of(view_id: str, expected: Platform) -> None:
    assert platform_of(view_id) == expected


def test_scene_time() -> None:
    assert scene_time("S2/13/R/EL/2023/7/19/0", {}) == (datetime(2023, 7, 19, tzinfo=UTC), True)
    modis = scene_time("MODIS/12/04/2017204/2017204034223", {})
    assert modis == (datetime(2017, 7, 23, 3, 42, 23, tzinfo=UTC), False)
    assert scene_time("X/1", {"_date": "2021-02-03"}) == (datetime(2021, 2, 3, tzinfo=UTC), True)
    noted = scene_time("X/1", {"_date": "2021-02-03T10:11:12+02:00"})
    assert noted == (datetime(2021, 2, 3, 8, 11, 12, tzinfo=UTC), False)
    # The view_id wins over a note: it names the scene itself.
    assert scene_time("S2/1/C/AA/2020/1/5/0", {"_date": "2021-02-03"}) == (
        datetime(2020, 1, 5, tzinfo=UTC),
        True,
    )
    assert scene_time("X/1", {}) is None
    assert scene_time("X/1", {"_date": "soon"}) is None


def test_small_pure_pieces() -> None:
    digest = hashlib.sha256(b"x").hexdigest()
    assert multihash(digest) == "1220" + digest
    assert media_type("a/b.jpg", {}) == "image/jpeg"
    assert media_type("a/b.png", {}) == "image/png"
    assert media_type("a/b.tif", {}) == "image/tiff"
    assert media_type("a/b.tif", {"georeference": "tiff"}) == "image/tiff; application=geotiff"
    assert media_type("a/b.zip", {"georeference": "world"}) == "application/zip"
    assert media_type("a/b.kmz", {"georeference": "kmz"}) == "application/vnd.google-earth.kmz"
    assert item_id("field-1/2023-07-19_S2_NDVI.png") == "field-1_2023-07-19_S2_NDVI"
    assert item_id("a b#c/d?.e.tif") == "a-b-c_d-.e"
    assert item_id("no.extension.here") == "no.extension.here"
    assert href_for("a b/c#1%?.png") == "a b/c%231%25%3F.png"


def _described(**params: Any) -> Described:
    base = {
        "view_id": "S2/13/R/EL/2023/7/19/0",
        "bm_type": "NDVI",
        "px_size": 10.0,
        "geometry": square(-104.9, 27.1),
    }
    return Described("ab" * 32, "f/x.png", 5, "cd" * 32, base | params, {"_cloud": 7})


def test_an_item_validates_and_says_what_the_job_asked() -> None:
    item = make_item(_described(), "../../../f/x.png")
    data = item.to_dict(include_self_link=False)
    validate(data)
    props = data["properties"]
    assert props["eos:view_id"] == "S2/13/R/EL/2023/7/19/0"
    assert props["eos:bm_type"] == "NDVI"
    assert props["gsd"] == 10.0
    assert props["eo:cloud_cover"] == 7.0
    assert props["proj:code"] == "EPSG:3857"
    assert props["constellation"] == "sentinel-2"
    assert "platform" not in props  # 2A or 2B: the view_id does not say
    assert props["datetime"] == "2023-07-19T00:00:00Z"
    assert props["start_datetime"] == "2023-07-19T00:00:00Z"
    assert props["end_datetime"].startswith("2023-07-19T23:59:59")
    assert data["bbox"] == pytest.approx([-104.9, 27.1, -104.89, 27.11])
    asset = data["assets"]["visual"]
    assert asset["roles"] == ["data", "visual"]
    assert asset["file:checksum"] == "1220" + "cd" * 32
    assert asset["file:size"] == 5


def test_without_a_cloud_note_the_eo_extension_is_not_declared() -> None:
    job = _described()
    job = Described(job.key, job.path, job.size, job.sha256, job.params, {})
    data = make_item(job, "x.png").to_dict(include_self_link=False)
    validate(data)
    assert "eo:cloud_cover" not in data["properties"]
    assert not any("/eo/" in url for url in data["stac_extensions"])


@pytest.mark.parametrize(
    ("note", "expected"), [(7, 7.0), ("12.5", 12.5), (None, None), (True, None), (101, None)]
)
def test_cloud_cover_from_the_note(note: Any, expected: float | None) -> None:
    job = _described()
    job = Described(job.key, job.path, job.size, job.sha256, job.params, {"_cloud": note})
    properties = make_item(job, "x.png").properties
    assert properties.get("eo:cloud_cover") == expected


def test_an_undated_scene_is_refused() -> None:
    with pytest.raises(Undescribable, match="no date"):
        make_item(_described(view_id="CBERS/whatever"), "x.png")


def _entry(name: str, view_id: str = "S2/13/R/EL/2023/7/19/0") -> Entry:
    job = _described(view_id=view_id)
    return Entry(name, functools.partial(make_item, job, "../../../f/x.png"))


def test_write_catalog_replaces_removes_and_skips_unchanged(tmp_path: Path) -> None:
    dest = LocalFolder(tmp_path)
    (tmp_path / "image.jpg").write_bytes(b"not ours")
    (tmp_path / "stac" / "a" / "items").mkdir(parents=True)
    (tmp_path / "stac" / "a" / "items" / ".x.json.tmp-abc").write_bytes(b"a crash's leftover")
    (tmp_path / "stac" / "a" / "items" / "notes.txt").write_bytes(b"the user's")
    first = [Group("a", "A", "first", [_entry("1"), _entry("2")])]
    done = write_catalog(dest, first, scan(dest), title="t", description="d")
    assert (done.written, done.unchanged, done.removed) == (4, 0, 1)
    again = write_catalog(dest, first, scan(dest), title="t", description="d")
    assert (again.written, again.unchanged, again.removed) == (0, 4, 0)

    second = [
        Group("a", "A", "first", [_entry("1")]),
        Group("b", "B", "second", [_entry("3", "S2/13/R/EL/2021/1/2/0")]),
    ]
    done = write_catalog(dest, second, scan(dest), title="t", description="d")
    # New: b's Item and Collection; changed: a's Collection (one Item less) and the root.
    assert (done.written, done.unchanged, done.removed) == (4, 1, 1)
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert files == [
        "catalog.json",
        "image.jpg",
        "stac/a/collection.json",
        "stac/a/items/1.json",
        "stac/a/items/notes.txt",
        "stac/b/collection.json",
        "stac/b/items/3.json",
    ]
    for path in tmp_path.rglob("*.json"):
        validate(orjson.loads(path.read_bytes()))
    catalog = pystac.Catalog.from_file(str(tmp_path / "catalog.json"))
    assert sorted(i.id for i in catalog.get_items(recursive=True)) == ["1", "3"]
    b = orjson.loads((tmp_path / "stac/b/collection.json").read_bytes())
    assert b["extent"]["temporal"]["interval"][0][0] == "2021-01-02T00:00:00Z"

    done = write_catalog(dest, [Group("b", "B", "", [])], scan(dest), title="t", description="d")
    assert not (tmp_path / "stac" / "b").exists()  # emptied folders go too


# -- through the real CLI --------------------------------------------------------------------


def _jobs() -> list[dict[str, Any]]:
    """Every kind of result, every sensor, names with folders and a space, search notes."""
    aoi = [square(-104.9 + i * 0.02, 27.1) for i in range(8)]
    return [
        {"view_id": "S2/13/R/EL/2023/7/19/0", "bm_type": "NDVI", "geometry": aoi[0],
         "name": "field-1/2023-07-19_S2_NDVI", "_cloud": 12.5, "_date": "2023-07-19"},
        {"view_id": "S2L2A/13/R/EL/2023/7/24/0", "bm_type": "NDWI", "geometry": aoi[1],
         "name": "field 2/2023-07-24", "format": "png"},
        {"view_id": "L8/LC80260312023202LGN00", "bm_type": "NATURAL", "geometry": aoi[2],
         "format": "tiff"},
        {"view_id": "L9/LC90260312023210LGN00", "bm_type": "NDVI", "geometry": aoi[3],
         "name": "geo/l9", "georeference": "tiff", "px_size": 30},
        {"view_id": "MODIS/12/04/2017204/2017204034223", "bm_type": "NDVI",
         "geometry": aoi[4], "name": "modis/world", "georeference": "world", "px_size": 250},
        {"view_id": "S2/13/R/EL/2023/8/3/0", "bm_type": "NDVI", "geometry": aoi[5],
         "name": "kmz/one", "georeference": "kmz"},
    ]  # fmt: skip


def _manifest(path: Path, jobs: list[dict[str, Any]]) -> Path:
    path.write_bytes(
        orjson.dumps({"defaults": {"px_size": 10}})
        + b"\n"
        + b"".join(orjson.dumps(j) + b"\n" for j in jobs)
    )
    return path


def _catalog_files(out: Path) -> list[Path]:
    return sorted([out / "catalog.json", *(out / "stac").rglob("*.json")])


def _done(out: Path) -> dict[str, tuple[str, int, str]]:
    with Ledger.open(out / "bulkfetch-ledger.json", readonly=True) as ledger:
        return {
            k: (r.path, r.size, r.sha256)
            for k, r in ledger.records().items()
            if r.state is JobState.DONE
        }


def _items(catalog_json: Path) -> Iterator[pystac.Item]:
    catalog = pystac.Catalog.from_file(str(catalog_json))
    return catalog.get_items(recursive=True)


def check_catalog(out: Path, *, where: Path | None = None) -> dict[str, pystac.Item]:
    """Validate every file; load with pystac from ``where`` (the folder, maybe moved);
    open every asset and check it against the ledger. The Items, by job key."""
    where = where if where is not None else out
    for file in _catalog_files(where):
        validate(orjson.loads(file.read_bytes()))
    done = _done(where)
    items = {}
    for item in _items(where / "catalog.json"):
        key = item.properties["bulkfetch:key"]
        path, size, sha256 = done[key]
        asset = item.assets["visual"]
        href = asset.get_absolute_href()
        assert href is not None
        body = Path(href).read_bytes()  # opening the asset as a reader would
        assert Path(href).resolve() == (where / path).resolve()
        assert len(body) == size == asset.extra_fields["file:size"]
        assert multihash(hashlib.sha256(body).hexdigest()) == asset.extra_fields["file:checksum"]
        assert sha256 == hashlib.sha256(body).hexdigest()
        items[key] = item
    return items


def test_run_then_stac_describes_every_done_job(sim: SimulatorThread, tmp_path: Path) -> None:
    manifest = _manifest(tmp_path / "season.jsonl", _jobs())
    out = tmp_path / "imagery"
    assert run_cli(sim, manifest, out).returncode == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    done = bulkfetch_cli("stac", "--out", out)
    assert done.returncode == 0, done.stderr
    assert "6 items in 1 collection (" in done.stdout
    items = check_catalog(out)
    assert set(items) == set(_done(out)) and len(items) == 6
    # Nothing else was touched: every file from before is there, byte for byte.
    assert all(path.read_bytes() == data for path, data in before.items())

    jobs = {job.key: job for job in load_manifest(manifest).jobs}
    for key, item in items.items():
        job = jobs[key]
        assert item.collection_id == "season"
        assert item.geometry == json.loads(json.dumps(job.params["geometry"]))
        assert item.properties["eos:view_id"] == job.view_id
        assert item.properties["gsd"] == float(job.params["px_size"])
    by_view = {item.properties["eos:view_id"]: item for item in items.values()}
    s2 = by_view["S2/13/R/EL/2023/7/19/0"]
    assert s2.id == "field-1_2023-07-19_S2_NDVI"
    assert s2.properties["eo:cloud_cover"] == 12.5
    assert by_view["L9/LC90260312023210LGN00"].properties["platform"] == "landsat-9"
    geotiff = by_view["L9/LC90260312023210LGN00"].assets["visual"]
    assert geotiff.media_type == "image/tiff; application=geotiff"
    # An RGB render: three 8-bit bands, so raster tools load all three.
    assert geotiff.extra_fields["raster:bands"] == [{"data_type": "uint8"}] * 3
    plain_tiff = by_view["L8/LC80260312023202LGN00"].assets["visual"]
    assert plain_tiff.media_type == "image/tiff" and "raster:bands" not in plain_tiff.extra_fields
    modis = by_view["MODIS/12/04/2017204/2017204034223"]
    assert modis.datetime == datetime(2017, 7, 23, 3, 42, 23, tzinfo=UTC)
    assert modis.assets["visual"].media_type == "application/zip"
    assert by_view["L8/LC80260312023202LGN00"].id.startswith("L8-LC80260312023202LGN00_NATURAL_")
    assert by_view["S2L2A/13/R/EL/2023/7/24/0"].id == "field-2_2023-07-24"

    # Again with nothing new: nothing is written.
    again = bulkfetch_cli("stac", "--out", out)
    assert again.returncode == 0
    assert "0 files written, 8 unchanged, 0 removed" in again.stdout


def test_run_stac_refreshes_and_the_folder_moves(sim: SimulatorThread, tmp_path: Path) -> None:
    jobs = _jobs()
    out = tmp_path / "imagery"
    first = _manifest(tmp_path / "july.jsonl", jobs[:2])
    result = run_cli(sim, first, out, "--stac")
    assert result.returncode == 0, result.stderr
    assert len(check_catalog(out)) == 2

    # A second manifest into the same folder: its jobs join, in a Collection of their
    # own, and the first manifest's jobs stay described (the ledger remembers it).
    second = _manifest(tmp_path / "august.jsonl", jobs[2:5])
    result = run_cli(sim, second, out, "--stac")
    assert result.returncode == 0, result.stderr
    items = check_catalog(out)
    assert sorted(i.collection_id or "" for i in items.values()) == ["august"] * 3 + ["july"] * 2

    # The first manifest is gone: its Items are kept from the catalog itself.
    first.unlink()
    result = bulkfetch_cli("stac", "--out", out)
    assert result.returncode == 0, result.stderr
    assert "passed over" in result.stderr  # the remembered manifest that is gone
    assert "2 kept from the catalog" in result.stdout
    assert len(check_catalog(out)) == 5

    # A done job's file deleted: its Item goes, with a warning; the rest is intact.
    gone = next(i for i in items.values() if i.collection_id == "august")
    Path(gone.assets["visual"].get_absolute_href() or "").unlink()
    result = bulkfetch_cli("stac", "--out", out)
    assert result.returncode == 0
    assert "files are missing or changed" in result.stderr
    assert "removed" in result.stdout and "1 removed" in result.stdout
    assert len(check_catalog(out)) == 4

    # The whole folder moved: every link and asset still resolves.
    moved = tmp_path / "elsewhere" / "copy"
    shutil.move(out, moved)
    assert len(check_catalog(moved, where=moved)) == 4


def test_stac_needs_a_ledger_and_a_valid_manifest(tmp_path: Path) -> None:
    missing = bulkfetch_cli("stac", "--out", tmp_path / "nothing")
    assert missing.returncode == 2
    assert "no ledger at" in missing.stderr
    usage = bulkfetch_cli("stac")
    assert usage.returncode == 2
    with Ledger.open(tmp_path / "bulkfetch-ledger.json") as ledger:
        ledger.set_meta("made", "by the test")
        ledger.compact()
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"view_id": "x"}])
    result = bulkfetch_cli("stac", "--out", tmp_path, "--manifest", bad)
    assert result.returncode == 2
    assert "bad.jsonl" in result.stderr
    assert not (tmp_path / "catalog.json").exists()


def test_a_changed_job_is_described_by_its_new_result(sim: SimulatorThread, tmp_path: Path) -> None:
    out = tmp_path / "imagery"
    job = _jobs()[0]
    manifest = _manifest(tmp_path / "fields.jsonl", [job])
    assert run_cli(sim, manifest, out).returncode == 0
    # The same name with another px_size: a new job (new key) writing the same file. The
    # old record stays done in the ledger; only the new one describes the file now. The
    # flag comes from bulkfetch.toml beside the manifest, as every run option may.
    _manifest(manifest, [job | {"px_size": 20}])
    (tmp_path / "bulkfetch.toml").write_text("stac = true\n")
    result = run_cli(sim, manifest, out)
    assert result.returncode == 0, result.stderr
    assert len(_done(out)) == 2
    items = check_catalog(out)
    (key,) = items
    assert key == load_manifest(manifest).jobs[0].key
    assert items[key].properties["gsd"] == 20.0


def test_one_refresh_at_a_time(sim: SimulatorThread, tmp_path: Path) -> None:
    out = tmp_path / "imagery"
    assert run_cli(sim, _manifest(tmp_path / "m.jsonl", _jobs()[:1]), out).returncode == 0
    with FileLock(out / "bulkfetch-ledger.json.stac-lock"):
        result = bulkfetch_cli("stac", "--out", out)
    assert result.returncode == 5
    assert "another bulkfetch stac is writing" in result.stderr
    assert not (out / "catalog.json").exists()
    assert bulkfetch_cli("stac", "--out", out).returncode == 0


def test_local_folder_stays_inside_its_root(tmp_path: Path) -> None:
    dest = LocalFolder(tmp_path / "root")
    (tmp_path / "outside.jpg").write_bytes(b"x")
    for path in ("../outside.jpg", "/etc/passwd", "a/../../outside.jpg", "a\\b", ""):
        assert dest.size(path) is None
        assert dest.local_path(path) is None
        with pytest.raises(ValueError, match="not a path inside"):
            dest.write(path, b"x", durable=False)
    dest.write("stac/a/b.json", b"{}", durable=True)
    assert dest.size("stac/a/b.json") == 2 and dest.size("stac/a") is None  # a folder
    assert dest.files("stac") == ["stac/a/b.json"]


def test_job_notes_line_up_with_the_jobs(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_bytes(
        b'{"defaults": {"px_size": 10, "_dataset": "sentinel2"}}\n\n'
        + orjson.dumps(_jobs()[0])
        + b"\n"
        + orjson.dumps(_jobs()[1] | {"_cloud": None})
        + b"\n"
    )
    manifest = load_manifest(path)
    notes = job_notes(manifest)
    first, second = (job.key for job in manifest.jobs)
    assert notes[first] == {"_dataset": "sentinel2", "_cloud": 12.5, "_date": "2023-07-19"}
    assert notes[second] == {"_dataset": "sentinel2", "_cloud": None}
    # The file changed since it was read: no notes rather than another job's.
    path.write_bytes(orjson.dumps(_jobs()[0]) + b"\n")
    assert job_notes(manifest) == {}
