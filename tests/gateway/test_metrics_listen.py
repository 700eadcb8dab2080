"""``metrics_listen``: the metrics and the probes on an address of their own, off the public port.

A gateway of its own with ``metrics_listen = "127.0.0.1:0"`` (the default, "", serves them on
``listen``: tests/gateway/test_metrics.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio

from gateway.server import GatewayServer
from tests.gateway.conftest import InstrumentedEdge
from tests.helpers.edge import keyed_gateway

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def private(
    front: InstrumentedEdge, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[GatewayServer, dict[str, str]]]:
    async for gateway in keyed_gateway(
        front.adapter.address,
        tmp_path_factory.mktemp("metrics-listen"),
        "metrics-listen",
        metrics_listen="127.0.0.1:0",
    ):
        yield gateway


async def test_metrics_are_served_on_their_own_address_only(private):
    server, auth = private
    assert server.metrics_port and server.metrics_port != server.port
    base = server.metrics_url.removesuffix("/metrics")
    async with aiohttp.ClientSession() as http:
        async with http.get(server.metrics_url) as resp:
            text = await resp.text()
            assert resp.status == 200
        assert "voxwire_gateway_sessions_active" in text
        assert "voxwire_gateway_upload_decoders_idle" in text
        for probe in ("/healthz", "/readyz"):
            async with http.get(base + probe) as resp:
                assert resp.status == 200, (probe, await resp.text())
        # The public port: no metrics, for a client with a key or without.
        for headers in ({}, auth):
            async with http.get(f"{server.url}/metrics", headers=headers) as resp:
                assert resp.status == 404
        # Nothing a client uses is on the operators' address.
        async with http.get(base + "/v1/capabilities", headers=auth) as resp:
            assert resp.status == 404
        async with http.get(f"{server.url}/v1/capabilities", headers=auth) as resp:
            assert resp.status == 200


async def test_the_default_serves_metrics_on_the_public_port(front: InstrumentedEdge):
    server = front.gateway
    assert server.metrics_url == f"{server.url}/metrics" and server.metrics_port == 0
    async with aiohttp.ClientSession() as http:
        async with http.get(server.metrics_url) as resp:
            assert resp.status == 200
