"""The gateway under test: a real GatewayServer in front of a real adapter and Triton.

One adapter and one gateway per test session (the adapter here has default limits, separate
from tests/inference_adapter's, which uses small ones). Keys live in a temporary keys file made
with the same code as ``voxwire keys create``. The fixtures (``edge_adapter``, ``edge``) are in
tests/conftest.py so that tests/gateway and tests/client share one instance of each.
"""

from __future__ import annotations

import contextlib
import datetime
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.auth.config import AuthConfig
from gateway.auth.keys import create_key
from gateway.config import GatewayConfig
from gateway.server import GatewayServer
from inference_adapter.config import AdapterConfig
from inference_adapter.server import AdapterServer
from localstack.triton import TritonServer


@dataclass(frozen=True)
class Edge:
    server: GatewayServer
    key: str
    keys_file: Path
    auth: AuthConfig

    @property
    def ws(self) -> str:
        return self.server.url.replace("http", "ws", 1)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def auth_config(keys_file: Path) -> AuthConfig:
    return AuthConfig(
        keys_file=keys_file,
        token_signing_keys={"k1": "hex:" + secrets.token_hex(32)},
        token_current_kid="k1",
    )


async def start_edge_adapter(triton: TritonServer) -> AsyncIterator[AdapterServer]:
    server = AdapterServer(AdapterConfig(listen="127.0.0.1:0", triton_urls=(triton.grpc_url,)))
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace=1.0)


def roomy_key(keys_file: Path, name: str = "tests") -> str:
    """A new key in ``keys_file`` whose limits no test reaches (500 sessions, 10,000 a minute)."""
    key, _ = create_key(
        keys_file,
        name=name,
        now=datetime.datetime.now(datetime.UTC),
        max_concurrent_sessions=500,
        max_new_sessions_per_minute=10_000,
    )
    return key


async def start_edge(
    edge_adapter: AdapterServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Edge]:
    keys_file = tmp_path_factory.mktemp("keys") / "keys.toml"
    key = roomy_key(keys_file)
    auth = auth_config(keys_file)
    server = GatewayServer(
        GatewayConfig(
            listen="127.0.0.1:0",
            grpc_listen="127.0.0.1:0",
            adapters=(edge_adapter.address,),
            auth=auth,
            max_upload_bytes=4 * 1024 * 1024,
            demo_page=True,
        )
    )
    await server.start()
    try:
        yield Edge(server, key, keys_file, auth)
    finally:
        await server.stop(grace=1.0)


async def edge_on_own_adapter(
    triton: TritonServer, tmp_path_factory: pytest.TempPathFactory, **adapter: Any
) -> AsyncIterator[Edge]:
    """``start_edge`` in front of an adapter of its own, whose config is ``adapter`` (the
    limits a test module needs: a small capacity, small pending text). Use it as a module
    fixture's body."""
    server = AdapterServer(
        AdapterConfig(listen="127.0.0.1:0", triton_urls=(triton.grpc_url,), **adapter)
    )
    await server.start()
    try:
        async for edge in start_edge(server, tmp_path_factory):
            yield edge
    finally:
        await server.stop(grace=1.0)


async def keyed_gateway(
    adapter: str, keys_dir: Path, name: str, **config: Any
) -> AsyncIterator[tuple[GatewayServer, dict[str, str]]]:
    """``running_gateway`` with a keys file of its own in ``keys_dir``: the server and the
    headers of a roomy key. Use it as a module fixture's body."""
    keys = keys_dir / "keys.toml"
    key = roomy_key(keys, name)
    async for server in running_gateway(adapter, auth_config(keys), **config):
        yield server, {"Authorization": f"Bearer {key}"}


async def running_gateway(
    adapter: str, auth: AuthConfig, *, grpc_front: bool = False, **config: Any
) -> AsyncIterator[GatewayServer]:
    """A gateway of its own for a test module (``auth``'s settings, or the other ``config``
    fields given, are what it tests), in front of ``adapter``; stopped with a second of grace.
    Use it as a module fixture's body."""
    server = GatewayServer(
        GatewayConfig(
            listen="127.0.0.1:0",
            grpc_listen="127.0.0.1:0" if grpc_front else "",
            adapters=(adapter,),
            auth=auth,
            **config,
        )
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace=1.0)


async def page_token(edge: Edge, name: str) -> str:
    """A browser token for a key of its own whose allowed origin is the gateway's (the page is
    served by the gateway itself), as the page's own backend would fetch it."""
    origin = edge.server.url
    key, _ = create_key(
        edge.keys_file,
        name=name,
        now=datetime.datetime.now(datetime.UTC),
        allowed_origins=[origin],
    )
    edge.server.auth.keys.reload_if_changed()
    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {key}"}
        async with http.post(f"{origin}/v1/auth/token", headers=headers) as resp:
            return str((await resp.json())["token"])


def gateway_of_its_own(
    adapter: str, auth: AuthConfig, **config: Any
) -> contextlib.AbstractAsyncContextManager[GatewayServer]:
    """``running_gateway`` for one test: ``async with``, stopped when the block ends, however
    it ends."""
    return contextlib.asynccontextmanager(running_gateway)(adapter, auth, **config)
