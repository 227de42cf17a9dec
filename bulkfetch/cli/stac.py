"""``bulkfetch stac``, and ``run --stac``: write the STAC catalog of a destination's done jobs.

What goes into the catalog, and from where, is :mod:`bulkfetch.stac.refresh`'s.

Exit codes as for every command: 0 written, 2 no ledger or a bad ``--manifest``, 4 the
catalog cannot be written or the ledger is damaged, 5 another ``bulkfetch stac`` is
writing this catalog.
"""

from __future__ import annotations

import logging
from pathlib import Path

import click

from bulkfetch.api import exit_code_for
from bulkfetch.cli._util import fail
from bulkfetch.config import RunConfig
from bulkfetch.errors import BulkfetchError
from bulkfetch.manifest.jobs import Manifest
from bulkfetch.sink.destination import display, store_url
from bulkfetch.stac.catalog import CATALOG
from bulkfetch.stac.refresh import Refreshed, refresh_catalog
from bulkfetch.units import counted

__all__ = ["refresh_after_run", "stac_command", "summary_line"]

log = logging.getLogger(__name__)


def summary_line(out: Path, result: Refreshed) -> str:
    p = result.published
    kept = f"; {result.kept} kept from the catalog" if result.kept else ""
    where = f"{display(out)}/{CATALOG}" if store_url(out) else out / CATALOG
    return (
        f"{where}: {counted(result.items, 'item')} in "
        f"{counted(result.collections, 'collection')} "
        f"({p.written} files written, {p.unchanged} unchanged, {p.removed} removed{kept})"
    )


@click.command("stac")
@click.option(
    "--out",
    "-o",
    type=click.Path(file_okay=False, path_type=Path),
    help="The destination: the folder the images are in, or their bucket (s3://bucket/prefix...).",
)
@click.option(
    "--ledger",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Ledger file [default: OUT/bulkfetch-ledger.json].",
)
@click.option(
    "--manifest",
    "-m",
    "manifests",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Describe jobs from this manifest (repeatable) [default: the manifests the "
    "ledger remembers runs of].",
)
def stac_command(out: Path | None, ledger: Path | None, manifests: tuple[Path, ...]) -> None:
    """Write a static STAC catalog of the done jobs: OUT/catalog.json, one Item per image.

    Links are relative: the folder can be moved or synced as a whole. Reads the ledger
    read-only (safe while a run is going on); never touches the images.
    """
    if ledger is None and out is None:
        raise click.UsageError("give --out DIR or --ledger PATH")
    ledger_path = ledger if ledger is not None else RunConfig(out=out or Path()).ledger_path
    out_dir = out if out is not None else ledger_path.parent
    try:
        result = refresh_catalog(out_dir, ledger_path, manifests=manifests)
    except BulkfetchError as exc:
        fail(exc)
    for note in result.notes:
        click.echo(f"warning: {note}", err=True)
    click.echo(summary_line(out_dir, result))


def refresh_after_run(config: RunConfig, manifest: Manifest, code: int, *, quiet: bool) -> int:
    """``run --stac``: refresh the catalog after a run; the exit code to leave with.

    A catalog that cannot be written turns a clean run's 0 into that error's code; a run
    that already failed keeps its own code (the catalog's error is still printed).
    """
    try:
        result = refresh_catalog(config.out, config.ledger_path, loaded=manifest)
    except BulkfetchError as exc:
        click.echo(f"bulkfetch: error: STAC catalog not refreshed: {exc}", err=True)
        return code or exit_code_for(exc)
    for note in result.notes:
        log.warning("stac: %s", note)
    if not quiet:
        click.echo(summary_line(config.out, result), err=True)
    return code
