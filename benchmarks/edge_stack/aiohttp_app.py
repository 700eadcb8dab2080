"""The candidate routes on aiohttp: ``web.WebSocketResponse`` and ``web.StreamResponse``."""

from __future__ import annotations

import asyncio
import socket

import grpc
from aiohttp import WSMsgType, web

from benchmarks.edge_stack import common


def make_app(channel: grpc.aio.Channel, heartbeat: float | None) -> web.Application:
    probes = common.Probes()

    def websocket() -> web.WebSocketResponse:
        return web.WebSocketResponse(heartbeat=heartbeat, max_msg_size=common.MAX_MESSAGE_BYTES)

    async def relay(request: web.Request) -> web.WebSocketResponse:
        ws = websocket()
        await ws.prepare(request)
        upstream = common.UpstreamRelay(channel, ws.send_bytes)
        try:
            async for message in ws:
                if message.type is WSMsgType.BINARY:
                    await upstream.write(message.data)
            await upstream.finish()
        finally:
            upstream.cancel()
        return ws

    async def echo(request: web.Request) -> web.WebSocketResponse:
        ws = websocket()
        await ws.prepare(request)
        async for message in ws:
            if message.type is WSMsgType.BINARY:
                await ws.send_bytes(message.data)
        return ws

    async def idle(request: web.Request) -> web.StreamResponse:
        session = common.authenticate(request.headers.get("Authorization"), request.remote or "")
        if session is None:
            raise web.HTTPUnauthorized()
        ws = websocket()
        await ws.prepare(request)
        probes.sessions[session.session_id] = session
        upstream = common.UpstreamRelay(channel, ws.send_bytes) if "grpc" in request.query else None
        try:
            async for message in ws:
                if message.type in (WSMsgType.BINARY, WSMsgType.TEXT):
                    session.seen(message.data)
        finally:
            probes.sessions.pop(session.session_id, None)
            if upstream is not None:
                upstream.cancel()
        return ws

    async def flood(request: web.Request) -> web.WebSocketResponse:
        ws = websocket()
        await ws.prepare(request)
        await common.flood(ws.send_bytes, probes.flood)
        return ws

    async def sink(request: web.Request) -> web.WebSocketResponse:
        ws = websocket()
        await ws.prepare(request)
        await asyncio.sleep(common.SINK_HOLD_S)
        async for _ in ws:
            pass
        return ws

    async def upload(request: web.Request) -> web.Response:
        chunks = request.content.iter_any()
        return web.json_response(
            await common.consume(chunks, probes.upload, "hold" in request.query)
        )

    async def events(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        async for event in common.sse_events(probes.events):
            await response.write(event)
        await response.write_eof()
        return response

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(probes.snapshot())

    app = web.Application()
    app.add_routes(
        [
            web.get("/relay", relay),
            web.get("/echo", echo),
            web.get("/idle", idle),
            web.get("/flood", flood),
            web.get("/sink", sink),
            web.post("/upload", upload),
            web.get("/events", events),
            web.get("/stats", stats),
        ]
    )
    return app


async def serve(
    sock: socket.socket, channel: grpc.aio.Channel, heartbeat: float | None, stop: asyncio.Event
) -> None:
    runner = web.AppRunner(make_app(channel, heartbeat), access_log=None)
    await runner.setup()
    site = web.SockSite(runner, sock, shutdown_timeout=2.0, backlog=4096)
    await site.start()
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
