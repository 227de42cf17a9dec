"""A run's share of its key's rate: the session with the rate store, and its lanes.

``open_rates`` opens the store ``--rate-store`` names (``rate_store``): by default the
file store of this host, Redis across hosts, nothing with ``none``. The ``RateSession``
holds this process's lease (renewed by ``serve`` every third of ``LEASE``, released when
the run ends, expired within ``LEASE`` of a ``kill -9``) and hands each ``Limiter`` a
``SharedLane``, the limiter's source of slots when the budget is shared: the limiter's
own pacing (its ``acquire``) is the in-process source, used with ``--rate-store none``.

A ``SharedLane`` reserves each slot in the store, sleeps to it, and confirms it (a 429
elsewhere may have paused the lane meanwhile); alone on the key, it reserves a block of
slots at once (``shared_pace.BLOCK_SPAN``) and paces them out here, one change of the
store for dozens of slots at high rates. It reports this process's 429s
(``refused``, sent at once by ``serve``) so every process pauses and slows, and its
requests sent later than their slot's slack (``sent_late``) so the next free slot makes
room for them; and it tells the limiter what the store taught (``taught``). Slot times
come in the store's clock, mapped to this one by ``shared_pace.StoreClock``. If the store
fails mid-run, the lanes fall back to a pace of their own, the rate divided by the
processes last seen (``shared_pace.fallback_interval``), with one warning: never above
the limit while every process sharing the key lost the store, whatever they do then.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import secrets
import socket
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from functools import partial

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from bulkfetch.config import ApiKey, RunConfig
from bulkfetch.errors import RateStoreError
from bulkfetch.limiter.shared_pace import (
    BLOCK_SPAN,
    Grant,
    StoreClock,
    fallback_interval,
    late_shift,
)
from bulkfetch.limiter.store import FileStore, RateStore, default_store_dir, store_name

__all__ = ["RateSession", "SharedLane", "open_rates"]

log = logging.getLogger(__name__)

#: Seconds a process's lease lasts without renewal: a killed process stops counting
#: among the processes sharing the key this long after its last renewal.
LEASE = 15.0
#: Reported 429s and late sends waiting to be sent to the store, at most (more are the
#: same storm).
_QUEUE = 64
#: A change of the store queued for ``RateSession.serve``.
_Change = Callable[[], Awaitable[None]]


class RateSession:
    """This process's membership of a key's shared budget."""

    __slots__ = (
        "_inbox",
        "_late",
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
        self._report(change)

    def report_late(self, lane: str, late: float, spacing: float) -> None:
        """Queue a request sent ``late`` seconds after its slot (``serve`` sends it).

        Late sends reported before ``serve`` gets to them go to the store as one: a lane
        pressed for time (thousands of slots a second, or a loaded machine) sends most of
        its requests late, and a store transaction for each cost more CPU than the
        requests themselves."""
        shift = late_shift(late, spacing)
        if shift <= 0.0:
            return
        queued = lane in self._late
        self._late[lane] = self._late.get(lane, 0.0) + shift
        if not queued and not self._report(partial(self._send_late, lane)):
            del self._late[lane]  # the queue is full: lost, as a report would be

    async def _send_late(self, lane: str) -> None:
        shift = self._late.pop(lane, 0.0)
        if shift > 0.0:
            # Each send's shift is already at most its slot; their sum moves the grid on
            # as they would have one by one.
            await self.store.sent_late(lane, late=shift, spacing=shift)

    def _report(self, change: _Change) -> bool:
        """Queue ``change`` for ``serve``; False if the queue is full (the store is slow
        or gone), and the change is dropped."""
        try:
            self._outbox.send_nowait(change)
        except anyio.WouldBlock:
            return False
        return True

    async def serve(self) -> None:
        """Renew the lease and send reported 429s and late sends, until cancelled (with
        the run)."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._renew)
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


