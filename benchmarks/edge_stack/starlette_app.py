"""The candidate routes on Starlette, served by uvicorn (uvloop + httptools) with one of its
WebSocket backends (``ws``: websockets, websockets-sansio, wsproto)."""

from __future__ import annotations

import asyncio
import socket

import grpc
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from benchmarks.edge_stack import common

DISCONNECT = "websocket.disconnect"


class Routes:
    """The benchmark's routes (``benchmarks.edge_stack``) as Starlette endpoints."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel
        self.probes = common.Probes()

    def app(self) -> Starlette:
        routes = [
            WebSocketRoute("/relay", self.relay),
            WebSocketRoute("/echo", self.echo),
            WebSocketRoute("/idle", self.idle),
            WebSocketRoute("/flood", self.flood),
            WebSocketRoute("/sink", self.sink),
            Route("/upload", self.upload, methods=["POST"]),
            Route("/events", self.events),
            Route("/stats", self.stats),
        ]
        return Starlette(routes=routes)

    async def relay(self, websocket: WebSocket) -> None:
        await websocket.accept()
        upstream = common.UpstreamRelay(self.channel, websocket.send_bytes)
        try:
            while (message := await websocket.receive())["type"] != DISCONNECT:
                if (data := message.get("bytes")) is not None:
                    await upstream.write(data)
            await upstream.finish()
        finally:
            upstream.cancel()

    async def echo(self, websocket: WebSocket) -> None:
        await websocket.accept()
        while (message := await websocket.receive())["type"] != DISCONNECT:
            if (data := message.get("bytes")) is not None:
                await websocket.send_bytes(data)

    async def idle(self, websocket: WebSocket) -> None:
        client = websocket.client.host if websocket.client else ""
        session = common.authenticate(websocket.headers.get("authorization"), client)
        if session is None:
            await websocket.close(code=1008)  # before accept: uvicorn answers HTTP 403
            return
        await websocket.accept()
        self.probes.sessions[session.session_id] = session
        upstream = None
        if "grpc" in websocket.query_params:
            upstream = common.UpstreamRelay(self.channel, websocket.send_bytes)
        try:
            while (message := await websocket.receive())["type"] != DISCONNECT:
                session.seen(message.get("bytes") or message.get("text") or b"")
        finally:
            self.probes.sessions.pop(session.session_id, None)
            if upstream is not None:
                upstream.cancel()

    async def flood(self, websocket: WebSocket) -> None:
        await websocket.accept()
        await common.flood(websocket.send_bytes, self.probes.flood)

    async def sink(self, websocket: WebSocket) -> None:
        await websocket.accept()
        await asyncio.sleep(common.SINK_HOLD_S)
        while (await websocket.receive())["type"] != DISCONNECT:
            pass

    async def upload(self, request: Request) -> Response:
        hold = "hold" in request.query_params
        return JSONResponse(await common.consume(request.stream(), self.probes.upload, hold))

    async def events(self, request: Request) -> Response:
        events = common.sse_events(self.probes.events)
        return StreamingResponse(events, media_type="text/event-stream")

    async def stats(self, request: Request) -> Response:
        return JSONResponse(self.probes.snapshot())


async def serve(
    sock: socket.socket, channel: grpc.aio.Channel, heartbeat: float | None, ws: str
) -> None:
    """Serve on ``sock`` until SIGTERM (uvicorn's own handler: graceful, 2 s)."""
    config = uvicorn.Config(
        Routes(channel).app(),
        loop="none",  # the caller runs us on uvloop
        http="httptools",
        ws=ws,
        ws_max_size=common.MAX_MESSAGE_BYTES,
        ws_ping_interval=heartbeat,
        ws_ping_timeout=None if heartbeat is None else heartbeat / 2,
        lifespan="off",
        log_level="warning",
        access_log=False,
        backlog=4096,
        timeout_graceful_shutdown=2,
    )
    await uvicorn.Server(config).serve(sockets=[sock])
