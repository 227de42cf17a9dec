"""The source of one lane's slots when processes share the key's rate.

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

import math
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from bulkfetch.errors import RateStoreError
from bulkfetch.limiter.shared_pace import (
    BLOCK_SPAN,
    LEASE,
    Grant,
    StoreClock,
    fallback_interval,
    late_shift,
)

if TYPE_CHECKING:
    from bulkfetch.limiter.share import RateSession

__all__ = ["SharedLane"]


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

    @property
    def alone(self) -> bool:
        """Whether this process was the only one on the key at its last change of the
        store (and the store works): its slots may then be used before they are due."""
        return self.session.failed is None and self.session.processes <= 1

    async def take(
        self,
        *,
        interval: float,
        slack: float,
        horizon: float,
        history: float,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
        early: bool = False,
    ) -> float:
        """Wait for a slot of the shared lane; returns when it was due (``clock``'s time).

        ``early``: while this process is alone on the key, the slot is returned without
        waiting for it, to be used now (``Limiter``'s burst): the store's next free slot
        moves on all the same, so whoever comes next starts after it."""
        session = self.session
        while session.failed is None:
            if (at := self._from_block(interval, slack, clock)) is not None:
                if not early and (wait := at - clock()) > 0:  # (a slot already due: no trip)
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
                    if not early and (wait := at - clock()) > 0:
                        await sleep(wait)
                    return at
                if at <= clock() or (early and ticket.processes == 1):
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
