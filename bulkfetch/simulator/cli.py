"""``simulate``: serve the EOS simulator from the command line until Ctrl-C.

Contract: the click command ``simulate`` (add it to a group with ``cli.add_command(simulate)``)
builds a ``SimConfig`` from its options, prints one line naming the API URL, and serves.
The accepted key is read from the environment variable named by ``--api-key-env`` (default
``EOS_API_KEY``), falling back on ``TEST_API_KEY``; the key itself is never printed.
Rates are written ``N/s``, ``N/min`` or ``N/h`` (``parse_rate``).
"""

from __future__ import annotations

import asyncio
import os
import re
from typing import Any

import click

from bulkfetch.simulator.config import TEST_API_KEY, SimConfig
from bulkfetch.simulator.server import Simulator

__all__ = ["parse_rate", "simulate"]

_UNITS = {"s": 1.0, "sec": 1.0, "min": 60.0, "m": 60.0, "h": 3600.0, "hour": 3600.0}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*([a-z]+)\s*$")


def parse_rate(text: str) -> tuple[int, float]:
    """``"10/min"`` -> ``(10, 60.0)``: a limit and its window in seconds.

    Units: ``s``/``sec``, ``min``/``m``, ``h``/``hour``. The count must be at least 1.
    Raises ``click.BadParameter`` on anything else.
    """
    match = _RATE.match(text.lower())
    if match is None or match.group(2) not in _UNITS or int(match.group(1)) < 1:
        raise click.BadParameter(f"{text!r} is not a rate like 10/min, 20/s or 100/h")
    return int(match.group(1)), _UNITS[match.group(2)]


def _rate_option(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[int, float]:
    return parse_rate(value)


_PROBABILITY = click.FloatRange(0.0, 1.0)
_FAULTS = (
    "create-5xx-rate",
    "status-5xx-rate",
    "reset-rate",
    "truncate-rate",
    "wrong-format-rate",
    "json-instead-rate",
    "empty-200-rate",
)


def _fault_options(command: Any) -> Any:
    for name in reversed(_FAULTS):
        command = click.option(
            f"--{name}", type=_PROBABILITY, default=0.0, show_default=True, help="Probability."
        )(command)
    return command


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8808, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--create-rate",
    default="10/min",
    show_default=True,
    callback=_rate_option,
    help="Create requests allowed per key, e.g. 10/min, 20/s, 100/h.",
)
@click.option(
    "--status-rate",
    default="10/min",
    show_default=True,
    callback=_rate_option,
    help="Status requests allowed per key.",
)
@click.option(
    "--processing-median", type=click.FloatRange(min=0.001), default=3.0, show_default=True
)
@click.option("--processing-sigma", type=click.FloatRange(min=0.0), default=0.5, show_default=True)
@click.option(
    "--task-timeout", type=click.FloatRange(min=0.001), default=172800.0, show_default=True
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
    help="Make tiff results a streamed TIFF of about this many bytes.",
)
@click.option(
    "--retry-after",
    type=click.Choice(["int", "float", "date", "off"]),
    default="int",
    show_default=True,
    help="How 429 answers carry Retry-After.",
)
@click.option(
    "--result-form",
    type=click.Choice(["bytes", "redirect", "json-url"]),
    default="bytes",
    show_default=True,
    help="How a finished task's result is delivered.",
)
@click.option("--task-error-rate", type=_PROBABILITY, default=0.0, show_default=True)
@_fault_options
@click.option("--slow-body-seconds", type=click.FloatRange(min=0.0), default=0.0, show_default=True)
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
    api_key_env: str,
    **knobs: Any,
) -> None:
    """Serve a simulated EOS task API (rate limits, delays, faults) until Ctrl-C."""
    config = SimConfig(
        host=host,
        port=port,
        seed=seed,
        api_key=os.environ.get(api_key_env) or TEST_API_KEY,
        create_limit=create_rate[0],
        create_window=create_rate[1],
        status_limit=status_rate[0],
        status_window=status_rate[1],
        **knobs,
    )
    try:
        asyncio.run(_serve(config))
    except KeyboardInterrupt:
        click.echo("simulator stopped", err=True)


async def _serve(config: SimConfig) -> None:
    async with Simulator(config) as sim:
        click.echo(f"EOS simulator on {sim.api_url}")
        await asyncio.Event().wait()  # until cancelled by Ctrl-C
