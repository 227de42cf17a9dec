"""A loopback EOS task API for tests, demos and benchmarks: bulkfetch's ``trio.testing``.

It plays the service described in ``eos-api.md``: task creation and status/result on one
URL, EOS's Search API over a deterministic catalogue of scenes around any AOI
(``search_scenes`` computes what it answers), per-key rate limits on each endpoint (a
sliding log, a fixed window, a token bucket or strict spacing), lognormal processing times,
task expiry, and every answer the real service might plausibly give (redirects, JSON
holding a URL, 429 with ``Retry-After`` exact, rounded up, a whole window, a date, or none)
plus injected faults (5xx, resets, truncated, empty, wrong or JSON bodies, outages).
Counters report what a client did, and ``bound_seconds`` the best makespan any client could
have reached, to judge it by.

Modules: ``config`` (the knobs) → ``limits`` (how a lane counts requests) → ``state``
(tasks, limiters, counters; no I/O) → ``images`` (real result files) and ``catalogue`` (the
scenes; pure) → ``search_app`` (search bodies and answers; pure) → ``app`` (the aiohttp
routes) → ``server`` (``Simulator``, threads) → ``cli`` (``simulate``).

Typical use::

    async with Simulator(SimConfig(create_limit=5, create_window=0.5)) as sim:
        ...  # point the client at sim.api_url with TEST_API_KEY
        assert sim.counters()["results_served"] == 3

    with run_in_thread(SimConfig()) as sim:  # from synchronous code
        sim.configure(reset_rate=0.2)
        search_url = sim.search_url + "/sentinel2"  # POST search bodies here
"""

from bulkfetch.simulator.catalogue import DATASETS, search_scenes, shape_bbox
from bulkfetch.simulator.config import TEST_API_KEY, ResultForm, RetryAfterMode, SimConfig
from bulkfetch.simulator.images import canonical_params, render_result, result_content_type
from bulkfetch.simulator.server import Simulator, SimulatorThread, run_in_thread
from bulkfetch.simulator.state import Counters, bound_makespan

__all__ = [
    "DATASETS",
    "TEST_API_KEY",
    "Counters",
    "ResultForm",
    "RetryAfterMode",
    "SimConfig",
    "Simulator",
    "SimulatorThread",
    "bound_makespan",
    "canonical_params",
    "render_result",
    "result_content_type",
    "run_in_thread",
    "search_scenes",
    "shape_bbox",
]
