"""The rate stores' contract, run alike against the file store and a real Redis: the same
steps give the same answers, so the Lua scripts and the Python decisions agree."""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import anyio
import pytest

from bulkfetch.config import ApiKey, Rate
from bulkfetch.errors import RateStoreError, UsageError
from bulkfetch.limiter.lane import Limiter
from bulkfetch.limiter.redis_store import RedisStore
from bulkfetch.limiter.share import LATE_EVERY, LEASE, RateSession
from bulkfetch.limiter.shared_lane import SharedLane
from bulkfetch.limiter.shared_pace import BLOCK_SPAN, Grant, block_size
from bulkfetch.limiter.store import (
    FileStore,
    RateStore,
    Ticket,
    check_store_url,
    fingerprint,
    store_name,
)
from tests.redis_server import RedisServer

pytestmark = pytest.mark.anyio
INTERVAL = 0.2
#: Loopback and a loaded machine: the time between two calls, at most.
EPS = 0.05


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["file", "redis"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, redis_server: RedisServer
) -> AsyncIterator[RateStore]:
    made: RateStore
    if request.param == "file":
        made = FileStore(tmp_path / "rates" / "host_80-0123456789abcdef.json")
    else:
        redis_server.flush()
        made = RedisStore(redis_server.url, f"host_80-{os.getpid()}")
    try:
        yield made
    finally:
        await made.aclose()


async def _take(
    store: RateStore, owner: str = "a", unused: Grant | None = None
) -> tuple[float, Ticket]:
    ticket = await store.take(
        "create",
        owner,
        interval=INTERVAL,
        slack=0.0,
        horizon=60.0,
        ttl=5.0,
        unused=unused,
        history=9,
    )
    return ticket.delay, ticket


async def test_slots_are_reserved_one_interval_apart_and_leases_counted(
    store: RateStore,
) -> None:
    delay1, t1 = await _take(store, "a")
    delay2, t2 = await _take(store, "b")
    delay3, t3 = await _take(store, "a")
    assert delay1 <= 0.0 + EPS
    assert delay2 == pytest.approx(INTERVAL, abs=EPS)
    assert delay3 == pytest.approx(2 * INTERVAL, abs=EPS)
    assert [t.processes for t in (t1, t2, t3)] == [1, 2, 2]


async def test_each_owner_is_told_the_others_slots_before_its_own(store: RateStore) -> None:
    _, a1 = await _take(store, "a")
    _, b1 = await _take(store, "b")
    _, c1 = await _take(store, "c")
    ticket = await store.take(
        "create", "a", interval=INTERVAL, slack=0, horizon=60, ttl=5, since=a1.grant.at, history=9
    )
    # b's and c's slots come before a's second: told (as offsets from now, like delay).
    assert len(ticket.others) == 2
    gaps = [ticket.delay - o for o in ticket.others]
    assert gaps == pytest.approx([2 * INTERVAL, INTERVAL], abs=1e-6)
    again = await store.take(
        "create",
        "a",
        interval=INTERVAL,
        slack=0,
        horizon=60,
        ttl=5,
        since=ticket.grant.at,
        history=9,
    )
    assert again.others == ()  # nobody else took one since
    # A newcomer is told what came before it.
    assert (len(a1.others), len(b1.others), len(c1.others)) == (0, 1, 2)


async def test_an_unused_slot_goes_to_the_next_asker(store: RateStore) -> None:
    await _take(store, "a")
    _, unused = await _take(store, "a")
    delay, again = await _take(store, "b", unused=unused.grant)
    assert again.grant.at == pytest.approx(unused.grant.at, abs=1e-6)
    assert delay == pytest.approx(INTERVAL, abs=EPS)


