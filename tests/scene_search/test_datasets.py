"""Searches over several datasets, and datasets without cloud cover: the real CLI against
the simulator's Search API, and the pure decisions of ``search_plan`` without sockets."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from bulkfetch.scene_search.plan import dataset_of, group_requests, server_filters
from bulkfetch.simulator import SimConfig, SimulatorThread, run_in_thread
from tests.conftest import FAST, bulkfetch_cli, run_cli
from tests.scene_search.test_finder import FAST_SEARCH, FIELDS, SEASON, jobs_of, search_cli

D = dt.date
N_FIELDS = len(orjson.loads(FIELDS.read_bytes())["features"])


@pytest.fixture
def ssim() -> Iterator[SimulatorThread]:
    with run_in_thread(SimConfig(**FAST, **FAST_SEARCH)) as handle:
        yield handle


# --- pure decisions ---------------------------------------------------------------------


def test_datasets_whose_ranges_agree_share_every_request() -> None:
    year = [(D(2022, 11, 1), D(2022, 12, 31)), (D(2023, 1, 1), D(2023, 3, 1))]
    cloud = {"cloudCoverage": {"from": 0, "to": 20}}
    requests = group_requests(
        {
            "sentinel2": (year, cloud),
            "landsat8": (year, dict(cloud)),
            "sentinel2l2a": (year[1:], cloud),  # its cache already knows 2022
        }
    )
    assert [(r.start, r.datasets) for r in requests] == [
        (D(2022, 11, 1), ("sentinel2", "landsat8")),
        (D(2023, 1, 1), ("sentinel2", "landsat8", "sentinel2l2a")),
    ]
    assert all(r.filters == cloud for r in requests)
    assert group_requests({"sentinel2": ([], cloud)}) == []


def test_radar_gets_no_cover_filter_so_it_asks_on_its_own() -> None:
    filters = {"cloudCoverage": {"from": 0, "to": 20}, "dataCoveragePercentage": {"from": 90}}
    assert server_filters("sentinel1", filters) == {}
    assert server_filters("sentinel2", filters) == filters
    piece = [(D(2023, 1, 1), D(2023, 3, 1))]
    requests = group_requests(
        {d: (piece, server_filters(d, filters)) for d in ("sentinel2", "sentinel1", "landsat8")}
    )
    assert sorted(r.datasets for r in requests) == [("sentinel1",), ("sentinel2", "landsat8")]
    # Without filters there is nothing to tell them apart: one request for all three.
    assert len(group_requests({d: (piece, {}) for d in ("sentinel2", "sentinel1", "x")})) == 1


@pytest.mark.parametrize(
    ("result", "dataset"),
    [
        ({"view_id": "S2/14/S/NG/2023/7/5/0"}, "sentinel2"),
        ({"view_id": "S2L2A/14/S/NG/2023/7/5/0"}, "sentinel2l2a"),
        ({"view_id": "L8/LC80290332023186LGN00"}, "landsat8"),
        ({"view_id": "s1/S1A_IW_GRDH_1SDV_20230705"}, "sentinel1"),
        ({"view_id": "MODIS/09/05/2023186/2023186120000"}, None),  # not asked for
        ({"view_id": "X9/abc", "dataset": "Landsat8"}, "landsat8"),  # its own word first
        ({"view_id": "S2/1/C/AA/2020/1/1/0", "dataset": "elsewhere"}, "sentinel2"),
        ({"view_id": "CB4/abc"}, None),
        ({"sceneID": "x"}, None),
    ],
)
def test_which_dataset_a_result_is_from(result: dict[str, Any], dataset: str | None) -> None:
    assert dataset_of(result, ("sentinel2", "sentinel2l2a", "landsat8", "sentinel1")) == dataset


# --- end to end ---------------------------------------------------------------------------


def _views(manifest: Path) -> set[tuple[str, str]]:
    return {(j["_field"], j["view_id"]) for j in jobs_of(manifest)}


def test_several_datasets_are_one_request_per_field_and_cached_apart(
    ssim: SimulatorThread, tmp_path: Path
) -> None:
    three = ["--dataset", "sentinel2", "--dataset", "landsat8", "--dataset", "sentinel1"]
    dry = bulkfetch_cli(
        "search", FIELDS, *SEASON, *three, "-o", tmp_path / "d.jsonl", "--dry-run",
        "--cache", tmp_path / "cache.json",
    )  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    assert f"at least {N_FIELDS} search requests" in dry.stdout
    result, together = search_cli(ssim, tmp_path, *SEASON, *three)
    assert result.returncode == 0, result.stderr
    shared = ssim.counters()["search_calls"]
    # One request per field (a second page where a border field has over 100 scenes).
    assert N_FIELDS <= shared <= 2 * N_FIELDS
    assert {j["_dataset"] for j in jobs_of(together)} == {"sentinel2", "landsat8", "sentinel1"}

    alone: set[tuple[str, str]] = set()
    for i, dataset in enumerate(("sentinel2", "landsat8", "sentinel1")):
        one, manifest = search_cli(
            ssim, tmp_path, *SEASON, "--dataset", dataset, "--no-cache", out=f"{i}.jsonl"
        )
        assert one.returncode == 0, one.stderr
        alone |= _views(manifest)
    assert _views(together) == alone
    assert ssim.counters()["search_calls"] - shared >= 3 * N_FIELDS

    # The cache settled each dataset's range on its own: one of them alone asks nothing,
    # and a fourth dataset is asked about by itself.
    before = ssim.counters()["search_calls"]
    cached, manifest = search_cli(ssim, tmp_path, *SEASON, "--dataset", "landsat8", out="l.jsonl")
    assert cached.returncode == 0, cached.stderr
    assert ssim.counters()["search_calls"] == before
    assert _views(manifest) == {v for v in alone if v[1].startswith("L8/")}
    more, manifest = search_cli(
        ssim, tmp_path, *SEASON, *three, "--dataset", "sentinel2l2a", out="four.jsonl"
    )
    assert more.returncode == 0, more.stderr
    assert ssim.counters()["search_calls"] - before == N_FIELDS
    assert _views(together) < _views(manifest)


def test_radar_scenes_without_cloud_cover_are_kept_and_downloaded(
    ssim: SimulatorThread, tmp_path: Path
) -> None:
    help_text = bulkfetch_cli("search", "--help").stdout
    assert "does not apply to a scene without cloud cover" in " ".join(help_text.split())
    limits = ["--max-cloud", "20", "--min-coverage", "90"]
    both = ["--dataset", "sentinel1", "--dataset", "sentinel2"]
    result, manifest = search_cli(ssim, tmp_path, *SEASON, *both, *limits, "--bm-type", "VV")
    assert result.returncode == 0, result.stderr
    assert "skipped" not in result.stderr
    jobs = jobs_of(manifest)
    radar = [j for j in jobs if j["_dataset"] == "sentinel1"]
    optical = [j for j in jobs if j["_dataset"] == "sentinel2"]
    assert radar and optical
    assert all(j["_cloud"] is None for j in radar)
    assert all(j["_cloud"] <= 20 for j in optical)
    # Every radar scene of the season is kept: the same as a search without limits.
    plain, everything = search_cli(
        ssim, tmp_path, *SEASON, "--dataset", "sentinel1", "--bm-type", "VV", out="all.jsonl"
    )
    assert plain.returncode == 0, plain.stderr
    assert {j["view_id"] for j in radar} == {j["view_id"] for j in jobs_of(everything)}
    ran = run_cli(ssim, everything, tmp_path / "out")
    assert ran.returncode == 0, ran.stderr
    assert len(list((tmp_path / "out").rglob("*.jpg"))) == len(jobs_of(everything))


def test_a_service_without_the_multi_dataset_endpoint_is_asked_one_dataset_at_a_time(
    ssim: SimulatorThread, tmp_path: Path
) -> None:
    ssim.configure(search_multi=False)
    two = ["--dataset", "sentinel2", "--dataset", "landsat8", "--no-cache"]
    result, manifest = search_cli(ssim, tmp_path, *SEASON, *two)
    assert result.returncode == 0, result.stderr
    assert "multi-dataset search refused" in result.stderr
    # One per field and dataset, after the refused requests of the fields searched at
    # once (4) before the first refusal came back.
    assert 2 * N_FIELDS < ssim.counters()["search_calls"] <= 2 * N_FIELDS + 4
    ssim.configure(search_multi=True)
    again, shared = search_cli(ssim, tmp_path, *SEASON, *two, out="shared.jsonl")
    assert again.returncode == 0, again.stderr
    assert _views(manifest) == _views(shared)
