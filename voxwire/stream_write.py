"""Writing to a grpc.aio client stream without losing the server's status (grpc/grpc#36066).

A grpc.aio ``call.write`` that is in flight when the server's status arrives fails, and grpc.aio
then *replaces* the status it has just received with INTERNAL "Internal error from Core"
(``_StreamRequestMixin._write`` calls ``set_internal_error`` on the failed batch): the server's
code, details and trailers are gone for good. A server that may end a stream while its client
still sends (after a close, on an error it refuses at once) makes that race common: the
conformance kit's ``stt.order.after-close-discarded`` lost the example server's OK to it in 10
to 15 of 40 runs with the server in the kit's process.

``write_unless_ended`` sends the message as ``call.write`` does, but a send that fails because
the call has ended is answered ``False`` and leaves the status as the server sent it. It reaches
into grpc.aio's call object (``_cython_call``, ``_metadata_sent``, ``_done_writing_flag``,
``_request_serializer``); where those are missing (another grpcio) it falls back to
``call.write``, whose race the callers still recognise by its INTERNAL "Internal error from
Core" (``CORE_RACE_DETAILS``). tests/voxwire/test_stream_write.py fails on a grpcio where the
fallback is taken, so an upgrade that moves those internals is noticed.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import grpc
from grpc._cython import cygrpc

# What grpc.aio reports for a call whose write raced the server's status.
CORE_RACE_DETAILS = "Internal error from Core"

# The servers' side of the race (the adapter's StreamRunner, the gateway's gRPC front, the
# example server): before a failed stream's status, what the client still sends is read and
# dropped, up to its half-close, a pause in its messages (``drain_pause_s``), or DRAIN_S in
# all. A plain grpc.aio client that sends faster than the server reads waits in ``write``
# (gRPC's fixed 64 KiB window, voxwire.wire), so without this every failed stream of a file
# sent at once lost its status (tests/inference_adapter/test_failed_stream_status.py); on make
# run's stack 1 MiB sent at once after a bad chunk drained in 46-80 ms, 10 MiB in 300-360 ms.
# The pause that ends it is short (DRAIN_QUIET_S) until DRAIN_BULK_BYTES came: a client in
# real time (20 ms chunks or longer) or silent gets its status at most 10 ms later (with
# 50 ms, one sending 20 ms chunks kept its stream draining for all of DRAIN_S, 520 ms, and a
# gateway's failover waits for that status). A writer held back by the window has a window's
# worth waiting at the server, read at once, and then gets DRAIN_BULK_QUIET_S between its
# messages: with 10 ms for it too, the conformance kit's plain writer, in one process with
# the server and other cases, lost the race now and then.
DRAIN_S = 0.5
DRAIN_QUIET_S = 0.01
DRAIN_BULK_BYTES = 32 * 1024
DRAIN_BULK_QUIET_S = 0.1


def drain_pause_s(dropped_bytes: int) -> float:
    """The pause in a client's messages that ends a drain which has read ``dropped_bytes``."""
    return DRAIN_BULK_QUIET_S if dropped_bytes >= DRAIN_BULK_BYTES else DRAIN_QUIET_S


async def drop_until_pause(
    receive: Callable[[], Awaitable[int | None]], dropped_bytes: int = 0
) -> None:
    """Read and drop what a client still sends, up to its half-close, a pause in its messages
    (``drain_pause_s``) or DRAIN_S. ``receive`` reads the next message and gives its size, or
    None at the half-close; ``dropped_bytes`` were read already. A read the pause cuts short
    is cancelled: the stream is ending. (The adapter's StreamRunner, whose read may wait in
    another task, keeps the same rule its own way.)"""
    ends = time.monotonic() + DRAIN_S
    while (left := ends - time.monotonic()) > 0:
        try:
            async with asyncio.timeout(min(drain_pause_s(dropped_bytes), left)):
                size = await receive()
        except TimeoutError:
            return
        if size is None:
            return
        dropped_bytes += size


_INTERNALS = ("_cython_call", "_metadata_sent", "_done_writing_flag", "_request_serializer")


# Per call class: whether its instances have the internals (checked on the first instance; a
# grpc.aio call sets them all in its constructor). Every audio frame the gateway sends upstream
# passes here: the five attribute tests cost 0.88 µs a call, this lookup 0.10 µs.
_BYPASSABLE: dict[type, bool] = {}


def _bypassable(call: Any) -> bool:
    known = _BYPASSABLE.get(type(call))
    if known is None:
        known = _BYPASSABLE[type(call)] = all(
            hasattr(call, name) for name in _INTERNALS
        ) and hasattr(call._cython_call, "send_serialized_message")
    return known


async def write_unless_ended(call: Any, message: Any) -> bool:
    """Send ``message`` on ``call`` (a grpc.aio stream-stream or stream-unary call written with
    ``write``). False when the call had ended, or ended while the message was being sent: its
    status (``await call.code()``) is then the server's (but for the fallback's race, see the
    module). Raises ``asyncio.InvalidStateError`` after ``done_writing``, as grpc.aio does."""
    if call.done():
        return False
    if not _bypassable(call):
        return await _write(call, message)
    if not call._metadata_sent.is_set() and not await _started(call):
        return False
    if call._done_writing_flag:
        raise asyncio.InvalidStateError("the call was half-closed")  # as grpc.aio does
    serializer = call._request_serializer
    data = serializer(message) if serializer is not None else message
    try:
        await call._cython_call.send_serialized_message(data)
    except cygrpc.InternalError:
        # The batch failed because the call ended: the status op reports why.
        return False
    except asyncio.CancelledError:
        if not call.cancelled():
            call.cancel()
        raise
    return True


async def _started(call: Any) -> bool:
    """Wait, as grpc.aio's write does, for the call's initial metadata to be sent; False when
    the call ends first (it may never send it: a refused connection).

    The call keeps its done callbacks for its life (grpc.aio has no way to remove one), so
    the one added here holds only a weak reference to what it wakes: an ``asyncio.Event``
    held by a closure stayed with every upstream call of the gateway, 1.0 KiB per idle
    session (BENCHMARKS.md, "Memory per idle WebSocket")."""
    ended = asyncio.get_running_loop().create_future()
    call.add_done_callback(partial(_resolve, weakref.ref(ended)))
    sent = asyncio.ensure_future(call._metadata_sent.wait())
    try:
        await asyncio.wait((sent, ended), return_when=asyncio.FIRST_COMPLETED)
    finally:
        sent.cancel()
        ended.cancel()
    return not call.done()


def _resolve(ref: weakref.ref[asyncio.Future[None]], _call: object) -> None:
    future = ref()
    if future is not None and not future.done():
        future.set_result(None)


async def _write(call: Any, message: Any) -> bool:
    try:
        await call.write(message)
    except (asyncio.InvalidStateError, grpc.aio.AioRpcError):
        return False  # the call has ended: its status says how
    return True
