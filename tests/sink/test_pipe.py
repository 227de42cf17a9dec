"""BlockPipe: blocks from the event loop to one thread, in order, bounded, and abortable."""

from __future__ import annotations

import threading
import time

import anyio
import pytest

from bulkfetch.sink._pipe import BlockPipe

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # BlockPipe wakes the loop with call_soon_threadsafe


def _consume(pipe: BlockPipe, got: list[list[bytes]], delay: float = 0.0) -> None:
    while (item := pipe.get()) is not None:
        got.append(item)
        time.sleep(delay)


async def test_every_block_arrives_in_order_and_close_ends_the_thread() -> None:
    pipe = BlockPipe(2)
    got: list[list[bytes]] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(anyio.to_thread.run_sync, lambda: _consume(pipe, got))
        for i in range(200):
            await pipe.put([bytes([i % 256])])
        pipe.close()
    assert got == [[bytes([i % 256])] for i in range(200)]


async def test_put_waits_for_room_and_never_holds_more_than_depth() -> None:
    pipe = BlockPipe(3)
    for i in range(3):
        await pipe.put([b"%d" % i])
    with anyio.move_on_after(0.2) as scope:
        await pipe.put([b"3"])  # full, and nobody takes: waits
    assert scope.cancelled_caught
    taken: list[list[bytes] | None] = []
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:

            def take_one_later() -> None:
                time.sleep(0.05)
                taken.append(pipe.get())

            tg.start_soon(anyio.to_thread.run_sync, take_one_later)
            await pipe.put([b"3"])  # room once the thread took one
    assert taken == [[b"0"]]


async def test_a_thread_that_fails_breaks_the_loops_waiting_put() -> None:
    pipe = BlockPipe(1)
    await pipe.put([b"a"])

    def fail_later() -> None:
        time.sleep(0.05)
        pipe.abort()

    threading.Thread(target=fail_later).start()
    with anyio.fail_after(5), pytest.raises(anyio.BrokenResourceError):
        await pipe.put([b"b"])  # waiting for room when the thread gave up
    with pytest.raises(anyio.BrokenResourceError):
        await pipe.put([b"c"])


async def test_abort_on_the_loop_side_stops_the_thread_at_its_next_get() -> None:
    pipe = BlockPipe(4)
    got: list[list[bytes]] = []
    started = threading.Event()

    def consume() -> None:
        started.set()
        _consume(pipe, got, delay=0.05)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.to_thread.run_sync, consume)
            for i in range(4):
                await pipe.put([b"%d" % i])
            await anyio.to_thread.run_sync(started.wait)
            pipe.abort()  # what still waits is dropped
    assert len(got) < 4


async def test_close_with_nothing_put_ends_the_thread() -> None:
    pipe = BlockPipe(2)
    got: list[list[bytes]] = []
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.to_thread.run_sync, lambda: _consume(pipe, got))
            pipe.close()
    assert got == []
