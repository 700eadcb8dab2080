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
  One watchdog timer per outbox checks it (``voxwire/watchdog.py``), not a timeout per write:
  a stream writes tens of messages a second, and a timer handle made and cancelled per write
  was a visible share of the gateway's CPU per message. A message put with ``audio_ms`` (TTS
  audio) moves a playback clock on (``voxwire/playback_clock.py``), and a write's timeout
  counts from that clock when it is ahead: a client taking the audio at playback pace through
  socket buffers that hold minutes of it is not late while it plays them.

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
from voxwire.playback_clock import PlaybackClock
from voxwire.watchdog import Watchdog

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
        # Memory per idle stream matters (the gateway holds thousands of idle sessions, each
        # with two outboxes): no asyncio.Event (each holds a 64-slot deque, ~0.8 KiB) and no
        # standing queue (an empty deque is ~0.6 KiB). The queue exists while it holds
        # something; the writer and producers park on futures made when they wait.
        self._queue: collections.deque[tuple[T, int, int]] | None = None
        self.queued_bytes = 0
        self._ready: asyncio.Future[None] | None = None  # the idle writer waits on it
        self._room_waiters: list[asyncio.Future[None]] | None = None
        self._has_room = True
        self._closed = False
        # What failed a write (its type and words), not the exception: its traceback's frames
        # hold this outbox, which would make every failed outbox a reference cycle, freed only
        # by a full collection of the garbage collector (tests/gateway/test_session_garbage.py).
        self.broken: str | None = None
        self._deadline = Watchdog(write_timeout)
        self._playback: PlaybackClock | None = None  # made by the first audio put

    def put(self, item: T, audio_ms: int = 0) -> None:
        """Queue ``item`` (carrying ``audio_ms`` of audio). Raises SlowConsumer over
        ``max_bytes``, OutboxBroken after a failed write."""
        if self.broken is not None:
            raise OutboxBroken(f"an earlier write failed: {self.broken}")
        nbytes = self._size(item)
        if self.queued_bytes + nbytes > self._max_bytes:
            raise SlowConsumer(
                f"the peer left {self.queued_bytes + nbytes} bytes unread (limit "
                f"{self._max_bytes}); read responses as they come"
            )
        queue = self._queue
        if queue is None:
            queue = self._queue = collections.deque()
        queue.append((item, nbytes, audio_ms))
        if audio_ms and self._playback is None:
            self._playback = PlaybackClock()
        self.queued_bytes += nbytes
        if self.queued_bytes >= self._high_water:
            self._has_room = False
        self._wake_writer()

    @property
    def has_room(self) -> bool:
        """Whether the queue is under its high-water mark (``wait_room`` would not wait)."""
        return self._has_room

    async def wait_room(self) -> None:
        """Return once the queue is under its high-water mark (backpressure for producers)."""
        if self._has_room:
            return
        waiter = asyncio.get_running_loop().create_future()
        if self._room_waiters is None:
            self._room_waiters = []
        self._room_waiters.append(waiter)
        await waiter

    @property
    def queued_audio_ms(self) -> int:
        """The audio in the queue (put with ``audio_ms``): summed when asked, at a session's
        end, not kept up on every message."""
        return sum(audio_ms for _, _, audio_ms in self._queue or ())

    def audio_left_s(self) -> float:
        """Seconds of audio not yet played at real time: queued, or written and still playing
        (what a client taking it at playback pace needs before it has read everything)."""
        playing = self._playback.ahead(time.monotonic()) if self._playback is not None else 0.0
        return playing + self.queued_audio_ms / 1000

    @property
    def closed(self) -> bool:
        """``close`` was called: ``run`` ends once the queue is written."""
        return self._closed

    def close(self) -> None:
        """No more messages: ``run`` returns once the queue is written."""
        self._closed = True
        self._wake_writer()

    def abandon(self, why: str) -> None:
        """The peer is gone: nothing queued or put later is written (``put`` raises
        OutboxBroken, and whoever waits for ``run`` to flush need not)."""
        self.broken = why
        self._queue = None
        self.queued_bytes = 0
        self._room_again()

    def _wake_writer(self) -> None:
        ready = self._ready
        if ready is not None:
            self._ready = None
            if not ready.done():
                ready.set_result(None)

    def _room_again(self) -> None:
        self._has_room = True
        waiters, self._room_waiters = self._room_waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    async def run(self) -> None:
        """The writer (run it as a task of its own). Raises SlowConsumer (a write over
        ``write_timeout``) or what the transport raised when a write failed."""
        try:
            loop = asyncio.get_running_loop()
            while True:
                queue = self._queue
                while queue:
                    item, nbytes, audio_ms = queue[0]
                    await self._write_one(item, audio_ms)
                    queue.popleft()
                    self.queued_bytes -= nbytes
                    if not self._has_room and self.queued_bytes < self._high_water:
                        self._room_again()
                if queue is not None and queue is self._queue:
                    self._queue = None  # drained: an idle outbox holds no deque
                queue = None  # nor does its parked writer's frame
                if self._closed:
                    return
                ready = self._ready = loop.create_future()
                await ready
        finally:
            self._deadline.close()

    async def _write_one(self, item: T, audio_ms: int) -> None:
        t0 = time.monotonic()
        playback = self._playback
        deadline = self._deadline if playback is None else self._deadline.after(playback.ahead(t0))
        try:
            with deadline:
                await self._write(item)
        except TimeoutError as exc:
            self.broken = _described(exc)
            raise SlowConsumer(
                f"one write waited on the peer for {self._write_timeout:g} s"
                + (" after the audio it was sent had played" if playback is not None else "")
            ) from exc
        except BaseException as exc:  # CancelledError too: the write may be in flight
            self.broken = _described(exc)
            raise
        t1 = time.monotonic()
        if audio_ms and playback is not None:
            playback.wrote(audio_ms, t1)
        if self._on_sent is not None:
            self._on_sent(t1 - t0)


def _described(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
