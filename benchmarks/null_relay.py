"""The gateway's floor in the performance record: the least a gateway can do for the same work.

An aiohttp application on uvloop (the gateway's stack) with one WebSocket route, ``/relay``.
Per socket it opens one ``voxwire.v1.Transcription/StreamingTranscribe`` call to the adapter,
on one long-lived grpc.aio channel with no (de)serializers, and passes bytes both ways: each
binary frame (a serialized ``StreamingTranscribeRequest``; the client serializes) is written
to the call as it is, and each raw response goes back as a binary frame. No parsing, no auth,
no session, no timings, no replay window. When the call ends the socket closes with 1000 (OK)
or 1011 with the status name as the close reason. WebSocket pings as the gateway's default.

So *gateway − null relay* is what the gateway's own work costs (JSON, sessions, auth, acks,
outboxes, timers), and *null relay − adapter direct* what one WebSocket hop in Python costs.

Run by ``benchmarks.record`` in its own process
(``python -m benchmarks.null_relay ADAPTER_HOST:PORT``): it binds a free loopback port, prints
it on stdout, and serves until SIGTERM. A benchmark instrument, not a component: it has none of
the gateway's deadlines, limits or errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Awaitable, Callable

import grpc
import uvloop
from aiohttp import WSMsgType, web

from gateway.config import GatewayConfig

METHOD = "/voxwire.v1.Transcription/StreamingTranscribe"
PATH = "/relay"
_MAX_MESSAGE_BYTES = 1024 * 1024


class Relay:
    def __init__(self, channel: grpc.aio.Channel, heartbeat_s: float) -> None:
        self._call = channel.stream_stream(METHOD)  # no (de)serializers: raw bytes
        self._heartbeat_s = heartbeat_s

    async def relay(self, request: web.Request) -> web.WebSocketResponse:
        # No permessage-deflate, as the gateway by default: the same socket work.
        ws = web.WebSocketResponse(
            heartbeat=self._heartbeat_s, max_msg_size=_MAX_MESSAGE_BYTES, compress=False
        )
        await ws.prepare(request)
        call = self._call()

        async def upward() -> None:
            with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
                async for message in ws:
                    if message.type is WSMsgType.BINARY:
                        await call.write(message.data)
                await call.done_writing()

        writer = asyncio.create_task(upward())
        code = grpc.StatusCode.UNKNOWN
        try:
            async for response in call:
                await ws.send_bytes(response)
            code = await call.code()
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
        except ConnectionError:
            pass  # the client went away
        finally:
            writer.cancel()
            call.cancel()
            ok = code == grpc.StatusCode.OK
            await ws.close(code=1000 if ok else 1011, message=code.name.encode())
        return ws


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def serve(adapter: str) -> None:
    await serve_route(adapter, PATH, lambda channel, heartbeat_s: Relay(channel, heartbeat_s).relay)


async def serve_route(
    adapter: str, path: str, handler: Callable[[grpc.aio.Channel, float], Handler]
) -> None:
    """Serve one WebSocket route on aiohttp (``handler`` made from one long-lived channel to
    the adapter and the gateway's default ping interval) until SIGTERM; the port goes to
    stdout. Shared with benchmarks/lean_gateway.py."""
    channel = grpc.aio.insecure_channel(
        adapter, options=[("grpc.max_receive_message_length", 16 * 1024 * 1024)]
    )
    app = web.Application()
    app.router.add_get(path, handler(channel, GatewayConfig().ping_interval_seconds))
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(runner.addresses[0][1], flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await channel.close()


if __name__ == "__main__":
    uvloop.run(serve(sys.argv[1]))
