"""One ``voxwire.v1`` streaming call to an adapter, with its failures as voxwire errors.

The gateway is a client of the contract: a call that ends with a status becomes the
VoxwireError its rich details describe (``voxwire.errors.from_grpc``). A status without
voxwire details and with a transport code (the adapter's process died, the connection broke)
is a transport failure: it becomes BACKEND_UNAVAILABLE and tells the pool to stop choosing that
adapter until its health watch says it serves again. Every stream ends with timing trailers,
failed or not; they are returned with the failure so a session's breakdown covers every
upstream segment.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Generic, TypeVar

import grpc

from gateway.upstream.pool import AdapterPool, Lease
from voxwire import errors
from voxwire.stream_write import CORE_RACE_DETAILS, write_unless_ended
from voxwire.timings import TIMINGS_TRAILER
from voxwire.v1 import timings_pb2

Req = TypeVar("Req")
Resp = TypeVar("Resp")

_DETAILS_KEY = "grpc-status-details-bin"
# Codes of a status without voxwire details that mean the adapter's transport failed (its
# process died, the connection broke). Not the caller's deadline or cancel passed on upstream,
# nor gRPC's own refusal of an oversized message: those end the call, not the adapter's turn in
# the pool (one caller's deadline took a healthy adapter out, and every session with it, in a
# fuzz run through the gRPC front).
_TRANSPORT_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
)


def has_details(trailers: Sequence[tuple[str, Any]]) -> bool:
    """Whether a status carries voxwire's rich details (the adapter decided it)."""
    return any(key == _DETAILS_KEY for key, _ in trailers)


def transport_failed(code: grpc.StatusCode, details: str | None, trailers: Sequence[Any]) -> bool:
    """Whether a call's end says the adapter's transport failed, so that the pool stops choosing
    it until its health watch says it serves. Not a status grpc.aio lost (a write that races the
    adapter's status turns it into INTERNAL "Internal error from Core", which says nothing about
    the adapter; one such race took a healthy adapter out, and every session with it, in a fuzz
    run through the gRPC front): the health watch, which sees a dead process at once, decides."""
    return (
        code in _TRANSPORT_CODES
        and not has_details(trailers)
        and not (code is grpc.StatusCode.INTERNAL and details == CORE_RACE_DETAILS)
    )


class UpstreamError(Exception):
    """The call failed; ``error`` is what the client should learn, ``timings`` the segment's."""

    def __init__(
        self, error: errors.VoxwireError, timings: timings_pb2.StageTimings | None
    ) -> None:
        super().__init__(error.message)
        self.error = error
        self.timings = timings


class UpstreamCall(Generic[Req, Resp]):
    def __init__(
        self,
        pool: AdapterPool,
        lease: Lease,
        call: Any,
        *,
        write_timeout: float,
        timed_writes: bool = True,
    ) -> None:
        """``timed_writes`` False: ``write`` sets no deadline of its own, for a caller that
        bounds every write already (``voxwire.outbox.Outbox``); ``done_writing`` keeps it."""
        self._pool = pool
        self.lease = lease
        self._call = call
        self._write_timeout = write_timeout
        self._timed_writes = timed_writes

    @property
    def adapter(self) -> str:
        return self.lease.adapter.address

    async def write(self, request: Req) -> None:
        """Raises UpstreamError (the call failed, or the adapter did not take the message in
        ``write_timeout``: its HTTP/2 window stayed closed)."""
        try:
            if not self._timed_writes:
                sent = await write_unless_ended(self._call, request)
            else:
                async with asyncio.timeout(self._write_timeout):
                    sent = await write_unless_ended(self._call, request)
        except TimeoutError:
            raise UpstreamError(
                errors.BackendUnavailable(
                    f"adapter {self.adapter} took no message for {self._write_timeout:g} s"
                ),
                None,
            ) from None
        except grpc.aio.AioRpcError as exc:
            raise await self._failure(exc) from exc
        except asyncio.InvalidStateError as exc:  # half-closed already: its status says how
            raise await self._failure(None) from exc
        if not sent:  # the call had ended: its status, as the adapter sent it, says how
            raise await self._failure(None)

    async def done_writing(self) -> None:
        try:
            async with asyncio.timeout(self._write_timeout):
                await self._call.done_writing()
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError, TimeoutError):
            pass  # the read side reports how the call ended

    async def read(self) -> Resp | None:
        """The next response, or None at the end of a call that ended OK. Raises
        UpstreamError."""
        try:
            msg = await self._call.read()
        except grpc.aio.AioRpcError as exc:
            raise await self._failure(exc) from exc
        if msg is grpc.aio.EOF:
            code = await self._call.code()
            if code != grpc.StatusCode.OK:
                raise await self._failure(None)
            return None
        return msg

    def cancel(self) -> None:
        self._call.cancel()
        self.lease.release()

    async def trailing_timings(self) -> timings_pb2.StageTimings | None:
        for key, value in await self._call.trailing_metadata() or ():
            if key == TIMINGS_TRAILER and isinstance(value, bytes):
                try:
                    return timings_pb2.StageTimings.FromString(value)
                except Exception:
                    return None
        return None

    async def _failure(self, exc: grpc.aio.AioRpcError | None) -> UpstreamError:
        if exc is not None:
            code, details, trailers = exc.code(), exc.details(), exc.trailing_metadata()
        else:
            code = await self._call.code()
            details = await self._call.details()
            trailers = await self._call.trailing_metadata()
        trailers = tuple(trailers or ())
        error = errors.from_grpc(code, details, trailers)
        if not has_details(trailers) and (
            code in _TRANSPORT_CODES or code is grpc.StatusCode.CANCELLED
        ):
            # The adapter did not decide this (its transport failed, or its side cancelled the
            # call under a shutdown): the session may move to another adapter. Whether this one
            # leaves the pool is ``transport_failed``'s to say.
            if transport_failed(code, details, trailers):
                self._pool.report_failure(self.lease.adapter, f"{code.name}: {details}")
            error = errors.BackendUnavailable(f"adapter {self.adapter}: {code.name}: {details}")
        timings = None
        for key, value in trailers:
            if key == TIMINGS_TRAILER and isinstance(value, bytes):
                timings = timings_pb2.StageTimings.FromString(value)
        return UpstreamError(error, timings)
