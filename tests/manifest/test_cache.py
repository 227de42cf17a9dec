"""The validated-manifest cache: a hit is the manifest validation would give, any doubt a miss."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from bulkfetch import __version__
from bulkfetch.errors import ManifestError
from bulkfetch.manifest import cache as manifest_cache
from bulkfetch.manifest.cache import MIN_JOBS, cache_path, load_manifest_cached
from bulkfetch.manifest.jobs import Manifest, load_manifest, parse_manifest
from bulkfetch.simulator import TEST_API_KEY, SimulatorThread
from tests.conftest import make_jobs, run_cli, square, write_jsonl

N = MIN_JOBS + 5


def _no_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(data: bytes, *, filename: str) -> Manifest:
        raise AssertionError(f"{filename} was validated again")

    monkeypatch.setattr(manifest_cache, "parse_manifest", refuse)


def _jobs(n: int = N) -> list[dict[str, Any]]:
    jobs = make_jobs(n)
    # Every shape the cache must give back exactly: a MultiPolygon (nested tuples), lists,
    # a user name, ints and floats.
    jobs[1]["geometry"] = {
        "type": "MultiPolygon",
        "coordinates": [square(10, 10)["coordinates"], square(11, 11)["coordinates"]],
    }
    jobs[2] |= {"thresholds": [-0.5, 0, 0.5], "colors": ["#000000", "#ffffff", "#00ff00"]}
    jobs[3] |= {"name": "fields/north", "calibrate": 1}
    return jobs


@pytest.fixture
def big(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "jobs.jsonl", _jobs())


def test_a_hit_is_equal_to_validating_and_validates_nothing(
    big: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "out" / "ledger.json.manifest-cache"
    first = load_manifest_cached(big, cache)
    assert cache.exists()
    _no_validation(monkeypatch)
    second = load_manifest_cached(big, cache)
    fresh = load_manifest(big)
    assert second == fresh == first
    assert [type(v) for v in second.jobs[1].params["geometry"]["coordinates"][0][0][0]] == [
        float,
        float,
    ]
    with pytest.raises(TypeError):
        second.jobs[0].params["px_size"] = 20  # type: ignore[index]


def test_warnings_come_back_from_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    jobs = _jobs()
    features = [
        {
            "type": "Feature",
            "geometry": job.pop("geometry"),
            "properties": job | {"farm": "north"},  # not ours: a warning in .geojson
        }
        for job in jobs
    ]
    path = tmp_path / "fields.geojson"
    path.write_bytes(orjson.dumps({"type": "FeatureCollection", "features": features}))
    cache = tmp_path / "c"
    first = load_manifest_cached(path, cache)
    assert first.warnings
    _no_validation(monkeypatch)
    assert load_manifest_cached(path, cache) == first


@pytest.mark.parametrize(
    "spoil",
    [
        pytest.param(lambda c: c.write_bytes(c.read_bytes()[:-100]), id="torn"),
        pytest.param(lambda c: c.write_bytes(b""), id="empty"),
        pytest.param(lambda c: c.write_bytes(b'{"stamp": 1, "jobs": []}'), id="not-ours"),
        pytest.param(lambda c: c.write_bytes(b"[1, 2]"), id="a-list"),
        pytest.param(
            lambda c: c.write_bytes(
                orjson.dumps(orjson.loads(c.read_bytes()) | {"jobs": [["k", {}, None]]})
            ),
            id="bad-rows",
        ),
    ],
)
def test_a_spoilt_cache_is_a_miss_and_is_replaced(
    big: Path, tmp_path: Path, spoil: Any, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "c"
    expected = load_manifest_cached(big, cache)
    spoil(cache)
    assert load_manifest_cached(big, cache) == expected
    assert orjson.loads(cache.read_bytes())["stamp"]["file"] == str(big)


def test_a_changed_manifest_is_validated_again(big: Path, tmp_path: Path) -> None:
    cache = tmp_path / "c"
    load_manifest_cached(big, cache)
    jobs = _jobs()
    jobs[7]["px_size"] = 20
    write_jsonl(big, jobs)
    changed = load_manifest_cached(big, cache)
    assert changed.jobs[7].params["px_size"] == 20.0
    assert changed == load_manifest(big)


def test_a_manifest_made_invalid_is_reported_not_served_from_the_cache(
    big: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "c"
    load_manifest_cached(big, cache)
    lines = big.read_bytes().splitlines(keepends=True)
    lines[4] = b'{"view_id": "S2/13/R/EL/2023/7/19/0", "bm_type": "NDVI", "px_size": -1}\n'
    big.write_bytes(b"".join(lines))
    with pytest.raises(ManifestError) as caught:
        load_manifest_cached(big, cache)
    assert [(p.where, p.field) for p in caught.value.problems] == [("line 5", "px_size")]


def test_another_name_or_other_rules_miss(
    big: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "c"
    load_manifest_cached(big, cache)
    copy = tmp_path / "copy.jsonl"
    copy.write_bytes(big.read_bytes())
    # Same bytes under another name: every job's place in messages names that file.
    assert load_manifest_cached(copy, cache).jobs[0].where == f"{copy}: line 1"
    monkeypatch.setattr(manifest_cache, "_rules_digest", lambda: "a new release")
    calls: list[str] = []
    real = parse_manifest

    def counting(data: bytes, *, filename: str) -> Manifest:
        calls.append(filename)
        return real(data, filename=filename)

    monkeypatch.setattr(manifest_cache, "parse_manifest", counting)
    load_manifest_cached(copy, cache)
    assert calls == [str(copy)]


def test_small_manifests_and_dry_runs_write_no_cache(big: Path, tmp_path: Path) -> None:
    small = write_jsonl(tmp_path / "small.jsonl", make_jobs(MIN_JOBS - 1))
    load_manifest_cached(small, tmp_path / "c1")
    load_manifest_cached(big, tmp_path / "c2", write=False)
    assert not (tmp_path / "c1").exists()
    assert not (tmp_path / "c2").exists()


def test_a_cache_that_cannot_be_written_costs_nothing_but_time(big: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache's folder should be")
    manifest = load_manifest_cached(big, blocker / "c")
    assert manifest == load_manifest(big)


def test_unreadable_and_unknown_manifests_are_reported_as_before(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="cannot read"):
        load_manifest_cached(tmp_path / "missing.jsonl", tmp_path / "c")
    with pytest.raises(ManifestError, match="cannot tell the format"):
        load_manifest_cached(tmp_path / "jobs.txt", tmp_path / "c")


def test_resumed_run_reads_the_cache_beside_the_ledger(
    sim: SimulatorThread, big: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    first = run_cli(sim, big, out, "--max-creates", "3")
    assert first.returncode == 75, first.stderr
    cache = cache_path(out / "bulkfetch-ledger.json")
    assert cache.exists()
    assert TEST_API_KEY.encode() not in cache.read_bytes()

    plan = run_cli(sim, big, out, "--dry-run", "-v")
    assert "validated jobs read from" in plan.stderr, plan.stderr
    again = run_cli(sim, big, out, "--max-creates", "3", "-v")
    assert again.returncode == 75, again.stderr
    assert "validated jobs read from" in again.stderr
    assert "3 skip-done" in again.stderr, again.stderr
    assert sim.counters()["create_calls"] == 6

    jobs = _jobs()
    jobs[0]["px_size"] = 20
    write_jsonl(big, jobs)
    changed = run_cli(sim, big, out, "--dry-run", "-v")
    assert changed.returncode == 0, changed.stderr
    assert "validated jobs read from" not in changed.stderr


def test_the_stamp_covers_every_file_validation_reads() -> None:
    # A changed band table must miss as surely as changed code: cached warnings would lie.
    # Every module of the manifest package validates, but the cache itself, the sharding and
    # the notes (read again for the STAC catalog, after validation).
    package = Path(manifest_cache.__file__).parent
    assert "bands.toml" in manifest_cache._TABLES
    validating = {p.stem for p in package.glob("*.py")} - {"__init__", "cache", "shard", "notes"}
    assert validating == {m.__name__.rsplit(".", 1)[1] for m in manifest_cache._RULES}
    # Read from the modules themselves: nothing falls back to a digest that never changes.
    assert manifest_cache._rules_digest() != __version__
