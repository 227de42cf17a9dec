"""The HTML report: one self-contained page showing what a ledger holds, and the images.

Contract: :func:`render_html` turns :class:`~bulkfetch.report.contents.ReportData` (what
:func:`~bulkfetch.report.contents.collect` read) into one HTML page with no external
reference (no URL, no script, no font or style sheet to fetch): it works offline, opened
from disk. Its style is ``report.css``, shipped beside this module and inlined. The
pictures (thumbnails, AOI outlines, dates) come from :mod:`bulkfetch.report.thumbnails`.
:func:`write_html_report` collects, renders and writes the page atomically.

Every string that comes from the manifest, the ledger or the server is escaped, so a
view_id or a failure reason holding markup shows as text. Nothing secret is shown: the
ledger holds no API key, and URLs are never written.

The page: a header (title, ledger, manifest, time, version); jobs by state as big numbers;
the last run's and all runs' figures (from the ledger's ``meta.runs``); failures grouped
by reason, each a ``<details>`` listing its jobs; and a contact sheet of every done image,
each tile captioned with view_id, bm_type, date, file name and the area's outline.
"""

from __future__ import annotations

import base64
import functools
import html
import re
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path, PurePosixPath

from bulkfetch.durable import atomic_write
from bulkfetch.errors import UsageError
from bulkfetch.ledger import Ledger
from bulkfetch.report.contents import MAX_THUMBS, STATES, ReportData, RunFigures, Tile, collect
from bulkfetch.report.data import ledger_manifest
from bulkfetch.report.thumbnails import aoi_svg, view_date
from bulkfetch.units import duration_text, size_text

__all__ = ["render_html", "write_html_report"]

_MAX_LISTED = 200  # jobs listed under one failure reason


@functools.cache
def _css() -> str:
    """The page's style sheet, ``report.css`` (package data, installed with the package)."""
    return resources.files("bulkfetch.report").joinpath("report.css").read_text(encoding="utf-8")


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
        for state in (*STATES, "jobs")
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
        f"<title>{_e(data.title)}</title><style>{_css()}</style></head><body><main>"
        f"<header><h1>{_e(data.title)}</h1><dl>{info}</dl>{notes}</header>"
        f'<section class="counts" aria-label="jobs by state">{counts}</section>'
        f"<h2>Runs</h2>{_runs_html(data.last_run, data.all_runs)}"
        f"<h2>Failures</h2>{_failures_html(data)}"
        f"<h2>Images ({data.counts.get('done', 0):,} done)</h2>{sheet}"
        f"<footer>Made by bulkfetch {_e(data.version)}.</footer>"
        "</main></body></html>\n"
    )


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
    A manifest only named by the ledger (``meta.manifest``) that is gone or invalid is
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
