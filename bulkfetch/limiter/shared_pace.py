"""The decisions of a lane's pacing shared by several processes, as pure functions.

Several runs on one key (cron jobs whose windows overlap, pods of a Kubernetes Job) must
together stay within the key's limit. They share, per lane, a ``LaneState``: the next
free slot, the limit the server taught (by a 429), and how long the lane is paused after
one; and, per key, ``leases``: which processes are alive and until when. A store
(``rate_store``: a file on one host, Redis across hosts) keeps them and applies these
functions atomically; the in-process pacing applies the same ones to a state in memory.

How slots are shared: a process asks for a slot only when it has a request to send, and
reserves the next free one (``take_slot``); the next free slot moves one interval on. A
busy process holds at most one reserved slot per lane, so while several are busy their
reservations interleave (fair sharing: each gets its turn), and one that goes idle, ends
or dies holds none from its next turn on. A slot reserved and then not used (the work
went away) is given back if nobody reserved after it (``give_back``).

A process **alone on the key** (the only live lease) may reserve a *block* of slots in
one change of the store (``take_slot``'s ``block``): the slots of the next ``BLOCK_SPAN``
seconds, paced out locally. The store's next free slot moves past the whole block, so
whoever comes next starts after it: never above the limit together. A block is at most
``BLOCK_SPAN`` long, so a newcomer waits at most that long for its first slot, a 429
reported by another process reaches the block's holder at its next change (at most that
late), and a killed holder keeps no slot longer than that. At EOS's 10 a minute a block
is one slot (no change at all); at thousands a second it spares the store (a file read,
parsed and rewritten under a lock) all but one change in dozens.

**A request sent late** (its process stalled, or the request waited for its ledger, a
connection or a download) arrives where the grid put a later slot: one late by more than
the window's headroom crowds a window a limiter counts, and its 429 pauses the key for
as long as the server asks (a whole window, where it rounds up to seconds). So a process
that sends later than its slot's ``slack`` tells the store (``sent_late``), which moves
the next free slot on by the lateness (at most a slot), as a lane on its own does;
within ``slack`` the grid's headroom absorbs it.

Times are the store's clock in seconds (the wall clock for the file, Redis's own ``TIME``
across hosts); processes only ever see delays, so their clocks need not agree. Each maps
the store's times to its own clock by the offset its round trips to the store show
(``StoreClock``): a reply that came back late (its process busy) must not move the slot
it names later, unseen, onto the next process's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

__all__ = [
    "BLOCK_SPAN",
    "LEASE",
    "Grant",
    "LaneState",
    "StoreClock",
    "block_size",
    "fallback_interval",
    "give_back",
    "late_shift",
    "live_leases",
    "others_since",
    "refused",
    "renew_lease",
    "sent_late",
    "slot_still_good",
    "take_slot",
]

#: Seconds a process's lease lasts without renewal: a killed process stops counting
#: among the processes sharing the key this long after its last renewal.
LEASE = 15.0

#: Recent slots a lane remembers, at most (two windows at 10/min are 20; at rates of
#: more than 128 a window, a 429 is read from the last 256 requests of the key).
KEEP_SLOTS = 256
#: A lane untouched this long starts afresh: a limit taught by a 429 last week (or a
#: clock that jumped) must not slow today's run; a real limit teaches itself again.
FORGET_AFTER = 900.0
#: Seconds of slots a process alone on the key reserves at once, at most (see above).
BLOCK_SPAN = 0.05
#: Slots in one block, at most: a block's slots are remembered among the recent ones.
MAX_BLOCK = KEEP_SLOTS // 4


@dataclass(frozen=True, slots=True)
class LaneState:
    """One lane's shared pacing, in the store's clock."""

    #: When the next free slot is.
    next_at: float = -math.inf
    #: Seconds per request the server was taught to allow by a 429 (0: nothing taught).
    limit_interval: float = 0.0
    #: The server spaces requests (a 429 came with room left in its window).
    strict: bool = False
    #: No slot before this (a 429, or a server failing every request).
    paused_until: float = -math.inf
    #: When a slot was last taken, to forget a lane left alone.
    used_at: float = -math.inf
    #: 429s reported to the store, by every process.
    refusals: int = 0
    #: Recent slots: (when, owner), oldest first. A process that gets a 429 must know
    #: what the whole key sent before it, not only its own share, to read the limit
    #: from it (``pacing.limit_after_429``): each process learns the others' slots
    #: with its next one (``others_since``).
    recent: tuple[tuple[float, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Grant:
    """A reserved slot: when (store clock), and what the lane taught so far."""

    at: float
    spacing: float
    limit_interval: float
    strict: bool
    refusals: int
    #: Slots reserved from ``at`` on, ``spacing`` apart (more than one: a block).
    count: int = 1

    @property
    def end(self) -> float:
        """Where the next process's slot may start: one spacing after the last slot."""
        return self.at + self.count * self.spacing


