"""``ClientPort`` on an aiohttp WebSocket: the only place the session code meets the stack.

The port answers the client's pings and keeps the connection alive itself (aiohttp's
``heartbeat`` and ``autoping`` off): a ping once the client has been silent for the ping
interval, and a reset when its pong is late, counted from when the audio written before the
ping has played (gateway/keepalive.py; RFC 6455 5.5.2/5.5.3). Text frames
come as bytes (``decode_text=False``): the message decoder checks UTF-8 and a frame that is not
is answered as every bad message is, an error event, then close 1007 (RFC 6455 8.1). aiohttp
still closes a connection by itself, before the session can say anything, for a frame over its
``max_msg_size`` (1009) and for framing errors. The gateway sets that size well above its own
frame limit, so a frame over the limit is still answered with a CHUNK_TOO_LARGE event before the
close; only frames past aiohttp's hard size are cut without one.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import time
from collections.abc import Callable

from aiohttp import WSCloseCode, WSMsgType, web

from gateway import let_go
from gateway.keepalive import Due, Keepalive
from gateway.ports import Frame
from voxwire.edge.v1 import session_pb2

log = logging.getLogger(__name__)


@functools.cache  # one message for every session (memory per idle session counts); read only
def heartbeat_limits(ping_interval_s: float) -> session_pb2.EdgeLimits:
    """What a client learns of the connection's keepalive in ``session.limits``: the gateway
    pings after ``ping_interval_s`` without a frame from the client, and resets a connection
    whose pong is missing for half of it once the audio sent before the ping has played."""
    limits = session_pb2.EdgeLimits()
    limits.ping_interval.FromMilliseconds(round(ping_interval_s * 1000))
    limits.pong_timeout.FromMilliseconds(round(ping_interval_s * 500))
    return limits


@functools.cache  # one message per value, as heartbeat_limits; read only
def tts_limits(ping_interval_s: float, max_pending_text_bytes: int) -> session_pb2.EdgeLimits:
    """``heartbeat_limits`` and, for a TTS client, how much unsynthesized text a context
    holds on the adapters behind the gateway (``AdapterPool.max_pending_text_bytes``): the
    SDKs cut long text into pieces that fit."""
    limits = session_pb2.EdgeLimits()
    limits.CopyFrom(heartbeat_limits(ping_interval_s))
    limits.max_pending_text_bytes = max_pending_text_bytes
    return limits


def _nothing_ahead() -> float:
    return 0.0


class AiohttpPort:
    """``ws`` must be prepared with ``heartbeat=None``, ``autoping=False`` and a close
    ``timeout`` longer than any ``close``'s wait: the port answers pings, reads pongs and sends
    its own pings every ``ping_interval_s`` (0: none) once ``start_keepalive`` is called, when
    its owner's timer calls ``keepalive_due`` at ``keepalive_at`` (no timer of its own);
    ``transport`` is the connection's, reset when a pong is late; ``close`` waits
    ``close_wait_s`` for the client's close."""

    # One per session: no instance dict (memory per idle session, BENCHMARKS.md).
    __slots__ = (
        "_ws",
        "_transport",
        "_ping_interval_s",
        "_close_wait_s",
        "_keepalive",
        "_audio_ahead",
        "_ping",
        "_gone",
    )

    def __init__(
        self,
        ws: web.WebSocketResponse,
        transport: asyncio.Transport | None = None,
        ping_interval_s: float = 0.0,
        close_wait_s: float = 2.0,
    ) -> None:
        self._ws = ws
        self._transport = transport
        self._ping_interval_s = ping_interval_s
        self._close_wait_s = close_wait_s
        self._keepalive: Keepalive | None = None
        self._audio_ahead: Callable[[], float] = _nothing_ahead
        self._ping: asyncio.Task[None] | None = None
        self._gone = ""  # why the keepalive let the client go

    async def receive(self) -> Frame:
        ws = self._ws
        while True:
            msg = await ws.receive()
            kind = msg.type
            if self._keepalive is not None:
                self._keepalive.heard(time.monotonic())
            if kind is WSMsgType.BINARY:
                return Frame(data=msg.data)
            if kind is WSMsgType.TEXT:
                return Frame(text=msg.data)
            if kind is WSMsgType.PING:
                # RFC 6455 5.5.3: the pong carries the ping's application data.
                with contextlib.suppress(ConnectionError):
                    await ws.pong(msg.data)
                continue
            if kind is WSMsgType.PONG:
                continue  # heard (above): all a pong is for
            self.stop_keepalive()
            if self._gone:
                return Frame(closed=True, close_code=1006, protocol_error=self._gone)
            if kind is WSMsgType.ERROR:
                code = ws.close_code or WSCloseCode.PROTOCOL_ERROR
                return Frame(closed=True, close_code=code, protocol_error=str(msg.data))
            # CLOSE, CLOSING, CLOSED
            return Frame(closed=True, close_code=ws.close_code or 1006)

    async def send_text(self, text: str) -> None:
        if self._ws.closed:
            raise ConnectionError("the WebSocket is closed")
        await self._ws.send_str(text)

    async def send_bytes(self, data: bytes) -> None:
        if self._ws.closed:
            raise ConnectionError("the WebSocket is closed")
        await self._ws.send_bytes(data)

    async def close(self, code: int, reason: str = "", linger_s: float = 0.0) -> None:
        """The close frame, then the client's frames read (and dropped) until its close comes,
        for at most ``close_wait_s`` + ``linger_s`` (RFC 6455 7.1.1: the server closes the TCP
        connection after the handshake). The socket is read to the end: a client frame left
        unread when it closes makes the kernel reset the connection (RFC 1122 4.2.2.13), and
        the reset drops the audio still in its send buffer. A player that kept answering pings
        while it played lost the last seconds of a session that ended well. Call it with no
        ``receive`` in flight: aiohttp then closes at once, reading nothing more."""
        self.stop_keepalive()
        if self._ws.closed:
            return
        # aiohttp's own wait for the close (its ``timeout``) is set far out by the app; this
        # one bounds it, and aiohttp closes the transport when it is cancelled.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._close_wait_s + linger_s):
                await self._ws.close(code=code, message=reason.encode()[:123])

    # -- keepalive (gateway/keepalive.py) -----------------------------------------------------

    def start_keepalive(self, audio_ahead_s: Callable[[], float]) -> None:
        if self._ping_interval_s <= 0 or self._keepalive is not None:
            return
        self._audio_ahead = audio_ahead_s
        self._keepalive = Keepalive(self._ping_interval_s, time.monotonic())

    def keepalive_at(self) -> float:
        keepalive = self._keepalive
        return math.inf if keepalive is None else keepalive.next_at()

    def keepalive_due(self, now: float) -> None:
        keepalive = self._keepalive
        if keepalive is None:
            return
        if self._ws.closed:
            self._keepalive = None  # nothing to keep alive (and no deadline left to come back)
            return
        due = keepalive.on_time(now, self._audio_ahead())
        if due is Due.PING:
            if self._ping is None or self._ping.done():
                # A task: the frame may wait for the transport to drain, behind the audio.
                self._ping = asyncio.ensure_future(self._send_ping())
        elif due is Due.GONE:
            self._keepalive = None  # done: the reset ends the session
            self._gone = (
                f"no pong within {keepalive.pong_timeout_s:g} s of its ping "
                f"({keepalive.pinged_ahead_s:.1f} s of audio ahead of it)"
            )
            log.info("WebSocket keepalive: %s; the connection is reset", self._gone)
            let_go.reset(self._transport)

    def stop_keepalive(self) -> None:
        self._keepalive = None
        if self._ping is not None:
            self._ping.cancel()
            self._ping = None
        self._audio_ahead = _nothing_ahead  # the session's outbox is not held past its end

    async def _send_ping(self) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self._ws.ping()
