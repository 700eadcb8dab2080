"""Clients that can stop reading at the socket: a WebSocket on wsproto and HTTP/1.1 on h11,
both sans-I/O libraries driven over an asyncio stream.

A full client (aiohttp's, websockets') reads the socket in its own loop, so "the application
stops reading" would not reach TCP; these read only when asked. The socket's receive buffer is
set small before connecting (no autotuning), so what the peer can absorb is small and known.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import h11
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, RejectConnection, Request

HOST = "127.0.0.1"
READ_BYTES = 65536
STEP_TIMEOUT_S = 10.0


async def open_stream(
    port: int, rcvbuf: int | None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, (HOST, port)), 5.0)
    return await asyncio.open_connection(sock=sock)


class RawWebSocket:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.conn = WSConnection(ConnectionType.CLIENT)

    @classmethod
    async def connect(cls, port: int, path: str, rcvbuf: int | None = None) -> RawWebSocket:
        """Open and complete the handshake. Raises ConnectionError if the server refuses."""
        peer = cls(*await open_stream(port, rcvbuf))
        peer.writer.write(peer.conn.send(Request(host=f"{HOST}:{port}", target=path)))
        while True:
            data = await asyncio.wait_for(peer.reader.read(READ_BYTES), STEP_TIMEOUT_S)
            if not data:
                raise ConnectionError("closed during the handshake")
            peer.conn.receive_data(data)
            for event in peer.conn.events():
                if isinstance(event, AcceptConnection):
                    return peer
                if isinstance(event, RejectConnection):
                    raise ConnectionError(f"handshake refused: {event.status_code}")

    def write_frame(self, data: bytes) -> None:
        self.writer.write(self.conn.send(BytesMessage(data=data)))

    def abort(self) -> None:
        self.writer.transport.abort()


class RawHttp:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.conn = h11.Connection(our_role=h11.CLIENT)
        self.port = 0

    @classmethod
    async def connect(cls, port: int, rcvbuf: int | None = None) -> RawHttp:
        peer = cls(*await open_stream(port, rcvbuf))
        peer.port = port
        return peer

    def request(self, method: str, target: str, chunked: bool = False) -> None:
        headers = [("Host", f"{HOST}:{self.port}")]
        if chunked:
            headers.append(("Transfer-Encoding", "chunked"))
        self.writer.write(
            self.conn.send(h11.Request(method=method, target=target, headers=headers)) or b""
        )

    def write(self, event: Any) -> None:
        self.writer.write(self.conn.send(event) or b"")

    async def next_event(self) -> Any:
        """The next h11 event from the server. Raises TimeoutError after STEP_TIMEOUT_S."""
        while (event := self.conn.next_event()) is h11.NEED_DATA:
            data = await asyncio.wait_for(self.reader.read(READ_BYTES), STEP_TIMEOUT_S)
            self.conn.receive_data(data)
        return event

    def abort(self) -> None:
        self.writer.transport.abort()
