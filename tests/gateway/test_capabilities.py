"""The capabilities endpoints (``GET /v1/capabilities``, the gRPC front's ``GetCapabilities``)
are refused like every other request that would reach an adapter: DRAINING while the gateway
drains. Each refusal in the wire's own terms (HTTP status, ``{"error": ...}`` and
``Retry-After`` when there is a delay; gRPC status with its google.rpc details), counted in
``voxwire_gateway_refused_total``.
"""

from __future__ import annotations

from collections.abc import Mapping

import aiohttp
import grpc
import pytest

from gateway.config import GatewayConfig
from gateway.server import GatewayServer
from inference_adapter.server import AdapterServer
from tests.gateway.conftest import Edge
from tests.helpers.edge_clients import Attempt, http_tts
from tests.helpers.front import bearer, rich_error
from voxwire.v1 import capabilities_pb2, capabilities_pb2_grpc

pytestmark = pytest.mark.asyncio(loop_scope="session")

REFUSED = "voxwire_gateway_refused_total"


async def http_capabilities(base: str, headers: Mapping[str, str]) -> Attempt:
    """GET /v1/capabilities; admitted when the adapters' models come back."""
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/v1/capabilities", headers=dict(headers)) as resp:
            body = await resp.json()
            if resp.status == 200:
                assert body["models"], body
                return Attempt("http /v1/capabilities", True)
            after = resp.headers.get("Retry-After")
            return Attempt(
                "http /v1/capabilities",
                False,
                body["error"]["reason"],
                resp.status,
                float(after) if after is not None else None,
                body["error"].get("retryable", False),
            )


async def grpc_capabilities(address: str, key: str) -> Attempt:
    """GetCapabilities through the gRPC front; admitted when it answers OK."""
    async with grpc.aio.insecure_channel(address) as channel:
        call = capabilities_pb2_grpc.CapabilitiesStub(channel).GetCapabilities(
            capabilities_pb2.GetCapabilitiesRequest(), metadata=bearer(key), timeout=10
        )
        try:
            assert (await call).models
            return Attempt("grpc GetCapabilities", True)
        except grpc.aio.AioRpcError:
            error = await rich_error(call)
    return Attempt(
        "grpc GetCapabilities",
        False,
        error.reason,
        error.code.name,
        error.retry_delay_s,
        error.retryable,
    )


def refused(server: GatewayServer, reason: str) -> float:
    return server.gateway.metrics.registry.get_sample_value(REFUSED, {"reason": reason}) or 0.0


async def test_a_draining_gateway_refuses_capabilities_as_it_refuses_sessions(
    edge: Edge, edge_adapter: AdapterServer
):
    # GET /v1/capabilities answered 200 during a drain, while the gRPC front answered DRAINING.
    server = GatewayServer(
        GatewayConfig(
            listen="127.0.0.1:0",
            grpc_listen="127.0.0.1:0",
            adapters=(edge_adapter.address,),
            auth=edge.auth,
        )
    )
    await server.start()
    try:
        assert (await http_capabilities(server.url, edge.headers)).admitted
        # No session is open: the drain returns at once and the gateway stays up, draining.
        await server.drain(grace=0.0)
        before = refused(server, "DRAINING")
        capabilities = await http_capabilities(server.url, edge.headers)
        session = await http_tts(server.url, edge.headers)
        front = await grpc_capabilities(server.grpc_address, edge.key)
        counted = refused(server, "DRAINING") - before
    finally:
        await server.stop(grace=0.0)
    # The same answer as POST /v1/tts: 503 DRAINING, retryable, no Retry-After (a drain names
    # no delay: the client goes to another gateway).
    assert capabilities == Attempt("http /v1/capabilities", False, "DRAINING", 503, None, True)
    assert (session.reason, session.signal, session.retry_after_s) == ("DRAINING", 503, None)
    assert (front.reason, front.signal, front.retryable) == ("DRAINING", "UNAVAILABLE", True)
    assert counted == 3
