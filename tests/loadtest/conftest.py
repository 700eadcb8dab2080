"""Servers the load tester drives in its tests: the echo floor, the null proxy and the null
relay (their own processes, as in the performance record) and the adapter (in this process, on
the session's Triton). Each starts once per session. The gateway target drives the session's
``edge`` gateway (tests/conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator

import pytest_asyncio

from inference_adapter.config import AdapterConfig
from inference_adapter.server import AdapterServer
from localstack.triton import TritonServer


async def _server(*args: str) -> AsyncIterator[str]:
    """``python -m <args>``, which prints its port; yields 127.0.0.1:<port>."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        port = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().strip()
        yield f"127.0.0.1:{int(port)}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def echo_address() -> AsyncIterator[str]:
    async for address in _server("benchmarks.echo_server"):
        yield address


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def proxy_address(triton: TritonServer) -> AsyncIterator[str]:
    async for address in _server("benchmarks.null_proxy", triton.grpc_url):
        yield address


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def adapter_address(triton: TritonServer) -> AsyncIterator[str]:
    server = AdapterServer(AdapterConfig(listen="127.0.0.1:0", triton_urls=(triton.grpc_url,)))
    await server.start()
    try:
        yield server.address
    finally:
        await server.stop(grace=1.0)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def relay_address(adapter_address: str) -> AsyncIterator[str]:
    async for address in _server("benchmarks.null_relay", adapter_address):
        yield address


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def lean_adapter_address(triton: TritonServer) -> AsyncIterator[str]:
    async for address in _server("benchmarks.lean_adapter", triton.grpc_url):
        yield address


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def lean_gateway_address(adapter_address: str) -> AsyncIterator[str]:
    async for address in _server("benchmarks.lean_gateway", adapter_address):
        yield address
