"""The HTML report: one self-contained page showing what a ledger holds, and the images.

Contract: :func:`collect` reads a ledger (opened read-only, so it is safe while a run goes
on), the manifest if there is one, and the result files, into plain :class:`ReportData`;
:func:`render_html` turns that into one HTML page with no external reference (no URL, no
script, no font or style sheet to fetch): it works offline, opened from disk. The
pictures (thumbnails, AOI outlines, dates) come from :mod:`bulkfetch.report.thumbnails`.

Every string that comes from the manifest, the ledger or the server is escaped, so a
view_id or a failure reason holding markup shows as text. Nothing secret is shown: the
ledger holds no API key, and URLs are never written.

The page: a header (title, ledger, manifest, time, version); jobs by state as big numbers;
the last run's and all runs' figures (from the ledger's ``meta.runs``); failures grouped
by reason, each a ``<details>`` listing its jobs; and a contact sheet of every done image
(sorted by path; at most ``max_thumbs`` thumbnails, made one file at a time), each tile
captioned with view_id, bm_type, date, file name and the area's outline. A file that is
missing or cannot be read gets a placeholder tile saying why.

``report_command`` is the ``bulkfetch report`` click command.
"""

from __future__ import annotations

import base64
import contextlib
import html
import re
import sys
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import click

from bulkfetch import __version__
from bulkfetch.cli._util import short_o_for_report
from bulkfetch.config import RunConfig
from bulkfetch.durable import atomic_write
from bulkfetch.errors import BulkfetchError, ManifestError, UsageError
from bulkfetch.ledger import JobState, Ledger
from bulkfetch.ledger_meta import RunSummary
from bulkfetch.manifest.jobs import Manifest
from bulkfetch.report.data import ledger_manifest
from bulkfetch.report.failures import group_failures
from bulkfetch.report.thumbnails import ThumbnailError, aoi_svg, thumbnail, view_date
from bulkfetch.sink.destination import store_url
from bulkfetch.units import duration_text, size_text

if TYPE_CHECKING:
    from bulkfetch.sink.object_store import ObjectStore

__all__ = [
    "ReportData",
    "RunFigures",
    "Tile",
    "collect",
    "render_html",
    "report_command",
    "run_figures",
    "write_html_report",
]

MAX_THUMBS = 2000
"""Thumbnails on one page, at most: the rest are counted, not shown."""
_MAX_LISTED = 200  # jobs listed under one failure reason
_MAX_REASONS = 200  # failure reasons listed
_STATES = ("done", "failed", "created", "creating", "pending")


@dataclass(frozen=True, slots=True)
class Tile:
    """One done job on the contact sheet. ``thumb`` is JPEG bytes, or empty with ``problem``."""

    key: str
    path: str
    view_id: str = ""
    bm_type: str = ""
    geometry: Any = None
    thumb: bytes = b""
    problem: str = ""
    note: str = ""  # shown under the caption, e.g. a size that differs from the ledger's


@dataclass(frozen=True, slots=True)
class RunFigures:
    """Figures of one run, or the sum over runs (``runs`` > 1)."""

    runs: int = 0
    started: float = 0.0
    elapsed: float = 0.0
    outcome: str = ""
    requests: Mapping[str, int] = field(default_factory=dict)
    rate_limited: Mapping[str, int] = field(default_factory=dict)
    bytes: int = 0
    done: int = 0
    failed: int = 0


@dataclass(frozen=True, slots=True)
class ReportData:
    """Everything the page shows, as plain data (see :func:`render_html`)."""

    title: str
    ledger: str
    generated: str
    version: str = __version__
    manifest: str = ""
    notes: Sequence[str] = ()  # things the reader should know: manifest not found, ...
    counts: Mapping[str, int] = field(default_factory=dict)
    last_run: RunFigures | None = None
    all_runs: RunFigures | None = None
    failures: Sequence[tuple[str, Sequence[tuple[str, str]]]] = ()  # reason, [(key, view_id)]
    more_reasons: int = 0
    tiles: Sequence[Tile] = ()
    hidden_tiles: int = 0
    thumb_size: int = 160


