"""``gateway.http.stt._client_gone``: a client that closed while the gateway is not reading
its socket (an upload waiting for the model) is seen at once, from the kernel's TCP state.

aiohttp notices a peer's close only while it reads; an upload under backpressure has its
reading paused, so the FIN waited behind the unread body and the upload went on for the model
(`make run`: a 19 MB FLAC abandoned after 4 s, 100 s of stt_pocketsphinx). Real loopback
sockets; the request is a stand-in holding the server's real transport, the one attribute
``_client_gone`` reads."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from gateway.http.stt import _client_gone

pytestmark = pytest.mark.asyncio(loop_scope="session")


@dataclass
class _Request:  # stand-in: only the transport, as aiohttp's Request gives it
    transport: asyncio.Transport | None


@pytest.mark.parametrize("how", ["close", "reset"])
async def test_a_client_that_left_while_reading_was_paused_is_seen(how):
    accepted: asyncio.Queue[asyncio.StreamWriter] = asyncio.Queue()

    async def handle(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accepted.put(writer)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        _reader, client = await asyncio.open_connection("127.0.0.1", port)
        served = await asyncio.wait_for(accepted.get(), 5)
        transport = served.transport
        transport.pause_reading()  # as aiohttp does while the body waits for the model
        request = _Request(transport)
        client.write(b"audio" * 20_000)  # a body the server has not read
        await client.drain()
        assert not _client_gone(request)
        if how == "reset":
            client.transport.abort()
        else:
            client.close()
        for _ in range(50):
            if _client_gone(request):
                break
            await asyncio.sleep(0.02)
        assert _client_gone(request)
        assert not transport.is_closing()  # what aiohttp's own view still says
        served.close()
    finally:
        server.close()
        await server.wait_closed()
    assert _client_gone(_Request(None))
