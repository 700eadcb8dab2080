"""Fault tests' gateways: two ``python -m gateway`` processes per test (tests/helpers/
gateway_process.py), killed by the test, stopped here if they are still running."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from inference_adapter.server import AdapterServer
from tests.client.helpers import ORIGIN, key_with_origin
from tests.helpers.edge import Edge
from tests.helpers.gateway_process import GatewayProcess, start_gateway, write_config
from voxwire.client import Backoff, SessionOptions

# Reconnect quickly in tests: the other gateway is up; the budget still ends a test that fails.
OPTIONS = SessionOptions(backoff=Backoff(base_s=0.05, cap_s=0.5, max_attempts=6))


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def origin_key(edge: Edge) -> str:
    """A key allowed to get browser tokens for ``ORIGIN`` (made before the gateway
    processes start, so they load it)."""
    return await key_with_origin(edge, ORIGIN)


@pytest_asyncio.fixture(loop_scope="session")
async def gateways(
    edge: Edge, edge_adapter: AdapterServer, origin_key: str, tmp_path: Path
) -> AsyncIterator[tuple[GatewayProcess, GatewayProcess]]:
    """Gateways A and B sharing the session's keys file and signing key, drain grace 1 s."""
    config = write_config(tmp_path / "gateway.toml", edge, edge_adapter.address, drain_grace_s=1.0)
    started = await asyncio.gather(
        start_gateway(config, tmp_path / "a.log"),
        start_gateway(config, tmp_path / "b.log"),
        return_exceptions=True,
    )
    ready = [g for g in started if isinstance(g, GatewayProcess)]
    try:
        for outcome in started:
            if isinstance(outcome, BaseException):
                raise outcome
        yield ready[0], ready[1]
    finally:
        await asyncio.gather(*(g.stop() for g in ready))