class SharedLane:
    """One lane's slots from the shared store, or from a fallback pace if it fails."""

    __slots__ = (
        "_block",
        "_block_held",
        "_block_next",
        "_block_offset",
        "_confirm_trips",
        "_fallback_next",
        "_fallback_spacing",
        "_held",
        "_since",
        "_store_clock",
        "_unused",
        "name",
        "others",
        "session",
        "taught",
    )

    def __init__(self, session: RateSession, name: str) -> None:
        self.session = session
        self.name = name
        #: What the store said with the last slot: the limit taught by any process's 429.
        self.taught: Grant | None = None
        self._held: Grant | None = None  # the slot last taken
        self._unused: Grant | None = None  # a slot to give back with the next take
        self._fallback_next = -math.inf
        self._fallback_spacing = 0.0
        self._since = -math.inf  # this process's previous slot (the store's clock)
        self._store_clock = StoreClock()  # the local clock's offset from the store's
        self._confirm_trips: deque[float] = deque(maxlen=8)  # recent confirms' round trips
        # A block of slots reserved while alone on the key (the store's clock), paced out
        # here: the local clock's time of its next slot, the local clock minus the
        # store's, and the local time of the slot last taken from it.
        self._block: Grant | None = None
        self._block_next = -math.inf
        self._block_offset = 0.0
        self._block_held: float | None = None
        #: Other processes' slots learned with the last one (``clock``'s times): what the
        #: key sent besides this process, for reading a 429 (the limiter takes them).
        self.others: list[float] = []

    def __repr__(self) -> str:
        return f"<SharedLane {self.name} {self.session!r}>"

    async def take(
        self,
        *,
        interval: float,
        slack: float,
        horizon: float,
        history: float,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
    ) -> float:
        """Wait for a slot of the shared lane; returns when it was due (``clock``'s time)."""
        session = self.session
        while session.failed is None:
            if (at := self._from_block(interval, slack, clock)) is not None:
                if (wait := at - clock()) > 0:  # (a slot already due: no trip to the loop)
                    await sleep(wait)
                return at
            try:
                sent = clock()
                ticket = await session.store.take(
                    self.name,
                    session.owner,
                    interval=interval,
                    slack=slack,
                    horizon=horizon,
                    ttl=LEASE,
                    unused=self._unused,
                    since=self._since,
                    history=history,
                    block=BLOCK_SPAN,
                )
                self._unused = None
                self._since = ticket.grant.at
                session.processes = ticket.processes
                self.taught = ticket.grant
                # The slot on this clock: by the offset the fastest recent replies show,
                # not by when this reply came (``StoreClock``). A slot already due is
                # returned as it was due: the limiter sees how late it goes out.
                store_now = ticket.grant.at - ticket.delay
                offset = self._store_clock.update(sent=sent, answered=clock(), store_now=store_now)
                self.others += [store_now + other + offset for other in ticket.others]
                at = ticket.grant.at + offset
                if ticket.grant.count > 1:
                    # Alone on the key: the rest of the block is paced out here.
                    self._block = ticket.grant
                    self._block_offset = offset
                    self._block_next = at + max(interval, ticket.grant.spacing)
                    self._block_held = at
                    if (wait := at - clock()) > 0:
                        await sleep(wait)
                    return at
                if at <= clock():
                    self._held = ticket.grant
                    return at
                # A 429 elsewhere may have paused the lane while this one slept (alone on
                # the key, nobody else could: a process starting meanwhile costs a slot).
                # Asked as long before the slot as the store took to answer lately, so
                # that its round trip does not make the request late (a pause reported
                # in that moment is missed, as one reported while the answer comes back).
                if ticket.processes > 1:
                    lead = min(max(self._confirm_trips, default=0.0), 0.25 * interval)
                    if (wait := at - lead - clock()) > 0:
                        await sleep(wait)
                    asked = clock()
                    good = await session.store.confirm(self.name, ticket.grant)
                    self._confirm_trips.append(clock() - asked)
                    if not good:
                        continue
            except RateStoreError as exc:
                session.lost(exc)
                continue
            if (wait := at - clock()) > 0:
                await sleep(wait)
            self._held = ticket.grant
            return at
        return await self._take_alone(interval, slack, clock, sleep)

    def _from_block(
        self, interval: float, slack: float, clock: Callable[[], float]
    ) -> float | None:
        """The next slot of the block this process holds (local clock), if one is left:
        paced at the lane's interval, never closer than the block's spacing, and, like a
        lane's own slots, counted from when it was due unless that is ``slack`` ago."""
        block = self._block
        if block is None:
            return None
        now, at = clock(), self._block_next
        if now - at > slack:
            at = now
        # (Store times are wall-clock seconds, exact to a microsecond or so: 1e-6.)
        last = block.at + (block.count - 1) * block.spacing + self._block_offset
        if at > last + 1e-6:
            self._block = self._block_held = None
            return None
        self._block_next = at + max(interval, block.spacing)
        self._block_held = at
        return at

    def _drop_block(self) -> None:
        """Stop pacing out the block; its slots not taken go back with the next take
        (they are still the last reserved unless a newcomer came after them; any of them
        past by then counts like a lane's late slot, within its slack)."""
        block, self._block, self._block_held = self._block, None, None
        if block is None:
            return
        start = self._block_next - self._block_offset
        # Any share of a slot below one would do: the slot before ``start`` was used.
        left = math.floor((block.end - start) / block.spacing + 1e-3)
        if left >= 1:
            self._unused = replace(block, at=block.end - left * block.spacing, count=left)

    async def _take_alone(
        self,
        interval: float,
        slack: float,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
    ) -> float:
        """The fallback: this process's share of the rate, paced here."""
        spacing = self._fallback_spacing = fallback_interval(interval, self.session.processes)
        while True:
            now, at = clock(), self._fallback_next
            if now >= at:
                base = at if now - at <= slack else now
                self._fallback_next = base + spacing
                return base
            await sleep(at - now)

    def give_back(self) -> None:
        """The slot just taken was not used: return it to the block it came from, or to
        the store with the next take."""
        if self.session.failed is not None:
            self._fallback_next -= self._fallback_spacing
        elif self._block_held is not None:
            self._block_next, self._block_held = self._block_held, None
        else:
            self._unused, self._held = self._held, None

    def sent_late(self, late: float, interval: float) -> None:
        """A slot of this lane was used ``late`` seconds after it, beyond the lane's slack:
        the slots to come move on by as much, at most a slot (``shared_pace.sent_late``):
        the store's for every process, and those of a block or a fallback pace here."""
        if self.session.failed is not None:
            self._fallback_next += late_shift(late, self._fallback_spacing)
            return
        spacing = max(interval, self.taught.spacing if self.taught else 0.0)
        if self._block is not None:
            self._block_next += late_shift(late, spacing)
        self.session.report_late(self.name, late, spacing)

    def refused(self, *, limit_interval: float, strict: bool, pause: float) -> None:
        """This process got a 429: pause and teach every process; a block held is given
        up (its slots were spaced by the pace the 429 just refused)."""
        if self.session.failed is None:
            self._drop_block()
            self.session.report_refusal(self.name, limit_interval, strict, pause)


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
