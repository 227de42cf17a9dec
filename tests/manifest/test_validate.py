"""``bulkfetch validate`` (and ``run``) on manifests with costly mistakes, through the real CLI.

Warnings (exit 0, and ``run`` goes ahead): an absurd image size, a band the sensor lacks,
an unknown alias. Errors (exit 2, nothing sent): a GeoJSON property one typo from a job
parameter, bytes that are not UTF-8.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from bulkfetch.simulator import SimulatorThread
from tests.conftest import bulkfetch_cli, run_cli, square, write_jsonl

S2 = "S2/13/R/EL/2023/7/19/0"
L8 = "L8/LC80260312023202LGN00"
FIELD = square(-104.9, 27.1)
WIDE = {  # 40 x 30 degrees
    "type": "Polygon",
    "coordinates": [[[-100, 10], [-60, 10], [-60, 40], [-100, 40], [-100, 10]]],
}


def job(**fields: Any) -> dict[str, Any]:
    return {"view_id": S2, "bm_type": "NDVI", "geometry": FIELD, "px_size": 10, **fields}


def test_costly_jobs_are_warned_about_and_still_valid(tmp_path: Path) -> None:
    manifest = write_jsonl(
        tmp_path / "jobs.jsonl",
        [
            job(),
            job(geometry=WIDE, px_size=1, format="png"),
            job(bm_type="NDVX"),
            job(view_id=L8, bm_type="B04,B03,B02", px_size=30),
            job(px_size=0.1, geometry=square(-104.8, 27.1, 0.0001)),
        ],
    )
    proc = bulkfetch_cli("validate", manifest)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"{manifest}: 5 valid jobs"
    lines = proc.stderr.splitlines()
    assert f"warning: {manifest}: line 2: px_size: at 1 m the image would be about " in proc.stderr
    assert any("gigapixels (4452780 x " in line and "line 2" in line for line in lines)
    assert (
        f"warning: {manifest}: line 3: bm_type: 'NDVX' is not an alias bulkfetch knows; "
        "did you mean 'NDVI'?" in proc.stderr
    )
    assert (
        f"warning: {manifest}: line 4: bm_type: Landsat 8/9 has no bands B04, B03, B02 "
        "(its bands: B1 to B11); did you mean B4, B3, B2?" in proc.stderr
    )
    assert f"{manifest}: line 5: px_size: 0.1 m is finer than any satellite offers" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_one_job_is_one_valid_job(tmp_path: Path) -> None:
    proc = bulkfetch_cli("validate", write_jsonl(tmp_path / "one.jsonl", [job()]))
    assert proc.returncode == 0 and proc.stdout.endswith("one.jsonl: 1 valid job\n")
    assert proc.stderr == ""


def test_a_misspelt_geojson_property_is_an_error(tmp_path: Path) -> None:
    features = [
        {
            "type": "Feature",
            "geometry": FIELD,
            "properties": {"view_id": S2, "bm_type": "NDVI", "pxsize": 3, "crop": "wheat"},
        }
    ]
    doc = {"type": "FeatureCollection", "defaults": {"px_size": 10}, "features": features}
    path = tmp_path / "fields.geojson"
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    proc = bulkfetch_cli("validate", path)
    assert proc.returncode == 2
    assert (
        f"{path}: feature 1 (line 7): pxsize: not a job parameter; did you mean 'px_size'?"
        in proc.stderr
    )
    assert "the manifest has 1 problem:" in proc.stderr and "nothing was sent." in proc.stderr
    assert "crop" not in proc.stderr  # a field's own attribute: a warning, shown once valid


def test_bad_utf8_is_placed_by_line_and_byte(tmp_path: Path) -> None:
    path = tmp_path / "jobs.jsonl"
    bad = orjson.dumps(job(name="caf\u00e9")).replace(b"\xc3\xa9", b"\xe9")
    path.write_bytes(orjson.dumps(job()) + b"\n" + bad + b"\n")
    proc = bulkfetch_cli("validate", path)
    assert proc.returncode == 2
    byte = bad.index(b"\xe9") + 1
    assert f"{path}: line 2: not valid UTF-8 (byte {byte})" in proc.stderr
    assert "surrogates" not in proc.stderr and "Traceback" not in proc.stderr


def test_run_warns_and_goes_ahead(sim: SimulatorThread, tmp_path: Path) -> None:
    # Warnings are the user's call: the run fetches the job all the same.
    manifest = write_jsonl(tmp_path / "jobs.jsonl", [job(bm_type="NDVX")])
    proc = run_cli(sim, manifest, tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    assert "'NDVX' is not an alias bulkfetch knows; did you mean 'NDVI'?" in proc.stderr
    assert sim.counters()["create_calls"] == 1
