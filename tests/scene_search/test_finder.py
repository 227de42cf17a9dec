"""``bulkfetch search`` end to end: the real CLI against the simulator's Search API."""

from __future__ import annotations

import datetime as dt
import re
import signal
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest

from bulkfetch.config import ApiKey
from bulkfetch.errors import AuthError, UsageError
from bulkfetch.manifest.jobs import load_manifest
from bulkfetch.scene_search import finder as search_api
from bulkfetch.scene_search.fields import Field
from bulkfetch.simulator import TEST_API_KEY, SimConfig, SimulatorThread, run_in_thread
from tests.conftest import FAST, bulkfetch_cli, run_cli, spawn_cli, square, write_jsonl

REPO = Path(__file__).resolve().parents[2]
FIELDS = REPO / "manifests" / "fields.geojson"
SEASON = ["--from", "2023-05-01", "--to", "2023-09-30"]
FAST_SEARCH: dict[str, Any] = {"search_limit": 200, "search_window": 1.0}


@pytest.fixture
def ssim() -> Iterator[SimulatorThread]:
    with run_in_thread(SimConfig(**FAST, **FAST_SEARCH)) as handle:
        yield handle


def search_cli(
    sim: SimulatorThread,
    tmp: Path,
    *args: str | Path,
    out: str = "m.jsonl",
    fields: Path = FIELDS,
    env: Mapping[str, str] | None = None,
) -> tuple[Any, Path]:
    output = tmp / out
    result = bulkfetch_cli(
        "search",
        fields,
        *args,
        "-m",
        output,
        "--search-url",
        sim.search_url,
        "--search-rate",
        "100/s",
        "--cache",
        tmp / "cache.json",
        env=env,
    )
    return result, output


