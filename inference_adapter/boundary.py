"""The gRPC boundary shared by the streaming servicers: writes, reads, trailers, errors.

This is the one place where a VoxwireError becomes a gRPC status (with google.rpc details
through the ``grpc-status-details-bin`` trailer, as grpcio-status does) and where every stream,
failed or not, gets its timing trailers.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, NoReturn, TypeVar

import grpc

from voxwire import errors
from voxwire.timings import trailers
from voxwire.v1 import timings_pb2

log = logging.getLogger(__name__)

T = TypeVar("T")

_DETAILS_KEY = "grpc-status-details-bin"


class WriteInterrupted(Exception):
    """An earlier write of this stream failed or was cancelled mid-way: nothing more is written
    (gRPC may still hold that write, and the next one would race it or land on a dead call)."""


class Outbox:
    """The ordered queue of one stream's responses: one writer at a time, in decided order.

    Producers ``put`` synchronously, so responses leave in exactly the order the session
    decided them (a cancel ack can never overtake audio computed before it, nor be overtaken
    by it). Whoever holds the wire writes the whole queue, so a message put while a write is
    in flight simply waits its turn behind it.

    Two ways onto the wire: ``put`` wakes the writer task (``start``), which is how the client
    pump hands over its acks without ever blocking on a slow client; ``write_through`` lets a
    model pump write its own results when the wire is free, which saves one task wake-up and
    one event-loop pass per result (measured: BENCHMARKS.md). Backpressure: producers that
    generate bulk data ``await wait_room()`` before producing more, so a client that stops
    reading stops the model side instead of growing the queue.

    A write that fails or is cancelled breaks the outbox: no write follows it, the producer
    that was writing gets the error, and the writer task ends with WriteInterrupted. So cancel
    a ``write_through`` producer only when the stream is ending.
    """

    def __init__(
        self,
        context: grpc.aio.ServicerContext,
        on_send: Callable[[float], None],
        *,
        high_water: int = 32,
    ) -> None:
        self._context = context
        self._on_send = on_send
        self._high_water = high_water
        self._queue: collections.deque[Any] = collections.deque()
        self._ready = asyncio.Event()  # set when the writer task has something to do
        self._room = asyncio.Event()
        self._room.set()
        self._writing = False  # grpc.aio allows one write in flight per call
        self._broken: BaseException | None = None
        self._closed = False
        self._writer: asyncio.Task[None]

    def put(self, message: Any) -> None:
        self._append(message)
        if not self._writing:  # else the task writing now takes it
            self._ready.set()

    async def write_through(self, messages: Iterable[Any]) -> None:
        """Queue ``messages`` and write the queue in this task if no write is in flight.

        Raises what ``context.write`` raises (the client went away), or WriteInterrupted
        after an earlier write failed."""
        if self._broken is not None:
            raise WriteInterrupted("an earlier write failed") from self._broken
        for message in messages:
            self._append(message)
        await self._drain()

    def _append(self, message: Any) -> None:
        self._queue.append(message)
        if len(self._queue) >= self._high_water:
            self._room.clear()

    async def wait_room(self) -> None:
        await self._room.wait()

    def close(self) -> None:
        """No more responses: ``run`` returns once the queue is written."""
        self._closed = True
        self._ready.set()

    def start(self) -> asyncio.Task[None]:
        """Start the writer task (it ends when a write fails, or after ``close`` and flushing)."""
        self._writer = asyncio.create_task(self.run(), name="outbox-writer")
        return self._writer

    async def flush(self, within_s: float, *, strict: bool = False) -> None:
        """Close, and wait up to ``within_s`` for the queue to be written. With ``strict``,
        a failed or late flush raises; without, it is given up silently (the stream is
        failing anyway and only a status is left to send)."""
        self.close()
        try:
            await asyncio.wait_for(self._writer, within_s)
        except Exception:
            if strict:
                raise
        finally:
            self._writer.cancel()

    async def run(self) -> None:
        """The writer task; raises when a write fails (the client went away)."""
        while True:
            await self._ready.wait()
            self._ready.clear()
            await self._drain()
            if self._broken is not None:
                raise WriteInterrupted(f"{len(self._queue)} responses unwritten") from self._broken
            if self._closed and not self._queue and not self._writing:
                return

    async def _drain(self) -> None:
        if self._writing or self._broken is not None:
            return  # the task writing now also writes what was queued behind it
        self._writing = True
        try:
            while self._queue:
                t0 = time.monotonic()
                try:
                    await self._context.write(self._queue[0])
                except BaseException as exc:  # CancelledError too: the write may be in flight
                    self._broken = exc
                    raise
                self._on_send(time.monotonic() - t0)
                self._queue.popleft()
                if len(self._queue) < self._high_water:
                    self._room.set()
        finally:
            self._writing = False
            if self._queue or self._closed or self._broken is not None:
                self._ready.set()  # the writer task takes over, ends, or reports the failure


class IdleReader:
    """Reads client messages with the idle timeout on every wait."""

    def __init__(self, requests: AsyncIterator[T], idle_timeout: float) -> None:
        self._it = aiter(requests)
        self._timeout = idle_timeout

    async def next(self) -> Any | None:
        """The next message, or None at half-close. Raises IdleTimeout."""
        try:
            # asyncio.timeout, not wait_for: no extra task per message on the hot path.
            async with asyncio.timeout(self._timeout):
                return await anext(self._it)
        except StopAsyncIteration:
            return None
        except TimeoutError as exc:
            raise errors.IdleTimeout(
                f"no message for {self._timeout:g} s; send audio or KeepAlive"
            ) from exc


def as_voxwire(exc: BaseException) -> errors.VoxwireError:
    """The client-facing form of any failure; unexpected ones are logged and become INTERNAL."""
    if isinstance(exc, errors.VoxwireError):
        return exc
    log.exception("unexpected error in a stream", exc_info=exc)
    return errors.InternalError(f"internal error ({type(exc).__name__})")


async def abort(
    context: grpc.aio.ServicerContext, error: errors.VoxwireError, timings: timings_pb2.StageTimings
) -> NoReturn:
    """End the RPC with the error's status, rich details and the timing trailers."""
    status = error.to_rpc_status()
    metadata = ((_DETAILS_KEY, status.SerializeToString()), *trailers(timings))
    await context.abort(error.code, error.message, trailing_metadata=metadata)
    raise AssertionError("unreachable: abort raises")  # pragma: no cover


def finish(context: grpc.aio.ServicerContext, timings: timings_pb2.StageTimings) -> None:
    """Attach the timing trailers to a stream that ends normally."""
    context.set_trailing_metadata(trailers(timings))
