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
from collections.abc import AsyncIterator, Callable
from typing import Any, NoReturn, TypeVar

import grpc

from inference_adapter import errors
from inference_adapter.timings import trailers
from voxwire.v1 import timings_pb2

log = logging.getLogger(__name__)

T = TypeVar("T")

_DETAILS_KEY = "grpc-status-details-bin"


class Outbox:
    """The ordered queue of one stream's responses, written by a single writer task.

    Producers ``put`` synchronously, so responses leave in exactly the order the session
    decided them (a cancel ack can never overtake audio computed before it, nor be overtaken
    by it). Backpressure: producers that generate bulk data ``await wait_room()`` before
    producing more, so a client that stops reading stops the model side instead of growing
    the queue.
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
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._closed = False
        self._writer: asyncio.Task[None]

    def put(self, message: Any) -> None:
        self._queue.append(message)
        self._ready.set()
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
        """The writer loop; raises when a write fails (the client went away)."""
        while True:
            await self._ready.wait()
            while self._queue:
                message = self._queue[0]
                t0 = time.monotonic()
                await self._context.write(message)
                self._on_send(time.monotonic() - t0)
                self._queue.popleft()
                if len(self._queue) < self._high_water:
                    self._room.set()
            if self._closed:
                return
            self._ready.clear()


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