# -- collecting ----------------------------------------------------------------------------


def run_figures(runs: Sequence[RunSummary]) -> tuple[RunFigures | None, RunFigures | None]:
    """The last run's figures and the sum over all runs, from the ledger's ``runs`` (or None)."""
    figures = [
        RunFigures(
            runs=1,
            started=run.started,
            elapsed=max(0.0, run.finished - run.started) if run.finished else 0.0,
            outcome=run.outcome,
            requests=dict(run.requests),
            rate_limited=dict(run.rate_limited),
            bytes=run.bytes,
            done=run.done,
            failed=run.failed,
        )
        for run in runs
    ]
    if not figures:
        return None, None

    def total(name: str) -> dict[str, int]:
        sums: Counter[str] = Counter()
        for f in figures:
            sums.update(getattr(f, name))
        return dict(sums)

    overall = RunFigures(
        runs=len(figures),
        started=min((f.started for f in figures if f.started), default=0.0),
        elapsed=sum(f.elapsed for f in figures),
        requests=total("requests"),
        rate_limited=total("rate_limited"),
        bytes=sum(f.bytes for f in figures),
        done=figures[-1].done,
        failed=figures[-1].failed,
    )
    return figures[-1], overall


def _inside(base: Path, relative: str) -> Path | None:
    """``base / relative`` if ``relative`` is a plain relative path (no ``..``), else None."""
    pure = PurePosixPath(relative)
    if not relative or pure.is_absolute() or ".." in pure.parts or "\\" in relative:
        return None
    return base.joinpath(*pure.parts)


def _readable(
    store: ObjectStore | None, relative: str, path: Path
) -> contextlib.AbstractContextManager[Path]:
    """A local file to read the result from: ``path``, or the object copied for the time
    of the ``with`` (one at a time: the report never holds more than one result)."""
    return contextlib.nullcontext(path) if store is None else store.fetched(relative)


def collect(
    ledger: Ledger,
    manifest: Manifest | None,
    out_dir: Path,
    *,
    title: str = "",
    thumb_size: int = 160,
    max_thumbs: int = MAX_THUMBS,
    notes: Iterable[str] = (),
    now: datetime | None = None,
) -> ReportData:
    """Read ``ledger``, ``manifest`` and the files under ``out_dir`` into :class:`ReportData`.

    Jobs are the ledger's records plus the manifest's jobs it does not hold yet (pending).
    Thumbnails are made one file at a time, for at most ``max_thumbs`` done jobs.
    """
    records = dict(ledger.records())
    jobs = {job.key: job for job in manifest.jobs} if manifest is not None else {}
    states: Counter[str] = Counter(str(r.state) for r in records.values())
    states["pending"] += sum(1 for key in jobs if key not in records)
    counts = {s: states.get(s, 0) for s in _STATES} | {"jobs": len(records.keys() | jobs.keys())}

    # Grouped by reason without its job-specific parts (view_id, ids, numbers).
    reasons = group_failures(
        (records[key].reason, (key, jobs[key].view_id if key in jobs else ""))
        for key in sorted(records)
        if records[key].state is JobState.FAILED
    )

    done = sorted(
        (r for r in records.values() if r.state is JobState.DONE), key=lambda r: (r.path, r.key)
    )
    tiles = []
    url = store_url(out_dir)
    store = None
    if url is not None and done:
        from bulkfetch.sink.object_store import ObjectStore

        store = ObjectStore(url)
    for record in done[:max_thumbs]:
        job = jobs.get(record.key)
        path = _inside(out_dir, record.path)
        thumb, problem, note = b"", "", ""
        if path is None:
            problem = "the ledger's path leaves the output folder: not read"
        else:
            try:
                with _readable(store, record.path, path) as local:
                    thumb = thumbnail(local, thumb_size)
                    if record.size and local.stat().st_size != record.size:
                        note = "size differs from the ledger's: the file was changed"
            except ThumbnailError as exc:
                problem = str(exc)
            except FileNotFoundError:
                problem = "file missing"
            except OSError as exc:
                problem = f"cannot read: {exc.strerror or exc}"
        tiles.append(
            Tile(
                key=record.key,
                path=record.path,
                view_id=job.view_id if job else "",
                bm_type=job.bm_type if job else "",
                geometry=job.params.get("geometry") if job else None,
                thumb=thumb,
                problem=problem,
                note=note,
            )
        )
    last, overall = run_figures(ledger.meta.runs)
    stamp = (now or datetime.now().astimezone()).isoformat(sep=" ", timespec="seconds")
    return ReportData(
        title=title or f"bulkfetch report: {ledger.path.parent.name or ledger.path.name}",
        ledger=str(ledger.path),
        generated=stamp,
        manifest=str(manifest.path) if manifest is not None else "",
        notes=tuple(notes),
        counts=counts,
        last_run=last,
        all_runs=overall,
        failures=[(group.title, group.jobs) for group in reasons[:_MAX_REASONS]],
        more_reasons=max(0, len(reasons) - _MAX_REASONS),
        tiles=tiles,
        hidden_tiles=max(0, len(done) - max_thumbs),
        thumb_size=thumb_size,
    )


