"""Session-wide fixtures: one real Triton server (all models of model_repository/) per session,
and the edge under test in front of it (an adapter and a gateway; tests/helpers/edge.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from inference_adapter.server import AdapterServer
from localstack.triton import TritonServer, default_model_repository
from tests.helpers.edge import Edge, start_edge, start_edge_adapter


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
async def edge_adapter(triton: TritonServer) -> AsyncIterator[AdapterServer]:
    """An adapter with default limits (tests/inference_adapter has its own, with small ones)."""
    async for server in start_edge_adapter(triton):
        yield server


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def edge(
    edge_adapter: AdapterServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Edge]:
    """A gateway (in this process) in front of ``edge_adapter``, with one key."""
    async for server in start_edge(edge_adapter, tmp_path_factory):
        yield server
