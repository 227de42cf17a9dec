"""Colormaps: the pure decisions without sockets, then ``bulkfetch colormaps`` and the check
``run``, ``plan`` and ``validate --online`` make, through the real CLI and the simulator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from bulkfetch.colormaps.check import ColormapCache, cached_colormaps
from bulkfetch.colormaps.listing import (
    Colormap,
    colormap_problems,
    colormaps_used,
    is_custom_id,
    parse_colormap_list,
    unknown_names,
)
from bulkfetch.config import api_root
from bulkfetch.manifest.jobs import parse_manifest
from bulkfetch.simulator import SimulatorThread
from bulkfetch.simulator.colormap_app import CUSTOM_COLORMAPS, DISCRETE, MATPLOTLIB
from tests.conftest import bulkfetch_cli, make_jobs, run_cli, write_jsonl

DOC_ID = "a9bc6eceeef2a13bb88a7f641dca3aa0"  # the id in EOS's documented example
OTHER_ID = "0123456789abcdef0123456789abcdef"
NO_SUCH_ID = "b9bc6eceeef2a13bb88a7f641dca3aa0"

# --- pure decisions ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "want"),
    [
        ({"colormap_list": ["RdYlGn", "viridis"]}, [("RdYlGn", None), ("viridis", None)]),
        (
            {"colormap_list": [{"name": "RdYlGn", "type": "continuous"}, {"id": "Set1"}]},
            [("RdYlGn", "continuous"), ("Set1", None)],
        ),
        ({"colormap_list": [{"Set1": "discrete"}]}, [("Set1", "discrete")]),
        (
            {"RdYlGn": "continuous", "Set1": "discrete"},
            [("RdYlGn", "continuous"), ("Set1", "discrete")],
        ),
        ({"RdYlGn": {"type": "continuous"}, "x": None}, [("RdYlGn", "continuous"), ("x", None)]),
        ({"colormap_list": {"RdYlGn": "continuous"}}, [("RdYlGn", "continuous")]),
        ({"colormaps": [{"title": "jet", "kind": "continuous"}]}, [("jet", "continuous")]),
        (["jet", "jet", " ", 3, None, {"colormap": "hot"}], [("jet", None), ("hot", None)]),
        ({"colormap_list": []}, []),
    ],
)
def test_every_form_of_the_colormap_list(answer: Any, want: list[tuple[str, str | None]]) -> None:
    assert parse_colormap_list(answer) == [Colormap(n, t) for n, t in want]


@pytest.mark.parametrize("answer", ["RdYlGn", 3, None, {"colormap_list": [1, 2]}, [[], {}]])
def test_an_answer_of_no_known_shape_is_refused(answer: Any) -> None:
    with pytest.raises(ValueError, match="colormap list"):
        parse_colormap_list(answer)


def test_names_ids_and_did_you_mean() -> None:
    assert is_custom_id(DOC_ID) and is_custom_id(DOC_ID.upper())
    assert not is_custom_id("RdYlGn") and not is_custom_id(DOC_ID[:-1])
    offered = {"RdYlGn", "viridis", "Set1"}
    unknown = unknown_names(["RdYlGn", "RdYlGn_r", "rdylgn", "viridi", "zzzz"], offered)
    assert unknown == {
        "rdylgn": "; did you mean 'RdYlGn'?",  # Matplotlib's names are case-sensitive
        "viridi": "; did you mean 'viridis'?",
        "zzzz": "",
    }


def test_problems_name_the_jobs_using_an_unknown_colormap() -> None:
    jobs = make_jobs(14, formats=("jpeg",))
    for i, job in enumerate(jobs):
        job["colormap"] = "RdYlGm" if i % 7 else "viridis"
    data = b"".join(orjson.dumps(j) + b"\n" for j in jobs)
    manifest = parse_manifest(data, filename="jobs.jsonl")
    used = colormaps_used(manifest.jobs)
    assert {k: len(v) for k, v in used.items()} == {"viridis": 2, "RdYlGm": 12}
    (problem,) = colormap_problems(
        {"RdYlGm": "; did you mean 'RdYlGn'?"}, used, what="not a colormap EOS offers"
    )
    assert (problem.file, problem.where, problem.field) == ("jobs.jsonl", "line 2", "colormap")
    assert problem.message.startswith("'RdYlGm' is not a colormap EOS offers; did you mean")
    assert "(also line 3, line 4, line 5, line 6, line 7, line 9," in problem.message
    assert problem.message.endswith("line 13 and 1 more jobs)")


def test_the_cache_keeps_a_list_a_day_and_leaves_a_foreign_file_alone(tmp_path: Path) -> None:
    path = tmp_path / "c" / "colormaps.json"
    cache = ColormapCache(path)
    root = "http://127.0.0.1:8808"
    typed = [Colormap("RdYlGn", "continuous"), Colormap("Set1", "discrete")]
    cache.put("127.0.0.1|all", typed, now=1000.0)
    cache.save()
    again = ColormapCache(path)
    assert cached_colormaps(again, root, None, now=1000.0 + 86000) == typed
    assert cached_colormaps(again, "http://127.0.0.1:9999", "discrete", now=1001.0) == typed[1:]
    assert cached_colormaps(again, root, None, now=1000.0 + 86401) is None
    assert cached_colormaps(again, root, None, now=9e9, max_age=float("inf")) == typed
    foreign = tmp_path / "mine.json"
    foreign.write_text('{"mine": true}')
    other = ColormapCache(foreign)
    other.put("x|all", typed, now=1.0)
    other.save()
    assert foreign.read_text() == '{"mine": true}'


def test_the_colormap_api_is_beside_the_task_api() -> None:
    assert api_root("https://api-connect.eos.com/api/gdw/api") == "https://api-connect.eos.com"
    assert api_root("http://127.0.0.1:8808/prefix/api/gdw/api/") == "http://127.0.0.1:8808/prefix"
    assert api_root("https://gate.eos.com/elsewhere") == "https://api-connect.eos.com"


def test_the_simulator_lists_matplotlib_names_and_serves_custom_ids() -> None:
    assert "RdYlGn" in MATPLOTLIB and "viridis" in MATPLOTLIB and set(DISCRETE) < set(MATPLOTLIB)
    assert DOC_ID in CUSTOM_COLORMAPS and OTHER_ID in CUSTOM_COLORMAPS


# --- end to end ---------------------------------------------------------------------------


#: The colormap lane at test speed (10/min by default: six seconds between requests).
FAST_COLORMAPS = ["--colormap-rate", "100/s"]


def _api(sim: SimulatorThread) -> list[str]:
    return ["--api-url", sim.api_url, *FAST_COLORMAPS]


def _calls(sim: SimulatorThread) -> int:
    return int(sim.counters()["colormap_calls"])


def test_the_colormaps_command_lists_caches_and_filters(sim: SimulatorThread) -> None:
    listed = bulkfetch_cli("colormaps", *_api(sim))
    assert listed.returncode == 0, listed.stderr
    rows = [line.split() for line in listed.stdout.splitlines()]
    assert ["RdYlGn", "continuous"] in rows and ["Set1", "discrete"] in rows
    assert len(rows) == len(MATPLOTLIB)
    assert _calls(sim) == 1
    # A day's cache answers again, --type included; --refresh asks.
    discrete = bulkfetch_cli("colormaps", *_api(sim), "--type", "DISCRETE", "--json")
    assert discrete.returncode == 0, discrete.stderr
    assert orjson.loads(discrete.stdout) == [{"name": n, "type": "discrete"} for n in DISCRETE]
    assert _calls(sim) == 1
    sim.configure(colormap_form="map")
    fresh = bulkfetch_cli("colormaps", *_api(sim), "--refresh", "--json")
    assert fresh.returncode == 0, fresh.stderr
    assert len(orjson.loads(fresh.stdout)) == len(MATPLOTLIB)
    assert _calls(sim) == 2
    # EOS down: the older list, with a warning; nothing cached: exit 1.
    sim.configure(colormap_fault=503)
    stale = bulkfetch_cli("colormaps", *_api(sim), "--refresh")
    assert stale.returncode == 0 and "older cache" in stale.stderr
    assert stale.stdout == listed.stdout
    alone = bulkfetch_cli("colormaps", *_api(sim), env={"XDG_CACHE_HOME": "/nonexistent/x"})
    assert alone.returncode == 1 and "HTTP 503" in alone.stderr and "Traceback" not in alone.stderr
    sim.configure(colormap_fault=0)
    refused = bulkfetch_cli(
        "colormaps", *_api(sim), "--refresh", env={"EOS_API_KEY": "apk." + "0" * 64}
    )
    assert refused.returncode == 3, refused.stderr


def _manifest(tmp_path: Path, *colormaps: str) -> Path:
    jobs = make_jobs(max(3, len(colormaps)), formats=("png",))
    for job, colormap in zip(jobs, colormaps, strict=False):
        job["colormap"] = colormap
    return write_jsonl(tmp_path / "jobs.jsonl", jobs)


def test_an_unknown_colormap_stops_the_run_before_any_creation(
    sim: SimulatorThread, tmp_path: Path
) -> None:
    manifest = _manifest(tmp_path, "RdYlGm", DOC_ID, NO_SUCH_ID, "RdYlGm")
    out = tmp_path / "out"
    result = run_cli(sim, manifest, out, *FAST_COLORMAPS)
    assert result.returncode == 2, result.stderr
    assert "line 1: colormap: 'RdYlGm' is not a colormap EOS offers" in result.stderr
    assert "did you mean 'RdYlGn'? (also line 4)" in result.stderr
    assert f"line 3: colormap: '{NO_SUCH_ID}' is not the id of a custom colormap" in result.stderr
    assert "made in EOS" in result.stderr
    assert sim.counters()["tasks_created"] == 0 and not out.exists()
    assert _calls(sim) == 3  # the list, and each id once
    commands: list[list[str | Path]] = [
        ["plan", manifest, "--out", out],
        ["validate", "--online", manifest],
    ]
    for command in commands:
        checked = bulkfetch_cli(*command, *_api(sim))
        assert checked.returncode == 2, checked.stderr
        assert "'RdYlGm' is not a colormap EOS offers" in checked.stderr
    assert _calls(sim) == 3 + 2 * 2  # the list from the cache; ids asked once per run
    offline = bulkfetch_cli("validate", manifest, *_api(sim))
    assert offline.returncode == 0 and _calls(sim) == 7


def test_known_colormaps_pass_and_the_list_is_asked_once_a_day(
    sim: SimulatorThread, tmp_path: Path
) -> None:
    manifest = _manifest(tmp_path, "RdYlGn", "viridis_r", DOC_ID.upper(), OTHER_ID)
    result = run_cli(sim, manifest, tmp_path / "out", *FAST_COLORMAPS)
    assert result.returncode == 0, result.stderr
    assert _calls(sim) == 3
    again = run_cli(sim, manifest, tmp_path / "out2", *FAST_COLORMAPS)
    assert again.returncode == 0, again.stderr
    assert _calls(sim) == 5  # ids again, the list from the cache
    plain = write_jsonl(tmp_path / "plain.jsonl", make_jobs(2))
    assert run_cli(sim, plain, tmp_path / "out3").returncode == 0
    assert _calls(sim) == 5  # no colormap: nothing asked
    skipped = run_cli(sim, _manifest(tmp_path, "RdYlGm"), tmp_path / "o4", "--no-colormap-check")
    assert skipped.returncode == 0, skipped.stderr
    assert _calls(sim) == 5


@pytest.mark.parametrize("fault", [503, 404])
def test_an_unavailable_colormap_endpoint_is_a_warning_and_the_run_goes_on(
    sim: SimulatorThread, tmp_path: Path, fault: int
) -> None:
    sim.configure(colormap_fault=fault)
    manifest = _manifest(tmp_path, "RdYlGm", DOC_ID)
    result = run_cli(sim, manifest, tmp_path / "out", *FAST_COLORMAPS)
    assert result.returncode == 0, result.stderr
    assert "colormap names not checked" in result.stderr and "carrying on" in result.stderr
    if fault == 503:
        assert f"colormap ids not checked either ({DOC_ID})" in result.stderr
        # Ids alone: the first the endpoint cannot answer ends the asking (2 attempts).
        before = _calls(sim)
        ids = _manifest(tmp_path, DOC_ID, OTHER_ID)
        only = run_cli(sim, ids, tmp_path / "ids", *FAST_COLORMAPS)
        assert only.returncode == 0, only.stderr
        assert f"colormap ids not checked ({DOC_ID}, {OTHER_ID}): server error" in only.stderr
        assert _calls(sim) - before == 2
    else:  # 404 for the list and the id alike: no sign the endpoint exists, not believed
        assert f"colormap ids not checked: HTTP 404 for each ({DOC_ID})" in result.stderr
    assert "Traceback" not in result.stderr
    assert sim.counters()["tasks_created"] == (6 if fault == 503 else 3)


def test_plan_without_a_key_skips_the_check_with_a_warning(
    sim: SimulatorThread, tmp_path: Path
) -> None:
    manifest = _manifest(tmp_path, "RdYlGm")
    result = bulkfetch_cli("plan", manifest, "--out", tmp_path / "o", *_api(sim),
                           env={"EOS_API_KEY": ""})  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "colormaps not checked: no API key" in result.stderr
    assert _calls(sim) == 0


def test_the_check_can_be_turned_off_in_the_config_file(
    sim: SimulatorThread, tmp_path: Path
) -> None:
    manifest = _manifest(tmp_path, "RdYlGm")
    (tmp_path / "bulkfetch.toml").write_text('colormap-check = false\ncolormap-rate = "100/s"\n')
    result = run_cli(sim, manifest, tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert _calls(sim) == 0
