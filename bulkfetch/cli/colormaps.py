"""``bulkfetch colormaps``: the colormaps EOS offers, for a manifest's ``colormap``.

A thin layer over :mod:`bulkfetch.colormaps.check`. The list is cached for a day; when EOS
cannot be asked, an older list from the cache is shown with a warning. Exit codes: 0
listed, 1 EOS could not be asked and nothing is cached, 2 bad usage, 3 the key is
refused.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import anyio
import click
import orjson

from bulkfetch.api import EXIT_FAILED
from bulkfetch.cli._util import fail, rate_option
from bulkfetch.colormaps.check import (
    TIMEOUT,
    ColormapCache,
    ColormapClient,
    ColormapLane,
    cached_colormaps,
    default_cache_path,
    offered_colormaps,
)
from bulkfetch.colormaps.listing import Colormap
from bulkfetch.config import DEFAULT_API_URL, ApiKey, Rate, api_root, load_api_key
from bulkfetch.errors import ApiError, BulkfetchError
from bulkfetch.limiter.lane import Limiter

__all__ = ["colormaps_command"]


@click.command("colormaps")
@click.option(
    "--type",
    "kind",
    type=click.Choice(["continuous", "discrete"], case_sensitive=False),
    help="Only colormaps of this type.",
)
@click.option("--json", "as_json", is_flag=True, help='Print [{"name": ..., "type": ...}].')
@click.option("--refresh", is_flag=True, help="Ask EOS even if the cached list is recent.")
@click.option(
    "--api-url",
    envvar="EOS_API_URL",
    default=DEFAULT_API_URL,
    show_default=True,
    help="The task endpoint; the colormap API is on the same host (env EOS_API_URL).",
)
@click.option(
    "--api-key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Read the API key from this file instead of EOS_API_KEY.",
)
@click.option(
    "--colormap-rate",
    callback=rate_option,
    default="10/min",
    show_default=True,
    help="Colormap requests allowed per key (undocumented by EOS: kept low).",
)
def colormaps_command(
    kind: str | None,
    as_json: bool,
    refresh: bool,
    api_url: str,
    api_key_file: Path | None,
    colormap_rate: Rate,
) -> None:
    """List the colormaps EOS offers, for a job's "colormap" (cached for a day).

    A job's colormap is one of these names, or the 32-hex id of a custom colormap made
    in EOS (such ids are not listed here; run and plan check them). Exit codes: 0
    listed, 1 EOS could not be asked, 2 bad usage, 3 key refused.
    """
    try:
        key = load_api_key(api_key_file)
        cache = ColormapCache(default_cache_path())
        kind = kind.lower() if kind else None
        colormaps = anyio.run(_list, api_url, key, colormap_rate, cache, kind, refresh)
    except BulkfetchError as exc:
        fail(exc)
    if as_json:
        click.echo(orjson.dumps([c.to_json() for c in colormaps]).decode())
        return
    width = max((len(c.name) for c in colormaps), default=0)
    for colormap in sorted(colormaps, key=lambda c: (c.name.casefold(), c.name)):
        click.echo(f"{colormap.name:<{width}}  {colormap.type or ''}".rstrip())


async def _list(
    api_url: str, key: ApiKey, rate: Rate, cache: ColormapCache, kind: str | None, refresh: bool
) -> list[Colormap]:
    async with ColormapClient(api_root(api_url), key, timeout=TIMEOUT) as client:
        lane = ColormapLane(client, Limiter("colormap", rate))
        try:
            colormaps = await offered_colormaps(lane, cache, kind=kind, refresh=refresh)
        except (ApiError, ValueError) as exc:
            if isinstance(exc, ApiError) and exc.fatal:
                raise
            root = str(client.api_url)
            stale = cached_colormaps(cache, root, kind, now=time.time(), max_age=math.inf)
            if stale is None:
                click.echo(f"bulkfetch: could not list the colormaps: {exc}", err=True)
                sys.exit(EXIT_FAILED)
            click.echo(
                f"bulkfetch: warning: EOS could not be asked ({exc}); "
                "this list is from an older cache",
                err=True,
            )
            return stale
    cache.save()
    return colormaps