def jobs_of(path: Path) -> list[dict[str, Any]]:
    lines = [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
    return [line for line in lines if "defaults" not in line]


def test_search_then_run_downloads_every_scene_kept(ssim: SimulatorThread, tmp_path: Path) -> None:
    result, manifest = search_cli(
        ssim,
        tmp_path,
        *SEASON,
        "--max-cloud",
        "30",
        "--bm-type",
        "NDVI",
        "--bm-type",
        "NDWI",
        "--format",
        "png",
    )
    assert result.returncode == 0, result.stderr
    assert "jobs written to" in result.stderr
    loaded = load_manifest(manifest)  # what `bulkfetch run` will read
    jobs = jobs_of(manifest)
    assert len(loaded.jobs) == len(jobs) > 0
    fields = {f["id"] for f in orjson.loads(FIELDS.read_bytes())["features"]}
    assert {j["_field"] for j in jobs} == fields  # a season of S2 finds scenes for every field
    for job in jobs:
        assert job["_cloud"] <= 30
        assert re.fullmatch(r"S2L2A/\d+/[A-Z]/[A-Z]{2}/2023/\d+/\d+/0", job["view_id"])
        assert "2023-05-01" <= job["_date"] <= "2023-09-30"
        assert job["name"].startswith(f"{job['_field']}/{job['_date']}_S2L2A_{job['bm_type']}")
    per_scene = Counter((j["_field"], j["view_id"]) for j in jobs)
    assert set(per_scene.values()) == {2}  # one job per bm_type
    assert all(j.params["format"] == "png" and j.params["px_size"] == 10 for j in loaded.jobs)

    ran = run_cli(ssim, manifest, tmp_path / "out")
    assert ran.returncode == 0, ran.stderr
    for loaded_job in loaded.jobs:
        assert (tmp_path / "out" / loaded_job.relative_path()).stat().st_size > 0


def test_a_repeated_search_is_answered_by_the_cache(ssim: SimulatorThread, tmp_path: Path) -> None:
    first, manifest = search_cli(ssim, tmp_path, *SEASON)
    assert first.returncode == 0, first.stderr
    calls = ssim.counters()["search_calls"]
    assert calls >= 6
    before = manifest.read_bytes()
    second, _ = search_cli(ssim, tmp_path, *SEASON)
    assert second.returncode == 0, second.stderr
    assert ssim.counters()["search_calls"] == calls
    assert "0 search requests" in second.stderr
    assert manifest.read_bytes() == before
    # Other filters are another question: asked again.
    third, _ = search_cli(ssim, tmp_path, *SEASON, "--max-cloud", "50", out="other.jsonl")
    assert third.returncode == 0
    assert ssim.counters()["search_calls"] > calls


def test_a_scheduled_search_asks_only_about_recent_days_and_finds_new_scenes(
    ssim: SimulatorThread, tmp_path: Path
) -> None:
    today = dt.datetime.now(dt.UTC).date()
    window = ["--from", "today-90d", "--to", "today", "--dataset", "sentinel2"]
    ssim.configure(catalogue_today=(today - dt.timedelta(days=5)).isoformat())
    first, manifest = search_cli(ssim, tmp_path, *window)
    assert first.returncode == 0, first.stderr
    old = {j["view_id"] for j in jobs_of(manifest)}
    assert max(j["_date"] for j in jobs_of(manifest)) <= str(today - dt.timedelta(days=5))
    calls = ssim.counters()["search_calls"]

    ssim.configure(catalogue_today=today.isoformat())  # five more days were published
    second, _ = search_cli(ssim, tmp_path, *window)
    assert second.returncode == 0, second.stderr
    n_fields = len(orjson.loads(FIELDS.read_bytes())["features"])
    assert ssim.counters()["search_calls"] - calls == n_fields  # one small question each
    new = {j["view_id"] for j in jobs_of(manifest)}
    assert old < new
    assert all(
        j["_date"] > str(today - dt.timedelta(days=5))
        for j in jobs_of(manifest)
        if j["view_id"] not in old
    )


def test_long_ranges_are_split_by_year_and_pages_are_followed(tmp_path: Path) -> None:
    # Pages of 7 results at most, and ranges over 366 days refused, as EOS advises.
    config = SimConfig(**FAST, **FAST_SEARCH, search_max_limit=7)
    with run_in_thread(config) as sim:
        result, manifest = search_cli(
            sim, tmp_path, "--from", "2021-11-01", "--to", "2023-02-28", "--no-cache"
        )
        assert result.returncode == 0, result.stderr
        paged = sorted((j["_field"], j["view_id"]) for j in jobs_of(manifest))
        calls = sim.counters()["search_calls"]
        sim.configure(search_max_limit=100)
        whole, manifest2 = search_cli(
            sim, tmp_path, "--from", "2021-11-01", "--to", "2023-02-28", "--no-cache", out="n.jsonl"
        )
        assert whole.returncode == 0, whole.stderr
        assert sorted((j["_field"], j["view_id"]) for j in jobs_of(manifest2)) == paged
        assert sim.counters()["search_calls"] - calls < calls  # fewer requests with big pages
    years = {j["_date"][:4] for j in jobs_of(manifest)}
    assert years == {"2021", "2022", "2023"}


def test_selection_options(ssim: SimulatorThread, tmp_path: Path) -> None:
    def scenes(*args: str, out: str) -> list[dict[str, Any]]:
        result, manifest = search_cli(ssim, tmp_path, *SEASON, *args, out=out)
        assert result.returncode == 0, result.stderr
        return jobs_of(manifest)

    every = scenes(out="all.jsonl")
    tiles = defaultdict(set)
    for job in every:
        tiles[job["_field"]].add("/".join(job["view_id"].split("/")[1:4]))
    border = {f for f, t in tiles.items() if len(t) > 1}
    assert border, "fields.geojson must hold a field on a tile border"

    one_tile = scenes("--single-tile", out="tile.jsonl")
    for f in border:
        assert (
            len({"/".join(j["view_id"].split("/")[1:4]) for j in one_tile if j["_field"] == f}) == 1
        )

    start = dt.date(2000, 1, 1)  # periods are counted from a fixed day, not from --from
    sparse = scenes("--one-per-days", "15", out="sparse.jsonl")
    bins = Counter(
        (j["_field"], (dt.date.fromisoformat(j["_date"]) - start).days // 15) for j in sparse
    )
    assert max(bins.values()) == 1
    for (f, b), _ in bins.items():  # the least cloudy of its period
        pool = [
            j["_cloud"]
            for j in every
            if j["_field"] == f and (dt.date.fromisoformat(j["_date"]) - start).days // 15 == b
        ]
        chosen = [
            j["_cloud"]
            for j in sparse
            if j["_field"] == f and (dt.date.fromisoformat(j["_date"]) - start).days // 15 == b
        ]
        assert chosen == [min(pool)]

    best = scenes("--best-per-month", "2", out="best.jsonl")
    months = Counter((j["_field"], j["_date"][:7]) for j in best)
    assert max(months.values()) <= 2 and len(best) < len(every)


def test_the_search_lane_slows_down_on_429_and_retries_5xx(tmp_path: Path) -> None:
    config = SimConfig(
        **FAST, search_limit=4, search_window=0.5, search_5xx_rate=0.2, reset_rate=0.1
    )
    with run_in_thread(config) as sim:
        result, manifest = search_cli(sim, tmp_path, *SEASON, "--no-cache")
        assert result.returncode == 0, result.stderr
        counters = sim.counters()
        assert counters["search_429"] > 0 and counters["search_5xx"] > 0
        assert counters["resets"] > 0
        assert counters["create_calls"] == counters["status_calls"] == 0
        faulty = sorted((j["_field"], j["view_id"]) for j in jobs_of(manifest))
        sim.configure(search_limit=200, search_window=1.0, search_5xx_rate=0.0, reset_rate=0.0)
        clean, manifest2 = search_cli(sim, tmp_path, *SEASON, "--no-cache", out="n.jsonl")
        assert clean.returncode == 0, clean.stderr
        assert sorted((j["_field"], j["view_id"]) for j in jobs_of(manifest2)) == faulty


def test_a_refused_key_stops_the_search(ssim: SimulatorThread, tmp_path: Path) -> None:
    output = tmp_path / "m.jsonl"
    result = bulkfetch_cli(
        "search",
        FIELDS,
        *SEASON,
        "-m",
        output,
        "--search-url",
        ssim.search_url,
        "--no-cache",
        env={"EOS_API_KEY": "apk." + "0" * 64},
    )
    assert result.returncode == 3, result.stderr
    assert "refused the API key" in result.stderr
    assert not output.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([*SEASON, "--param", "px_size=-1"], "px_size"),
        ([*SEASON, "--name-template", "{field}/{nope}"], "unknown {nope}"),
        (["--from", "2023-09-30", "--to", "2023-05-01"], "before --from"),
        (["--from", "May 1", "--to", "today"], "is not YYYY-MM-DD"),
        ([*SEASON, "--bm-type", ""], "bm_type"),
        ([*SEASON, "--dataset", "sentinel2", "--param", "format=gif"], "format"),
    ],
)
def test_bad_options_send_nothing(
    ssim: SimulatorThread, tmp_path: Path, args: list[str], message: str
) -> None:
    result, output = search_cli(ssim, tmp_path, *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert ssim.counters()["search_calls"] == 0
    assert not output.exists()


def test_a_bad_fields_file_names_the_feature(ssim: SimulatorThread, tmp_path: Path) -> None:
    doc = orjson.loads(FIELDS.read_bytes())
    doc["features"][1]["geometry"]["coordinates"][0].pop()  # an open ring
    bad = tmp_path / "bad.geojson"
    bad.write_bytes(orjson.dumps(doc))
    result, output = search_cli(ssim, tmp_path, *SEASON, fields=bad)
    assert result.returncode == 2
    assert f"{bad}: feature 2: geometry.coordinates[0]" in result.stderr
    assert "fields file has 1 problem" in result.stderr
    assert ssim.counters()["search_calls"] == 0 and not output.exists()


def test_a_refused_search_fails_and_leaves_the_old_manifest(
    ssim: SimulatorThread, tmp_path: Path
) -> None:
    first, manifest = search_cli(ssim, tmp_path, *SEASON, "--no-cache")
    assert first.returncode == 0
    before = manifest.read_bytes()
    ssim.configure(search_max_days=30)  # the server now refuses our year-long questions
    result, _ = search_cli(ssim, tmp_path, *SEASON, "--no-cache")
    assert result.returncode == 1, result.stderr
    assert "refused the search (HTTP 400)" in result.stderr
    assert manifest.read_bytes() == before


def test_fields_from_a_jsonl_manifest_and_the_python_api(
    ssim: SimulatorThread, tmp_path: Path
) -> None:
    rows = [
        {"id": "a", "geometry": square(-98.4, 38.27)},
        {"id": "b", "geometry": square(-98.3, 38.27)},
    ]
    result = search_api.search(
        write_jsonl(tmp_path / "f.jsonl", rows),
        date_from=dt.date(2023, 6, 1),
        date_to=dt.date(2023, 6, 30),
        datasets=["sentinel2", "landsat8"],
        bm_types=["NDVI"],
        api_key=TEST_API_KEY,
        search_url=ssim.search_url,
        search_rate="100/s",
        cache=None,
    )
    # One request per field covers both datasets (the multi-dataset endpoint).
    assert result.ok and result.stats.requests == 2
    sensors = {j["view_id"].split("/")[0] for j in result.jobs}
    assert sensors == {"S2", "L8"}
    path = tmp_path / "out.jsonl"
    assert search_api.write_manifest(result, path) == len(result.jobs)
    assert len(load_manifest(path).jobs) == len(result.jobs)
    with pytest.raises(UsageError, match="JSON Lines"):
        search_api.write_manifest(result, tmp_path / "out.csv")
    with pytest.raises(AuthError):
        search_api.search(
            rows_fields(rows),
            date_from=dt.date(2023, 6, 1),
            date_to=dt.date(2023, 6, 2),
            api_key=ApiKey("apk." + "1" * 64),
            search_url=ssim.search_url,
            cache=None,
        )


def rows_fields(rows: list[dict[str, Any]]) -> list[Field]:
    return [Field(r["id"], r["geometry"], f"row {i}") for i, r in enumerate(rows, 1)]


def test_the_key_is_never_written_anywhere(ssim: SimulatorThread, tmp_path: Path) -> None:
    result, manifest = search_cli(ssim, tmp_path, *SEASON, "--log-format", "json")
    assert result.returncode == 0
    secret = TEST_API_KEY
    assert secret not in result.stdout + result.stderr
    assert secret.encode() not in manifest.read_bytes()
    assert secret.encode() not in (tmp_path / "cache.json").read_bytes()


def test_sigterm_stops_a_search_and_keeps_the_cache(tmp_path: Path) -> None:
    with run_in_thread(SimConfig(**FAST, search_limit=2, search_window=1.0)) as sim:
        output = tmp_path / "m.jsonl"
        proc = spawn_cli(
            "search",
            FIELDS,
            *SEASON,
            "-m",
            output,
            "--search-url",
            sim.search_url,
            "--search-rate",
            "2/s",
            "--cache",
            tmp_path / "cache.json",
        )
        deadline = time.monotonic() + 20
        while sim.counters()["search_calls"] < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 143, err
    assert "interrupted" in err and "Traceback" not in err
    assert not output.exists()
    assert (tmp_path / "cache.json").exists()


def test_dry_run_says_what_a_search_would_send_and_sends_nothing(
    ssim: SimulatorThread, tmp_path: Path
) -> None:
    span = ["--from", "2022-05-01", "--to", "2023-09-30", "--dataset", "sentinel2"]
    n_fields = len(orjson.loads(FIELDS.read_bytes())["features"])
    # No key needed; the simulator's address is given, and must not be asked.
    plan, output = search_cli(ssim, tmp_path, *span, "--dry-run", env={"EOS_API_KEY": ""})
    assert plan.returncode == 0, plan.stderr
    assert f"0 of {n_fields} field × dataset questions answered by the cache" in plan.stdout
    assert f"at least {2 * n_fields} search requests" in plan.stdout  # two calendar years
    assert ssim.counters()["search_calls"] == 0 and not output.exists()
    done, _ = search_cli(ssim, tmp_path, *span)
    assert done.returncode == 0, done.stderr
    again, _ = search_cli(ssim, tmp_path, *span, "--dry-run")
    assert f"{n_fields} of {n_fields} field × dataset questions" in again.stdout
    assert "at least 0 search requests" in again.stdout


def test_search_options_from_the_config_file_beside_the_manifest(
    ssim: SimulatorThread, tmp_path: Path
) -> None:
    flags = [*SEASON, "--max-cloud", "30", "--bm-type", "NDVI", "--bm-type", "NDWI"]
    flags += ["--param", "levels=-1,1", "--one-per-days", "15"]
    (tmp_path / "a").mkdir()
    by_flags, expected = search_cli(ssim, tmp_path / "a", *flags)
    assert by_flags.returncode == 0, by_flags.stderr
    # One file for the whole cron pipeline: run's options at the top, search's in [search].
    folder = tmp_path / "b"
    folder.mkdir()
    (folder / "bulkfetch.toml").write_text(
        f'out = "imagery"\napi-url = "{ssim.api_url}"\n'
        'create-rate = "50/s"\nstatus-rate = "50/s"\n\n'
        '[search]\nfrom = "2023-05-01"\nto = "2023-09-30"\nmax-cloud = 30\n'
        'bm-type = ["NDVI", "NDWI"]\nparam = ["levels=-1,1"]\none-per-days = 15\n'
        'search-rate = "100/s"\n'
    )
    by_file, output = search_cli(ssim, folder, out="season.jsonl")
    assert by_file.returncode == 0, by_file.stderr
    assert jobs_of(output) == jobs_of(expected)
    # Flags still win over the file.
    narrower, _ = search_cli(ssim, folder, "--max-cloud", "5", out="clear.jsonl")
    assert narrower.returncode == 0, narrower.stderr
    assert all(j["_cloud"] <= 5 for j in jobs_of(folder / "clear.jsonl"))
    assert len(jobs_of(folder / "clear.jsonl")) < len(jobs_of(output))
    # ... and run reads the same file, its [search] table left alone.
    ran = bulkfetch_cli("run", output)
    assert ran.returncode == 0, ran.stderr
    assert len(list((folder / "imagery").rglob("*.jpg"))) == len(jobs_of(output))


@pytest.mark.parametrize(
    ("search_table", "message"),
    [
        ('from = "2023-05-01"\nto = "2023-09-30"\nmax-clouds = 30\n', "[search]: unknown option"),
        (
            'from = "2023-05-01"\nto = "2023-09-30"\nmax-cloud = 300\n',
            "bulkfetch.toml: max-cloud: ",
        ),
        ('from = "May"\nto = "2023-09-30"\n', "is not YYYY-MM-DD"),
        ('to = "2023-09-30"\n', "give --from DATE (or 'from' in the [search] table"),
    ],
)
def test_a_bad_search_table_names_the_file_and_sends_nothing(
    ssim: SimulatorThread, tmp_path: Path, search_table: str, message: str
) -> None:
    (tmp_path / "bulkfetch.toml").write_text("[search]\n" + search_table)
    result, output = search_cli(ssim, tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "bulkfetch.toml" in result.stderr
    assert "Traceback" not in result.stderr
    assert ssim.counters()["search_calls"] == 0
    assert not output.exists()


def test_without_dates_anywhere_search_asks_for_them(ssim: SimulatorThread, tmp_path: Path) -> None:
    result, _ = search_cli(ssim, tmp_path)
    assert result.returncode == 2
    assert "give --from DATE" in result.stderr


def test_old_short_o_still_names_the_manifest_with_a_warning(tmp_path: Path) -> None:
    # -o is the output folder in every other command; search's manifest is -m/--manifest.
    output = tmp_path / "old.jsonl"
    args: list[str | Path] = ["search", FIELDS, *SEASON, "--dry-run", "--no-cache"]
    old = bulkfetch_cli(*args, "-o", output, env={"EOS_API_KEY": ""})
    assert old.returncode == 0, old.stderr
    assert "'search -o FILE' is deprecated" in old.stderr and "--manifest (-m)" in old.stderr
    both = bulkfetch_cli(*args, "-o", output, "-m", output)
    assert both.returncode == 2 and "give one of them" in both.stderr
    neither = bulkfetch_cli(*args)
    assert neither.returncode == 2 and "give --manifest FILE" in neither.stderr
