"""Session-wide fixtures: one real Triton server (all models of model_repository/) per session."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from localstack.triton import TritonServer, default_model_repository


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
