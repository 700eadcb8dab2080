"""The candidate routes on aiohttp: ``web.WebSocketResponse`` and ``web.StreamResponse``."""

from __future__ import annotations

import asyncio
import socket

import grpc
from aiohttp import WSMsgType, web

from benchmarks.edge_stack import common


class Routes:
    """The benchmark's routes (``benchmarks.edge_stack``) as aiohttp handlers."""

    def __init__(self, channel: grpc.aio.Channel, heartbeat: float | None) -> None:
        self.channel, self.heartbeat = channel, heartbeat
        self.probes = common.Probes()

    def app(self) -> web.Application:
        app = web.Application()
        app.add_routes(
            [
                web.get("/relay", self.relay),
                web.get("/echo", self.echo),
                web.get("/idle", self.idle),
                web.get("/flood", self.flood),
                web.get("/sink", self.sink),
                web.post("/upload", self.upload),
                web.get("/events", self.events),
                web.get("/stats", self.stats),
            ]
        )
        return app

    async def _accept(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=self.heartbeat, max_msg_size=common.MAX_MESSAGE_BYTES)
        await ws.prepare(request)
        return ws

    async def relay(self, request: web.Request) -> web.WebSocketResponse:
        ws = await self._accept(request)
        upstream = common.UpstreamRelay(self.channel, ws.send_bytes)
        try:
            async for message in ws:
                if message.type is WSMsgType.BINARY:
                    await upstream.write(message.data)
            await upstream.finish()
        finally:
            upstream.cancel()
        return ws

    async def echo(self, request: web.Request) -> web.WebSocketResponse:
        ws = await self._accept(request)
        async for message in ws:
            if message.type is WSMsgType.BINARY:
                await ws.send_bytes(message.data)
        return ws

    async def idle(self, request: web.Request) -> web.StreamResponse:
        session = common.authenticate(request.headers.get("Authorization"), request.remote or "")
        if session is None:
            raise web.HTTPUnauthorized()
        ws = await self._accept(request)
        self.probes.sessions[session.session_id] = session
        upstream = None
        if "grpc" in request.query:
            upstream = common.UpstreamRelay(self.channel, ws.send_bytes)
        try:
            async for message in ws:
                if message.type in (WSMsgType.BINARY, WSMsgType.TEXT):
                    session.seen(message.data)
        finally:
            self.probes.sessions.pop(session.session_id, None)
            if upstream is not None:
                upstream.cancel()
        return ws

    async def flood(self, request: web.Request) -> web.WebSocketResponse:
        ws = await self._accept(request)
        await common.flood(ws.send_bytes, self.probes.flood)
        return ws

    async def sink(self, request: web.Request) -> web.WebSocketResponse:
        ws = await self._accept(request)
        await asyncio.sleep(common.SINK_HOLD_S)
        async for _ in ws:
            pass
        return ws

    async def upload(self, request: web.Request) -> web.Response:
        chunks = request.content.iter_any()
        hold = "hold" in request.query
        return web.json_response(await common.consume(chunks, self.probes.upload, hold))

    async def events(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        async for event in common.sse_events(self.probes.events):
            await response.write(event)
        await response.write_eof()
        return response

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.probes.snapshot())


async def serve(
    sock: socket.socket, channel: grpc.aio.Channel, heartbeat: float | None, stop: asyncio.Event
) -> None:
    """Serve on ``sock`` until ``stop`` is set."""
    runner = web.AppRunner(Routes(channel, heartbeat).app(), access_log=None)
    await runner.setup()
    site = web.SockSite(runner, sock, shutdown_timeout=2.0, backlog=4096)
    await site.start()
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
