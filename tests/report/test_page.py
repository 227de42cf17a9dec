"""The HTML report: the page built from a real ledger, its rendering, and a real browser.

The ledger and the files are made without the network: the simulator's ``render_result``
gives each job of ``manifests/demo.jsonl`` the bytes EOS would send (jpeg, png, tiff, world
zip, kmz), written where ``Job.relative_path()`` says, with ``JobRecord``s put as a run would.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from PIL import Image

from bulkfetch.cli.report import report_command
from bulkfetch.ledger import JobRecord, JobState, Ledger
from bulkfetch.manifest.jobs import Job, load_manifest
from bulkfetch.report.contents import ReportData, Tile, collect
from bulkfetch.report.page import render_html
from bulkfetch.report.thumbnails import view_date
from bulkfetch.simulator.images import render_result

DEMO = Path(__file__).resolve().parents[2] / "manifests" / "demo.jsonl"
SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"
EVIL = "task failed: <script>alert(1)</script>"


@dataclass(frozen=True)
class Built:
    out: Path
    ledger: Path
    done: list[Job]
    failed: list[Job]
    created: list[Job]
    pending: list[Job]


def _kind(job: Job) -> str:
    return job.georeference or job.format


def build(out: Path, *, image_size: int = 64, manifest: Path | None = DEMO) -> Built:
    """A ledger under ``out``: every kind of result done, two failures, one created."""
    jobs = list(load_manifest(DEMO).jobs)
    kinds: dict[str, Job] = {}
    for job in jobs:
        kinds.setdefault(_kind(job), job)
    assert {"jpeg", "png", "tiff", "world", "kmz"} <= kinds.keys()
    first = list(kinds.values())
    rest = [job for job in jobs if job not in first]
    done = first + rest[:25]
    failed, created, pending = rest[25:28], rest[28:29], rest[29:]
    ledger = out / "bulkfetch-ledger.json"
    with Ledger.open(ledger) as book:
        for job in done:
            data = render_result(job.params, image_size=image_size)
            path = out / str(job.relative_path())
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            book.put(
                JobRecord(
                    job.key,
                    JobState.DONE,
                    path=str(job.relative_path()),
                    size=len(data),
                    sha256=hashlib.sha256(data).hexdigest(),
                )
            )
        for i, job in enumerate(failed):
            reason = EVIL if i < 2 else "400 bad request: px_size must be positive"
            book.put(JobRecord(job.key, JobState.FAILED, reason=reason, failures=1))
        for job in created:
            book.put(JobRecord(job.key, JobState.CREATED, task_id="task-1", deadline=1e10))
        if manifest is not None:
            book.set_meta("manifest", str(manifest))
        now = time.time()
        book.set_meta(
            "runs",
            [
                _run(now - 900, now - 700, create=30, status=80, c429=2, s429=5, nbytes=10_000),
                _run(now - 100, now - 40, create=4, status=12, c429=0, s429=1, nbytes=2_000),
            ],
        )
    return Built(out, ledger, done, failed, created, pending)


def _run(
    started: float, finished: float, *, create: int, status: int, c429: int, s429: int, nbytes: int
) -> dict[str, Any]:
    return {
        "started": started,
        "finished": finished,
        "outcome": "3 of 40 jobs failed",
        "requests": {"create": create, "status": status},
        "rate_limited": {"create": c429, "status": s429},
        "bytes": nbytes,
        "done": 30,
        "failed": 3,
    }


@pytest.fixture
def built(tmp_path: Path) -> Built:
    return build(tmp_path / "out")


def invoke(*args: str | Path) -> click.testing.Result:
    return CliRunner().invoke(report_command, [str(a) for a in args])


def render(built: Built, tmp_path: Path, *extra: str) -> str:
    page = tmp_path / "report.html"
    result = invoke("--out", built.out, "--html", page, *extra)
    assert result.exit_code == 0, result.output
    return page.read_text("utf-8")


def _group(pattern: str, text: str) -> str:
    found = re.search(pattern, text)
    assert found, pattern
    return found[1]


def count_box(page: str, state: str) -> int:
    found = re.search(rf'<div class="count {state}"><b>([\d,]+)</b>', page)
    assert found, state
    return int(found[1].replace(",", ""))


# -- the page from a real ledger ---------------------------------------------------------------


def test_page_is_self_contained_with_a_thumbnail_per_done_job(built: Built, tmp_path: Path) -> None:
    page = render(built, tmp_path)
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"<(script|link|iframe|object|embed)\b", page, re.IGNORECASE)
    assert "@import" not in page and "url(" not in page
    images = re.findall(r'<img src="([^"]*)"', page)
    assert len(images) == page.count("<img") == len(built.done)
    for uri in images:
        assert uri.startswith("data:image/jpeg;base64,")
        with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as thumb:
            thumb.load()
            assert thumb.format == "JPEG"
            assert max(thumb.size) <= 160


def test_counts_runs_and_failures(built: Built, tmp_path: Path) -> None:
    page = render(built, tmp_path)
    assert count_box(page, "done") == len(built.done)
    assert count_box(page, "failed") == len(built.failed)
    assert count_box(page, "created") == len(built.created)
    assert count_box(page, "pending") == len(built.pending)  # in the manifest, not the ledger
    assert count_box(page, "creating") == 0
    assert count_box(page, "jobs") == 40
    # Last run and totals per lane: 4 + 30 creations, 12 + 80 status calls, 1 + 5 429s.
    assert "<td>Last run</td>" in page and "<td>All 2 runs</td>" in page
    assert "<td>34</td><td>2</td><td>92</td><td>6</td>" in page
    assert "<td>4</td><td>0</td><td>12</td><td>1</td>" in page
    # Failures grouped by reason, most frequent first, each collapsible.
    assert page.count("<details>") == 2
    first = page.index("<details>")
    assert page.index("alert(1)", first) < page.index("px_size must be positive")
    assert "<summary><b>2</b>task failed: &lt;script&gt;alert(1)&lt;/script&gt;</summary>" in page
    for job in built.failed:
        assert job.view_id in page


def test_reason_and_strings_are_escaped(built: Built, tmp_path: Path) -> None:
    page = render(built, tmp_path, "--title", "<b>mine</b> & <script>x()</script>")
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<title>&lt;b&gt;mine&lt;/b&gt; &amp; &lt;script&gt;x()&lt;/script&gt;</title>" in page


def test_each_tile_has_the_aoi_outline_and_a_caption(built: Built, tmp_path: Path) -> None:
    page = render(built, tmp_path)
    tiles = re.findall(r'<figure class="tile".*?</figure>', page)
    assert len(tiles) == len(built.done)
    by_key = {_group(r'data-key="([0-9a-f]+)"', t): t for t in tiles}
    for job in built.done:
        tile = by_key[job.key]
        assert '<svg class="aoi"' in tile and "<polygon" in tile
        text = re.sub(r"<[^>]+>", "", tile)  # <wbr> break chances removed
        assert job.view_id in text and job.bm_type in text
        assert str(job.relative_path()) in text
        day = view_date(job.view_id)
        assert day and day in text
    # Sorted by path.
    paths = [re.sub(r"<[^>]+>", "", _group(r'class="file">(.*?)</div>', t)) for t in tiles]
    assert paths == sorted(paths)


def test_unreadable_files_get_a_placeholder(built: Built, tmp_path: Path) -> None:
    gone, broken = built.done[0], built.done[1]
    (built.out / str(gone.relative_path())).unlink()
    (built.out / str(broken.relative_path())).write_bytes(b"not an image at all")
    page = render(built, tmp_path)
    assert page.count("<img") == len(built.done) - 2
    assert page.count('class="thumb missing"') == 2
    assert ">file missing</div>" in page
    assert "not an image Pillow can read" in page


def test_without_a_manifest_the_ledger_alone_is_shown(tmp_path: Path) -> None:
    built = build(tmp_path / "out", manifest=None)
    page = render(built, tmp_path)
    assert "Manifest</dt><dd>none" in page
    assert page.count("<img") == len(built.done)
    assert count_box(page, "pending") == 0  # the ledger does not know the pending jobs
    assert "<polygon" not in page


def test_a_recorded_manifest_that_is_gone_is_a_note(tmp_path: Path) -> None:
    built = build(tmp_path / "out", manifest=tmp_path / "moved-away.jsonl")
    page = tmp_path / "r.html"
    result = CliRunner().invoke(report_command, ["--out", str(built.out), "-o", str(page)])
    assert result.exit_code == 0, result.output
    assert "warning: the ledger's manifest could not be used" in result.output
    html = page.read_text("utf-8")
    assert '<ul class="notes">' in html and "moved-away.jsonl" in html
    assert html.count("<img") == len(built.done)


def test_explicit_manifest_and_ledger_option(built: Built, tmp_path: Path) -> None:
    page = tmp_path / "sub" / "r.html"
    result = invoke("--ledger", built.ledger, "--manifest", DEMO, "-o", page, "--thumb-size", "64")
    assert result.exit_code == 0, result.output
    html = page.read_text("utf-8")
    assert html.count("data:image/jpeg;base64,") == len(built.done)
    assert not list(page.parent.glob(".*tmp*"))  # written atomically, nothing left over


def test_thumbnails_are_capped(built: Built, tmp_path: Path) -> None:
    page = render(built, tmp_path, "--max-thumbs", "3")
    assert page.count("<img") == 3
    assert f"{len(built.done) - 3} more not shown" in page


def test_ledger_paths_outside_the_folder_are_not_read(tmp_path: Path) -> None:
    out = tmp_path / "out"
    secret = tmp_path / "secret.png"
    Image.new("RGB", (8, 8), "red").save(secret)
    with Ledger.open(out / "bulkfetch-ledger.json") as book:
        book.put(JobRecord("a" * 64, JobState.DONE, path="../secret.png", size=1))
        book.put(JobRecord("b" * 64, JobState.DONE, path=str(secret), size=1))
    with Ledger.open(out / "bulkfetch-ledger.json", readonly=True) as book:
        data = collect(book, None, out)
    assert [t.thumb for t in data.tiles] == [b"", b""]
    assert all("leaves the output folder" in t.problem for t in data.tiles)


def test_a_changed_file_is_noted(built: Built, tmp_path: Path) -> None:
    job = next(j for j in built.done if j.format == "png" and j.georeference is None)
    path = built.out / str(job.relative_path())
    Image.new("RGB", (300, 200), "blue").save(path)
    page = render(built, tmp_path)
    assert page.count("size differs from the ledger") == 1


# -- errors ------------------------------------------------------------------------------------


def test_missing_ledger_is_a_usage_error(tmp_path: Path) -> None:
    result = invoke("--out", tmp_path / "nothing", "-o", tmp_path / "r.html")
    assert result.exit_code == 2
    assert "no ledger at" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "r.html").exists()
    assert not (tmp_path / "nothing").exists()  # read-only: nothing created


def test_out_or_ledger_is_required(tmp_path: Path) -> None:
    result = invoke("-o", tmp_path / "r.html")
    assert result.exit_code == 2
    assert "give --out DIR or --ledger PATH" in result.output


def test_the_page_defaults_to_out_report_html(built: Built) -> None:
    result = invoke("--out", built.out)
    assert result.exit_code == 0, result.output
    assert (built.out / "report.html").read_text("utf-8").startswith("<!DOCTYPE html>")


def test_short_o_is_the_output_folder_as_in_run(built: Built, tmp_path: Path) -> None:
    # 'bulkfetch report -o out1' once said "File 'out1' is a directory".
    result = invoke("-o", built.out, "-H", tmp_path / "page.html")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "page.html").is_file()
    assert "deprecated" not in result.output


@pytest.mark.parametrize("how", ["with --out", "an .html name"])
def test_old_short_o_for_the_page_still_works_with_a_warning(
    built: Built, tmp_path: Path, how: str
) -> None:
    page = tmp_path / "old.html"
    args: list[str | Path] = (
        ["--out", built.out, "-o", page] if how == "with --out" else ["-o", page]
    )
    if how != "with --out":
        args += ["--ledger", built.ledger]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert page.is_file()
    assert "'report -o FILE' is deprecated" in result.output and "--html FILE" in result.output


def test_a_bad_explicit_manifest_exits_2(built: Built, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"view_id": 1}\n')
    result = invoke("--out", built.out, "--manifest", bad, "-o", tmp_path / "r.html")
    assert result.exit_code == 2
    assert "Traceback" not in result.output and "bad.jsonl" in result.output


def test_a_ledger_that_is_not_ours_exits_4(tmp_path: Path) -> None:
    ledger = tmp_path / "bulkfetch-ledger.json"
    ledger.write_text("[1, 2, 3]")
    result = invoke("--ledger", ledger, "-o", tmp_path / "r.html")
    assert result.exit_code == 4
    assert "not a bulkfetch ledger" in result.output


# -- pure pieces -------------------------------------------------------------------------------


def test_render_escapes_every_string() -> None:
    evil = "<script>alert(1)</script>"
    data = ReportData(
        title=evil,
        ledger=evil,
        generated=evil,
        version=evil,
        manifest=evil,
        notes=[evil],
        counts={"done": 1},
        failures=[(evil, [(evil, evil)])],
        tiles=[Tile(key=evil, path=evil, view_id=evil, bm_type=evil, problem=evil, note=evil)],
    )
    page = render_html(data)
    assert "<script" not in page
    assert page.count("&lt;script&gt;") >= 10


def test_render_cuts_query_strings_from_urls() -> None:
    reason = "GET https://example.test/x?api_key=apk.secret&y=1 failed"
    page = render_html(ReportData(title="t", ledger="l", generated="g", failures=[(reason, [])]))
    assert "apk.secret" not in page and "https://example.test/x?…" in page


# -- a real browser ----------------------------------------------------------------------------

_PROBE = """<script>
(async () => {
  const imgs = [...document.querySelectorAll('.tile img')];
  for (const i of imgs) i.loading = 'eager';
  const ok = await Promise.all(
    imgs.map(i => i.decode().then(() => i.naturalWidth > 0, () => false)));
  const boxes = [...document.querySelectorAll('.tile')].map(t => t.getBoundingClientRect());
  const sheet = document.querySelector('.sheet');
  const polys = [...document.querySelectorAll('.tile svg.aoi polygon')];
  const out = {
    tiles: boxes.length,
    decoded: ok.filter(Boolean).length,
    columns: getComputedStyle(sheet).gridTemplateColumns.split(' ').length,
    tile_widths: [...new Set(boxes.map(r => Math.round(r.width)))],
    outlines: polys.filter(p => p.getBBox().width > 0 && p.getBBox().height > 0).length,
    overflow_x: document.documentElement.scrollWidth > innerWidth,
    sheet_top: Math.round(sheet.getBoundingClientRect().top + scrollY),
    details_closed: [...document.querySelectorAll('details')].every(d => !d.open),
  };
  const pre = document.createElement('pre');
  pre.id = 'probe';
  pre.textContent = JSON.stringify(out);
  document.body.append(pre);
})();
</script>"""

WIDTH, HEIGHT = 1280, 1600


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail(
            "chromium is not installed, and CI must run the browser test: "
            "add `apt-get install -y chromium` to .ci/run"
        )
    pytest.skip("chromium is not installed (apt-get install chromium); CI runs this test")


def _browse(
    chromium: str, profile: Path, url: str, *flags: str
) -> subprocess.CompletedProcess[str]:
    command = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        f"--window-size={WIDTH},{HEIGHT}",
        *flags,
        url,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def test_in_a_real_browser(tmp_path: Path) -> None:
    """Chromium renders the page from disk: a screenshot, and the layout it computed.

    Why no pixel comparison with a stored reference: fonts, anti-aliasing and Chromium's
    own rendering change between versions and machines, so equal pixels would fail for
    reasons that are not bugs. What is compared instead is what the layout must be on any
    of them: the grid's column count at this window width, equal tile widths, every
    thumbnail decoded, every AOI outline with a non-empty box, no horizontal overflow, the
    sheet below the header at about the reference's height
    (``tests/report/screenshots/report-layout.json``); and the screenshot must be the window's size
    and not blank. ``tests/report/screenshots/report.png`` is the reference to look at; set
    ``BULKFETCH_UPDATE_SCREENSHOTS=1`` to rewrite both from this run.
    """
    chromium = _chromium()
    built = build(tmp_path / "out", image_size=256)
    page = tmp_path / "report.html"
    result = invoke("--out", built.out, "-o", page, "--title", "bulkfetch demo: contact sheet")
    assert result.exit_code == 0, result.output
    shot = tmp_path / "shot.png"
    done = _browse(chromium, tmp_path / "profile-1", page.as_uri(), f"--screenshot={shot}")
    assert shot.exists(), done.stderr[-2000:]

    probe_page = page.with_name("probe.html")  # the page itself has no script; this copy does
    probe_page.write_text(page.read_text("utf-8").replace("</body>", _PROBE + "</body>"), "utf-8")
    # The probe awaits image decoding, which runs on real threads while the budget is
    # virtual time: on a loaded machine the DOM can be dumped before the probe wrote its
    # answer. That is the harness being early, not the page being wrong: ask again.
    for attempt in range(3):
        dumped = _browse(
            chromium,
            tmp_path / f"profile-2-{attempt}",
            probe_page.as_uri(),
            "--virtual-time-budget=10000",
            "--dump-dom",
        )
        found = re.search(r'<pre id="probe">(.*?)</pre>', dumped.stdout)
        if found:
            break
    assert found, dumped.stderr[-2000:]
    layout = json.loads(found[1])
    n = len(built.done)
    assert layout["tiles"] == n == dumped.stdout.count('<figure class="tile"')
    assert layout["decoded"] == n
    assert layout["outlines"] == n
    widths = layout["tile_widths"]
    assert max(widths) - min(widths) <= 1 and min(widths) >= 180  # one grid track size
    assert layout["overflow_x"] is False
    assert layout["details_closed"] is True

    with Image.open(shot) as image:
        assert image.size == (WIDTH, HEIGHT)
        rgb = image.convert("RGB")
    everything = rgb.getcolors(maxcolors=1 << 22)
    assert everything is not None and len(everything) > 1000  # text, gradients: not flat
    sheet = rgb.crop((0, layout["sheet_top"], WIDTH, HEIGHT))
    colours = sheet.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 500, "the thumbnails region looks blank"

    reference = SCREENSHOTS / "report-layout.json"
    measured = {"columns": layout["columns"], "tile_width": min(widths)}
    measured["sheet_top"] = layout["sheet_top"]
    if os.environ.get("BULKFETCH_UPDATE_SCREENSHOTS"):
        SCREENSHOTS.mkdir(exist_ok=True)
        reference.write_text(json.dumps(measured, indent=2) + "\n")
        rgb.quantize(256).save(SCREENSHOTS / "report.png", optimize=True)  # small in git
    expected = json.loads(reference.read_text())
    assert layout["columns"] == expected["columns"]
    assert abs(min(widths) - expected["tile_width"]) <= 4
    assert abs(layout["sheet_top"] - expected["sheet_top"]) <= expected["sheet_top"] * 0.3