def _fresh(state: LaneState, now: float, horizon: float) -> LaneState:
    """The state, or a fresh one if it was left alone or lies beyond ``horizon`` ahead
    (the clock went back, or a stale file): either way its times mean nothing now."""
    idle = now - state.used_at > FORGET_AFTER
    ahead = max(state.next_at, state.paused_until) - now > horizon
    if idle or ahead or state.used_at > now + horizon:
        return LaneState(refusals=state.refusals)
    return state


def others_since(state: LaneState, owner: str, since: float, upto: float) -> tuple[float, ...]:
    """The slots of other processes after ``since`` and up to ``upto``: the asker's
    previous slot and the one it was just given. Every slot before its own is told to a
    process before it sends (it may be refused for them), and each slot only once."""
    return tuple(at for at, who in state.recent if since < at <= upto and who != owner)


def block_size(spacing: float, block: float) -> int:
    """How many slots ``spacing`` apart fit in ``block`` seconds: 1 at least (a slot),
    ``MAX_BLOCK`` at most."""
    if block <= 0 or spacing <= 0:
        return 1
    return max(1, min(MAX_BLOCK, math.floor(block / spacing + 1e-9)))


def take_slot(
    state: LaneState,
    now: float,
    *,
    interval: float,
    slack: float,
    horizon: float,
    owner: str = "",
    history: float = 0.0,
    block: float = 0.0,
) -> tuple[LaneState, Grant]:
    """Reserve the lane's next free slot for a process pacing at ``interval``; with
    ``block`` (seconds: only for a process alone on the key), the slots of that long.

    Slots are spaced by the larger of the caller's interval and the limit the lane was
    taught, so one process's 429 slows all. A slot is counted from when the previous one
    was due, unless that is more than ``slack`` ago (an idle lane does not make up lost
    slots: a burst would break a window's count).
    """
    state = _fresh(state, now, horizon)
    spacing = max(interval, state.limit_interval)
    due = state.next_at
    base = due if now - due <= slack else now
    at = max(base, state.paused_until)
    count = block_size(spacing, block)
    # Slots are remembered for ``history`` seconds (two windows: what a 429 is read by).
    recent = tuple(r for r in state.recent if r[0] > now - history)
    mine = tuple((at + i * spacing, owner) for i in range(count))
    recent = (*recent, *mine)[-KEEP_SLOTS:]
    new = replace(state, next_at=at + count * spacing, used_at=now, recent=recent)
    return new, Grant(at, spacing, new.limit_interval, new.strict, new.refusals, count)


def slot_still_good(state: LaneState, at: float) -> bool:
    """Whether a slot reserved for ``at`` may still be used: not if a 429 paused the lane
    past it meanwhile (the holder then reserves again)."""
    return state.paused_until <= at


