"""The adapter under test: one AdapterServer per session, in front of the session's Triton."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest_asyncio

from inference_adapter.config import AdapterConfig, Limits
from inference_adapter.server import AdapterServer
from localstack.triton import TritonServer

# Small limits so the limit tests need little data; everything else is the default.
TEST_LIMITS = Limits(max_chunk_bytes=32_000, max_contexts_per_stream=4, idle_timeout_seconds=5.0)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def adapter(triton: TritonServer) -> AsyncIterator[AdapterServer]:
    server = AdapterServer(
        AdapterConfig(listen="127.0.0.1:0", triton_urls=(triton.grpc_url,), limits=TEST_LIMITS)
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace=1.0)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def channel(adapter: AdapterServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(adapter.address) as ch:
        yield ch