async def test_alone_on_the_key_a_process_gets_a_block_and_a_newcomer_comes_after_it(
    store: RateStore,
) -> None:
    fast = 0.001
    alone = await store.take(
        "status", "a", interval=fast, slack=0, horizon=60, ttl=5, history=9, block=BLOCK_SPAN
    )
    assert alone.processes == 1
    assert alone.grant.count == block_size(fast, BLOCK_SPAN) > 1
    newcomer = await store.take(
        "status", "b", interval=fast, slack=0, horizon=60, ttl=5, history=9, block=BLOCK_SPAN
    )
    # Two leases now: one slot each, the newcomer's after a's whole block, told of it.
    assert (newcomer.processes, newcomer.grant.count) == (2, 1)
    assert newcomer.grant.at == pytest.approx(alone.grant.end, abs=1e-6)
    assert len(newcomer.others) == alone.grant.count
    again = await store.take(
        "status", "a", interval=fast, slack=0, horizon=60, ttl=5, history=9, block=BLOCK_SPAN
    )
    assert again.grant.count == 1


async def test_the_rest_of_a_block_goes_back_to_the_store(store: RateStore) -> None:
    fast = 0.001
    held = await store.take(
        "create", "a", interval=fast, slack=0, horizon=60, ttl=5, history=9, block=BLOCK_SPAN
    )
    rest = replace(held.grant, at=held.grant.at + 3 * fast, count=held.grant.count - 3)
    await store.renew("b", 5.0)
    # (slack: the slots given back may be a few milliseconds past by now)
    after = await store.take(
        "create", "b", interval=fast, slack=1, horizon=60, ttl=5, history=9, unused=rest
    )
    assert after.grant.at == pytest.approx(rest.at, abs=1e-6)
    assert len(after.others) == 3  # the block's slots used, not the ones given back


async def test_a_late_send_moves_the_next_slot_on_by_its_lateness_at_most_a_slot(
    store: RateStore,
) -> None:
    """The slots reserved keep their times; the next free one comes later."""
    await _take(store, "a")
    _, second = await _take(store, "b")
    await store.sent_late("create", late=0.05, spacing=INTERVAL)
    _, third = await _take(store, "a")
    assert third.grant.at == pytest.approx(second.grant.at + INTERVAL + 0.05, abs=1e-6)
    await store.sent_late("create", late=30.0, spacing=INTERVAL)  # a slot at most
    _, fourth = await _take(store, "b")
    assert fourth.grant.at == pytest.approx(third.grant.at + 2 * INTERVAL, abs=1e-6)
    await store.sent_late("status", late=0.05, spacing=INTERVAL)  # a lane never used
    other = await store.take("status", "a", interval=INTERVAL, slack=0, horizon=60, ttl=5)
    assert other.delay <= EPS


async def test_a_429_pauses_all_teaches_all_and_voids_slots_in_the_pause(
    store: RateStore,
) -> None:
    await _take(store, "a")
    _, held = await _take(store, "b")
    assert await store.confirm("create", held.grant)  # nothing paused the lane yet
    await store.refused("create", limit_interval=0.5, strict=True, pause=1.0)
    assert not await store.confirm("create", held.grant)
    delay, ticket = await _take(store, "b")
    assert delay == pytest.approx(1.0, abs=EPS)
    grant = ticket.grant
    assert (grant.limit_interval, grant.strict, grant.refusals) == (0.5, True, 1)
    assert grant.spacing == 0.5
    delay, _ = await _take(store, "a")
    assert delay == pytest.approx(1.5, abs=EPS)  # spaced by the limit taught
    # Another lane of the same key is not paused.
    other = await store.take("status", "a", interval=INTERVAL, slack=0, horizon=60, ttl=5)
    assert other.delay <= EPS


async def test_a_lease_not_renewed_stops_counting_and_release_is_at_once(
    store: RateStore,
) -> None:
    assert await store.renew("a", 0.3) == 1
    assert await store.renew("b", 5.0) == 2
    assert await store.renew("c", 5.0) == 3
    await store.release("c")
    assert await store.renew("b", 5.0) == 2
    await anyio.sleep(0.4)  # "a" was killed: nobody renews it
    assert await store.renew("b", 5.0) == 1


async def test_an_unreachable_redis_is_named() -> None:
    url = f"redis://127.0.0.1:{RedisServer.free_port()}/0"
    store = RedisStore(url, "x")
    with pytest.raises(RateStoreError, match=url.replace("/", ".")):
        await store.ping()
    await store.aclose()


