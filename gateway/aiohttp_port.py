"""``ClientPort`` on an aiohttp WebSocket: the only place the session code meets the stack.

aiohttp answers pings and sends its own (``heartbeat``: a ping every interval, and the
connection is closed when no pong comes within half of it; RFC 6455 5.5.2/5.5.3). Text frames
come as bytes (``decode_text=False``): the message decoder checks UTF-8 and a frame that is not
is answered as every bad message is, an error event, then close 1007 (RFC 6455 8.1). aiohttp
still closes a connection by itself, before the session can say anything, for a frame over its
``max_msg_size`` (1009) and for framing errors. The gateway sets that size well above its own
frame limit, so a frame over the limit is still answered with a CHUNK_TOO_LARGE event before the
close; only frames past aiohttp's hard size are cut without one.
"""

from __future__ import annotations

import functools

from aiohttp import WSCloseCode, WSMsgType, web

from gateway.ports import Frame
from voxwire.edge.v1 import session_pb2


@functools.cache  # one message for every session (memory per idle session counts); read only
def heartbeat_limits(ping_interval_s: float) -> session_pb2.EdgeLimits:
    """What a client learns of the connection's keepalive in ``session.limits``: aiohttp pings
    every ``ping_interval_s`` and closes a connection whose pong is missing for half of it."""
    limits = session_pb2.EdgeLimits()
    limits.ping_interval.FromMilliseconds(round(ping_interval_s * 1000))
    limits.pong_timeout.FromMilliseconds(round(ping_interval_s * 500))
    return limits


class AiohttpPort:
    def __init__(self, ws: web.WebSocketResponse) -> None:
        self._ws = ws

    async def receive(self) -> Frame:
        while True:
            msg = await self._ws.receive()
            if msg.type is WSMsgType.BINARY:
                return Frame(data=msg.data)
            if msg.type is WSMsgType.TEXT:
                return Frame(text=msg.data)
            if msg.type is WSMsgType.ERROR:
                code = self._ws.close_code or WSCloseCode.PROTOCOL_ERROR
                return Frame(closed=True, close_code=code, protocol_error=str(msg.data))
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                return Frame(closed=True, close_code=self._ws.close_code or 1006)
            # PING/PONG are answered by aiohttp (autoping); nothing else reaches here.

    async def send_text(self, text: str) -> None:
        if self._ws.closed:
            raise ConnectionError("the WebSocket is closed")
        await self._ws.send_str(text)

    async def send_bytes(self, data: bytes) -> None:
        if self._ws.closed:
            raise ConnectionError("the WebSocket is closed")
        await self._ws.send_bytes(data)

    async def close(self, code: int, reason: str = "") -> None:
        if not self._ws.closed:
            await self._ws.close(code=code, message=reason.encode()[:123])
