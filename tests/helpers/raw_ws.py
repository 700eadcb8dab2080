"""A WebSocket client on wsproto over a raw socket with a small receive buffer: what the test
does not read stays in TCP (aiohttp's and websockets' clients read the socket in a loop of
their own), so a client that reads slowly, or not at all, really is slow to the gateway."""

from __future__ import annotations

import asyncio
import socket

from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request

RCVBUF = 16 * 1024


async def connect(
    port: int, path: str, key: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, WSConnection]:
    """The upgraded connection to ``path`` on the loopback ``port``, with ``key``'s bearer."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    conn = WSConnection(ConnectionType.CLIENT)
    headers = [(b"authorization", f"Bearer {key}".encode())]
    writer.write(conn.send(Request(host=f"127.0.0.1:{port}", target=path, extra_headers=headers)))
    async with asyncio.timeout(10):
        while True:
            data = await reader.read(65536)
            assert data, "closed during the handshake"
            conn.receive_data(data)
            if any(isinstance(e, AcceptConnection) for e in conn.events()):
                return reader, writer, conn