# -- rendering -----------------------------------------------------------------------------

_CSS = """
:root { color-scheme: light; --ink: #1d2430; --muted: #5b6575; --line: #dfe3ea;
  --card: #fff; --bg: #f4f6f9; --accent: #2463c9; --bad: #b3261e; --ok: #1b7f3b; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
  sans-serif; }
main { max-width: 1400px; margin: 0 auto; padding: 24px 28px 48px; }
header h1 { margin: 0 0 6px; font-size: 24px; font-weight: 650; overflow-wrap: anywhere; }
header dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; margin: 0;
  color: var(--muted); font-size: 13px; }
header dt { font-weight: 600; } header dd { margin: 0; overflow-wrap: anywhere; }
h2 { font-size: 17px; margin: 28px 0 10px; font-weight: 650; }
.notes { margin: 12px 0 0; padding: 8px 12px; background: #fff8e1; border: 1px solid #f0d68a;
  border-radius: 6px; list-style: none; }
.counts { display: flex; flex-wrap: wrap; gap: 12px; margin-top: 20px; }
.count { background: var(--card); border: 1px solid var(--line); border-radius: 10px;
  padding: 10px 18px; min-width: 118px; }
.count b { display: block; font-size: 32px; line-height: 1.15; font-variant-numeric: tabular-nums; }
.count span { color: var(--muted); text-transform: uppercase; font-size: 11px;
  letter-spacing: .06em; }
.count.done b { color: var(--ok); } .count.failed b { color: var(--bad); }
table { border-collapse: collapse; background: var(--card); border: 1px solid var(--line);
  border-radius: 8px; overflow: hidden; font-variant-numeric: tabular-nums; }
th, td { padding: 6px 14px; text-align: right; border-bottom: 1px solid var(--line); }
th:first-child, td:first-child { text-align: left; }
thead th { background: #eef1f6; font-size: 12px; color: var(--muted); }
details { background: var(--card); border: 1px solid var(--line); border-radius: 8px;
  margin: 0 0 8px; padding: 8px 12px; }
summary { cursor: pointer; overflow-wrap: anywhere; }
summary b { color: var(--bad); margin-right: 6px; }
details ul { margin: 8px 0 2px; padding-left: 20px; columns: 2 320px; font-size: 12px; }
code { font: 12px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
.sheet { display: grid; grid-template-columns: repeat(auto-fill, minmax(180px, 1fr));
  gap: 14px; }
.tile { background: var(--card); border: 1px solid var(--line); border-radius: 8px;
  overflow: hidden; display: flex; flex-direction: column; margin: 0; }
.thumb { aspect-ratio: 1; display: flex; align-items: center; justify-content: center;
  background: #e9ecf1; }
.thumb img { max-width: 100%; max-height: 100%; display: block; image-rendering: auto; }
.thumb.missing { color: var(--bad); font-size: 12px; padding: 14px; text-align: center;
  background: repeating-linear-gradient(45deg, #f5e9e8, #f5e9e8 8px, #fbf3f2 8px, #fbf3f2 16px); }
figcaption { display: flex; gap: 8px; padding: 8px; font-size: 12px; align-items: flex-start; }
figcaption .text { min-width: 0; flex: 1; }
figcaption .vid { font-weight: 600; overflow-wrap: anywhere; }
figcaption .meta, figcaption .file { color: var(--muted); overflow-wrap: anywhere; }
figcaption .meta span { white-space: nowrap; }
figcaption .note { color: var(--bad); }
svg.aoi { flex: none; width: 40px; height: 40px; background: #f0f3f8; border-radius: 4px; }
svg.aoi polygon { fill: rgba(36, 99, 201, .18); stroke: var(--accent); stroke-width: 2;
  stroke-linejoin: round; vector-effect: non-scaling-stroke; }
svg.aoi polygon.hole { fill: #f0f3f8; }
.more { color: var(--muted); margin-top: 14px; }
footer { color: var(--muted); font-size: 12px; margin-top: 36px; }
"""


