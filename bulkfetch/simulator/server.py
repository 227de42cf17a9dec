"""Running the simulator: in the caller's event loop, or in a thread of its own.

Contract:

- ``async with Simulator(config) as sim:`` serves on ``config.host:config.port`` until the
  block ends; port 0 picks a free port, and ``sim.url``/``sim.api_url``/``sim.search_url``
  say which.
- ``stop()`` then ``start()`` takes the server away and brings it back on the same port with
  its tasks, windows and counters intact, as an outage of the real service would.
- ``run_in_thread(config)`` does the same from synchronous code: a daemon thread runs a
  private event loop, and every method of the handle it yields is safe to call from any thread.
- Stopping is bounded: requests still in flight get ``shutdown_timeout`` seconds, then their
  connections are closed.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any, Self, TypeVar

from aiohttp import web

from bulkfetch.simulator.app import API_PATH, SEARCH_PATH, apply_changes, make_app
from bulkfetch.simulator.config import SimConfig
from bulkfetch.simulator.state import SimState

__all__ = ["Simulator", "SimulatorThread", "run_in_thread"]

_T = TypeVar("_T")
_CALL_TIMEOUT = 30.0  # seconds any cross-thread call may take; start/stop are the slow ones


class Simulator:
    """The EOS task API on loopback, in the running asyncio loop."""

    __slots__ = ("_config", "_port", "_runner", "_state", "shutdown_timeout")

    def __init__(self, config: SimConfig | None = None, *, shutdown_timeout: float = 0.5) -> None:
        self._config = config if config is not None else SimConfig()
        # The state is made once, so it survives stop()/start(); its clock starts here.
        self._state = SimState(self._config, started=time.monotonic())
        self._runner: web.AppRunner | None = None
        self._port = self._config.port
        #: Seconds in-flight requests get when the server stops.
        self.shutdown_timeout = shutdown_timeout

    @property
    def config(self) -> SimConfig:
        """The live config; prefer ``configure`` to change it (it validates)."""
        return self._config

    @property
    def running(self) -> bool:
        """Whether the server is accepting connections."""
        return self._runner is not None

    @property
    def port(self) -> int:
        """The TCP port: the one picked at first start when the config said 0."""
        if self._port == 0:
            raise RuntimeError("the simulator has not been started yet")
        return self._port

    @property
    def url(self) -> str:
        """The root URL, e.g. ``http://127.0.0.1:8808``."""
        return f"http://{self._config.host}:{self.port}"

    @property
    def api_url(self) -> str:
        """The URL to give a client as its API base: ``url + "/api/gdw/api"``."""
        return self.url + API_PATH

    @property
    def search_url(self) -> str:
        """The Search API's base: ``url + "/api/lms/search/v2"``; POST to it, or to
        ``search_url + "/" + dataset``."""
        return self.url + SEARCH_PATH

    async def start(self) -> None:
        """Start serving (again); a restart reuses the port first bound."""
        if self._runner is not None:
            raise RuntimeError("the simulator is already running")
        runner = web.AppRunner(
            make_app(self._state),
            handle_signals=False,
            access_log=None,
            shutdown_timeout=self.shutdown_timeout,
        )
        await runner.setup()
        site = web.TCPSite(runner, self._config.host, self._port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._port = int(runner.addresses[0][1])
        self._runner = runner

    async def stop(self) -> None:
        """Stop serving: refuse new connections, close the open ones. State is kept."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def counters(self) -> dict[str, Any]:
        """The counters (see ``Counters``) plus ``bound_seconds`` and ``makespan_seconds``."""
        return self._state.counters_dict()

    def tasks(self) -> list[dict[str, Any]]:
        """Every task created so far, oldest first, with timing, polls and ``fetched``."""
        return self._state.tasks_list()

    def configure(self, **changes: Any) -> None:
        """Change knobs now; ``outage_for=seconds`` starts an outage. ``ValueError`` if bad."""
        apply_changes(self._state, changes)

    def reset_counters(self) -> None:
        """Zero the counters; the bound restarts from the next task created."""
        self._state.reset_counters()

    def __repr__(self) -> str:
        where = self.url if self._port else "unbound"
        return f"<Simulator {where} running={self.running} tasks={len(self._state.history)}>"


class SimulatorThread:
    """A ``Simulator`` running in a daemon thread; see ``run_in_thread``."""

    __slots__ = ("_loop", "_sim", "_thread")

    def __init__(self, config: SimConfig | None = None) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="bulkfetch-simulator", daemon=True
        )
        self._thread.start()
        try:
            # Started on the loop's thread, so aiohttp's objects belong to that loop.
            self._sim: Simulator = self._run(_make(config))
        except BaseException:
            self._stop_loop()
            raise

    def _run(self, coro: Awaitable[_T]) -> _T:
        async def wrapped() -> _T:
            return await coro

        return asyncio.run_coroutine_threadsafe(wrapped(), self._loop).result(_CALL_TIMEOUT)

    def _call(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        async def call() -> _T:
            return fn(*args, **kwargs)

        return self._run(call())

    @property
    def simulator(self) -> Simulator:
        """The underlying simulator; touch it only through this handle's methods."""
        return self._sim

    @property
    def url(self) -> str:
        """The root URL, e.g. ``http://127.0.0.1:8808``."""
        return self._sim.url

    @property
    def api_url(self) -> str:
        """The URL to give a client as its API base."""
        return self._sim.api_url

    @property
    def search_url(self) -> str:
        """The Search API's base URL; see ``Simulator.search_url``."""
        return self._sim.search_url

    @property
    def port(self) -> int:
        """The TCP port, kept across ``stop``/``start``."""
        return self._sim.port

    def start(self) -> None:
        """Start serving again on the same port."""
        self._run(self._sim.start())

    def stop(self) -> None:
        """Stop serving; the state is kept for ``start``."""
        self._run(self._sim.stop())

    def counters(self) -> dict[str, Any]:
        """See ``Simulator.counters``."""
        return self._call(self._sim.counters)

    def tasks(self) -> list[dict[str, Any]]:
        """See ``Simulator.tasks``."""
        return self._call(self._sim.tasks)

    def configure(self, **changes: Any) -> None:
        """See ``Simulator.configure``."""
        self._call(self._sim.configure, **changes)

    def reset_counters(self) -> None:
        """See ``Simulator.reset_counters``."""
        self._call(self._sim.reset_counters)

    def close(self) -> None:
        """Stop the server, then the loop and its thread. Idempotent."""
        if self._loop.is_closed():
            return
        try:
            self._run(self._sim.stop())
            self._run(self._loop.shutdown_asyncgens())
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(_CALL_TIMEOUT)
        self._loop.close()

    def __repr__(self) -> str:
        return f"<SimulatorThread {self._sim!r}>"


async def _make(config: SimConfig | None) -> Simulator:
    simulator = Simulator(config)
    await simulator.start()
    return simulator


@contextmanager
def run_in_thread(config: SimConfig | None = None) -> Iterator[SimulatorThread]:
    """Serve the simulator from a thread for the ``with`` block; for synchronous tests."""
    handle = SimulatorThread(config)
    try:
        yield handle
    finally:
        handle.close()
