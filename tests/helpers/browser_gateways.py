"""Gateway processes sharing one loopback port (``reuse_port``) in front of a test page, for the
browser tests where the page's gateway goes (drained or killed) and the next one takes its
sessions; and the page's application backend that mints its tokens."""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.stack import free_port
from gateway.auth.keys import create_key
from tests.helpers.edge import Edge
from tests.helpers.gateway_process import GatewayProcess, start_gateway, write_config


class Backend:
    """The page's application backend: a token for each of the page's connections (exposed to
    the page as its ``voxwireToken()``), minted with the key as a real backend does."""

    def __init__(self, origin: str, key: str) -> None:
        self.origin, self.key = origin, key
        self.minted: list[str] = []

    async def __call__(self) -> str:
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{self.origin}/v1/auth/token", headers={"Authorization": f"Bearer {self.key}"}
            ) as resp,
        ):
            token = str((await resp.json())["token"])
        self.minted.append(token)
        return token


@dataclass
class SharedPort:
    """The first gateway (``a``) on the port, and what starts the second (``b``)."""

    origin: str
    config: Path
    mint: Backend
    a: GatewayProcess
    logs: Path
    b: GatewayProcess | None = None

    async def second(self) -> GatewayProcess:
        """Start the next gateway on the port (it takes the connections the first lets go)."""
        self.b = await start_gateway(self.config, self.logs / "b.log")
        return self.b

    async def open(self, page: Any, path: str) -> None:
        """Open the demo page ``path`` on the port with a first token in its fragment; its
        later tokens come from this backend (``window.voxwireToken``)."""
        await page.expose_function("voxwireToken", self.mint)
        await page.goto(f"{self.origin}/demo/{path}#token={await self.mint()}")


@asynccontextmanager
async def gateways_on_one_port(
    edge: Edge, adapter: str, tmp_path: Path, name: str
) -> AsyncIterator[SharedPort]:
    """A key for a page on a fresh port (only that origin allowed), and the first gateway on
    it; both gateways are stopped at the end."""
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    key, _ = create_key(
        edge.keys_file, name=name, now=datetime.datetime.now(datetime.UTC), allowed_origins=[origin]
    )
    tables = {
        "listen": f"127.0.0.1:{port}",
        "reuse_port": True,
        "grpc_listen": "",
        "demo_page": True,
    }
    config = write_config(
        tmp_path / "gateway.toml", edge, adapter, drain_grace_s=5.0, tables=tables
    )
    a = await start_gateway(config, tmp_path / "a.log")
    shared = SharedPort(origin, config, Backend(origin, key), a, tmp_path)
    try:
        yield shared
    finally:
        await a.stop()
        if shared.b is not None:
            await shared.b.stop()


@dataclass
class SocketFrames:
    """The frames of each WebSocket a page opened, in the order it opened them."""

    sent: list[list[str | bytes]] = field(default_factory=list)
    received: list[list[str | bytes]] = field(default_factory=list)


def record_frames(page: Any) -> SocketFrames:
    """Record the frames of every WebSocket ``page`` opens from now on (Playwright's events)."""
    frames = SocketFrames()

    def on_websocket(ws: Any) -> None:
        out: list[str | bytes] = []
        came: list[str | bytes] = []
        frames.sent.append(out)
        frames.received.append(came)
        ws.on("framesent", lambda payload: out.append(payload))
        ws.on("framereceived", lambda payload: came.append(payload))

    page.on("websocket", on_websocket)
    return frames