def give_back(state: LaneState, grant: Grant) -> LaneState:
    """Return unused slots (``grant``: one, or the rest of a block), if they are still the
    last ones reserved (else they are lost, which only ever slows the lane)."""
    if math.isclose(state.next_at, grant.end, rel_tol=0.0, abs_tol=1e-6):
        recent = tuple(r for r in state.recent if r[0] < grant.at - 1e-6)
        return replace(state, next_at=grant.at, recent=recent)
    return state


def late_shift(late: float, spacing: float) -> float:
    """How far the slots after a request sent ``late`` seconds after its own move on: by
    the lateness, at most one ``spacing`` (see ``sent_late``). The one rule for a lane on
    its own, a block or a fallback pace, and the store (its Redis script says it again)."""
    return min(max(0.0, late), spacing)


def sent_late(state: LaneState, *, late: float, spacing: float) -> LaneState:
    """A slot was used ``late`` seconds after it (beyond its slack): the request takes the
    room of one more slot where it arrived, so the next free slot moves on by the
    lateness, at most one ``spacing``. Slots already reserved keep their times.

    Late by less than a spacing, the grid goes on from the send, as if counted from it;
    later, the request is one more among the slots around it, and a window holds as
    many of those as the grid gives it: one slot fewer on the grid makes room for it.
    """
    shift = late_shift(late, spacing)
    return replace(state, next_at=state.next_at + shift) if shift > 0 else state


def refused(
    state: LaneState, now: float, *, limit_interval: float, strict: bool, pause: float
) -> LaneState:
    """A process saw a 429 and learned ``limit_interval``: every process slows to it and
    the lane pauses ``pause`` seconds for all. The limit only ever rises here: the
    slowest belief wins."""
    return replace(
        state,
        limit_interval=max(state.limit_interval, limit_interval),
        strict=state.strict or strict,
        paused_until=max(state.paused_until, now + max(0.0, pause)),
        refusals=state.refusals + 1,
        used_at=max(state.used_at, now),
    )


def renew_lease(
    leases: Mapping[str, float], owner: str, now: float, ttl: float
) -> dict[str, float]:
    """The leases with ``owner``'s extended to ``now + ttl`` and the expired ones gone: a
    process killed with ``kill -9`` stops counting once its lease runs out."""
    live = {k: v for k, v in leases.items() if v > now}
    live[owner] = now + ttl
    return live


def live_leases(leases: Mapping[str, float], now: float) -> int:
    """How many processes hold a lease now (at least 1: the one asking)."""
    return max(1, sum(1 for expiry in leases.values() if expiry > now))


class StoreClock:
    """This process's clock minus the store's, from the round trips of its changes.

    A change sent at ``sent`` and answered at ``answered`` (this process's clock) was
    applied at some store time ``now`` in between: the offset lies in
    ``[sent - now, answered - now]``. The reply's way back may be slow (the event loop
    busy, the process descheduled): the least ``answered - now`` of recent changes is
    the truest, as NTP reads its fastest exchanges. Samples the newest one contradicts
    (a clock that stepped) are dropped.
    """

    __slots__ = ("_samples",)

    #: Round trips kept.
    keep = 16

    def __init__(self) -> None:
        self._samples: list[tuple[float, float]] = []

    def __repr__(self) -> str:
        return f"<StoreClock samples={len(self._samples)}>"

    def update(self, *, sent: float, answered: float, store_now: float) -> float:
        """Learn one round trip; returns the offset to add to a store time."""
        lo, hi = sent - store_now, answered - store_now
        kept = [(a, b) for a, b in self._samples if a <= hi and b >= lo]
        self._samples = [*kept[-(self.keep - 1) :], (lo, hi)]
        return max(lo, min(b for _, b in self._samples))


def fallback_interval(interval: float, processes: int) -> float:
    """The pace of a process that lost the shared store: its share of the key's rate, by
    the number of processes last seen alive, so that together they stay under the limit
    whatever the others do (they lost it too, or still share it among themselves)."""
    return interval * max(1, processes)
