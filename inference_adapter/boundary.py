"""The gRPC boundary of the streaming services: raw requests in, statuses and trailers out.

This is the one place where a VoxwireError becomes a gRPC status (with google.rpc details
through the ``grpc-status-details-bin`` trailer, as grpcio-status does), where every stream,
failed or not, gets its timing trailers, and where client bytes become request messages.

Requests arrive as raw bytes (the handlers are registered without a request deserializer, see
``stream_handler``) and read with the call's ``read()``: gRPC would otherwise parse them inside
the read, where a message that does not parse escapes as a DecodeError the servicer cannot tell
from a server fault. Here the size is checked before anything is parsed, and a message that does
not parse is INVALID_MESSAGE like any other bad message.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, Generic, TypeVar

import grpc
from google.protobuf.message import DecodeError

from voxwire import errors
from voxwire.timings import trailers
from voxwire.v1 import timings_pb2

log = logging.getLogger(__name__)

M = TypeVar("M")

DETAILS_KEY = "grpc-status-details-bin"
# Serialized bytes a request may take beyond its audio or text (max_chunk_bytes): room for the
# largest valid configuration (500 vocabulary entries, 200 pronunciations). A larger message is
# refused with CHUNK_TOO_LARGE before it is parsed, so parsing never costs more than this. gRPC
# itself refuses messages over AdapterConfig.max_receive_message_bytes before buffering them
# (RESOURCE_EXHAUSTED without ErrorInfo; docs/contract.md, "Limits and timeouts").
MESSAGE_ALLOWANCE_BYTES = 64 * 1024


def max_message_bytes(max_chunk_bytes: int) -> int:
    """The largest serialized request the adapter reads."""
    return max_chunk_bytes + MESSAGE_ALLOWANCE_BYTES


class ClientReader(Generic[M]):
    """Reads raw client messages, checks their size, parses them.

    It reads with the call's ``read()``, not the handler's request iterator: the iterator is an
    async generator made on first use, and a stream that ends before it is read left it never
    awaited (a RuntimeWarning per such stream; one generator step per message less, too). Never
    cancel a ``next()`` in flight unless the stream is ending: the receive operation stays
    posted in gRPC core, so every later read is refused and returns EOF (as if the client had
    half-closed), and the message in flight is lost.

    Nor when the stream ends: a read in flight then is let finish (``close``), because grpc.aio
    releases a receive's operations, and the message it got, only when the coroutine that
    awaits it takes the result; cancelled, they stay allocated for good (grpc/grpc#43360: about
    2 KB a case of the wire fuzzer's ``huge`` family, docs/fuzzing.md).
    """

    def __init__(
        self,
        read: Callable[[], Awaitable[Any]],
        parse: Callable[[bytes], M],
        *,
        max_bytes: int,
        on_message: Callable[[], None] = lambda: None,
    ) -> None:
        self._read = read
        self._parse = parse
        self._max_bytes = max_bytes
        self._on_message = on_message
        self.eof = False
        # Since when a read waits for the client (None while nobody reads: the stream is busy,
        # or holds back on purpose, e.g. STT backpressure). Only this time can be idle.
        self.waiting_since: float | None = None
        # The task whose read waits for the client (None while nobody reads).
        self.reading: asyncio.Task[Any] | None = None
        # The stream failed: what the client still sends is read and dropped (``drop``).
        self.dropping = False
        self.dropped_bytes = 0
        # The stream has ended: a read in flight returns into nothing, and none follows.
        self.closed = False

    async def next(self) -> M | None:
        """The next message, or None at half-close.

        Raises ChunkTooLarge (over the size limit, unparsed) or InvalidMessage (does not parse).
        """
        if self.eof:
            return None
        self.waiting_since = time.monotonic()
        self.reading = asyncio.current_task()
        try:
            raw = await self._read()
        finally:
            self.waiting_since = None
            self.reading = None
        if self.closed:
            raise asyncio.CancelledError  # the stream ended while this read waited (``close``)
        if raw is grpc.aio.EOF:
            self.eof = True
            return None
        self._on_message()
        if self.dropping:
            # The stream failed while this read waited: the stream's end bounds the rest.
            self.dropped_bytes += len(raw)
            await self.drop()
            raise asyncio.CancelledError
        if len(raw) > self._max_bytes:
            raise errors.ChunkTooLarge(
                f"a message of {len(raw)} bytes exceeds the largest the server reads "
                f"({self._max_bytes}: max_chunk_bytes + {MESSAGE_ALLOWANCE_BYTES})"
            )
        try:
            return self._parse(raw)
        except DecodeError:
            raise errors.InvalidMessage(
                f"a message of {len(raw)} bytes does not parse as a request of this stream"
            ) from None

    def close(self) -> asyncio.Task[Any] | None:
        """The stream ends: read no more. Returns the task whose read is in flight, if any, to
        be let finish (never cancelled, see the class); its read returns when the call ends,
        and the task then ends as if cancelled."""
        self.closed = True
        return self.reading

    async def drop(self) -> None:
        """Read and drop what the client sends, up to its half-close; the caller bounds it
        (``StreamRunner``: a failed stream's status waits for this, briefly)."""
        while not self.eof and not self.closed:
            self.reading = asyncio.current_task()
            try:
                raw = await self._read()
            finally:
                self.reading = None
            if self.closed:
                return
            if raw is grpc.aio.EOF:
                self.eof = True
            else:
                self.dropped_bytes += len(raw)
                self._on_message()


def stream_handler(
    behavior: Callable[[AsyncIterator[bytes], grpc.aio.ServicerContext], Coroutine[Any, Any, None]],
) -> grpc.RpcMethodHandler:
    """A bidi-streaming method handler on raw bytes both ways: requests are parsed by the
    stream (ClientReader), responses arrive serialized from its outbox."""
    return grpc.stream_stream_rpc_method_handler(
        behavior, request_deserializer=None, response_serializer=None
    )


def add_stream_service(
    server: grpc.aio.Server, service: str, handlers: dict[str, grpc.RpcMethodHandler]
) -> None:
    """Register ``handlers`` as the methods of ``service`` (as generated code does)."""
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
    server.add_registered_method_handlers(service, handlers)


def set_status(
    context: grpc.aio.ServicerContext,
    error: errors.VoxwireError | None,
    timings: timings_pb2.StageTimings,
) -> None:
    """The status the stream ends with when its handler returns: OK, or ``error`` with its rich
    details; both with the timing trailers.

    Set, not sent: gRPC sends it after the handler returned, so the stream's resources are free
    before the status waits on a client that does not read (``context.abort`` would send it
    from inside the handler)."""
    if error is None:
        context.set_trailing_metadata(trailers(timings))
        return
    status = error.to_rpc_status()
    context.set_trailing_metadata(((DETAILS_KEY, status.SerializeToString()), *trailers(timings)))
    context.set_code(error.code)
    context.set_details(error.message)