_URL_QUERY = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s?#<>\"']*)\?[^\s#<>\"']*")


def _e(value: object) -> str:
    """``value`` as HTML text: escaped, with any URL's query string (a key?) cut out."""
    return html.escape(_URL_QUERY.sub(r"\1?…", str(value)), quote=True)


def _when(timestamp: float) -> str:
    if not timestamp:
        return "—"
    try:
        return datetime.fromtimestamp(timestamp, UTC).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return "—"


def _runs_html(last: RunFigures | None, overall: RunFigures | None) -> str:
    if last is None or overall is None:
        return '<p class="more">No run has been recorded in this ledger.</p>'
    lanes = sorted(
        set(last.requests) | set(last.rate_limited) | set(overall.requests)
        | set(overall.rate_limited),
        key=lambda lane: ({"create": 0, "status": 1}.get(lane, 2), lane),
    )  # fmt: skip
    head = "".join(f"<th>{_e(lane)} requests</th><th>{_e(lane)} 429s</th>" for lane in lanes)
    rows = []
    for label, f in (("Last run", last), (f"All {overall.runs} runs", overall)):
        cells = "".join(
            f"<td>{f.requests.get(lane, 0):,}</td><td>{f.rate_limited.get(lane, 0):,}</td>"
            for lane in lanes
        )
        rows.append(
            f"<tr><td>{_e(label)}</td><td>{_e(_when(f.started))}</td>"
            f"<td>{_e(duration_text(f.elapsed))}</td>{cells}<td>{_e(size_text(f.bytes))}</td></tr>"
        )
    outcome = f"<p>Last run: {_e(last.outcome)}</p>" if last.outcome else ""
    return (
        f"{outcome}<table><thead><tr><th></th><th>started</th><th>elapsed</th>{head}"
        f"<th>bytes</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _failures_html(data: ReportData) -> str:
    if not data.failures:
        return '<p class="more">No failed jobs.</p>'
    parts = []
    for reason, jobs in data.failures:
        items = "".join(
            f"<li><code>{_e(key[:16])}</code>{' ' + _e(view_id) if view_id else ''}</li>"
            for key, view_id in jobs[:_MAX_LISTED]
        )
        if len(jobs) > _MAX_LISTED:
            items += f"<li>… and {len(jobs) - _MAX_LISTED:,} more</li>"
        parts.append(
            f"<details><summary><b>{len(jobs):,}</b>{_e(reason)}</summary><ul>{items}</ul>"
            "</details>"
        )
    if data.more_reasons:
        parts.append(f'<p class="more">… and {data.more_reasons:,} more reasons not shown.</p>')
    return "".join(parts)


def _breakable(text: str) -> str:
    """``text`` escaped, with line-break chances after each ``/``, ``_`` and ``-``."""
    return re.sub(r"([/_-])", r"\1<wbr>", _e(text))


def _tile_html(tile: Tile) -> str:
    name = PurePosixPath(tile.path).name or tile.path
    if tile.thumb:
        uri = "data:image/jpeg;base64," + base64.b64encode(tile.thumb).decode("ascii")
        picture = (
            f'<div class="thumb"><img src="{uri}" alt="{_e(name)}" loading="lazy" '
            f'decoding="async"></div>'
        )
    else:
        picture = f'<div class="thumb missing">{_e(tile.problem or "no thumbnail")}</div>'
    day = view_date(tile.view_id) if tile.view_id else ""
    meta = " · ".join(f"<span>{_e(part)}</span>" for part in (tile.bm_type, day) if part)
    text = (
        f'<div class="vid">{_breakable(tile.view_id or tile.key[:16])}</div>'
        + (f'<div class="meta">{meta}</div>' if meta else "")
        + f'<div class="file">{_breakable(tile.path)}</div>'
        + (f'<div class="note">{_e(tile.note)}</div>' if tile.note else "")
    )
    return (
        f'<figure class="tile" data-key="{_e(tile.key)}">{picture}'
        f'<figcaption>{aoi_svg(tile.geometry, 40)}<div class="text">{text}</div></figcaption>'
        "</figure>"
    )


def render_html(data: ReportData) -> str:
    """The whole page for ``data``: self-contained, every outside string escaped."""
    header = [
        ("Ledger", data.ledger),
        ("Manifest", data.manifest or "none: view ids and areas are not shown"),
        ("Generated", data.generated),
        ("bulkfetch", data.version),
    ]
    info = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in header)
    notes = (
        '<ul class="notes">' + "".join(f"<li>{_e(n)}</li>" for n in data.notes) + "</ul>"
        if data.notes
        else ""
    )
    counts = "".join(
        f'<div class="count {_e(state)}"><b>{data.counts.get(state, 0):,}</b>'
        f"<span>{_e(state)}</span></div>"
        for state in (*_STATES, "jobs")
    )
    tiles = "".join(_tile_html(tile) for tile in data.tiles)
    more = (
        f'<p class="more">{data.hidden_tiles:,} more not shown (the page holds at most '
        f"{len(data.tiles):,} thumbnails).</p>"
        if data.hidden_tiles
        else ""
    )
    sheet = (
        f'<div class="sheet">{tiles}</div>{more}'
        if data.tiles
        else '<p class="more">No done images yet.</p>'
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(data.title)}</title><style>{_CSS}</style></head><body><main>"
        f"<header><h1>{_e(data.title)}</h1><dl>{info}</dl>{notes}</header>"
        f'<section class="counts" aria-label="jobs by state">{counts}</section>'
        f"<h2>Runs</h2>{_runs_html(data.last_run, data.all_runs)}"
        f"<h2>Failures</h2>{_failures_html(data)}"
        f"<h2>Images ({data.counts.get('done', 0):,} done)</h2>{sheet}"
        f"<footer>Made by bulkfetch {_e(data.version)}.</footer>"
        "</main></body></html>\n"
    )


