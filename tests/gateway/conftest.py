"""The gateway tests use the session's ``edge`` and ``edge_adapter`` (tests/conftest.py), and
the instrumented edge (``front``: a recording adapter and a tracing gateway, tests/helpers/front.py)
for the promises that need to see into the adapter."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from localstack.triton import TritonServer
from tests.helpers.edge import Edge, auth_config
from tests.helpers.front import InstrumentedEdge, start_instrumented_edge

__all__ = ["Edge", "InstrumentedEdge", "auth_config"]


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def front(
    triton: TritonServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[InstrumentedEdge]:
    """An adapter that records every call reaching it, and a gateway (gRPC front on) in front
    of it, both tracing into in-memory exporters; its keys file reloads every 0.1 s."""
    async for edge in start_instrumented_edge(triton, tmp_path_factory.mktemp("front")):
        yield edge
