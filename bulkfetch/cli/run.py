"""``bulkfetch run``: download every job of a manifest, showing progress, ending with a summary.

Errors a user can fix are printed as one clear message (a manifest's as one line per
problem) and exit with the code documented in ``bulkfetch.api``; never a traceback.
"""

from __future__ import annotations

import functools
import logging
import shlex
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import anyio
import click

from bulkfetch.api import EXIT_OK, run_async
from bulkfetch.cli._util import fail as _fail
from bulkfetch.cli.options import FILE, config_from, run_options
from bulkfetch.cli.plan import print_plan
from bulkfetch.cli.progress import show_bar, show_lines
from bulkfetch.cli.summary import make_summary, summary_fields, summary_lines
from bulkfetch.config import RunConfig, load_api_key
from bulkfetch.engine import Run
from bulkfetch.errors import BulkfetchError
from bulkfetch.logs import setup_logging
from bulkfetch.manifest.cache import cache_path, load_manifest_cached
from bulkfetch.sink.destination import display

log = logging.getLogger("bulkfetch")

__all__ = ["run_command"]


@click.command("run")
@click.argument("manifest", type=FILE)
@run_options
@click.option("--dry-run", is_flag=True, help="Print what the run would do; send nothing.")
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: one event per line, with run id and job key.",
)
@click.option("--quiet", "-q", is_flag=True, help="Only warnings and errors.")
@click.option("--verbose", "-v", count=True, help="Log every poll.")
@click.option(
    "--progress-interval",
    type=click.FloatRange(min=1),
    default=60.0,
    show_default=True,
    help="Seconds between progress lines when not on a terminal.",
)
@click.option("--stac", is_flag=True, help="Refresh OUT/catalog.json (STAC) at the end.")
@click.pass_context
def run_command(
    ctx: click.Context,
    /,
    manifest: Path,
    dry_run: bool,
    log_format: str,
    quiet: bool,
    verbose: int,
    progress_interval: float,
    **options: Any,
) -> None:
    """Download every job of MANIFEST into OUT, carrying on from any earlier run.

    Exit codes: 0 all done, 1 jobs failed, 2 bad usage or manifest, 3 key or URL refused,
    4 storage problem, 5 ledger in use by another run, 75 stopped with work left (time box
    or quota: run again later), 130/143 interrupted.
    """
    setup_logging(fmt=log_format, quiet=quiet, verbose=verbose)
    api_key_file = options.get("api_key_file")
    try:
        merged = dict(options)
        config = config_from(ctx, manifest, merged)  # (merges bulkfetch.toml into merged)
        if dry_run:
            print_plan(manifest, config, as_json=False)
            return
        key = load_api_key(api_key_file)
        jobs = load_manifest_cached(manifest, cache_path(config.ledger_path))
        if config.shard is not None:
            jobs = config.shard.select(jobs)
        progress = None if quiet else _progress_for(sys.stderr.isatty(), progress_interval)
        result = anyio.run(_run_cli, jobs, config, key, progress)
    except BulkfetchError as exc:
        _fail(exc)
    code = result.exit_code
    if merged.get("stac"):
        from bulkfetch.cli.stac import refresh_after_run

        code = refresh_after_run(config, jobs, code, quiet=quiet)
    # Last, so the summary is the run's last word and its exit code the one exited with.
    summary = make_summary(
        result.counters.to_json(),
        result.jobs,
        exit_code=code,
        outcome=result.outcome,
        out=display(config.out),
        command=shlex.join(["bulkfetch", *sys.argv[1:]]),
        failure_groups=result.report.get("failure_groups", []),
    )
    if log_format == "json":
        level = logging.INFO if code == EXIT_OK else logging.WARNING
        log.log(level, "run summary: %s", result.outcome, extra={"fields": summary_fields(summary)})
    elif not quiet or code != EXIT_OK:
        for line in summary_lines(summary):
            click.echo(line, err=True)
    sys.exit(code)


async def _run_cli(
    jobs: Any,
    config: RunConfig,
    key: Any,
    progress: Callable[[Run], Coroutine[Any, Any, None]] | None,
) -> Any:
    return await run_async(
        jobs, out=config.out, api_key=key, handle_signals=True, config=config, progress=progress
    )


def _progress_for(tty: bool, interval: float) -> Callable[[Run], Coroutine[Any, Any, None]]:
    if tty:
        return show_bar
    return functools.partial(show_lines, every=interval)
