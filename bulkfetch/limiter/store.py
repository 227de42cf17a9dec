"""Where runs on one key share its lanes' pacing: the store interface and the file store.

A ``RateStore`` keeps, for one API host and one key, each lane's ``LaneState`` and the
processes' leases (``shared_pace``), and applies its decisions atomically: ``take`` a
slot (giving back an unused one first), ``confirm`` a reserved slot after sleeping to
it, report a 429 (``refused``) and a request sent later than its slot (``sent_late``),
``renew`` and ``release`` a process's lease. Every answer is relative (a delay, a count):
processes never compare clocks.

Stores are found by the API host and a **fingerprint** of the key: the first 16 hex
digits of an HMAC-SHA256 of it, never the key itself, so that a store's name or content
gives nothing away (the file's name and Redis's keys are readable by others).

* ``FileStore`` (the default, one host): ``$XDG_CACHE_HOME/bulkfetch/rates/HOST-FP.json``,
  changed in place under ``fcntl.flock``. Not fsynced: pacing state is worth nothing
  after a reboot (``shared_pace`` forgets it).
* ``RedisStore`` (``redis://host:port/db``, across hosts): ``rate_store_redis``.
* ``none``: no store; each process paces alone (the in-process slots).
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import anyio.to_thread
import orjson
from yarl import URL

from bulkfetch.config import ApiKey
from bulkfetch.errors import RateStoreError, UsageError
from bulkfetch.limiter.shared_pace import (
    Grant,
    LaneState,
    give_back,
    live_leases,
    others_since,
    refused,
    renew_lease,
    sent_late,
    slot_still_good,
    take_slot,
)

__all__ = [
    "FileStore",
    "RateStore",
    "Ticket",
    "check_store_url",
    "fingerprint",
    "store_name",
]

log = logging.getLogger(__name__)

KIND, VERSION = "bulkfetch-rate-store", 1
#: Not secret: it only makes the fingerprint this project's own (a fingerprint of the same
#: key elsewhere, with plain SHA-256, does not match it).
_FINGERPRINT_SALT = b"bulkfetch rate store v1"
_T = TypeVar("_T")


def fingerprint(key: ApiKey) -> str:
    """16 hex digits that tell keys apart and give nothing of the key away."""
    mac = hmac.new(_FINGERPRINT_SALT, key.reveal().encode(), hashlib.sha256)
    return mac.hexdigest()[:16]


def store_name(api_url: str, key: ApiKey) -> str:
    """``HOST_PORT-FINGERPRINT``: the API host (limits are per service) and the key."""
    url = URL(api_url)
    host = re.sub(r"[^A-Za-z0-9.-]", "-", url.host or "host")
    return f"{host}_{url.port or 0}-{fingerprint(key)}"


def check_store_url(value: str) -> str:
    """The ``--rate-store`` value as given, if usable: '' (the file store), ``none``,
    ``file``, or a ``redis://`` / ``rediss://`` URL with a host."""
    text = value.strip()
    if text.lower() in ("", "none", "file"):
        return text.lower()
    url = URL(text)
    if url.scheme not in ("redis", "rediss") or not url.host:
        raise UsageError(
            f"rate store {text!r} is not redis://HOST:PORT/DB, rediss://..., 'none' or 'file'"
        )
    db = url.path.strip("/")
    if db and not db.isdigit():
        raise UsageError(f"rate store {text!r}: the database must be a number (redis://h:p/0)")
    return text


@dataclass(frozen=True, slots=True)
class Ticket:
    """A store's answer to ``take``: the slot, and how long until it (seconds)."""

    grant: Grant
    delay: float
    #: Processes holding a lease on this key now (this one included).
    processes: int
    #: Other processes' slots between this owner's previous slot and this one (``since``
    #: and ``grant.at``), as offsets from the store's clock now, like ``delay``.
    others: tuple[float, ...] = ()


