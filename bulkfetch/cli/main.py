"""The ``bulkfetch`` command: a thin layer over ``bulkfetch.api`` and the simulator.

Errors a user can fix are printed as one clear message (a manifest's as one line per
problem) and exit with the code documented in ``bulkfetch.api``; never a traceback.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import logging
import os
import shlex
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, ClassVar, NoReturn

import anyio
import click
import orjson

from bulkfetch import __version__
from bulkfetch._malloc import tune_malloc
from bulkfetch.api import EXIT_OK, run_async
from bulkfetch.cli._util import apply_config_file
from bulkfetch.cli._util import fail as _fail
from bulkfetch.cli._util import rate_option as _rate
from bulkfetch.cli.progress import show_bar, show_lines
from bulkfetch.cli.summary import failure_lines, make_summary, summary_fields, summary_lines
from bulkfetch.colormaps.check import check_colormaps
from bulkfetch.colormaps.listing import colormaps_used
from bulkfetch.config import (
    CONFIG_NAME,
    DEFAULT_API_URL,
    Rate,
    RunConfig,
    load_api_key,
    parse_duration,
)
from bulkfetch.engine import Run
from bulkfetch.errors import BulkfetchError, UsageError
from bulkfetch.ledger import Ledger
from bulkfetch.limiter.store import check_store_url
from bulkfetch.logs import setup_logging
from bulkfetch.manifest.cache import cache_path, load_manifest_cached
from bulkfetch.manifest.jobs import Job, Manifest, load_manifest
from bulkfetch.manifest.shard import Shard
from bulkfetch.plan import ACTION_TEXT, make_plan
from bulkfetch.report.data import build_report, ledger_manifest
from bulkfetch.sink.destination import display, open_sink, store_url
from bulkfetch.units import counted, duration_text
from bulkfetch.urls import check_service_url

log = logging.getLogger("bulkfetch")

__all__ = ["main"]


class _LazyGroup(click.Group):
    """A group whose other modules' commands are imported when one is run or listed.

    ``run`` should not pay at every start for importing the simulator, the HTML report
    and scene search (PIL, aiohttp.web): about a third of the CLI's import time.
    """

    #: name -> (module, attribute) of the command
    LAZY: ClassVar[dict[str, tuple[str, str]]] = {
        "colormaps": ("bulkfetch.cli.colormaps", "colormaps_command"),
        "report": ("bulkfetch.report.page", "report_command"),
        "search": ("bulkfetch.cli.search", "search_command"),
        "simulate": ("bulkfetch.simulator.cli", "simulate"),
        "stac": ("bulkfetch.cli.stac", "stac_command"),
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


def _shard(ctx: click.Context, param: click.Parameter, value: str | None) -> Shard | None:
    if value is None:
        return None
    try:
        return Shard.parse(value)
    except UsageError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


def _rate_store(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        return check_store_url(value)
    except UsageError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


_PATH = click.Path(dir_okay=False, path_type=Path)
_DIR = click.Path(file_okay=False, path_type=Path)
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
        help="Status calls (downloads included) allowed per key: N/s, N/min or N/h.",
    ),
    click.option(
        "--colormap-rate",
        callback=_rate,
        default="10/min",
        show_default=True,
        help="Colormap checks allowed per key (the manifest's colormaps are checked "
        "with EOS before the first creation).",
    ),
    click.option(
        "--colormap-check/--no-colormap-check",
        default=True,
        show_default=True,
        help="Ask EOS whether the manifest's colormaps exist before creating anything.",
    ),
    click.option(
        "--learn-rates",
        is_flag=True,
        help="Probe above the configured rates (up to 4x) when the server allows it.",
    ),
    click.option(
        "--save-status-calls",
        is_flag=True,
        help="Poll a task only once it is probably ready (fewer status calls, later finish), "
        "instead of using every status slot.",
    ),
    click.option(
        "--max-in-flight",
        type=click.IntRange(min=1),
        help="Tasks created and not yet downloaded, at most (a count) [default: sized from "
        "the rates].",
    ),
    click.option(
        "--max-creates-per-job",
        type=click.IntRange(min=1),
        default=4,
        show_default=True,
        help="Creations of one job in one run, at most (an expired task is created again).",
    ),
    click.option(
        "--max-duration",
        callback=_duration,
        help="Time box, a duration (90s, 50m, 2h): stop creating when a new task could not "
        "be seen through in time; exit 75 with work left.",
    ),
    click.option(
        "--max-creates",
        type=click.IntRange(min=0),
        help="Creations allowed in this run, a count (exit 75 when reached with work left).",
    ),
    click.option(
        "--max-creates-per-day",
        type=click.IntRange(min=0),
        help="Creations allowed per UTC day across runs, a count (kept in the ledger).",
    ),
    click.option(
        "--max-outage",
        callback=_duration,
        default="30m",
        show_default=True,
        help="How long, a duration (90s, 30m), a lane waits out a server failing every "
        "request before the failures count against jobs.",
    ),
    click.option(
        "--report",
        type=_PATH,
        help="Write the run's report to this JSON file: counts, requests per lane, failures "
        "by reason, every job.",
    ),
    click.option(
        "--first-contact-grace",
        callback=_duration,
        default="45s",
        show_default=True,
        help="Until the API has answered as the task API in this run, how long failures "
        "(connection refused, DNS, 5xx) may last before the URL is taken for a wrong one "
        "(exit 3). An HTML page stops the run at once.",
    ),
    click.option(
        "--retry-failed", is_flag=True, help="Try failed jobs again now, quarantined ones included."
    ),
    click.option(
        "--shard",
        callback=_shard,
        metavar="K/N",
        help="Run only part K of N of the manifest (by job key; K from 1), with its own "
        "ledger [default: OUT/bulkfetch-ledger.shard-K-of-N.json].",
    ),
    click.option(
        "--rate-store",
        envvar="BULKFETCH_RATE_STORE",
        callback=_rate_store,
        default="",
        metavar="URL",
        help="Where runs on one key share its rate: redis://HOST:PORT/DB across hosts, "
        "'none' for this run alone [default: a file under the user's cache folder, shared "
        "by the runs on this host] (env BULKFETCH_RATE_STORE).",
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
    store_url(params["out"])  # a scheme other than s3/gs/az: a usage error
    check_service_url(params["api_url"], "--api-url")
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


@cli.command()
@click.argument("manifest", type=_PATH)
@_run_options
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@click.pass_context
def plan(ctx: click.Context, /, manifest: Path, as_json: bool, **options: Any) -> None:
    """Show what a run of MANIFEST would do and cost, without creating anything.

    The manifest's colormaps are checked with EOS (with the key, if there is one; see
    --no-colormap-check); nothing else is sent.
    """
    try:
        config = _config_from(ctx, manifest, dict(options))
        jobs = load_manifest_cached(manifest, cache_path(config.ledger_path), write=False)
        if config.colormap_check:
            api_key_file = options.get("api_key_file")
            _check_colormaps(jobs.jobs, config.api_url, api_key_file, config.colormap_rate)
        _print_plan(manifest, config, as_json=as_json, jobs=jobs)
    except BulkfetchError as exc:
        _fail(exc)


def _check_colormaps(
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
    check = functools.partial(check_colormaps, jobs, api_url=api_url, key=key, rate=rate)
    for note in anyio.run(check):
        click.echo(f"bulkfetch: warning: {note}", err=True)


def _print_plan(
    manifest: Path, config: RunConfig, *, as_json: bool, jobs: Manifest | None = None
) -> None:
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


@cli.command()
@click.option("--ledger", type=_PATH, help="Ledger file [default: OUT/bulkfetch-ledger.json].")
@click.option("--out", "-o", type=_DIR, help="The run's output folder (where its ledger is).")
@click.option(
    "--manifest",
    "-m",
    "manifest_path",
    type=_PATH,
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
def status(
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


@cli.command()
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
@click.option("--api-key-file", type=_PATH, help="With --online: the API key file.")
@click.option(
    "--colormap-rate",
    callback=_rate,
    default="10/min",
    show_default=True,
    help="With --online: colormap checks allowed per key.",
)
def validate(
    manifest: Path, online: bool, api_url: str, api_key_file: Path | None, colormap_rate: Rate
) -> None:
    """Check MANIFEST without sending anything (exit 0 if valid, 2 if not).

    With --online, the colormaps are checked with EOS too (an unknown one: exit 2).
    """
    try:
        result = load_manifest(manifest)
        if online:
            load_api_key(api_key_file)  # --online without a key is a usage error
            _check_colormaps(result.jobs, api_url, api_key_file, colormap_rate)
    except BulkfetchError as exc:
        _fail(exc)
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    n = len(result.jobs)
    click.echo(f"{manifest}: {counted(n, 'valid job')}")


@cli.command()
@click.option(
    "--out",
    "-o",
    type=_DIR,
    help="Output folder [default: ./demo-output, or ./demo-fields-output with --from-fields].",
)
@click.option(
    "--from-fields",
    is_flag=True,
    help="Start from the sample fields: search the scenes, write the manifest, run it.",
)
def demo(out: Path | None, from_fields: bool) -> None:
    """Run the sample manifest against a simulator started in this process."""
    from bulkfetch.cli.demo import run_demo

    if out is None:  # each demo its own folder: one ledger, one manifest
        out = Path("demo-fields-output" if from_fields else "demo-output")

    setup_logging()
    try:
        code = anyio.run(functools.partial(run_demo, out, from_fields=from_fields))
    except BulkfetchError as exc:
        _fail(exc)
    sys.exit(code)


def main() -> None:
    """Console entry point."""
    tune_malloc()  # (why: see _malloc)
    try:
        code = _main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
        if not isinstance(exc.code, int | None):
            click.echo(str(exc.code), err=True)
    _exit(code)


def _main() -> int:
    # Not click's standalone mode: it turns Ctrl-C into "Aborted!" and exit 1, which cron
    # would read as "jobs failed". An interrupt is 130 wherever it lands.
    try:
        cli.main(prog_name="bulkfetch", standalone_mode=False)
    except (KeyboardInterrupt, click.exceptions.Abort):
        click.echo("bulkfetch: interrupted", err=True)
        return 130
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    return EXIT_OK


def _exit(code: int) -> NoReturn:
    """Exit with ``code``. After a bucket destination, skip the interpreter's finalisation:
    obstore's Tokio worker threads outlive the command, and one caught mid-task while the
    interpreter is torn down aborts the process (SIGABRT, seen once in CI after ``plan``
    had printed everything, exit -6 instead of 0), turning a finished command into a
    failure for cron. Everything is written and closed by then: flush and leave."""
    if "obstore" not in sys.modules:
        sys.exit(code)
    logging.shutdown()
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)
