"""The gRPC front's unary calls relayed to an adapter as raw bytes, and the statuses the
front's calls end with.

A unary call (``GetCapabilities``) is passed on unparsed: the request goes upstream as the
bytes the client sent, the response comes back as the bytes the adapter sent, and the
adapter's status, details and trailers reach the client unchanged. The streaming calls are
sessions (``stt_stream.py``, ``tts_stream.py``). A status without voxwire details on a transport
failure (the adapter died, the connection broke) becomes BACKEND_UNAVAILABLE, and the pool
stops choosing that adapter until its health watch says it serves again.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from gateway.upstream.call import transport_failed
from gateway.upstream.pool import AdapterPool, Lease
from voxwire import errors

log = logging.getLogger(__name__)

DETAILS_KEY = "grpc-status-details-bin"
# Deadline on the client taking the response headers (a client that opened a call and left).
OPEN_TIMEOUT_S = 5.0

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
    if transport_failed(code, details, trailers):
        where = f"adapter {lease.adapter.address}: {code.name}: {details}"
        pool.report_failure(lease.adapter, f"{code.name}: {details}")
        return Status.of(errors.BackendUnavailable(where))
    return Status(code, details or "", trailers)


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
