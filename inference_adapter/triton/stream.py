"""One ``ModelStreamInfer`` call to one replica, as an async object with deadlines.

No threads, no callbacks: ``send`` writes a request, ``receive`` reads the next decoded
response. Transport failures become BackendUnavailable (and tell the pool, which stops routing
to the replica); in-band model errors become ModelError (KServe v2 streaming: errors arrive in
``error_message`` and the stream stays open).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import grpc
from tritonclient.grpc import service_pb2

from inference_adapter.triton.replicas import Lease, ReplicaPool
from inference_adapter.triton.tensors import ModelResponse, parse_response
from voxwire.errors import BackendUnavailable

log = logging.getLogger(__name__)

# Codes that mean the replica (or the way to it) is gone, not that one request was bad.
_REPLICA_DOWN = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
}


class ModelStream:
    def __init__(
        self,
        pool: ReplicaPool,
        lease: Lease,
        *,
        metadata: Sequence[tuple[str, str]] = (),
        response_timeout: float,
    ) -> None:
        self._pool = pool
        self.lease = lease
        self._timeout = response_timeout
        self._call = lease.replica.stub().ModelStreamInfer(metadata=tuple(metadata))
        self.closed = False

    async def send(self, request: service_pb2.ModelInferRequest) -> None:
        """Write one request. Raises BackendUnavailable if the replica does not take it."""
        try:
            # asyncio.timeout, not wait_for: no extra task per message on the hot path.
            async with asyncio.timeout(self._timeout):
                await self._call.write(request)
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as exc:
            raise self._failure(exc) from exc
        except TimeoutError as exc:
            raise self._failure(
                exc, "model server did not accept a request in time", down=True
            ) from exc

    async def receive(self, within_s: float | None) -> ModelResponse:
        """Read the next response; ``within_s`` None waits as long as it takes.

        Raises BackendUnavailable (transport failure, stream ended, or no answer within
        ``within_s``) or ModelError (the model reported an error in-band).
        """
        try:
            async with asyncio.timeout(within_s):
                msg = await self._call.read()
        except grpc.aio.AioRpcError as exc:
            raise self._failure(exc) from exc
        except TimeoutError as exc:
            why = f"model server did not answer within {within_s:.1f} s"
            raise self._failure(exc, why, down=True) from exc
        if msg is grpc.aio.EOF:
            raise self._failure(None, "model server ended the stream")
        return parse_response(msg)

    async def half_close(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                await asyncio.wait_for(self._call.done_writing(), self._timeout)
            except (grpc.aio.AioRpcError, TimeoutError, asyncio.InvalidStateError):
                pass

    def cancel(self) -> None:
        """Cancel the call: Triton cancels everything in flight on it."""
        self.closed = True
        self._call.cancel()

    def _failure(
        self, exc: BaseException | None, why: str = "", *, down: bool = False
    ) -> BackendUnavailable:
        """The error for the stream; ``down`` (or a transport code) also fails the replica."""
        replica = self.lease.replica
        if isinstance(exc, grpc.aio.AioRpcError):
            why = f"{exc.code().name}: {exc.details()}"
            down = exc.code() in _REPLICA_DOWN
        if down:
            self._pool.report_failure(replica, why)
        if self.lease.error is not None:
            return self.lease.error
        return BackendUnavailable(f"model server {replica.name}: {why}")
