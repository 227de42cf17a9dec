"""MultiPolygon areas through the real CLI: one part goes as its Polygon, several parts get a
warning, and EOS refusing one says how to split it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from bulkfetch.simulator import SimulatorThread
from tests.conftest import bulkfetch_cli, run_cli, square, write_jsonl

VIEW = "S2/13/R/EL/2023/7/19/0"


def _multi(*parts: dict[str, Any]) -> dict[str, Any]:
    return {"type": "MultiPolygon", "coordinates": [p["coordinates"] for p in parts]}


def _jobs() -> list[dict[str, Any]]:
    base = {"view_id": VIEW, "bm_type": "NDVI", "px_size": 10}
    return [
        {**base, "name": "plain", "geometry": square(-104.9, 27.1)},
        {**base, "name": "one-part", "geometry": _multi(square(-104.8, 27.1))},
        {**base, "name": "two-parts", "geometry": _multi(square(-104.7, 27), square(-104.6, 27))},
    ]


def test_validate_warns_about_a_multipolygon_of_several_parts(tmp_path: Path) -> None:
    manifest = write_jsonl(tmp_path / "jobs.jsonl", _jobs())
    result = bulkfetch_cli("validate", manifest)
    assert result.returncode == 0, result.stderr
    assert "3 valid jobs" in result.stdout
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, result.stderr
    assert "line 3: geometry: a MultiPolygon of 2 parts" in warnings[0]
    assert "lists Polygon only" in warnings[0]
    assert "one job per part" in warnings[0]
    alone = write_jsonl(tmp_path / "two.jsonl", _jobs()[:2])
    quiet = bulkfetch_cli("validate", alone)
    assert quiet.returncode == 0 and "warning" not in quiet.stderr


def test_one_part_is_sent_as_a_polygon_and_a_refused_multipolygon_says_how_to_split(
    sim: SimulatorThread, tmp_path: Path
) -> None:
    sim.configure(polygon_only=True)  # as EOS's current documentation describes it
    manifest = write_jsonl(tmp_path / "jobs.jsonl", _jobs())
    out = tmp_path / "out"
    result = run_cli(sim, manifest, out)
    assert result.returncode == 1, result.stderr
    assert (out / "plain.jpg").is_file() and (out / "one-part.jpg").is_file()
    assert not (out / "two-parts.jpg").exists()
    sent = [task["params"]["geometry"] for task in sim.tasks()]
    assert sorted(g["type"] for g in sent) == ["Polygon", "Polygon"]
    failed = [line for line in result.stderr.splitlines() if "failed:" in line]
    assert failed
    for line in failed:
        assert "HTTP 400" in line and "MultiPolygon of 2 parts" in line
        assert "split it into one job per part" in line
    status = bulkfetch_cli("status", "--out", out, "--json")
    report = orjson.loads(status.stdout)
    assert any("one job per part" in reason for reason in report["failures_by_reason"])
