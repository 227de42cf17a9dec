"""``simulate``: serve the EOS simulator from the command line until Ctrl-C.

Contract: the click command ``simulate`` (add it to a group with ``cli.add_command(simulate)``)
builds a ``SimConfig`` from its options, prints a line naming the task API URL, then one
naming the Search API URL, and serves.
The accepted key is read from the environment variable named by ``--api-key-env`` (default
``EOS_API_KEY``), falling back on ``TEST_API_KEY``; the key itself is never printed.
Rates are written ``N/s``, ``N/min`` or ``N/h`` (``parse_rate``).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, get_args

import click

from bulkfetch.config import Rate
from bulkfetch.errors import UsageError
from bulkfetch.simulator.config import TEST_API_KEY, RetryAfterMode, SimConfig
from bulkfetch.simulator.limits import LIMITER_KINDS
from bulkfetch.simulator.server import Simulator

__all__ = ["parse_rate", "simulate"]


def parse_rate(text: str) -> tuple[int, float]:
    """``"10/min"`` -> ``(10, 60.0)``: a limit and its window in seconds.

    The same forms as ``bulkfetch run`` (``config.Rate.parse``), with a whole number of
    requests, since the simulator counts them in a sliding window. Raises
    ``click.BadParameter`` on anything else.
    """
    try:
        rate = Rate.parse(text)
    except UsageError as exc:
        raise click.BadParameter(str(exc)) from None
    if rate.count != int(rate.count):
        raise click.BadParameter(f"{text!r}: the simulator's limit is a whole number of requests")
    return int(rate.count), rate.period


def _rate_option(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[int, float]:
    return parse_rate(value)


def _date_option(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is not None:
        try:
            SimConfig(catalogue_today=value)
        except ValueError:
            raise click.BadParameter(f"{value!r} is not a date YYYY-MM-DD") from None
    return value


_PROBABILITY = click.FloatRange(0.0, 1.0)
#: Each fault flag and what it does, drawn per request it can hit (a probability, 0 to 1).
_FAULTS = {
    "create-5xx-rate": "a task creation gets 500, 502 or 503",
    "status-5xx-rate": "a status call gets 500, 502 or 503",
    "search-5xx-rate": "a search request gets 500, 502 or 503",
    "reset-rate": "a request's connection is reset with no answer",
    "truncate-rate": "a result body stops halfway (shorter than its Content-Length)",
    "wrong-format-rate": "a result is in another image format than the one asked for",
    "json-instead-rate": "a result is a JSON body instead of the image",
    "empty-200-rate": "a result is an empty 200 answer",
}


def _fault_options(command: Any) -> Any:
    for name, what in reversed(_FAULTS.items()):
        command = click.option(
            f"--{name}",
            type=_PROBABILITY,
            default=0.0,
            show_default=True,
            help=f"Probability (0 to 1) that {what}.",
        )(command)
    return command


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8808,
    show_default=True,
    help="TCP port to listen on (0: any free port, printed at start).",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seed of the random draws (processing times, faults, catalogue): same seed, same run.",
)
@click.option(
    "--create-rate",
    default="10/min",
    show_default=True,
    callback=_rate_option,
    help="Create requests allowed per key: N/s, N/min or N/h (a sliding window).",
)
@click.option(
    "--status-rate",
    default="10/min",
    show_default=True,
    callback=_rate_option,
    help="Status requests allowed per key: N/s, N/min or N/h.",
)
@click.option(
    "--search-rate",
    default="10/min",
    show_default=True,
    callback=_rate_option,
    help="Search requests allowed per key, both search endpoints together: N/s, N/min or N/h.",
)
@click.option(
    "--catalogue-today",
    default=None,
    callback=_date_option,
    help="YYYY-MM-DD: the search catalogue's today (default: the real UTC date).",
)
@click.option(
    "--processing-median",
    type=click.FloatRange(min=0.001),
    default=3.0,
    show_default=True,
    help="Median seconds a task takes to be ready (log-normal processing times).",
)
@click.option(
    "--processing-sigma",
    type=click.FloatRange(min=0.0),
    default=0.5,
    show_default=True,
    help="Spread of the processing times: sigma of their log (0: all take the median).",
)
@click.option(
    "--task-timeout",
    type=click.FloatRange(min=0.001),
    default=172800.0,
    show_default=True,
    help="Seconds a task lives after its creation (announced as task_timeout); then 404.",
)
@click.option(
    "--pending-words",
    default="created",
    show_default=True,
    callback=lambda _ctx, _param, value: tuple(w for w in value.split(",") if w),
    help="Comma-separated status words a pending task cycles through.",
)
@click.option(
    "--big-result-bytes",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Make tiff results a streamed TIFF of about this many bytes (0: small images).",
)
@click.option(
    "--chunk-size",
    type=click.IntRange(min=1),
    default=64 * 1024,
    show_default=True,
    help="Bytes per write while a result streams.",
)
@click.option(
    "--limiter",
    type=click.Choice(LIMITER_KINDS),
    default="sliding",
    show_default=True,
    help="How requests are counted: sliding log, fixed calendar window, token bucket, "
    "or strict spacing (GCRA, like nginx limit_req).",
)
@click.option(
    "--burst",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Token bucket capacity (0: the rate's count), or requests a spacing limiter "
    "lets through early (0: strictly spaced).",
)
@click.option(
    "--retry-after",
    type=click.Choice(get_args(RetryAfterMode)),
    default="int",
    show_default=True,
    help="How 429 answers carry Retry-After: whole seconds rounded up (int), exact "
    "(float), an HTTP date, the whole window, or not at all (off).",
)
@click.option(
    "--result-form",
    type=click.Choice(["bytes", "redirect", "json-url"]),
    default="bytes",
    show_default=True,
    help="How a finished task's result is delivered.",
)
@click.option(
    "--task-error-rate",
    type=_PROBABILITY,
    default=0.0,
    show_default=True,
    help="Probability (0 to 1), drawn at creation, that a task ends in an error answer.",
)
@click.option(
    "--pending-status",
    type=click.Choice(["200", "202"]),
    default="200",
    show_default=True,
    callback=lambda _ctx, _param, value: int(value),
    help="HTTP status of a not-ready task's answer.",
)
@click.option(
    "--result-content-type",
    default=None,
    help="Content-Type of result bytes (e.g. binary/octet-stream) [default: the format's].",
)
@click.option(
    "--redirect-status",
    type=click.Choice(["301", "302", "303", "307", "308"]),
    default="302",
    show_default=True,
    callback=lambda _ctx, _param, value: int(value),
    help="Status of a redirect result.",
)
@click.option(
    "--result-host",
    default=None,
    help="Host that redirect and json-url results point to (e.g. localhost): another origin.",
)
@click.option(
    "--result-url-field",
    default="url",
    show_default=True,
    help="Where json-url answers keep the URL: a name, name.name, [] for a list of one.",
)
@click.option("--forbidden", is_flag=True, help="Answer every API request 403.")
@click.option("--forbidden-text", is_flag=True, help="The 403 as plain text '403: Forbidden'.")
@click.option("--payment-required", is_flag=True, help="Answer every API request 402.")
@click.option(
    "--html-status",
    type=click.IntRange(min=0, max=599),
    default=0,
    show_default=True,
    help="Answer every API request with an HTML page with this status (0: off): a wrong URL.",
)
@_fault_options
@click.option(
    "--slow-body-seconds",
    type=click.FloatRange(min=0.0),
    default=0.0,
    show_default=True,
    help="Seconds of pause after each chunk of a result body (a slow download).",
)
@click.option(
    "--api-key-env",
    default="EOS_API_KEY",
    show_default=True,
    help="Environment variable holding the accepted key (else the built-in test key).",
)
def simulate(
    *,
    host: str,
    port: int,
    seed: int,
    create_rate: tuple[int, float],
    status_rate: tuple[int, float],
    search_rate: tuple[int, float],
    api_key_env: str,
    **knobs: Any,
) -> None:
    """Serve a simulated EOS task API (rate limits, delays, faults) until Ctrl-C."""
    try:
        config = SimConfig(
            host=host,
            port=port,
            seed=seed,
            api_key=os.environ.get(api_key_env) or TEST_API_KEY,
            create_limit=create_rate[0],
            create_window=create_rate[1],
            status_limit=status_rate[0],
            status_window=status_rate[1],
            search_limit=search_rate[0],
            search_window=search_rate[1],
            **knobs,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        asyncio.run(_serve(config))
    except KeyboardInterrupt:
        click.echo("simulator stopped", err=True)


async def _serve(config: SimConfig) -> None:
    async with Simulator(config) as sim:
        click.echo(f"EOS simulator on {sim.api_url}")
        click.echo(f"EOS search API on {sim.search_url}")
        await asyncio.Event().wait()  # until cancelled by Ctrl-C
