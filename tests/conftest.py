"""Session-wide fixtures: one real Triton server (all models of model_repository/) and one
adapter in front of it per session, shared by the adapter's tests and the conformance kit's."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio

from inference_adapter.config import AdapterConfig, Limits
from inference_adapter.server import AdapterServer
from localstack.triton import TritonServer, default_model_repository

# Small limits so the limit tests need little data; everything else is the default.
TEST_LIMITS = Limits(max_chunk_bytes=32_000, max_contexts_per_stream=4, idle_timeout_seconds=5.0)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def triton(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[TritonServer]:
    """A tritonserver on free loopback ports serving every model; its log is kept under
    pytest's tmp dir (``.../triton0/tritonserver.log``) and quoted if start-up fails."""
    log_path = tmp_path_factory.mktemp("triton") / "tritonserver.log"
    server = TritonServer(default_model_repository(), log_path=log_path)
    await server.start(timeout=120.0)
    try:
        yield server
    finally:
        await server.stop()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def adapter(triton: TritonServer) -> AsyncIterator[AdapterServer]:
    """The adapter under test, in front of the session's Triton."""
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