class RateStore(Protocol):
    """A lane's shared pacing state, kept for every process on one key."""

    #: Names the store in messages (a URL without a password, or a path).
    where: str

    async def take(
        self,
        lane: str,
        owner: str,
        *,
        interval: float,
        slack: float,
        horizon: float,
        ttl: float,
        unused: Grant | None = None,
        since: float = -math.inf,
        history: float = 0.0,
        block: float = 0.0,
    ) -> Ticket:
        """Give back ``unused`` if they are still the last slots, renew ``owner``'s
        lease for ``ttl`` seconds, and reserve the next slot, or the slots of ``block``
        seconds if ``owner`` is the only process with a live lease; tell the other
        processes' slots after ``since`` (this owner's previous ``grant.at``) and before
        this one, of those kept ``history`` seconds."""

    async def confirm(self, lane: str, grant: Grant) -> bool:
        """Whether the reserved slot may still be used (no pause came since)."""

    async def refused(
        self, lane: str, *, limit_interval: float, strict: bool, pause: float
    ) -> None:
        """Report a 429: every process slows to ``limit_interval``, all pause ``pause``."""

    async def sent_late(self, lane: str, *, late: float, spacing: float) -> None:
        """A slot ``spacing`` from the next was used ``late`` seconds after it: the next
        free slot moves on by as much, at most ``spacing`` (``shared_pace.sent_late``)."""

    async def renew(self, owner: str, ttl: float) -> int:
        """Extend ``owner``'s lease; returns the processes alive."""

    async def release(self, owner: str) -> None:
        """Drop ``owner``'s lease (the process is ending)."""

    async def aclose(self) -> None:
        """Close connections."""


