"""``bulkfetch search``: fields and dates in, a manifest ready for ``bulkfetch run`` out.

A thin layer over :func:`bulkfetch.search.search_async`. Exit codes follow ``run``'s:
0 the manifest was written (or no scene matched: then nothing is written, and it says
so), 1 some field's search failed (nothing written; the cache keeps what was found), 2
bad usage or fields file (nothing sent), 3 key or URL refused, 4 the manifest could not be
written, 130/143 interrupted (the cache is saved).
"""

from __future__ import annotations

import datetime as dt
import re
import signal
import sys
from pathlib import Path
from typing import Any

import anyio
import click
import orjson

from bulkfetch.api import EXIT_FAILED, EXIT_OK, EXIT_SIGINT, EXIT_SIGTERM
from bulkfetch.cli._util import SHORT_O_DEPRECATED, apply_config_file, fail, rate_option
from bulkfetch.config import CONFIG_NAME, DEFAULT_API_URL, load_api_key
from bulkfetch.errors import BulkfetchError, UsageError, first_error
from bulkfetch.logs import setup_logging
from bulkfetch.scene_search.cache import default_cache_path
from bulkfetch.scene_search.client import PAGE_SIZE
from bulkfetch.scene_search.finder import (
    SearchResult,
    check_output,
    search_async,
    search_url_for,
    write_manifest,
)
from bulkfetch.scene_search.scenes import DEFAULT_TEMPLATE, TEMPLATE_KEYS
from bulkfetch.urls import check_service_url

__all__ = ["parse_date", "search_command"]

_RELATIVE = re.compile(r"today\s*-\s*(\d+)\s*d?", re.I)


def parse_date(text: str, *, today: dt.date | None = None) -> dt.date:
    """``2023-05-01``, ``today``, ``yesterday`` or ``today-30d`` (cron-friendly)."""
    today = today or dt.datetime.now(dt.UTC).date()
    value = text.strip().lower()
    if value == "today":
        return today
    if value == "yesterday":
        return today - dt.timedelta(days=1)
    relative = _RELATIVE.fullmatch(value)
    if relative:
        return today - dt.timedelta(days=int(relative.group(1)))
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise UsageError(f"date {text!r} is not YYYY-MM-DD, today or today-Nd") from None


def _date(ctx: click.Context, param: click.Parameter, value: str | None) -> dt.date | None:
    if value is None:  # not given: maybe in the config file; checked once that is read
        return None
    try:
        return parse_date(value)
    except UsageError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


