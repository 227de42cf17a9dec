"""The options ``run`` and ``plan`` share, and how flags, bulkfetch.toml and defaults merge.

Each option may also be set in a bulkfetch.toml (beside the manifest, or ``--config``):
flags win, the file fills in, defaults last (:func:`config_from`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import click

from bulkfetch.cli._util import apply_config_file
from bulkfetch.cli._util import rate_option as _rate
from bulkfetch.config import CONFIG_NAME, DEFAULT_API_URL, RunConfig, parse_duration
from bulkfetch.errors import UsageError
from bulkfetch.limiter.store import check_store_url
from bulkfetch.manifest.shard import Shard
from bulkfetch.sink.destination import store_url
from bulkfetch.urls import check_service_url

__all__ = ["FILE", "FOLDER", "RUN_OPTIONS", "config_from", "run_options"]

#: A file argument or option (a folder given is a usage error).
FILE = click.Path(dir_okay=False, path_type=Path)
#: A folder option (a file given is a usage error).
FOLDER = click.Path(file_okay=False, path_type=Path)


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
        type=FILE,
        help="Ledger file [default: OUT/bulkfetch-ledger.json; for a bucket OUT, a file "
        "named after it in the user's state directory].",
    ),
    click.option(
        "--config",
        "config_file",
        type=FILE,
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
        "--api-key-file", type=FILE, help="Read the API key from this file instead of EOS_API_KEY."
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
        "--burst/--no-burst",
        default=True,
        show_default=True,
        help="Send a window's creations as fast as the server answers them, within the "
        "create rate, instead of evenly spaced; stops by itself on a server that spaces "
        "requests.",
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
        type=FILE,
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


def run_options(fn: Any) -> Any:
    """Decorate a command with :data:`RUN_OPTIONS`."""
    for option in reversed(RUN_OPTIONS):
        fn = option(fn)
    return fn


def config_from(ctx: click.Context, manifest: Path, params: dict[str, Any]) -> RunConfig:
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
