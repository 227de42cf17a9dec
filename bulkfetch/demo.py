"""``bulkfetch demo``: the sample manifest against a simulator started in this process.

The simulator plays EOS with its limits scaled from 10 a minute to 20 a second and
processing times in proportion, so the whole run (40 scenes) takes seconds while
exercising exactly the code a real run does: real sockets, real rate limits, the ledger,
streaming to disk.
"""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path

import anyio
import click

from .api import run_async
from .config import ApiKey, Rate
from .simulator import TEST_API_KEY, SimConfig, Simulator

__all__ = ["demo_manifest", "run_demo"]

log = logging.getLogger(__name__)


def demo_manifest() -> Path:
    """The sample manifest shipped with the package (a copy of manifests/demo.jsonl)."""
    return Path(str(resources.files("bulkfetch") / "data" / "demo.jsonl"))


async def run_demo(out: Path) -> int:
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
        result = await run_async(
            demo_manifest(),
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
