"""The ``bulkfetch`` command: a thin layer over ``bulkfetch.api`` and the simulator.

Errors a user can fix are printed as one clear message (a manifest's as one line per
problem) and exit with the code documented in ``bulkfetch.api``; never a traceback.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import logging
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, ClassVar

import anyio
import click
import orjson

from . import __version__
from ._cli_util import apply_config_file
from ._cli_util import fail as _fail
from ._cli_util import rate_option as _rate
from ._malloc import tune_malloc
from .api import EXIT_OK, run_async
from .config import (
    CONFIG_NAME,
    DEFAULT_API_URL,
    RunConfig,
    load_api_key,
    parse_duration,
)
from .destination import display, open_sink, store_url
from .engine import Run
from .errors import BulkfetchError, UsageError
from .ledger import JobState, Ledger
from .logs import setup_logging
from .manifest import load_manifest
from .manifest_cache import cache_path, load_manifest_cached
from .plan import make_plan
from .report import build_report
from .units import duration_text, size_text

log = logging.getLogger("bulkfetch")

__all__ = ["main"]


class _LazyGroup(click.Group):
    """A group whose other modules' commands are imported when one is run or listed.

    ``run`` should not pay at every start for importing the simulator, the HTML report
    and scene search (PIL, aiohttp.web): about a third of the CLI's import time.
    """

    #: name -> (module, attribute) of the command
    LAZY: ClassVar[dict[str, tuple[str, str]]] = {
        "report": ("bulkfetch.report_html", "report_command"),
        "search": ("bulkfetch.search_cli", "search_command"),
        "simulate": ("bulkfetch.simulator.cli", "simulate"),
        "stac": ("bulkfetch.stac_cli", "stac_command"),
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.LAZY})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.LAZY and cmd_name not in self.commands:
            module, attr = self.LAZY[cmd_name]
            command = getattr(importlib.import_module(module), attr)
            assert isinstance(command, click.Command)
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(
    cls=_LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="bulkfetch")
def cli() -> None:
    """Download EOS "Download visual" images in bulk, at the API's rate limit, resumably."""