# -- the command ---------------------------------------------------------------------------


def write_html_report(
    output: Path,
    *,
    ledger_path: Path,
    out_dir: Path,
    manifest_path: Path | None = None,
    title: str = "",
    thumb_size: int = 160,
    max_thumbs: int = MAX_THUMBS,
) -> ReportData:
    """Collect, render and write the page atomically; return what it shows.

    Raises :class:`UsageError` when there is no ledger, :class:`ManifestError` for a bad
    ``manifest_path``, :class:`LedgerError`/:class:`StorageError` as reading and writing do.
    A manifest only named by the ledger (``meta["manifest"]``) that is gone or invalid is
    left out, with a note on the page.
    """
    if not ledger_path.is_file():
        raise UsageError(f"no ledger at {ledger_path}")
    with Ledger.open(ledger_path, readonly=True) as book:
        manifest, note = ledger_manifest(book, manifest_path)
        notes = [note] if note else []
        data = collect(
            book,
            manifest,
            out_dir,
            title=title,
            thumb_size=thumb_size,
            max_thumbs=max_thumbs,
            notes=notes,
        )
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(output, render_html(data).encode("utf-8"))
    return data


_FILE = click.Path(dir_okay=False, path_type=Path)


@click.command("report")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="The run's output folder (its ledger and the images shown are there), or the "
    "bucket URL (s3://bucket/prefix...) it wrote to.",
)
@click.option(
    "-o",
    "short_o",
    type=click.Path(path_type=Path),
    metavar="DIR",
    help="Same as --out. (-o FILE.html, or -o with --out, is the old spelling of "
    "--html: still read so, with a deprecation warning.)",
)
@click.option("--ledger", type=_FILE, help="Ledger file [default: OUT/bulkfetch-ledger.json].")
@click.option(
    "--html",
    "-H",
    "--output",
    "html",
    type=_FILE,
    help="The HTML file to write [default: OUT/report.html] (--output: its old name).",
)
@click.option("--manifest", "-m", type=_FILE, help="Manifest [default: the one the ledger names].")
@click.option(
    "--thumb-size",
    type=click.IntRange(16, 1024),
    default=160,
    show_default=True,
    help="Thumbnails' longer side, in pixels.",
)
@click.option(
    "--max-thumbs",
    type=click.IntRange(min=0),
    default=MAX_THUMBS,
    show_default=True,
    help="Thumbnails on the page at most (images, in path order); the rest are counted.",
)
@click.option("--title", default="", help="The page's title [default: from the folder's name].")
def report_command(
    out: Path | None,
    short_o: Path | None,
    ledger: Path | None,
    html: Path | None,
    manifest: Path | None,
    thumb_size: int,
    max_thumbs: int,
    title: str,
) -> None:
    """Write a self-contained HTML page: counts, runs, failures and a contact sheet.

    Reads the ledger read-only (safe while a run is going on). Files are found relative
    to OUT, or to the ledger's folder without --out.
    """
    try:
        out, html, warning = short_o_for_report(short_o, out=out, html=html)
    except UsageError as exc:
        raise click.UsageError(str(exc)) from None
    if warning:
        click.echo(f"warning: {warning}", err=True)
    if ledger is None and out is None:
        raise click.UsageError("give --out DIR or --ledger PATH")
    ledger_path = ledger if ledger is not None else RunConfig(out=out or Path()).ledger_path
    out_dir = out if out is not None else ledger_path.parent
    output = html if html is not None else out_dir / "report.html"
    started = time.monotonic()
    try:
        data = write_html_report(
            output,
            ledger_path=ledger_path,
            out_dir=out_dir,
            manifest_path=manifest,
            title=title,
            thumb_size=thumb_size,
            max_thumbs=max_thumbs,
        )
    except BulkfetchError as exc:
        from bulkfetch.api import exit_code_for  # the engine is not needed to write a page

        click.echo(f"bulkfetch: error: {exc}", err=True)
        if isinstance(exc, ManifestError):
            click.echo("(the manifest given with --manifest)", err=True)
        sys.exit(exit_code_for(exc))
    for note in data.notes:
        click.echo(f"warning: {note}", err=True)
    unreadable = sum(1 for tile in data.tiles if not tile.thumb)
    click.echo(
        f"{output}: {data.counts.get('jobs', 0)} jobs, {len(data.tiles)} thumbnails"
        + (f" ({unreadable} unreadable)" if unreadable else "")
        + (f", {data.hidden_tiles} more not shown" if data.hidden_tiles else "")
        + f" in {time.monotonic() - started:.1f}s"
    )
