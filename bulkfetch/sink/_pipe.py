"""A bounded hand-over of blocks from the event loop to one thread that lives for a download.

Why not a worker-thread call per block: each call is a round trip through the event loop
(submit, run, wake the loop, resume the task, submit the next), and the loop is busy
receiving the very bytes being written. Measured on a 500 MB result, the writer thread
then waited for the loop as long as it hashed and wrote. Here the thread takes the next
block as soon as it is put, and the loop is woken only when it waits for room.

asyncio, not anyio: waking the loop from a thread without blocking that thread needs
``call_soon_threadsafe``, and aiohttp ties every run to asyncio anyway.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque

import anyio

__all__ = ["BlockPipe"]


class BlockPipe:
    """Up to ``depth`` items between one event-loop producer and one thread consumer.

    The loop ``put``\\s (waiting while ``depth`` items wait) and then ``close``\\s, or
    ``abort``\\s on failure; the thread ``get``\\s until None. Either side may ``abort``:
    the thread stops at its next ``get``, and a ``put`` raises
    :class:`anyio.BrokenResourceError`.
    """

    __slots__ = (
        "_aborted",
        "_closed",
        "_cond",
        "_depth",
        "_items",
        "_loop",
        "_loop_thread",
        "_room",
    )

    def __init__(self, depth: int) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._cond = threading.Condition()
        self._items: deque[list[bytes]] = deque()
        self._depth = depth
        self._room: asyncio.Future[None] | None = None  # the loop waits for a free place
        self._closed = False
        self._aborted = False

    async def put(self, item: list[bytes]) -> None:
        """Hand ``item`` over, first waiting for room if ``depth`` items wait (loop side)."""
        while True:
            with self._cond:
                if self._aborted:
                    raise anyio.BrokenResourceError
                if len(self._items) < self._depth:
                    self._items.append(item)
                    self._cond.notify()
                    return
                room = self._room = self._loop.create_future()
            await room

    def close(self) -> None:
        """No more items: the thread takes what waits, then gets None (loop side)."""
        with self._cond:
            self._closed = True
            self._cond.notify()

    def abort(self) -> None:
        """Drop what waits; the thread gets None next, and ``put`` raises (either side)."""
        with self._cond:
            self._aborted = True
            self._items.clear()
            self._cond.notify()
            room, self._room = self._room, None
        if room is not None:
            self._wake(room)

    def get(self) -> list[bytes] | None:
        """The next item, waiting for one; None once closed and empty, or aborted (thread)."""
        with self._cond:
            while not self._items and not self._closed and not self._aborted:
                self._cond.wait()
            if self._aborted or not self._items:
                return None
            item = self._items.popleft()
            room, self._room = self._room, None
        if room is not None:
            self._wake(room)
        return item

    def _wake(self, room: asyncio.Future[None]) -> None:
        if threading.get_ident() == self._loop_thread:
            _set(room)
        else:
            self._loop.call_soon_threadsafe(_set, room)


def _set(room: asyncio.Future[None]) -> None:
    if not room.done():  # (cancelled: the loop stopped waiting)
        room.set_result(None)
