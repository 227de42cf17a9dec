"""The shared rate store in Redis (``--rate-store redis://host:port/db``), across hosts.

The same decisions as ``shared_pace``, written in Lua so that Redis applies each
atomically (no two processes can reserve one slot), on Redis's own clock (``TIME``), so
the hosts' clocks need not agree: every answer is a delay. Per API host and key
fingerprint: a hash per lane (``bulkfetch:rate:NAME:lane:LANE``) and a sorted set of
leases by expiry (``bulkfetch:rate:NAME:leases``); all expire after a day unused. A
test runs these scripts and the Python functions side by side on the same steps.

redis-py's asyncio client is an optional dependency (``pip install 'bulkfetch[redis]'``):
most users run one host, where the file store needs no server.
"""

from __future__ import annotations

import math
from typing import Any

import anyio
from yarl import URL

from bulkfetch.errors import RateStoreError, UsageError
from bulkfetch.limiter.shared_pace import FORGET_AFTER, KEEP_SLOTS, MAX_BLOCK, Grant
from bulkfetch.limiter.store import Ticket

__all__ = ["RedisStore"]

#: Seconds any one call to Redis may take before the store is taken for gone.
TIMEOUT = 2.0
#: Keys unused this long disappear from Redis.
KEEP = 86400

_READ = """
local function f(x) return string.format('%.17g', x) end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local h = redis.call('HMGET', KEYS[1], 'next_at', 'limit', 'strict', 'paused', 'used', 'refusals')
local far = -1e308
local next_at = tonumber(h[1]) or far
local limit = tonumber(h[2]) or 0
local strict = tonumber(h[3]) or 0
local paused = tonumber(h[4]) or far
local used = tonumber(h[5]) or far
local refusals = tonumber(h[6]) or 0
"""

_LEASE = """
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[5]), ARGV[1])
local processes = redis.call('ZCARD', KEYS[2])
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[7]))
"""

# KEYS: lane hash, leases, recent slots. ARGV: owner, interval, slack, horizon, ttl,
# forget_after, keep, unused_at, unused_spacing, since, keep_slots, history, unused_count,
# block, max_block. The lease first: a block is only for the one process alive.
_TAKE = (
    _READ
    + _LEASE
    + """
if ARGV[8] ~= '' and math.abs(next_at - (tonumber(ARGV[8])
    + tonumber(ARGV[13]) * tonumber(ARGV[9]))) <= 1e-6 then
  next_at = tonumber(ARGV[8])
  redis.call('ZREMRANGEBYSCORE', KEYS[3], next_at - 1e-6, '+inf')
end
local horizon = tonumber(ARGV[4])
if now - used > tonumber(ARGV[6]) or math.max(next_at, paused) - now > horizon
    or used > now + horizon then
  next_at = far; limit = 0; strict = 0; paused = far
  redis.call('DEL', KEYS[3])
end
local spacing = math.max(tonumber(ARGV[2]), limit)
local base = next_at
if now - next_at > tonumber(ARGV[3]) then base = now end
local at = math.max(base, paused)
local count = 1
local block = tonumber(ARGV[14])
if processes == 1 and block > 0 and spacing > 0 then
  count = math.max(1, math.min(tonumber(ARGV[15]), math.floor(block / spacing + 1e-9)))
end
redis.call('HSET', KEYS[1], 'next_at', f(at + count * spacing), 'limit', f(limit),
  'strict', strict, 'paused', f(paused), 'used', f(now), 'refusals', refusals)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[7]))
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - tonumber(ARGV[12]))
for i = 0, count - 1 do
  local slot = at + i * spacing
  redis.call('ZADD', KEYS[3], slot, ARGV[1] .. '|' .. f(slot))
end
redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -1 - tonumber(ARGV[11]))
redis.call('EXPIRE', KEYS[3], tonumber(ARGV[7]))
local since = '-inf'
if ARGV[10] ~= '' then since = '(' .. ARGV[10] end
local seen = redis.call('ZRANGEBYSCORE', KEYS[3], since, at, 'WITHSCORES')
local others = {}
local mine = ARGV[1] .. '|'
for i = 1, #seen, 2 do
  if string.sub(seen[i], 1, #mine) ~= mine then
    others[#others + 1] = f(tonumber(seen[i + 1]) - now)
  end
end
return {f(at), f(at - now), f(spacing), f(limit), strict,
  refusals, processes, others, count}
"""
)

# ARGV: at
_CONFIRM = (
    _READ
    + """
if paused <= tonumber(ARGV[1]) then return 1 end
return 0
"""
)

# ARGV: limit_interval, strict, pause, keep
_REFUSED = (
    _READ
    + """
redis.call('HSET', KEYS[1], 'limit', f(math.max(limit, tonumber(ARGV[1]))),
  'strict', math.max(strict, tonumber(ARGV[2])),
  'paused', f(math.max(paused, now + math.max(0, tonumber(ARGV[3])))),
  'used', f(math.max(used, now)), 'refusals', refusals + 1)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
return 1
"""
)

