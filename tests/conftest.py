"""Session-wide fixtures: one real Triton server (all models of model_repository/) per session,
and the edge under test in front of it (an adapter and a gateway; tests/helpers/edge.py)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from hypothesis import HealthCheck, settings

from inference_adapter.server import AdapterServer
from localstack.triton import TritonServer, default_model_repository
from tests.helpers.edge import Edge, start_edge, start_edge_adapter

# Property-based tests (issue 8). "default" keeps `make test` fast and deterministic: the same
# examples every run (derandomize), no example database, so a strict xfail that marks a known
# defect fails the same way each time. `HYPOTHESIS_PROFILE=fuzz` (make fuzz) searches far wider.
settings.register_profile(
    "default",
    max_examples=60,
    stateful_step_count=40,
    derandomize=True,
    database=None,
    deadline=None,  # a shared 2-core machine: wall-clock deadlines would only add noise
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "fuzz",
    max_examples=500,
    stateful_step_count=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


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