def default_store_dir() -> Path:
    """``$XDG_CACHE_HOME/bulkfetch/rates`` (``~/.cache`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "bulkfetch" / "rates"


class FileStore:
    """The shared state in one JSON file per API host and key, under an OS lock.

    The file stays open for the run; each change takes ``flock`` on it, reads it, and
    rewrites it in place: cheap enough for a slot every millisecond. Readers only read
    under the lock, so none sees a write half done; a process killed while writing
    leaves a file that does not parse, and the next reader starts afresh (pacing state:
    a slot or two at most). The lock is tried without blocking first; only when another
    process holds it does the change wait in a worker thread, never in the event loop.
    """

    __slots__ = ("_fd", "_mutex", "path", "where")

    def __init__(self, path: Path) -> None:
        self.path = path
        self.where = str(path)
        self._fd: int | None = None
        # flock is per open file: this process's own changes (two lanes, one in a
        # worker thread) are kept apart by a mutex as well.
        self._mutex = threading.Lock()

    def __repr__(self) -> str:
        return f"<FileStore {self.path}>"

    def _change(self, fd: int, change: Callable[[dict[str, Any], float], _T], write: bool) -> _T:
        """``change`` applied to the file's content, with the lock held."""
        raw = os.pread(fd, max(os.fstat(fd).st_size, 1), 0)
        data = self._parse(raw)
        result = change(data, _wall_clock())
        if not write:
            return result
        out = orjson.dumps(data)
        if out != raw:
            os.pwrite(fd, out, 0)
            if len(out) < len(raw):
                os.ftruncate(fd, len(out))
        return result

    def _parse(self, raw: bytes) -> dict[str, Any]:
        data = None
        if raw:
            try:
                data = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                # Only pacing: a damaged file costs at most a slot or two; start afresh.
                log.warning("rate store %s unreadable (%s); starting afresh", self.path, exc)
        if not isinstance(data, dict) or data.get("kind") != KIND:
            return {"kind": KIND, "version": VERSION, "lanes": {}, "leases": {}}
        return data

    def _locked(self, fd: int, change: Callable[[dict[str, Any], float], _T], write: bool) -> _T:
        """Wait for the locks (in a worker thread), then change."""
        with self._mutex:
            # Released by the kernel if the process dies. A read shares the lock with
            # other readers (a confirm needs no write).
            fcntl.flock(fd, fcntl.LOCK_EX if write else fcntl.LOCK_SH)
            try:
                return self._change(fd, change, write)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    async def _apply(
        self, change: Callable[[dict[str, Any], float], _T], *, write: bool = True
    ) -> _T:
        try:
            if self._fd is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            fd = self._fd
            if self._mutex.acquire(blocking=False):
                try:
                    try:
                        fcntl.flock(fd, (fcntl.LOCK_EX if write else fcntl.LOCK_SH) | fcntl.LOCK_NB)
                    except BlockingIOError:
                        pass  # another process holds it: wait in a thread
                    else:
                        try:
                            return self._change(fd, change, write)
                        finally:
                            fcntl.flock(fd, fcntl.LOCK_UN)
                finally:
                    self._mutex.release()
            return await anyio.to_thread.run_sync(self._locked, fd, change, write)
        except OSError as exc:
            raise RateStoreError(f"rate store {self.path}: {exc.strerror}") from None

    async def take(
        self,
        lane: str,
        owner: str,
        *,
        interval: float,
        slack: float,
        horizon: float,
        ttl: float,
        unused: Grant | None = None,
        since: float = -math.inf,
        history: float = 0.0,
        block: float = 0.0,
    ) -> Ticket:
        def change(data: dict[str, Any], now: float) -> Ticket:
            data["leases"] = leases = renew_lease(_leases(data), owner, now, ttl)
            processes = live_leases(leases, now)
            state = _lane(data, lane)
            if unused is not None:
                state = give_back(state, unused)
            state, grant = take_slot(
                state,
                now,
                interval=interval,
                slack=slack,
                horizon=horizon,
                owner=owner,
                history=history,
                block=block if processes == 1 else 0.0,
            )
            data["lanes"][lane] = _dump(state)
            others = tuple(at - now for at in others_since(state, owner, since, grant.at))
            return Ticket(grant, grant.at - now, processes, others)

        return await self._apply(change)

    async def confirm(self, lane: str, grant: Grant) -> bool:
        def still_good(data: dict[str, Any], _now: float) -> bool:
            # Only the pause matters here: the lane's recent slots are not even read.
            state = _lane(data, lane, recent=False)
            return slot_still_good(state, grant.at)

        return await self._apply(still_good, write=False)

    async def refused(
        self, lane: str, *, limit_interval: float, strict: bool, pause: float
    ) -> None:
        def change(data: dict[str, Any], now: float) -> None:
            state = refused(
                _lane(data, lane), now, limit_interval=limit_interval, strict=strict, pause=pause
            )
            data["lanes"][lane] = _dump(state)

        await self._apply(change)

    async def sent_late(self, lane: str, *, late: float, spacing: float) -> None:
        def change(data: dict[str, Any], _now: float) -> None:
            state = sent_late(_lane(data, lane), late=late, spacing=spacing)
            data["lanes"][lane] = _dump(state)

        await self._apply(change)

    async def renew(self, owner: str, ttl: float) -> int:
        def change(data: dict[str, Any], now: float) -> int:
            data["leases"] = leases = renew_lease(_leases(data), owner, now, ttl)
            return live_leases(leases, now)

        return await self._apply(change)

    async def release(self, owner: str) -> None:
        def change(data: dict[str, Any], _now: float) -> None:
            data["leases"] = {k: v for k, v in _leases(data).items() if k != owner}

        await self._apply(change)

    async def aclose(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _wall_clock() -> float:
    # The wall clock, not the monotonic one: the file outlives a reboot, and shared_pace
    # forgets states that lie far ahead of or behind it.
    return time.time()


def _lane(data: dict[str, Any], name: str, *, recent: bool = True) -> LaneState:
    lanes = data.setdefault("lanes", {})
    raw = lanes.get(name)
    if not isinstance(raw, dict):
        return LaneState()
    try:
        return LaneState(
            next_at=float(raw.get("next_at", -1e308)),
            limit_interval=float(raw.get("limit_interval", 0.0)),
            strict=bool(raw.get("strict", False)),
            paused_until=float(raw.get("paused_until", -1e308)),
            used_at=float(raw.get("used_at", -1e308)),
            refusals=int(raw.get("refusals", 0)),
            recent=tuple((float(at), str(who)) for at, who in raw.get("recent", ()))
            if recent
            else (),
        )
    except (TypeError, ValueError):
        return LaneState()


def _dump(state: LaneState) -> dict[str, Any]:
    # JSON has no infinity: the far past is -1e308, which every rule reads the same way.
    # (By hand, not dataclasses.asdict: that deep-copies every recent slot, 2 ms a call.)
    return {
        "next_at": max(state.next_at, -1e308),
        "limit_interval": state.limit_interval,
        "strict": state.strict,
        "paused_until": max(state.paused_until, -1e308),
        "used_at": max(state.used_at, -1e308),
        "refusals": state.refusals,
        "recent": state.recent,
    }


def _leases(data: dict[str, Any]) -> dict[str, float]:
    raw = data.get("leases")
    if not isinstance(raw, dict):
        return {}
    return {str(k): float(v) for k, v in raw.items() if isinstance(v, int | float)}