# ARGV: late, spacing, keep. As shared_pace.sent_late: the next free slot moves on by
# the lateness, at most a spacing.
_LATE = (
    _READ
    + """
local shift = math.min(math.max(0, tonumber(ARGV[1])), tonumber(ARGV[2]))
if shift <= 0 or h[1] == false then return 0 end
redis.call('HSET', KEYS[1], 'next_at', f(next_at + shift))
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
"""
)

# KEYS[1] is unused (the lease scripts share _LEASE's numbering). ARGV: owner, -, -, -, ttl,
# -, keep
_RENEW = (
    """
local function f(x) return string.format('%.17g', x) end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
"""
    + _LEASE
    + "\nreturn processes\n"
)


def _client_module() -> Any:
    try:
        import redis.asyncio
    except ImportError:
        raise UsageError(
            "--rate-store redis://... needs the redis package: pip install 'bulkfetch[redis]'"
        ) from None
    return redis.asyncio


class RedisStore:
    """The shared state in Redis, changed only by Lua scripts (atomic)."""

    __slots__ = ("_client", "_errors", "_prefix", "_scripts", "where")

    def __init__(self, url: str, name: str) -> None:
        module = _client_module()
        parsed = URL(url)
        #: The URL without a password, for messages.
        self.where = str(parsed.with_password(None)) if parsed.password else url
        #: Everything redis-py raises for a server gone, refusing or broken.
        self._errors: tuple[type[BaseException], ...] = (module.RedisError, OSError)
        self._client = module.from_url(
            url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT, decode_responses=True
        )
        self._prefix = f"bulkfetch:rate:{name}"
        self._scripts = {
            name: self._client.register_script(text)
            for name, text in (
                ("take", _TAKE),
                ("confirm", _CONFIRM),
                ("refused", _REFUSED),
                ("late", _LATE),
                ("renew", _RENEW),
            )
        }

    def __repr__(self) -> str:
        return f"<RedisStore {self.where} {self._prefix}>"

    def _keys(self, lane: str) -> list[str]:
        lane_key = f"{self._prefix}:lane:{lane}"
        return [lane_key, f"{self._prefix}:leases", f"{lane_key}:recent"]

    async def _call(self, script: str, keys: list[str], args: list[Any]) -> Any:
        try:
            with anyio.fail_after(TIMEOUT):
                return await self._scripts[script](keys=keys, args=args)
        except TimeoutError:
            raise RateStoreError(f"rate store {self.where}: no answer in {TIMEOUT:g} s") from None
        except self._errors as exc:  # connection, script, out of memory: all "gone"
            raise RateStoreError(f"rate store {self.where}: {exc}") from None

    async def ping(self) -> None:
        """Raise ``RateStoreError`` unless Redis answers."""
        try:
            with anyio.fail_after(TIMEOUT):
                await self._client.ping()
        except TimeoutError:
            raise RateStoreError(
                f"cannot reach the rate store {self.where}: no answer in {TIMEOUT:g} s"
            ) from None
        except self._errors as exc:
            raise RateStoreError(f"cannot reach the rate store {self.where}: {exc}") from None

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
        args = [owner, repr(interval), repr(slack), repr(horizon), repr(ttl)]
        args += [repr(FORGET_AFTER), str(KEEP)]
        args += [repr(unused.at), repr(unused.spacing)] if unused else ["", ""]
        args += [repr(since) if math.isfinite(since) else "", str(KEEP_SLOTS), repr(history)]
        args += [str(unused.count if unused else 1), repr(block), str(MAX_BLOCK)]
        reply = await self._call("take", self._keys(lane), args)
        at, delay, spacing, limit, strict, refusals, processes, others, count = reply
        grant = Grant(
            float(at), float(spacing), float(limit), bool(int(strict)), int(refusals), int(count)
        )
        seen = tuple(float(x) for x in others)
        return Ticket(grant, float(delay), int(processes), seen)

    async def confirm(self, lane: str, grant: Grant) -> bool:
        return bool(await self._call("confirm", self._keys(lane), [repr(grant.at)]))

    async def refused(
        self, lane: str, *, limit_interval: float, strict: bool, pause: float
    ) -> None:
        args = [repr(limit_interval), int(strict), repr(pause), KEEP]
        await self._call("refused", self._keys(lane), args)

    async def sent_late(self, lane: str, *, late: float, spacing: float) -> None:
        args = [repr(late), repr(spacing), KEEP]
        await self._call("late", self._keys(lane), args)

    async def renew(self, owner: str, ttl: float) -> int:
        args = [owner, "", "", "", repr(ttl), "", KEEP]
        return int(await self._call("renew", self._keys("-"), args))

    async def release(self, owner: str) -> None:
        try:
            with anyio.fail_after(TIMEOUT):
                await self._client.zrem(self._keys("-")[1], owner)
        except self._errors as exc:
            raise RateStoreError(f"rate store {self.where}: {exc}") from None

    async def aclose(self) -> None:
        with anyio.move_on_after(TIMEOUT):
            await self._client.aclose()