async def test_a_file_store_that_cannot_be_written_is_a_store_error(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("")
    store = FileStore(blocked / "rates" / "x.json")
    with pytest.raises(RateStoreError, match="rate store"):
        await store.renew("a", 5.0)


def test_the_fingerprint_tells_keys_apart_and_hides_them() -> None:
    a, b = ApiKey("secret-key-one"), ApiKey("secret-key-two")
    assert fingerprint(a) != fingerprint(b)
    assert len(fingerprint(a)) == 16
    assert "secret" not in store_name("https://api-connect.eos.com/api/gdw/api", a)
    assert store_name("http://127.0.0.1:8080/x", a).startswith("127.0.0.1_8080-")


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("", True),
        ("none", True),
        ("NONE", True),
        ("redis://h:6379/0", True),
        ("rediss://user:pw@h:6380/2", True),
        ("redis://h:6379/x", False),
        ("http://h/0", False),
        ("redis:///0", False),
    ],
)
def test_store_urls_are_checked(url: str, ok: bool) -> None:
    if ok:
        assert check_store_url(url) in (url, url.lower())
    else:
        with pytest.raises(UsageError):
            check_store_url(url)


def test_without_redis_py_the_message_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "redis", None)
    monkeypatch.setitem(sys.modules, "redis.asyncio", None)
    with pytest.raises(UsageError, match=r"pip install 'bulkfetch\[redis\]'"):
        RedisStore("redis://127.0.0.1:1/0", "x")