def _params(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in values:
        name, sep, text = item.partition("=")
        if not sep or not name.strip():
            raise click.BadParameter(f"{item!r} is not NAME=VALUE", ctx, param)
        try:
            out[name.strip()] = orjson.loads(text)
        except orjson.JSONDecodeError:
            out[name.strip()] = text  # a bare word such as cubic or a colormap id
    return out


_TEMPLATE_HELP = ", ".join("{" + k + "}" for k in TEMPLATE_KEYS)


@click.command("search")
@click.argument("fields", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--from",
    "date_from",
    callback=_date,
    help="First date (YYYY-MM-DD, today, today-30d).  [required]",
)
@click.option("--to", "date_to", callback=_date, help="Last date, included.  [required]")
@click.option(
    "--manifest",
    "-m",
    "--output",
    "output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The manifest to write (.jsonl); --output and -o FILE are its old names "
    "(-o is deprecated: it is the output folder in the other commands).  [required]",
)
@click.option("-o", "short_o", type=click.Path(dir_okay=False, path_type=Path), hidden=True)
@click.option(
    "--dataset",
    "datasets",
    multiple=True,
    default=("sentinel2l2a",),
    show_default=True,
    help="sentinel2, sentinel2l2a, landsat8, landsat9, sentinel1, naip, modis... "
    "(repeatable: one request covers them all).",
)
@click.option(
    "--max-cloud",
    type=click.FloatRange(0, 100),
    help="Keep scenes with at most this cloud cover (%). It does not apply to a scene "
    "without cloud cover (Sentinel-1 radar has none): such scenes are kept.",
)
@click.option(
    "--min-coverage",
    type=click.FloatRange(0, 100),
    help="Keep scenes with at least this much valid data (%); a scene whose coverage "
    "is not reported is kept.",
)
@click.option(
    "--bm-type",
    "bm_types",
    multiple=True,
    default=("NDVI",),
    show_default=True,
    help="Band combination; one job per scene and bm_type (repeatable).",
)
@click.option(
    "--px-size", type=float, default=10.0, show_default=True, help="Output pixel size, metres."
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jpeg", "png", "tiff"]),
    help="Image format [EOS default: jpeg].",
)
@click.option(
    "--param",
    "params",
    multiple=True,
    callback=_params,
    help="Any other Download visual parameter, NAME=VALUE (e.g. levels=-1,1).",
)
@click.option(
    "--one-per-days",
    type=click.IntRange(min=1),
    help="At most one scene per field in each N days (the least cloudy).",
)
@click.option(
    "--best-per-month",
    type=click.IntRange(min=1),
    help="At most the K least cloudy scenes per field per month.",
)
@click.option(
    "--single-tile",
    is_flag=True,
    help="A field on a tile border takes its scenes from one tile only.",
)
@click.option(
    "--name-template",
    default=DEFAULT_TEMPLATE,
    show_default=True,
    help=f"Output names, from: {_TEMPLATE_HELP}.",
)
@click.option(
    "--id-property",
    help="The feature property holding each field's id "
    "[default: the feature id, else id, field_id or name].",
)
@click.option(
    "--api-url",
    envvar="EOS_API_URL",
    default=DEFAULT_API_URL,
    show_default=True,
    help="The task endpoint; the search URL is derived from it (env EOS_API_URL).",
)
@click.option(
    "--search-url",
    envvar="EOS_SEARCH_URL",
    help="The Search API [default: beside --api-url] (env EOS_SEARCH_URL).",
)
@click.option(
    "--api-key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Read the API key from this file instead of EOS_API_KEY.",
)
@click.option(
    "--search-rate",
    callback=rate_option,
    default="5/min",
    show_default=True,
    help="Search requests allowed per key (undocumented by EOS: kept low).",
)
@click.option(
    "--cache",
    "cache_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help=f"The search cache [default: {default_cache_path()}].",
)
@click.option("--no-cache", is_flag=True, help="Ask the API about everything; remember nothing.")
@click.option(
    "--settle-days",
    type=click.IntRange(min=0),
    default=10,
    show_default=True,
    help="Scenes of the last N days may still be published: always ask about them again.",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: one event per line, with run id.",
)
@click.option("--quiet", "-q", is_flag=True, help="Only warnings and errors.")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Check everything and say how many requests the search needs; send nothing.",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help=f"Options from this TOML file's [search] table [default: {CONFIG_NAME} beside "
    "the output, if it has one].",
)
@click.pass_context
def search_command(ctx: click.Context, /, fields: Path, **given: Any) -> None:
    """Find the scenes over each field of FIELDS and write a manifest of them.

    FIELDS is a GeoJSON FeatureCollection (or JSON Lines with geometry and id). One job
    per field × scene × bm_type, named {field}/{date}_{sensor}_{bm_type} unless
    --name-template says otherwise. Exit codes: 0 written (or nothing matched), 1 a
    field's search failed, 2 bad usage, 3 key or URL refused, 4 cannot write, 130/143
    interrupted.
    """
    short_o = given.pop("short_o")
    if short_o is not None:  # the old spelling: unambiguous here (no output folder)
        if given["output"] is not None:
            raise click.UsageError("-o is the old spelling of --manifest: give one of them")
        click.echo(
            "warning: " + SHORT_O_DEPRECATED.format(command="search", flag="--manifest (-m)"),
            err=True,
        )
        given["output"] = short_o
    if given["output"] is None:
        raise click.UsageError("give --manifest FILE (-m FILE): the manifest to write")
    try:
        opts = _with_config_file(ctx, given)
    except BulkfetchError as exc:
        fail(exc)
    _search(fields, **opts)


