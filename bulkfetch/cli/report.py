"""``bulkfetch report``: write the HTML report of a run (:mod:`bulkfetch.report.page`).

Exit codes as for every command: 0 written, 2 no ledger or a bad ``--manifest``, 4 the
page cannot be written or the ledger is damaged.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from bulkfetch.api import exit_code_for
from bulkfetch.cli._util import SHORT_O_DEPRECATED
from bulkfetch.cli.options import FILE
from bulkfetch.config import RunConfig
from bulkfetch.errors import BulkfetchError, ManifestError, UsageError
from bulkfetch.report.contents import MAX_THUMBS
from bulkfetch.report.page import write_html_report

__all__ = ["report_command", "short_o_for_report"]


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
@click.option("--ledger", type=FILE, help="Ledger file [default: OUT/bulkfetch-ledger.json].")
@click.option(
    "--html",
    "-H",
    "--output",
    "html",
    type=FILE,
    help="The HTML file to write [default: OUT/report.html] (--output: its old name).",
)
@click.option("--manifest", "-m", type=FILE, help="Manifest [default: the one the ledger names].")
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


def short_o_for_report(
    short_o: Path | None, *, out: Path | None, html: Path | None
) -> tuple[Path | None, Path | None, str]:
    """``report -o X``: the output folder (as ``-o`` is everywhere), unless it is the old
    spelling of ``--html`` (given with ``--out``, or naming an ``.html`` file or a file
    that exists). Returns ``(out, html, deprecation warning or "")``."""
    if short_o is None:
        return out, html, ""
    is_page = short_o.suffix.lower() in (".html", ".htm") or short_o.is_file()
    if html is None and (out is not None or is_page):
        return out, short_o, SHORT_O_DEPRECATED.format(command="report", flag="--html")
    if out is not None:
        raise UsageError("-o is --out: give one of them")
    return short_o, html, ""