class _Clock:
    """A clock that moves on by ``step`` at every reading, and a sleep that moves it."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step
        self.slept: list[float] = []

    def __call__(self) -> float:
        self.now += self.step
        return self.now

    async def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.slept.append(seconds)
        self.now += seconds


async def _lane_take(lane: SharedLane, clock: _Clock, interval: float = INTERVAL) -> float:
    return await lane.take(
        interval=interval, slack=0.0, horizon=60.0, history=2.0, clock=clock, sleep=clock.sleep
    )


async def test_a_slow_process_never_sleeps_a_negative_delay(tmp_path: Path) -> None:
    """The slot may be due before the process gets round to sleeping for it (a loaded
    machine): it goes at once."""
    session = RateSession(FileStore(tmp_path / "x.json"))
    lane = session.lane("create")
    clock = _Clock(step=1.0)  # each reading a second later: every slot already due
    for _ in range(3):
        await _lane_take(lane, clock)
    assert all(s >= 0 for s in clock.slept)
    await session.release()


class _CountingStore(FileStore):
    """A file store that counts its changes for ``take``."""

    takes = 0

    async def take(self, *args: object, **kwargs: object) -> Ticket:
        self.takes += 1
        return await super().take(*args, **kwargs)  # type: ignore[arg-type]


async def test_alone_a_lane_paces_a_block_out_with_one_change_of_the_store(
    tmp_path: Path,
) -> None:
    """At thousands a second, a process alone on the key changes the file once a block
    (about once in 50 slots, not once a slot), and its slots are still an interval apart;
    once a second process holds a lease, the next change gives single slots again."""
    fast = 0.001
    store = _CountingStore(tmp_path / "x.json")
    session = RateSession(store)
    lane = session.lane("status")
    clock = _Clock(step=0.0)
    per_block = block_size(fast, BLOCK_SPAN)
    slots = [await _lane_take(lane, clock, fast) for _ in range(4 * per_block + 10)]
    assert store.takes == 5
    assert min(b - a for a, b in itertools.pairwise(slots)) >= fast * (1 - 1e-9)
    other = RateSession(FileStore(tmp_path / "x.json"))
    assert await other.store.renew(other.owner, LEASE) == 2
    for _ in range(per_block - 10):  # the rest of the block held: no change
        await _lane_take(lane, clock, fast)
    assert store.takes == 5
    for _ in range(2):  # then one change a slot
        await _lane_take(lane, clock, fast)
    assert store.takes == 7
    assert lane.taught is not None and lane.taught.count == 1
    assert session.processes == 2
    await other.release()
    await session.release()


async def test_a_429_gives_the_rest_of_the_block_back(tmp_path: Path) -> None:
    """This process's 429 ends its block: the slots not yet due go back to the store, so
    the lane goes on from the first of them (paused and slowed), not after the block."""
    fast = 0.01
    session = RateSession(FileStore(tmp_path / "x.json"))
    lane = session.lane("create")
    clock = _Clock(step=0.0)
    take = lane.take(
        interval=fast, slack=1.0, horizon=60, history=2, clock=clock, sleep=clock.sleep
    )
    await take
    block = lane.taught
    assert block is not None and block.count == block_size(fast, BLOCK_SPAN) > 2
    await lane.take(interval=fast, slack=1.0, horizon=60, history=2, clock=clock, sleep=clock.sleep)
    lane.refused(limit_interval=fast, strict=False, pause=0.0)
    await lane.take(interval=fast, slack=1.0, horizon=60, history=2, clock=clock, sleep=clock.sleep)
    assert lane.taught is not None
    assert lane.taught.at == pytest.approx(block.at + 2 * block.spacing, abs=1e-6)
    await session.release()


class _SlowConfirmStore(FileStore):
    """A file store whose ``confirm`` takes ``trip`` seconds of a fake clock."""

    def __init__(self, path: Path, clock: _Clock, trip: float) -> None:
        super().__init__(path)
        self.clock, self.trip = clock, trip

    async def confirm(self, lane: str, grant: Grant) -> bool:
        self.clock.now += self.trip
        return await super().confirm(lane, grant)


async def test_a_slot_is_confirmed_ahead_by_the_store_s_round_trip(tmp_path: Path) -> None:
    """With others on the key, a slot is confirmed before it is used; once the store's
    round trip is known, it is asked that long ahead, so the request goes at its slot,
    not a round trip after it."""
    clock = _Clock(step=0.0)
    session = RateSession(_SlowConfirmStore(tmp_path / "x.json", clock, trip=0.01))
    other = RateSession(FileStore(tmp_path / "x.json"))
    assert await other.store.renew(other.owner, LEASE) == 1
    lane = session.lane("create")
    await _lane_take(lane, clock)  # the first: due at once, nothing to confirm
    at = await _lane_take(lane, clock)
    assert clock.now == pytest.approx(at + 0.01)  # confirmed at the slot: 10 ms late
    at = await _lane_take(lane, clock)
    assert clock.now == pytest.approx(at)  # confirmed 10 ms ahead: on time
    await other.release()
    await session.release()


class _GoneStore(FileStore):
    async def take(self, *args: object, **kwargs: object) -> Ticket:
        raise RateStoreError("rate store redis://gone:6379/0: Connection refused")


async def test_a_store_gone_mid_run_paces_at_the_share_of_the_processes_last_seen(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    session = RateSession(_GoneStore(tmp_path / "x.json"))
    session.processes = 3
    lane = session.lane("status")
    clock = _Clock(step=0.0)
    slots = [await _lane_take(lane, clock) for _ in range(4)]
    gaps = [b - a for a, b in itertools.pairwise(slots)]
    assert gaps == pytest.approx([3 * INTERVAL] * 3)  # a third of the rate each
    assert session.failed is not None
    warnings = [r for r in caplog.records if "pacing alone at 1/3" in r.getMessage()]
    assert len(warnings) == 1  # once, naming the store
    assert "redis://gone:6379/0" in warnings[0].getMessage()
    await session.release()


class _LateCountingStore(FileStore):
    """A file store that counts its changes for ``sent_late``."""

    late_changes = 0

    async def sent_late(self, lane: str, *, late: float, spacing: float) -> None:
        self.late_changes += 1
        await super().sent_late(lane, late=late, spacing=spacing)


async def test_late_sends_reported_before_the_store_is_told_go_to_it_as_one(
    tmp_path: Path,
) -> None:
    """A lane pressed for time sends most requests late: those reported before ``serve``
    gets to them are one change of the file, moving the next slot on by all of them (each
    at most its slot), not one change each."""
    store = _LateCountingStore(tmp_path / "x.json")
    session = RateSession(store)
    await _take(store, "a")
    _, first = await _take(store, "b")
    for late in (0.01, 0.02, 30.0):  # the last, a slot at most
        session.report_late("create", late, INTERVAL)
    session.report_late("create", 0.0, INTERVAL)  # on time: nothing to tell
    async with anyio.create_task_group() as tg:
        tg.start_soon(session.serve)
        await anyio.wait_all_tasks_blocked()
        tg.cancel_scope.cancel()
    assert store.late_changes == 1
    _, after = await _take(store, "a")
    assert after.grant.at == pytest.approx(first.grant.at + 2 * INTERVAL + 0.03, abs=1e-6)
    session.report_late("create", 0.04, INTERVAL)  # once told, a new report is sent again
    async with anyio.create_task_group() as tg:
        tg.start_soon(session.serve)
        await anyio.wait_all_tasks_blocked()
        tg.cancel_scope.cancel()
    assert store.late_changes == 2
    await session.release()


async def test_late_sends_reported_while_serving_are_told_at_most_every_few_slots(
    tmp_path: Path,
) -> None:
    """At thousands of slots a second most sends are late, each reported as it goes: the
    store is told their sum at once, then at most every ``LATE_EVERY``, not once each."""
    store = _LateCountingStore(tmp_path / "x.json")
    session = RateSession(store)
    async with anyio.create_task_group() as tg:
        tg.start_soon(session.serve)
        started = anyio.current_time()
        for _ in range(100):
            session.report_late("create", 0.001, INTERVAL)
            await anyio.sleep(0.002)
        elapsed = anyio.current_time() - started
        await anyio.sleep(2 * LATE_EVERY)
        tg.cancel_scope.cancel()
    assert 1 < store.late_changes <= elapsed / LATE_EVERY + 2
    await session.release()


async def _burst_of(limiter: Limiter, clock: _Clock, n: int) -> list[float]:
    """``n`` requests through ``limiter``, each answered 2 ms after it went out."""
    times = []
    for _ in range(n):
        sent = await limiter.sending(await limiter.acquire())
        clock.now = sent + 0.002
        limiter.succeeded(sent)
        times.append(sent)
    return times


async def test_alone_on_the_key_a_create_lane_bursts_from_the_store(tmp_path: Path) -> None:
    """A process alone on the key uses the store's next slots at once, a window's worth
    (the store's next free slot moves past them, for whoever comes next); with a second
    process on the key it takes its slots as they come."""
    session = RateSession(FileStore(tmp_path / "x.json"))
    clock = _Clock(step=0.0)
    limiter = Limiter(
        "create",
        Rate(10, 1.0),
        clock=clock,
        sleep=clock.sleep,
        shared=session.lane("create"),
        burst=True,
    )
    times = await _burst_of(limiter, clock, 11)
    assert times[9] - times[0] == pytest.approx(0.018)
    assert times[10] - times[0] > 1.0
    other = RateSession(FileStore(tmp_path / "x.json"))
    assert await other.store.renew(other.owner, LEASE) == 2
    later = await _burst_of(limiter, clock, 4)
    assert min(b - a for a, b in itertools.pairwise(later)) >= 0.1
    await other.release()
    await session.release()


async def test_a_search_refused_its_burst_s_second_request_searches_on(tmp_path: Path) -> None:
    """A server that spaces requests refuses a burst's second: that tells nothing of its
    rate, so the search goes on (evenly), and the store, told of the 429, must not end it
    with the limit the lane believed then. (Real time: a second or so.)"""
    session = RateSession(FileStore(tmp_path / "x.json"))
    limiter = Limiter(
        "create", Rate(10, 1.0), learn=True, shared=session.lane("create"), burst=True
    )

    async def request(refused: bool = False) -> None:
        sent = await limiter.sending(await limiter.acquire())
        if refused:
            limiter.rate_limited_by_server(0.05, sent)
        else:
            limiter.succeeded(sent)

    async with anyio.create_task_group() as tg:
        tg.start_soon(session.serve)
        await request()
        await request(refused=True)
        await anyio.sleep(0.2)  # for serve to tell the store
        for _ in range(3):
            await request()
        tg.cancel_scope.cancel()
    assert session.lane("create").taught is not None
    assert limiter.search.active
    assert limiter.strict
    assert not limiter.burst
    assert limiter.limit_interval < 0.1 / 1.1**3
    await session.release()
