"""One call of the gRPC front relayed to an adapter, as raw bytes both ways.

The front parses none of the contract's messages: requests go upstream as the bytes the client
sent, responses come back as the bytes the adapter sent, and the adapter's status, details and
trailers (its ``grpc-status-details-bin``, its timing trailers) reach the client unchanged. The
adapter does the contract's checks; the gateway does what is its own: credentials, per-key
limits, the choice of adapter, the drain, and a client that stops reading.

A streaming call has two pumps. Up: each client message is written upstream before the next
is read, so a slow adapter slows the client down through HTTP/2 flow control (no queue here);
the client's half-close becomes the upstream half-close. Down: the adapter's initial metadata
goes to the client first, before any message (so a status can always follow, even after a
write that was cancelled in flight: gRPC core refuses a status batch that carries initial
metadata a second time, and the call would never end; the adapter's issue 8 defect 0), then
each response is written to the client within ``write_timeout`` (SLOW_CONSUMER beyond it),
then the upstream status becomes the call's.

Endings: the upstream call ends (its status passes on); the client cancels, disconnects or
reaches its deadline (the handler is cancelled: the upstream call is cancelled at once, so the
adapter frees its model sequence); the drain's grace ends (DRAINING, upstream cancelled); the
client stops reading (SLOW_CONSUMER, upstream cancelled). A status without voxwire details on
a transport failure (the adapter died, the connection broke) becomes BACKEND_UNAVAILABLE and
the pool stops choosing that adapter until its health watch says it serves again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from gateway.upstream.pool import AdapterPool, Lease
from voxwire import errors

log = logging.getLogger(__name__)

DETAILS_KEY = "grpc-status-details-bin"
# Deadline on the client taking the response headers (a client that opened a call and left).
OPEN_TIMEOUT_S = 5.0
# Bound on ending the pumps once the call is over.
TASK_END_S = 1.0
# Codes of an upstream status without voxwire details that mean the adapter's transport failed
# (not the client's deadline or cancel, nor gRPC's own message-size refusal, which pass on).
_TRANSPORT_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
)

Metadata = Sequence[tuple[str, str | bytes]]


@dataclass(frozen=True, slots=True)
class Status:
    """How a call ends: code, details and trailing metadata."""

    code: grpc.StatusCode
    details: str
    trailers: tuple[tuple[str, str | bytes], ...] = ()

    @classmethod
    def of(cls, error: errors.VoxwireError) -> Status:
        """``error`` with its google.rpc details (ErrorInfo, RetryInfo, BadRequest) in
        ``grpc-status-details-bin``, as grpcio-status reads them."""
        rich = error.to_rpc_status().SerializeToString()
        return cls(error.code, error.message, ((DETAILS_KEY, rich),))

    def apply(self, context: grpc.aio.ServicerContext) -> None:
        """Set (not send) the status: gRPC sends it once the handler returns."""
        if self.trailers:
            context.set_trailing_metadata(self.trailers)
        context.set_code(self.code)
        if self.details:
            context.set_details(self.details)


def upstream_status(
    pool: AdapterPool,
    lease: Lease,
    code: grpc.StatusCode,
    details: str | None,
    trailers: Metadata | None,
) -> Status:
    """The status to pass on for an upstream call that ended with ``code``: unchanged, unless
    it is a transport failure without voxwire details (BACKEND_UNAVAILABLE; the pool is told)."""
    trailers = tuple(trailers or ())
    if code in _TRANSPORT_CODES and not any(key == DETAILS_KEY for key, _ in trailers):
        where = f"adapter {lease.adapter.address}: {code.name}: {details}"
        pool.report_failure(lease.adapter, f"{code.name}: {details}")
        return Status.of(errors.BackendUnavailable(where))
    return Status(code, details or "", trailers)


class StreamRelay:
    """One streaming call, client <-> adapter. ``drain`` makes it a ``Drainable`` of the
    gateway's registry, so a drain reaches gRPC calls as it reaches WebSocket sessions."""

    def __init__(
        self,
        pool: AdapterPool,
        lease: Lease,
        method: str,
        context: grpc.aio.ServicerContext,
        *,
        metadata: Metadata,
        write_timeout: float,
    ) -> None:
        self._pool = pool
        self._lease = lease
        self._method = method
        self._context = context
        self._metadata = tuple(metadata)
        self._write_timeout = write_timeout
        self._drain_over = asyncio.Event()
        self._drain_timer: asyncio.TimerHandle | None = None

    def drain(self, grace_s: float | None = None) -> None:
        """The gateway is shutting down: the call may go on for ``grace_s``, then it ends with
        DRAINING (gRPC has no going-away message; the client retries elsewhere)."""
        if self._drain_timer is None:
            loop = asyncio.get_running_loop()
            self._drain_timer = loop.call_later(grace_s or 0.0, self._drain_over.set)

    async def run(self, requests: AsyncIterator[bytes]) -> Status:
        """Relay until the call ends; the status to end the client's call with. Raises
        CancelledError when the client cancelled, disconnected or reached its deadline (the
        upstream call is cancelled first)."""
        call = self._lease.adapter.channel().stream_stream(
            self._method, request_serializer=None, response_deserializer=None
        )(metadata=self._metadata, timeout=self._context.time_remaining())
        up = asyncio.create_task(self._pump_up(requests, call), name="grpc-front-up")
        down = asyncio.create_task(self._pump_down(call), name="grpc-front-down")
        drained = asyncio.create_task(self._drain_over.wait(), name="grpc-front-drain")
        try:
            await asyncio.wait({down, drained}, return_when=asyncio.FIRST_COMPLETED)
            if down.done():
                return down.result()
            return Status.of(errors.Draining("the gateway is shutting down: call another one"))
        finally:
            # At once on every ending: a client gone, the grace over, or the call already done
            # (then this does nothing); the adapter frees the stream's model sequence.
            call.cancel()
            if self._drain_timer is not None:
                self._drain_timer.cancel()
            tasks = (up, down, drained)
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks, timeout=TASK_END_S)

    async def _pump_up(self, requests: AsyncIterator[bytes], call: Any) -> None:
        try:
            async for raw in requests:
                await call.write(raw)
            await call.done_writing()
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            return  # the upstream call ended: the down pump passes its status on

    async def _pump_down(self, call: Any) -> Status:
        # The adapter's headers (or, for a call that ends without any, the end of the call).
        headers = await call.initial_metadata()
        try:
            async with asyncio.timeout(OPEN_TIMEOUT_S):
                await self._context.send_initial_metadata(tuple(headers or ()))
            while True:
                try:
                    message = await call.read()
                except grpc.aio.AioRpcError as exc:
                    return upstream_status(
                        self._pool, self._lease, exc.code(), exc.details(), exc.trailing_metadata()
                    )
                if message is grpc.aio.EOF:
                    break
                async with asyncio.timeout(self._write_timeout):
                    await self._context.write(message)
        except TimeoutError:
            return Status.of(
                errors.SlowConsumer(
                    f"the client took no response for {self._write_timeout:g} s: read faster"
                )
            )
        return upstream_status(
            self._pool,
            self._lease,
            await call.code(),
            await call.details(),
            await call.trailing_metadata(),
        )


async def unary(
    pool: AdapterPool,
    lease: Lease,
    method: str,
    request: bytes,
    context: grpc.aio.ServicerContext,
    *,
    metadata: Metadata,
) -> tuple[bytes | None, Status]:
    """A unary call relayed: (the response bytes or None, the status to end with). A client
    that leaves cancels the handler, and with it the upstream call."""
    call = lease.adapter.channel().unary_unary(
        method, request_serializer=None, response_deserializer=None
    )(request, metadata=tuple(metadata), timeout=context.time_remaining())
    try:
        response = await call
    except grpc.aio.AioRpcError as exc:
        return None, upstream_status(
            pool, lease, exc.code(), exc.details(), exc.trailing_metadata()
        )
    finally:
        with contextlib.suppress(Exception):
            call.cancel()
    trailers = await call.trailing_metadata()
    headers = await call.initial_metadata()
    if headers:
        await context.send_initial_metadata(tuple(headers))
    return response, Status(grpc.StatusCode.OK, "", tuple(trailers or ()))