def _search(
    fields: Path,
    date_from: dt.date,
    date_to: dt.date,
    output: Path,
    px_size: float,
    fmt: str | None,
    params: dict[str, Any],
    api_url: str,
    search_url: str | None,
    api_key_file: Path | None,
    cache_path: Path | None,
    no_cache: bool,
    log_format: str,
    quiet: bool,
    dry_run: bool,
    **options: Any,
) -> None:
    """The command, once flags and the config file are merged."""
    setup_logging(fmt=log_format, quiet=quiet)
    job_params: dict[str, Any] = {"px_size": int(px_size) if px_size.is_integer() else px_size}
    if fmt is not None:
        job_params["format"] = fmt
    job_params |= params
    try:
        check_output(output)
        if search_url is None:
            check_service_url(api_url, "--api-url")
        check_service_url(search_url or search_url_for(api_url), "--search-url")
        kwargs: dict[str, Any] = {
            "fields": fields,
            "date_from": date_from,
            "date_to": date_to,
            "params": job_params,
            "search_url": search_url or search_url_for(api_url),
            "cache": False if no_cache else (cache_path or True),
            **options,
        }
        if dry_run:
            _print_plan(kwargs)
            return
        kwargs["api_key"] = load_api_key(api_key_file)
        result = anyio.run(_search_until_signal, kwargs)
        if result is None:
            return
        _finish(result, output, quiet=quiet)
    except BulkfetchError as exc:
        fail(exc)


def _with_config_file(ctx: click.Context, given: dict[str, Any]) -> dict[str, Any]:
    """The options given, filled in from the [search] table of the config file; the two
    dates must then be known."""
    opts = dict(given)
    file: Path | None = opts.pop("config_file")
    if file is None and (opts["output"].parent / CONFIG_NAME).is_file():
        file = opts["output"].parent / CONFIG_NAME
    if file is not None:
        apply_config_file(ctx, file, opts, table="search")
    for name, flag in (("date_from", "from"), ("date_to", "to")):
        if opts.get(name) is None:
            where = f" (or '{flag}' in the [search] table of {file})" if file else ""
            raise UsageError(f"give --{flag} DATE{where}")
    return opts


def _print_plan(kwargs: dict[str, Any]) -> None:
    async def plan() -> SearchResult:
        return await search_async(**kwargs, dry_run=True)

    s = anyio.run(plan).stats
    pairs = s.fields * len(dict.fromkeys(kwargs["datasets"]))
    minutes = s.questions * kwargs["search_rate"].interval / 60
    click.echo(
        f"{s.fields} fields valid; {s.from_cache} of {pairs} field × dataset questions "
        f"answered by the cache; at least {s.questions} search requests to send (one more "
        f"per extra page of {PAGE_SIZE}), about {minutes:.1f} min at {kwargs['search_rate']}. "
        "Nothing was sent."
    )


async def _search_until_signal(kwargs: dict[str, Any]) -> SearchResult | None:
    """The search, stopped cleanly (cache saved) by SIGINT or SIGTERM."""
    result: list[SearchResult] = []
    stopped: list[int] = []
    try:
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for signum in signals:
                        stopped.append(signum)
                        tg.cancel_scope.cancel()
                        return

            async def work() -> None:
                result.append(await search_async(**kwargs))
                tg.cancel_scope.cancel()

            tg.start_soon(watch)
            tg.start_soon(work)
    except BaseExceptionGroup as group:
        raise first_error(group) from None
    if stopped:
        click.echo("bulkfetch: search interrupted; nothing written (the cache is saved)", err=True)
        sys.exit(EXIT_SIGTERM if stopped[0] == signal.SIGTERM else EXIT_SIGINT)
    return result[0] if result else None


def _finish(result: SearchResult, output: Path, *, quiet: bool) -> None:
    s = result.stats
    summary = (
        f"{s.fields} fields: {s.requests} search requests ({s.from_cache} answered by the "
        f"cache, {s.rate_limited} rate-limited), {s.scenes_found} scenes found, "
        f"{s.scenes_kept} kept"
    )
    if result.failed:
        click.echo(
            f"bulkfetch: {summary}; the search failed for {len(result.failed)} field(s):", err=True
        )
        for field_id, reason in list(result.failed.items())[:20]:
            click.echo(f"  {field_id}: {reason}", err=True)
        click.echo(f"nothing written to {output}; run again to retry those fields.", err=True)
        sys.exit(EXIT_FAILED)
    if not result.jobs:
        click.echo(
            f"bulkfetch: {summary}; no scene matched, so {output} was not written.", err=True
        )
        sys.exit(EXIT_OK)
    n = write_manifest(result, output)
    if not quiet:
        click.echo(f"bulkfetch: {summary} → {n} jobs written to {output}", err=True)
