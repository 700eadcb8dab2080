"""The ordered queue of one stream's responses, with a byte cap and a deadline on every write.

Producers ``put`` synchronously, so responses leave in exactly the order the session decided
them (a cancel ack can never overtake audio computed before it, nor be overtaken by it).
Whoever holds the wire writes the whole queue, so a message put while a write is in flight
simply waits its turn behind it.

Two ways onto the wire: ``put`` wakes the writer task (``run``), which is how the client pump
hands over its acks without ever blocking on a slow client; ``write_through`` lets a model pump
write its own results when the wire is free, which saves one task wake-up and one event-loop
pass per result (measured: BENCHMARKS.md). Backpressure: producers of bulk data (audio, model
results) ``await wait_room()`` before producing more, so a client that stops reading stops the
model side instead of growing the queue.

A client that does not read is bounded twice (docs/contract.md, SLOW_CONSUMER):
- the queue holds at most ``max_unread_bytes`` of serialized responses. Bulk producers wait at
  half of it; what the client provokes without waiting (acks, errors) counts too, and a
  response that would take the queue past the cap fails the stream instead of growing it;
- every write has ``write_timeout``: a client whose flow-control window stays shut that long
  fails the stream. With ``playback_ms`` (TTS: the audio a response carries) it counts from
  when the audio written so far would have played out, at the earliest: a listener at playback
  pace takes nothing while it plays what it holds, and whatever sits between it and the adapter
  (an edge's socket buffers can hold minutes of audio) makes that wait long. A client is late
  only when it takes audio slower than real time.
Both failures are reported through ``on_failure`` (the stream runner) as SlowConsumer.

A write that fails, times out or is cancelled breaks the outbox: no write follows it (gRPC may
still hold that write, and the next one would race it or land on a dead call). The stream's
status can still be sent, because the runner sends the initial metadata before any write
(a status after an interrupted first write would otherwise be refused by gRPC core).
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Iterable
from typing import Any

import grpc

from voxwire import errors
from voxwire.playback_clock import PlaybackClock
from voxwire.watchdog import Watchdog
from voxwire.wire import serialized


class WriteInterrupted(Exception):
    """An earlier write of this stream failed or was cancelled mid-way: nothing more is written."""


class Outbox:
    def __init__(
        self,
        context: grpc.aio.ServicerContext,
        on_send: Callable[[float], None],
        *,
        on_failure: Callable[[BaseException], None] = lambda exc: None,
        max_unread_bytes: int = 1 << 20,
        write_timeout: float = 10.0,
        high_water: int = 32,
        playback_ms: Callable[[Any], int] | None = None,
    ) -> None:
        self._context = context
        self._on_send = on_send
        self._on_failure = on_failure
        self._max_bytes = max_unread_bytes
        self._write_timeout = write_timeout
        self._deadline = Watchdog(write_timeout)
        self._high_water = high_water
        # (serialized response, its size, the ms of audio it carries)
        self._queue: collections.deque[tuple[Any, int, int]] = collections.deque()
        self._playback_ms = playback_ms
        self._playback = PlaybackClock()  # moved on only with playback_ms
        self._bytes = 0  # serialized size of what is queued
        self._ready = asyncio.Event()  # set when the writer task has something to do
        self._room = asyncio.Event()
        self._room.set()
        self._ended = asyncio.Event()  # the writer task returned or failed
        self._writing = False  # grpc.aio allows one write in flight per call
        self._broken: BaseException | None = None
        self._closed = False
        self._sealed = False

    @property
    def queued_bytes(self) -> int:
        return self._bytes

    def put(self, message: Any) -> None:
        """Queue ``message`` for the writer task. Never blocks and never raises: past the byte
        cap the stream fails with SlowConsumer (through ``on_failure``)."""
        if self._append(message) and not self._writing:  # else the task writing now takes it
            self._ready.set()

    async def write_through(self, messages: Iterable[Any]) -> None:
        """Queue ``messages`` and write the queue in this task if no write is in flight.

        Raises SlowConsumer (a write timed out), WriteInterrupted (an earlier write failed) or
        what ``context.write`` raises."""
        if self._broken is not None:
            raise self._failure_again()
        for message in messages:
            self._append(message)
        await self._drain()

    def _append(self, message: Any) -> bool:
        if self._sealed or self._broken is not None:
            return False
        audio_ms = self._playback_ms(message) if self._playback_ms is not None else 0
        # Serialized once, here: the byte cap needs the size, and ByteSize costs as much as
        # serializing (upb encodes to measure), so the call's serializer is the identity.
        message = serialized(message)
        size = len(message)
        if self._bytes + size > self._max_bytes:
            self._break(
                errors.SlowConsumer(
                    f"the client left more than max_unread_response_bytes {self._max_bytes} "
                    "of responses unread"
                )
            )
            return False
        self._queue.append((message, size, audio_ms))
        self._bytes += size
        if len(self._queue) >= self._high_water or self._bytes >= self._max_bytes // 2:
            self._room.clear()
        return True

    async def wait_room(self) -> None:
        """Wait until the queue is below its high-water mark (at once when sealed or broken)."""
        await self._room.wait()

    def seal(self) -> None:
        """The stream is ending: accept no more responses (what is queued may still be flushed);
        producers never wait for room again."""
        self._sealed = True
        self._room.set()

    def close(self) -> None:
        """No more responses: ``run`` returns once the queue is written."""
        self._closed = True
        self._ready.set()

    async def flush(self, within_s: float, *, strict: bool = False) -> None:
        """Close, and wait up to ``within_s`` for the queue to be written. With ``strict``, a
        failed or late flush raises (SlowConsumer when late); without, it is given up silently
        (the stream is failing anyway and only a status is left to send). With ``playback_ms``
        the wait is longer by the audio the client still has to play, queued or written."""
        self.close()
        if self._playback_ms is not None:
            queued_ms = sum(audio_ms for _, _, audio_ms in self._queue)
            within_s += self._playback.ahead(time.monotonic()) + queued_ms / 1000
        try:
            await asyncio.wait_for(self._ended.wait(), within_s)
        except TimeoutError as exc:
            if strict:
                raise errors.SlowConsumer(
                    f"the client did not read the stream's last responses within {within_s:g} s"
                ) from exc
            return
        if strict and self._broken is not None:
            raise self._failure_again()

    async def run(self) -> None:
        """The writer task. Raises SlowConsumer or WriteInterrupted when a write fails."""
        try:
            while True:
                await self._ready.wait()
                self._ready.clear()
                await self._drain()
                if self._broken is not None:
                    raise self._failure_again()
                if self._closed and not self._queue and not self._writing:
                    return
        finally:
            self._ended.set()

    async def _drain(self) -> None:
        if self._writing or self._broken is not None:
            return  # the task writing now also writes what was queued behind it
        self._writing = True
        try:
            while self._queue:
                message, size, audio_ms = self._queue[0]
                t0 = time.monotonic()
                try:
                    # One watchdog timer per stream, not a timer per write (voxwire/watchdog.py);
                    # its deadline later while the client still plays the audio it has.
                    with self._deadline.after(self._playback.ahead(t0)):
                        await self._context.write(message)
                except TimeoutError:
                    self._break(
                        errors.SlowConsumer(
                            f"the client read nothing for write_timeout {self._write_timeout:g} s"
                        )
                    )
                    raise self._failure_again() from None
                except BaseException as exc:  # CancelledError too: the write may be in flight
                    self._break(exc)
                    raise
                t1 = time.monotonic()
                self._on_send(t1 - t0)
                if audio_ms:
                    self._playback.wrote(audio_ms, t1)
                self._queue.popleft()
                self._bytes -= size
                if len(self._queue) < self._high_water and self._bytes < self._max_bytes // 2:
                    self._room.set()
        finally:
            self._writing = False
            if self._queue or self._closed or self._broken is not None:
                self._ready.set()  # the writer task takes over, ends, or reports the failure

    def _break(self, exc: BaseException) -> None:
        if self._broken is None:
            # Only what it was is kept, not the failure itself: its traceback holds the frames
            # of this outbox's own writes, and the outbox was a reference cycle through it,
            # left to a full collection (tests/gateway/test_session_garbage.py, a client's
            # call that ended while a write was in flight).
            self._broken = (
                exc
                if isinstance(exc, errors.SlowConsumer)
                else WriteInterrupted(f"a write failed: {type(exc).__name__}")
            )
            self._queue.clear()
            self._bytes = 0
            self._room.set()  # producers must not wait for a wire that is gone
            self._ready.set()
            if isinstance(exc, errors.VoxwireError):
                self._on_failure(exc)

    def _failure_again(self) -> BaseException:
        """What a later producer or the writer task raises after the outbox broke."""
        broken = self._broken
        if isinstance(broken, errors.SlowConsumer):
            return errors.SlowConsumer(broken.message)
        return WriteInterrupted("an earlier write failed or was interrupted")
