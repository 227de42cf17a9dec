"""``bulkfetch demo``: the sample manifest against a simulator started in this process.

The simulator plays EOS with its limits scaled from 10 a minute to 20 a second and
processing times in proportion, so the whole run (40 scenes) takes seconds while
exercising exactly the code a real run does: real sockets, real rate limits, the ledger,
streaming to disk.

``bulkfetch demo --from-fields`` starts one step earlier, as a user does: it searches the
simulator's catalogue over the sample fields (``manifests/fields.geojson``) for a season
of clear Sentinel-2 scenes, writes the manifest, and runs it.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import sys
from importlib import resources
from pathlib import Path

import anyio
import click

from bulkfetch.api import run_async
from bulkfetch.cli._util import fail as _fail
from bulkfetch.cli.options import FOLDER
from bulkfetch.config import ApiKey, Rate
from bulkfetch.errors import BulkfetchError
from bulkfetch.logs import setup_logging
from bulkfetch.scene_search.finder import search_async, write_manifest
from bulkfetch.simulator import TEST_API_KEY, SimConfig, Simulator

__all__ = ["demo_command", "demo_fields", "demo_manifest", "run_demo"]

log = logging.getLogger(__name__)


@click.command("demo")
@click.option(
    "--out",
    "-o",
    type=FOLDER,
    help="Output folder [default: ./demo-output, or ./demo-fields-output with --from-fields].",
)
@click.option(
    "--from-fields",
    is_flag=True,
    help="Start from the sample fields: search the scenes, write the manifest, run it.",
)
def demo_command(out: Path | None, from_fields: bool) -> None:
    """Run the sample manifest against a simulator started in this process."""
    if out is None:  # each demo its own folder: one ledger, one manifest
        out = Path("demo-fields-output" if from_fields else "demo-output")

    setup_logging()
    try:
        code = anyio.run(functools.partial(run_demo, out, from_fields=from_fields))
    except BulkfetchError as exc:
        _fail(exc)
    sys.exit(code)


def demo_manifest() -> Path:
    """The sample manifest shipped with the package (a copy of manifests/demo.jsonl)."""
    return Path(str(resources.files("bulkfetch") / "data" / "demo.jsonl"))


def demo_fields() -> Path:
    """The sample fields shipped with the package (a copy of manifests/fields.geojson)."""
    return Path(str(resources.files("bulkfetch") / "data" / "fields.geojson"))


async def _search_fields(sim: Simulator, out: Path) -> Path:
    manifest = out / "manifest.jsonl"
    await anyio.Path(out).mkdir(parents=True, exist_ok=True)
    result = await search_async(
        demo_fields(),
        date_from=dt.date(2023, 5, 1),
        date_to=dt.date(2023, 9, 30),
        datasets=["sentinel2l2a"],
        bm_types=["NDVI"],
        params={"px_size": 10, "format": "png"},
        max_cloud=20,
        one_per_days=15,
        single_tile=True,
        api_key=ApiKey(TEST_API_KEY),
        search_url=sim.search_url,
        search_rate=Rate(20, 1.0),
        cache=out / "search-cache.json",
    )
    n = write_manifest(result, manifest)
    s = result.stats
    click.echo(
        f"searched {s.fields} fields, May-September 2023, at most 20% cloud, one scene per "
        f"15 days: {s.requests} search requests ({s.from_cache} of {s.fields} fields answered "
        f"by the cache), {s.scenes_found} scenes found, "
        f"{s.scenes_kept} kept -> {n} jobs in {manifest}\n",
        err=True,
    )
    return manifest


async def run_demo(out: Path, *, from_fields: bool = False) -> int:
    config = SimConfig(
        create_limit=20,
        create_window=1.0,
        status_limit=20,
        status_window=1.0,
        processing_median=0.6,
        processing_sigma=0.5,
        retry_after="float",
        seed=7,
    )
    async with Simulator(config) as sim:
        click.echo(f"EOS simulator on {sim.api_url} (limits 20/s per lane)", err=True)
        manifest = await _search_fields(sim, out) if from_fields else demo_manifest()
        result = await run_async(
            manifest,
            out=out,
            api_key=ApiKey(TEST_API_KEY),
            api_url=sim.api_url,
            create_rate=Rate(20, 1.0),
            status_rate=Rate(20, 1.0),
            first_poll_after=0.6,
            deadline_margin=1.0,
            report=out / "report.json",
        )
        counters = sim.counters()
    c = result.counters
    click.echo(
        f"\n{result.outcome}: {c.done - c.skipped_done} downloaded, {c.skipped_done} already "
        f"there, {c.failed} failed; {c.create_calls} creations, {c.status_calls} status "
        f"calls, {c.create_429 + c.status_429} rate-limited; "
        f"server served {counters['results_served']} results.",
        err=True,
    )
    where = await anyio.Path(out).resolve()
    click.echo(f"images:  {where}", err=True)
    click.echo(f"report:  {where / 'report.json'}", err=True)
    click.echo(f"ledger:  {where / 'bulkfetch-ledger.json'}", err=True)
    click.echo("run it again: everything is already done, nothing is sent.", err=True)
    return result.exit_code
