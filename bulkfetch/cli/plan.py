"""``bulkfetch plan`` and ``bulkfetch validate``: what a run would do, before anything is sent.

``plan`` reads the manifest, the ledger (read-only) and the destination, and prints the
actions and their cost; ``run --dry-run`` prints the same (:func:`print_plan`).
``validate`` checks a manifest alone. Both may ask EOS about the manifest's colormaps
(:func:`check_colormaps`); nothing else is sent.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import click
import orjson

from bulkfetch.cli._util import fail as _fail
from bulkfetch.cli._util import rate_option as _rate
from bulkfetch.cli.options import FILE, config_from, run_options
from bulkfetch.colormaps.check import check_colormaps as _ask_eos
from bulkfetch.colormaps.listing import colormaps_used
from bulkfetch.config import DEFAULT_API_URL, Rate, RunConfig, load_api_key
from bulkfetch.errors import BulkfetchError, UsageError
from bulkfetch.ledger import Ledger
from bulkfetch.manifest.cache import cache_path, load_manifest_cached
from bulkfetch.manifest.jobs import Job, Manifest, load_manifest
from bulkfetch.plan import ACTION_TEXT, make_plan
from bulkfetch.sink.destination import store_url
from bulkfetch.sink.factory import open_sink
from bulkfetch.units import counted, duration_text

__all__ = ["check_colormaps", "plan_command", "print_plan", "validate_command"]


@click.command("plan")
@click.argument("manifest", type=FILE)
@run_options
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@click.pass_context
def plan_command(ctx: click.Context, /, manifest: Path, as_json: bool, **options: Any) -> None:
    """Show what a run of MANIFEST would do and cost, without creating anything.

    The manifest's colormaps are checked with EOS (with the key, if there is one; see
    --no-colormap-check); nothing else is sent.
    """
    try:
        config = config_from(ctx, manifest, dict(options))
        jobs = load_manifest_cached(manifest, cache_path(config.ledger_path), write=False)
        if config.colormap_check:
            api_key_file = options.get("api_key_file")
            check_colormaps(jobs.jobs, config.api_url, api_key_file, config.colormap_rate)
        print_plan(manifest, config, as_json=as_json, jobs=jobs)
    except BulkfetchError as exc:
        _fail(exc)


def check_colormaps(
    jobs: Sequence[Job], api_url: str, api_key_file: Path | None, rate: Rate
) -> None:
    """Ask EOS about the jobs' colormaps; warn about what could not be checked. Without a
    key the check is skipped with a warning (``plan`` needs no key otherwise)."""
    if not colormaps_used(jobs):
        return
    try:
        key = load_api_key(api_key_file)
    except UsageError as exc:
        click.echo(f"bulkfetch: warning: colormaps not checked: {exc}", err=True)
        return
    check = functools.partial(_ask_eos, jobs, api_url=api_url, key=key, rate=rate)
    for note in anyio.run(check):
        click.echo(f"bulkfetch: warning: {note}", err=True)


def print_plan(
    manifest: Path, config: RunConfig, *, as_json: bool, jobs: Manifest | None = None
) -> None:
    """Print what a run of ``manifest`` with ``config`` would do (``plan``, ``run --dry-run``)."""
    # A dry run reads a cache that matches, and writes none: it must leave no file behind.
    if jobs is None:
        jobs = load_manifest_cached(manifest, cache_path(config.ledger_path), write=False)
    if config.shard is not None:
        jobs = config.shard.select(jobs)
    sink = open_sink(config.out)
    with Ledger.open(config.ledger_path, readonly=True) as book:
        found = []
        if store_url(config.out):  # HEADs of the done jobs' objects, as a run makes them
            found = anyio.run(sink.verify, book.records(), jobs.jobs)
        result = make_plan(
            jobs, book, config, file_ok=lambda r: sink.file_ok(r.path, r.size), found=found
        )
    if as_json:
        click.echo(orjson.dumps(result.to_json(), option=orjson.OPT_INDENT_2).decode())
        return
    click.echo(f"{manifest}: {result.jobs} jobs; ledger {config.ledger_path}")
    for action, n in result.actions.items():
        click.echo(f"  {ACTION_TEXT.get(action, action):<22} {n}")
    if result.changed:
        click.echo(f"  changed since the last run (new parameters): {len(result.changed)}")
        for path in result.changed[:10]:
            click.echo(f"    {path}")
    if result.removed:
        click.echo(f"  in the ledger, no longer in the manifest: {result.removed}")
    click.echo(
        f"cost: {result.creates} creations, about {result.status_calls} status calls "
        f"({result.polls_per_job:.2f} per job); about {duration_text(result.seconds)} at "
        f"{config.create_rate} / {config.status_rate}"
        + (f"; limited by {result.limited_by}" if result.limited_by else "")
    )


@click.command("validate")
@click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--online",
    is_flag=True,
    help="Also ask EOS whether the manifest's colormaps exist (needs the key).",
)
@click.option(
    "--api-url",
    envvar="EOS_API_URL",
    default=DEFAULT_API_URL,
    show_default=True,
    help="With --online: the task endpoint (env EOS_API_URL).",
)
@click.option("--api-key-file", type=FILE, help="With --online: the API key file.")
@click.option(
    "--colormap-rate",
    callback=_rate,
    default="10/min",
    show_default=True,
    help="With --online: colormap checks allowed per key.",
)
def validate_command(
    manifest: Path, online: bool, api_url: str, api_key_file: Path | None, colormap_rate: Rate
) -> None:
    """Check MANIFEST without sending anything (exit 0 if valid, 2 if not).

    With --online, the colormaps are checked with EOS too (an unknown one: exit 2).
    """
    try:
        result = load_manifest(manifest)
        if online:
            load_api_key(api_key_file)  # --online without a key is a usage error
            check_colormaps(result.jobs, api_url, api_key_file, colormap_rate)
    except BulkfetchError as exc:
        _fail(exc)
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    n = len(result.jobs)
    click.echo(f"{manifest}: {counted(n, 'valid job')}")
