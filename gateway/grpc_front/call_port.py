"""What the front's session-backed calls (``stt_stream.py``, ``tts_stream.py``) share: the
client port over a gRPC server call, and the call's status from the session's close.

A session runner (``gateway/runner.py``) talks to its client through ``gateway.ports
.ClientPort``; over WebSocket that is frames, here it is the call's raw request and response
bytes. The session decides the end (a ``Close`` with its code and error); the handler sets the
status the runner worked out from it, once ``run`` returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message

from gateway.grpc_front.relay import Status
from gateway.ports import Frame
from voxwire import errors
from voxwire.edge.v1 import session_pb2
from voxwire.stream_write import drop_until_pause
from voxwire.timings import trailers
from voxwire.v1 import stream_pb2, timings_pb2

# Bytes a request may hold beyond the largest frame (a config's vocabulary, a long text): the
# adapter's MESSAGE_ALLOWANCE_BYTES, so a request the adapter reads is one the front reads.
ALLOWANCE_BYTES = 64 * 1024

M = TypeVar("M", bound=Message)

# An upstream call's deadline is its caller's plus this: the caller's own deadline ends the
# front's call first (gRPC cancels the handler, and the session cancels its upstream calls),
# and the adapter still stops by itself should the gateway not. With the caller's deadline
# exactly, the upstream call could fail first, DEADLINE_EXCEEDED with no reason of the
# adapter's, and the front answered its caller INTERNAL "Deadline Exceeded" just before the
# caller's library would have said DEADLINE_EXCEEDED (1 of 6,000 fuzz cases through the
# gateway once failed sessions drained only to a pause in the caller's messages).
UPSTREAM_DEADLINE_MARGIN_S = 1.0


class CallPort:
    """``gateway.ports.ClientPort`` over one server call of the front (raw bytes both ways).
    A request arrives as binary data; the half-close as a frame with no data; ``close`` sends
    nothing (the handler sets the status)."""

    def __init__(self, context: grpc.aio.ServicerContext) -> None:
        # Read with the call's ``read()``, never the handler's request iterator (an async
        # generator, left never awaited by a call that ends before its first read).
        self._context = context
        self.half_closed = False
        self._next: asyncio.Future[Any] | None = None

    async def receive(self) -> Frame:
        if self.half_closed:
            # Nothing more will come: wait for the session to end the call (its idle deadline
            # bounds this, and the run cancels it).
            await asyncio.get_running_loop().create_future()
        if self._next is None:
            self._next = asyncio.ensure_future(self._context.read())
            self._next.add_done_callback(_retrieved)
        try:
            # Shielded: the run cancels its reader when the session ends, and a cancelled read
            # leaves its receive posted in gRPC core: later reads return EOF, and ``drain``
            # would read nothing more.
            raw = await asyncio.shield(self._next)
        finally:
            if self._next is not None and self._next.done():
                self._next = None
        if raw is grpc.aio.EOF:
            self.half_closed = True
            return Frame()
        return Frame(data=raw)

    async def drain(self, dropped_bytes: int = 0) -> None:
        """Read and drop what the caller still sends (voxwire.stream_write.drop_until_pause;
        ``dropped_bytes`` were read already). A session that failed does this before its
        status goes out: a grpc.aio caller whose writes race the status loses it to INTERNAL
        "Internal error from Core" (grpc/grpc#36066); through the front, which refuses bad
        input at once, 0.2 to 0.5 % of a fuzz run's hostile streams did."""
        with contextlib.suppress(grpc.RpcError):
            await drop_until_pause(self._next_size, dropped_bytes)

    async def _next_size(self) -> int | None:
        """The size of the caller's next request, None at its half-close."""
        if self.half_closed:
            return None
        frame = await self.receive()  # shielded: a read the pause cuts short stays posted
        return None if self.half_closed else len(frame.data or b"")

    def time_remaining(self) -> float | None:
        """What is left of the caller's deadline (None: it set none)."""
        return self._context.time_remaining()

    async def send_text(self, text: str) -> None:
        raise AssertionError("the gRPC front sends no text")  # runners give it bytes only

    async def send_bytes(self, data: bytes) -> None:
        await self._context.write(data)

    async def close(self, code: int, reason: str = "", linger_s: float = 0.0) -> None:
        return None

    def start_keepalive(self, audio_ahead_s: Callable[[], float]) -> None:
        return None  # HTTP/2 keeps the connection alive (the server's keepalive options)

    def keepalive_at(self) -> float:
        return math.inf

    def keepalive_due(self, now: float) -> None:
        return None

    def stop_keepalive(self) -> None:
        return None


def closing_status(
    code: int, error: errors.VoxwireError | None, timings: timings_pb2.StageTimings
) -> Status:
    """The call's status for a session that closed with ``code`` (1000: OK) and ``error``;
    every end carries the timing trailers, an error's too (as the adapter's do)."""
    timed = trailers(timings)
    if code == 1000:
        return Status(grpc.StatusCode.OK, "", timed)
    status = Status.of(error or errors.InternalError("the gateway ended the call"))
    return Status(status.code, status.details, status.trailers + timed)


def drain_notice(away: session_pb2.GoingAway) -> stream_pb2.StreamNotice | None:
    """A drain's going_away as the contract tells its callers (docs/contract.md,
    ``KIND_DRAINING``: finish within ``remaining``, or continue on a new stream), as the
    adapter does. The front dropped it: a caller learnt of the drain only from UNAVAILABLE at
    the grace's end, and could not move early. A maximum duration's going_away has no
    counterpart here (the caller's status says STREAM_TOO_LONG)."""
    if away.reason != "DRAINING":
        return None
    notice = stream_pb2.StreamNotice(
        kind=stream_pb2.StreamNotice.KIND_DRAINING,
        message="the gateway is shutting down: finish within the time remaining, or continue "
        "on a new stream",
    )
    notice.remaining.CopyFrom(away.grace)
    return notice


def parse_request(data: bytes, message: type[M], max_frame_bytes: int) -> M:
    """One request of a call: ``message`` parsed from ``data``. Raises ChunkTooLarge (over the
    frame limit plus the allowance, unparsed) or InvalidMessage (does not parse)."""
    if len(data) > max_frame_bytes + ALLOWANCE_BYTES:
        raise errors.ChunkTooLarge(
            f"a message of {len(data)} bytes exceeds {max_frame_bytes + ALLOWANCE_BYTES}"
        )
    try:
        return message.FromString(data)
    except DecodeError:
        raise errors.InvalidMessage(
            f"a message of {len(data)} bytes does not parse as a {message.DESCRIPTOR.name}"
        ) from None


class FrontCall:
    """What a session runner needs to serve a call of the front (mixed in before the runner):
    the status worked out from the session's close, and the caller's deadline on every upstream
    call."""

    session: Any
    # How the call ends; None until the session decided (a client gone: no status to send).
    status: Status | None = None

    def __init__(
        self,
        session: Any,
        port: CallPort,
        pool: Any,
        *,
        runner_limits: Any,
        metadata: tuple[tuple[str, str], ...],
        on_failover: Callable[[], None] | None = None,
    ) -> None:
        # The runner's own start handler reads a WebSocket's start message: the front has none.
        super().__init__(  # type: ignore[call-arg]
            session,
            port,
            pool,
            on_start=_no_start,
            limits=runner_limits,
            metadata=metadata,
            on_failover=on_failover,
        )
        self._call_port = port

    def _execute(self, actions: Any) -> None:
        close = actions.close
        if close is not None and self.status is None:
            self.status = closing_status(close.code, close.error, self.session.timings())
        super()._execute(actions)  # type: ignore[misc]

    def _unflushed(self, flush_s: float) -> None:
        super()._unflushed(flush_s)  # type: ignore[misc]
        error = errors.SlowConsumer(
            f"the caller did not read the end of the call within {flush_s:.1f} s"
        )
        self.status = closing_status(error.ws_close_code, error, self.session.timings())

    def _upstream_timeout(self) -> float | None:
        remaining = self._call_port.time_remaining()
        return None if remaining is None else remaining + UPSTREAM_DEADLINE_MARGIN_S


def _retrieved(future: asyncio.Future[Any]) -> None:
    """A read still in flight when the call ended ends with the call; nobody awaits it."""
    if not future.cancelled():
        future.exception()


def _no_start(session: Any, start: Any) -> Any:
    raise AssertionError("a session of the front starts from its call's own messages")


def no_token(config: Any, session_id: str, resumes: int) -> tuple[str, float]:
    """The session's resume token: none (gRPC callers continue with the contract's offsets)."""
    return "", 0.0
