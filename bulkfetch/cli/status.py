"""``bulkfetch status``: what a ledger holds, read-only (safe while a run is going on)."""

from __future__ import annotations

from pathlib import Path

import click
import orjson

from bulkfetch.cli._util import fail as _fail
from bulkfetch.cli.options import FILE, FOLDER
from bulkfetch.cli.summary import failure_lines
from bulkfetch.config import RunConfig
from bulkfetch.errors import BulkfetchError, UsageError
from bulkfetch.ledger import Ledger
from bulkfetch.report.data import build_report, ledger_manifest

__all__ = ["status_command"]


@click.command("status")
@click.option("--ledger", type=FILE, help="Ledger file [default: OUT/bulkfetch-ledger.json].")
@click.option("--out", "-o", type=FOLDER, help="The run's output folder (where its ledger is).")
@click.option(
    "--manifest",
    "-m",
    "manifest_path",
    type=FILE,
    help="The manifest, for each job's view_id, bm_type and name "
    "[default: the one the ledger names].",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the full report as JSON: counts, failure groups, and every job with its "
    "key, state, view_id, bm_type and name.",
)
def status_command(
    ledger: Path | None, out: Path | None, manifest_path: Path | None, as_json: bool
) -> None:
    """Show what a ledger holds (safe while a run is going on): jobs by state and
    failures grouped by reason."""
    if ledger is None and out is None:
        raise click.UsageError("give --ledger PATH or --out DIR")
    path = ledger if ledger is not None else RunConfig(out=out or Path()).ledger_path
    if not path.exists():
        _fail(UsageError(f"no ledger at {path}"))
    try:
        with Ledger.open(path, readonly=True) as book:
            manifest, note = ledger_manifest(book, manifest_path)
            report = build_report(manifest=manifest, ledger=book, ledger_jobs=True)
    except BulkfetchError as exc:
        _fail(exc)
    if note:
        click.echo(f"warning: {note}", err=True)
    if as_json:
        click.echo(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
        return
    click.echo(f"ledger {path}: {report['jobs']} jobs")
    for state, n in report["states"].items():
        if n:
            click.echo(f"  {state:<9} {n}")
    for line in failure_lines(report["failure_groups"]):
        click.echo(line)
