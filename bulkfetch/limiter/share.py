"""A run's share of its key's rate: the session with the rate store, and its lanes.

``open_rates`` opens the store ``--rate-store`` names (``rate_store``): by default the
file store of this host, Redis across hosts, nothing with ``none``. The ``RateSession``
holds this process's lease (renewed by ``serve`` every third of ``LEASE``, released when
the run ends, expired within ``LEASE`` of a ``kill -9``) and hands each ``Limiter`` a
``SharedLane``, the limiter's source of slots when the budget is shared: the limiter's
own pacing (its ``acquire``) is the in-process source, used with ``--rate-store none``.

Each lane's slots come from a ``SharedLane`` (``shared_lane``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from bulkfetch.config import ApiKey, RunConfig
from bulkfetch.errors import RateStoreError
from bulkfetch.limiter.shared_lane import SharedLane
from bulkfetch.limiter.shared_pace import LEASE, late_shift
from bulkfetch.limiter.store import FileStore, RateStore, default_store_dir, store_name

__all__ = ["LEASE", "RateSession", "open_rates"]

log = logging.getLogger(__name__)

#: Reported 429s waiting to be sent to the store, at most (more are the same storm).
_QUEUE = 64
#: Seconds between two changes of the store for late sends, at least: the other
#: processes see this process's slots move on that much later, a few slots at thousands
#: a second, nothing at 10 a minute.
LATE_EVERY = 0.05
#: A change of the store queued for ``RateSession.serve``.
_Change = Callable[[], Awaitable[None]]


class RateSession:
    """This process's membership of a key's shared budget."""

    __slots__ = (
        "_inbox",
        "_late",
        "_late_noted",
        "_outbox",
        "failed",
        "lanes",
        "owner",
        "processes",
        "store",
    )

    def __init__(self, store: RateStore) -> None:
        self.store = store
        #: This process, in the leases: host, pid and a random part (pids are reused).
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        #: Processes holding a lease on the key, as last seen.
        self.processes = 1
        #: Why the store was given up mid-run, if it was.
        self.failed: str | None = None
        self.lanes: dict[str, SharedLane] = {}
        sender, receiver = anyio.create_memory_object_stream[_Change](_QUEUE)
        self._outbox: MemoryObjectSendStream[_Change] = sender
        self._inbox: MemoryObjectReceiveStream[_Change] = receiver
        #: Per lane, how far late sends not yet told to the store move its slots on.
        self._late: dict[str, float] = {}
        self._late_noted = anyio.Event()

    def __repr__(self) -> str:
        state = f"failed: {self.failed}" if self.failed else f"processes={self.processes}"
        return f"<RateSession {self.store.where} {state}>"

    def lane(self, name: str) -> SharedLane:
        """The shared source of slots for the lane ``name`` (one per lane and process)."""
        return self.lanes.setdefault(name, SharedLane(self, name))

    def lost(self, exc: RateStoreError) -> None:
        """The store failed: every lane paces alone from now on (warned once)."""
        if self.failed is None:
            self.failed = str(exc)
            log.warning(
                "%s; pacing alone at 1/%d of each rate (the processes last seen) "
                "for the rest of the run",
                exc,
                self.processes,
            )

    def report_refusal(self, lane: str, limit_interval: float, strict: bool, pause: float) -> None:
        """Queue a 429 for the store (``serve`` sends it at once)."""
        change = partial(
            self.store.refused, lane, limit_interval=limit_interval, strict=strict, pause=pause
        )
        # A full queue is a store slow or gone, and a storm of 429s: this one is dropped.
        with contextlib.suppress(anyio.WouldBlock):
            self._outbox.send_nowait(change)

    def report_late(self, lane: str, late: float, spacing: float) -> None:
        """Note a request sent ``late`` seconds after its slot (``serve`` tells the store).

        Late sends go to the store summed, at most one change every ``LATE_EVERY``: a lane
        pressed for time (thousands of slots a second, or a loaded machine) sends most of
        its requests late, and a store transaction for each cost more CPU than the
        requests themselves (6,115 for 5,000 jobs at 2000/s, a ninth of the run's CPU)."""
        shift = late_shift(late, spacing)
        if shift <= 0.0:
            return
        self._late[lane] = self._late.get(lane, 0.0) + shift
        self._late_noted.set()

    async def _tell_late(self) -> None:
        """Send the late sends noted, summed per lane; then wait ``LATE_EVERY`` at least."""
        while self.failed is None:
            await self._late_noted.wait()
            self._late_noted = anyio.Event()
            late, self._late = self._late, {}
            for lane, shift in late.items():
                # Each send's shift is already at most its slot; their sum moves the grid
                # on as they would have one by one.
                try:
                    await self.store.sent_late(lane, late=shift, spacing=shift)
                except RateStoreError as exc:
                    self.lost(exc)
                    return
            await anyio.sleep(LATE_EVERY)

    async def serve(self) -> None:
        """Renew the lease, send reported 429s and late sends, until cancelled (with the
        run)."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._renew)
            tg.start_soon(self._tell_late)
            async for change in self._inbox:
                if self.failed is not None:
                    continue
                try:
                    await change()
                except RateStoreError as exc:
                    self.lost(exc)

    async def _renew(self) -> None:
        while self.failed is None:
            await anyio.sleep(LEASE / 3)
            try:
                self.processes = await self.store.renew(self.owner, LEASE)
            except RateStoreError as exc:
                self.lost(exc)

    async def release(self) -> None:
        """Leave the key's budget: the lease goes at once, so the others count one less."""
        self._outbox.close()
        self._inbox.close()
        with anyio.CancelScope(shield=True):
            if self.failed is None:
                try:
                    await self.store.release(self.owner)
                except RateStoreError as exc:
                    log.debug("lease not released (it expires by itself): %s", exc)
            await self.store.aclose()


@contextlib.asynccontextmanager
async def open_rates(config: RunConfig, key: ApiKey) -> AsyncIterator[RateSession | None]:
    """The run's rate session, or None when it paces alone (``--rate-store none``, or a
    file store that cannot be used here: warned). A Redis store that does not answer is a
    ``RateStoreError`` (exit 3) before anything is sent."""
    name = store_name(config.api_url, key)
    url = config.rate_store
    store: RateStore
    if url == "none":
        yield None
        return
    if url.startswith(("redis://", "rediss://")):
        from bulkfetch.limiter.redis_store import RedisStore

        redis = RedisStore(url, name)
        try:
            await redis.ping()
        except RateStoreError:
            await redis.aclose()
            raise
        store = redis
    else:
        store = FileStore(default_store_dir() / f"{name}.json")
    session = RateSession(store)
    try:
        session.processes = await store.renew(session.owner, LEASE)
    except RateStoreError as exc:
        if isinstance(store, FileStore):
            log.warning("%s; this run paces alone (--rate-store none)", exc)
            yield None
            return
        raise RateStoreError(f"cannot use the rate store {store.where}: {exc}") from None
    log.info(
        "sharing the key's rate through %s with %d other process(es)",
        store.where,
        session.processes - 1,
    )
    try:
        yield session
    finally:
        await session.release()
