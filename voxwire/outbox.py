"""An ordered, bounded outbox with one writer: the way every voxwire hop sends a stream's messages.

Producers ``put`` synchronously, so messages leave in exactly the order they were decided (an
ack can never overtake the results before it). One writer task writes from the head of the
queue, one message at a time (gRPC allows one write in flight per call; a WebSocket frame must
not interleave with another).

Bounds (docs/contract.md, "Limits"; docs/design/edge.md, "Flow control"):
- ``max_bytes``: what the queue may hold for a peer that does not read. A ``put`` beyond it
  raises SlowConsumer: the stream fails with a reason instead of growing without bound.
- ``high_water`` (bytes): producers of bulk data ``await wait_room()`` before producing more,
  so a peer that reads slowly slows the producer down (backpressure) long before the hard
  bound.
- ``write_timeout``: one write that waits on the peer longer than this raises SlowConsumer.

A write that fails, is cancelled or times out breaks the outbox: nothing is written after it
(the transport may still hold the interrupted message) and the writer task ends with the error.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from voxwire.errors import SlowConsumer

T = TypeVar("T")


class OutboxBroken(Exception):
    """A write failed earlier (or the peer is gone): nothing more is written."""


class Outbox(Generic[T]):
    def __init__(
        self,
        write: Callable[[T], Awaitable[None]],
        size: Callable[[T], int],
        *,
        max_bytes: int,
        high_water: int,
        write_timeout: float,
        on_sent: Callable[[float], None] | None = None,
    ) -> None:
        if not 0 < high_water <= max_bytes:
            raise ValueError("need 0 < high_water <= max_bytes")
        self._write = write
        self._size = size
        self._max_bytes = max_bytes
        self._high_water = high_water
        self._write_timeout = write_timeout
        self._on_sent = on_sent
        self._queue: collections.deque[tuple[T, int]] = collections.deque()
        self.queued_bytes = 0
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._closed = False
        self.broken: BaseException | None = None

    def put(self, item: T) -> None:
        """Queue ``item``. Raises SlowConsumer over ``max_bytes``, OutboxBroken after a failed
        write."""
        if self.broken is not None:
            raise OutboxBroken("an earlier write failed") from self.broken
        nbytes = self._size(item)
        if self.queued_bytes + nbytes > self._max_bytes:
            raise SlowConsumer(
                f"the peer left {self.queued_bytes + nbytes} bytes unread (limit "
                f"{self._max_bytes}); read responses as they come"
            )
        self._queue.append((item, nbytes))
        self.queued_bytes += nbytes
        if self.queued_bytes >= self._high_water:
            self._room.clear()
        self._ready.set()

    async def wait_room(self) -> None:
        """Return once the queue is under its high-water mark (backpressure for producers)."""
        await self._room.wait()

    def close(self) -> None:
        """No more messages: ``run`` returns once the queue is written."""
        self._closed = True
        self._ready.set()

    async def run(self) -> None:
        """The writer. Raises SlowConsumer (a write over ``write_timeout``) or what the
        transport raised when a write failed."""
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._queue:
                item, nbytes = self._queue[0]
                t0 = time.monotonic()
                try:
                    async with asyncio.timeout(self._write_timeout):
                        await self._write(item)
                except TimeoutError as exc:
                    self.broken = exc
                    raise SlowConsumer(
                        f"one write waited on the peer for {self._write_timeout:g} s"
                    ) from exc
                except BaseException as exc:
                    self.broken = exc
                    raise
                if self._on_sent is not None:
                    self._on_sent(time.monotonic() - t0)
                self._queue.popleft()
                self.queued_bytes -= nbytes
                if self.queued_bytes < self._high_water:
                    self._room.set()
            if self._closed:
                return