def _duration(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except UsageError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


_PATH = click.Path(dir_okay=False, path_type=Path)
#: Options shared by ``run`` and ``plan``; each may also be set in a bulkfetch.toml.
RUN_OPTIONS = [
    click.option(
        "--out",
        "-o",
        type=click.Path(file_okay=False, path_type=Path),
        help="Folder for the images (and, by default, the ledger), or s3://bucket/prefix, "
        "gs://bucket/prefix or az://container/prefix.",
    ),
    click.option(
        "--ledger",
        type=_PATH,
        help="Ledger file [default: OUT/bulkfetch-ledger.json; for a bucket OUT, a file "
        "named after it in the user's state directory].",
    ),
    click.option(
        "--config",
        "config_file",
        type=_PATH,
        help="Options from this TOML file [default: bulkfetch.toml beside MANIFEST].",
    ),
    click.option(
        "--api-url",
        envvar="EOS_API_URL",
        default=DEFAULT_API_URL,
        show_default=True,
        help="The task endpoint (env EOS_API_URL).",
    ),
    click.option(
        "--api-key-file", type=_PATH, help="Read the API key from this file instead of EOS_API_KEY."
    ),
    click.option(
        "--create-rate",
        callback=_rate,
        default="10/min",
        show_default=True,
        help="Task creations allowed per key: N/s, N/min or N/h.",
    ),
    click.option(
        "--status-rate",
        callback=_rate,
        default="10/min",
        show_default=True,
        help="Status calls (downloads included) allowed per key.",
    ),
    click.option(
        "--learn-rates",
        is_flag=True,
        help="Probe above the configured rates when the server allows it.",
    ),
    click.option(
        "--max-in-flight",
        type=click.IntRange(min=1),
        help="Tasks created and not yet downloaded, at most [default: sized from the rates].",
    ),
    click.option(
        "--max-creates-per-job",
        "max_creates",
        type=click.IntRange(min=1),
        default=4,
        show_default=True,
        help="Creations per job per run (expired tasks are recreated).",
    ),
    click.option(
        "--max-duration",
        callback=_duration,
        help="Time box, e.g. 50m or 2h: stop creating when a new task could not be "
        "seen through in time; exit 75 with work left.",
    ),
    click.option(
        "--max-creates",
        "max_creates_run",
        type=click.IntRange(min=0),
        help="Creations allowed in this run (exit 75 when reached with work left).",
    ),
    click.option(
        "--max-creates-per-day",
        "max_creates_day",
        type=click.IntRange(min=0),
        help="Creations allowed per UTC day, across runs (counted in the ledger).",
    ),
    click.option(
        "--max-outage",
        callback=_duration,
        default="30m",
        show_default=True,
        help="How long a lane waits out a server failing every request before the "
        "failures count against jobs.",
    ),
    click.option("--report", type=_PATH, help="Write a JSON summary of the run here."),
    click.option(
        "--retry-failed", is_flag=True, help="Try failed jobs again now, quarantined ones included."
    ),
]


def _run_options(fn: Any) -> Any:
    for option in reversed(RUN_OPTIONS):
        fn = option(fn)
    return fn


def _config_from(ctx: click.Context, manifest: Path, params: dict[str, Any]) -> RunConfig:
    """Merge flags, the TOML file and defaults (in that order) into a RunConfig."""
    file = params.pop("config_file")
    if file is None and (manifest.parent / CONFIG_NAME).is_file():
        file = manifest.parent / CONFIG_NAME
    if file is not None:
        apply_config_file(ctx, file, params)
    for name in ("api_key_file",):
        params.pop(name, None)
    if params.get("out") is None:
        raise UsageError("give --out DIR (or 'out' in the config file)")
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    return RunConfig(**{k: v for k, v in params.items() if k in fields})


@cli.command()
@click.argument("manifest", type=_PATH)
@_run_options
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
def run(
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
        config = _config_from(ctx, manifest, merged)  # (merges bulkfetch.toml into merged)
        if dry_run:
            _print_plan(manifest, config, as_json=False)
            return
        key = load_api_key(api_key_file)
        jobs = load_manifest_cached(manifest, cache_path(config.ledger_path))
        progress = None if quiet else _progress_for(sys.stderr.isatty(), progress_interval)
        result = anyio.run(_run_cli, jobs, config, key, progress)
    except BulkfetchError as exc:
        _fail(exc)
    level = logging.INFO if result.exit_code == EXIT_OK else logging.WARNING
    log.log(level, "%s (exit %d)", result.outcome, result.exit_code)
    failed = [row for row in result.jobs if row["state"] == JobState.FAILED.value]
    for row in failed[:20]:
        log.warning(
            "failed: %s %s %s: %s",
            row["key"][:12],
            row.get("view_id", ""),
            row.get("bm_type", ""),
            row.get("error", ""),
        )
    if len(failed) > 20:
        log.warning(
            "... and %d more failed jobs (see the report or 'bulkfetch status')", len(failed) - 20
        )
    if not quiet:
        click.echo(f"files in {display(config.out)}", err=True)
    code = result.exit_code
    if merged.get("stac"):
        from .stac_cli import refresh_after_run

        code = refresh_after_run(config, jobs, code, quiet=quiet)
    sys.exit(code)


@cli.command()
@click.argument("manifest", type=_PATH)
@_run_options
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@click.pass_context
def plan(ctx: click.Context, /, manifest: Path, as_json: bool, **options: Any) -> None:
    """Show what a run of MANIFEST would do and cost, without sending anything."""
    try:
        _print_plan(manifest, _config_from(ctx, manifest, dict(options)), as_json=as_json)
    except BulkfetchError as exc:
        _fail(exc)


def _print_plan(manifest: Path, config: RunConfig, *, as_json: bool) -> None:
    # A dry run reads a cache that matches, and writes none: it must leave no file behind.
    jobs = load_manifest_cached(manifest, cache_path(config.ledger_path), write=False)
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
        click.echo(f"  {action:<17} {n}")
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
    async def bar(engine: Run) -> None:
        from tqdm import tqdm

        c = engine.counters
        with tqdm(total=c.jobs, unit="job", dynamic_ncols=True, file=sys.stderr) as t:
            while True:
                t.n = c.done + c.failed
                t.set_postfix_str(
                    f"failed={c.failed} in-flight={len(engine.poller) + c.creating} "
                    f"{size_text(c.bytes)}",
                    refresh=False,
                )
                t.refresh()
                await anyio.sleep(0.5)

    async def lines(engine: Run) -> None:
        c = engine.counters
        start = time.monotonic()
        while True:
            await anyio.sleep(interval)
            finished = c.done + c.failed
            fetched = c.done - c.skipped_done
            elapsed = time.monotonic() - start
            remaining = c.jobs - finished
            eta = f", ETA {duration_text(remaining * elapsed / fetched)}" if fetched else ""
            log.info(
                "progress: %d/%d done, %d failed, %d in flight, %s%s",
                c.done,
                c.jobs,
                c.failed,
                len(engine.poller) + c.creating,
                size_text(c.bytes),
                eta,
            )

    return bar if tty else lines


@cli.command()
@click.option("--ledger", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "-o", type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the full report as JSON.")
def status(ledger: Path | None, out: Path | None, as_json: bool) -> None:
    """Show what a ledger holds (safe while a run is going on)."""
    if ledger is None and out is None:
        raise click.UsageError("give --ledger PATH or --out DIR")
    path = ledger if ledger is not None else RunConfig(out=out or Path()).ledger_path
    if not path.exists():
        _fail(UsageError(f"no ledger at {path}"))
    try:
        with Ledger.open(path, readonly=True) as book:
            report = build_report(manifest=None, ledger=book)
    except BulkfetchError as exc:
        _fail(exc)
    if as_json:
        click.echo(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
        return
    click.echo(f"ledger {path}: {report['jobs']} jobs")
    for state, n in report["states"].items():
        if n:
            click.echo(f"  {state:<9} {n}")
    for reason, n in list(report["failures_by_reason"].items())[:10]:
        click.echo(f"  failed x{n}: {reason}")


@cli.command()
@click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
def validate(manifest: Path) -> None:
    """Check MANIFEST without sending anything (exit 0 if valid, 2 if not)."""
    try:
        result = load_manifest(manifest)
    except BulkfetchError as exc:
        _fail(exc)
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    n = len(result.jobs)
    click.echo(f"{manifest}: {n} valid job{'s' if n != 1 else ''}")


@cli.command()
@click.option(
    "--out",
    "-o",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("demo-output"),
    show_default=True,
)
@click.option(
    "--from-fields",
    is_flag=True,
    help="Start from the sample fields: search the scenes, write the manifest, run it.",
)
def demo(out: Path, from_fields: bool) -> None:
    """Run the sample manifest against a simulator started in this process."""
    from .demo import run_demo

    setup_logging()
    try:
        code = anyio.run(functools.partial(run_demo, out, from_fields=from_fields))
    except BulkfetchError as exc:
        _fail(exc)
    sys.exit(code)


def main() -> None:
    """Console entry point."""
    tune_malloc()  # (why: see _malloc)
    # Not click's standalone mode: it turns Ctrl-C into "Aborted!" and exit 1, which cron
    # would read as "jobs failed". An interrupt is 130 wherever it lands.
    try:
        cli.main(prog_name="bulkfetch", standalone_mode=False)
    except (KeyboardInterrupt, click.exceptions.Abort):
        click.echo("bulkfetch: interrupted", err=True)
        sys.exit(130)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    sys.exit(EXIT_OK)


if __name__ == "__main__":
    main()
