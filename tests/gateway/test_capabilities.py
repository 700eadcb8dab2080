"""The capabilities endpoints (``GET /v1/capabilities``, the gRPC front's ``GetCapabilities``)
are refused like every other request that would reach an adapter: DRAINING while the gateway
drains, RATE_LIMITED over the key's capabilities requests a minute (a bucket of its own, shared
by both wires: ``CatalogLimiter``). Each refusal in the wire's own terms (HTTP status,
``{"error": ...}`` and ``Retry-After`` when there is a delay; gRPC status with its google.rpc
details), counted in ``voxwire_gateway_refused_total``, and none reaches the adapter.

A gateway of its own whose keys may ask 3 times a minute (``capabilities_per_minute``), in
front of the instrumented adapter (tests/helpers/front.py), which records every call reaching it.
"""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from pathlib import Path

import aiohttp
import grpc
import pytest
import pytest_asyncio

from gateway.auth.keys import create_key
from gateway.config import GatewayConfig
from gateway.server import GatewayServer
from inference_adapter.server import AdapterServer
from tests.gateway.conftest import Edge, InstrumentedEdge
from tests.helpers.edge import auth_config, running_gateway
from tests.helpers.edge_clients import Attempt, grpc_refused, http_refused, http_tts
from tests.helpers.front import bearer
from voxwire.v1 import capabilities_pb2, capabilities_pb2_grpc

pytestmark = pytest.mark.asyncio(loop_scope="session")

REFUSED = "voxwire_gateway_refused_total"
PER_MINUTE = 3


@pytest.fixture(scope="module")
def keys_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("capabilities") / "keys.toml"


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def gateway(front: InstrumentedEdge, keys_file: Path) -> AsyncIterator[GatewayServer]:
    new_key(keys_file, "placeholder")  # the gateway does not start without a keys file
    auth = replace(auth_config(keys_file), capabilities_per_minute=PER_MINUTE)
    async for server in running_gateway(front.adapter.address, auth, grpc_front=True):
        yield server


def new_key(keys_file: Path, name: str) -> str:
    """A key whose session rate (1 a minute) is below the capabilities floor."""
    key, _ = create_key(
        keys_file,
        name=name,
        now=datetime.datetime.now(datetime.UTC),
        max_new_sessions_per_minute=1,
    )
    return key


async def http_capabilities(base: str, headers: Mapping[str, str]) -> Attempt:
    """GET /v1/capabilities; admitted when the adapters' models come back."""
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/v1/capabilities", headers=dict(headers)) as resp:
            if resp.status == 200:
                body = await resp.json()
                assert body["models"], body
                return Attempt("http /v1/capabilities", True)
            return await http_refused("http /v1/capabilities", resp)


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
            return await grpc_refused("grpc GetCapabilities", call)


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


async def test_capabilities_requests_are_rate_limited_per_key_on_both_wires(
    gateway: GatewayServer, front: InstrumentedEdge, keys_file: Path
):
    # Neither wire had a limit: a key could send the adapters as many as it liked.
    busy, other = new_key(keys_file, "busy"), new_key(keys_file, "other")
    gateway.auth.keys.reload_if_changed()
    headers = {"Authorization": f"Bearer {busy}"}
    # One bucket for both wires: 3 a minute in all.
    assert (await http_capabilities(gateway.url, headers)).admitted
    assert (await grpc_capabilities(gateway.grpc_address, busy)).admitted
    assert (await http_capabilities(gateway.url, headers)).admitted
    before = refused(gateway, "RATE_LIMITED")
    calls = len(front.recorder.contract_calls())
    over = [
        await http_capabilities(gateway.url, headers),
        await grpc_capabilities(gateway.grpc_address, busy),
    ]
    assert front.recorder.contract_calls()[calls:] == []
    assert refused(gateway, "RATE_LIMITED") - before == 2
    assert [(a.admitted, a.reason, a.signal, a.retryable) for a in over] == [
        (False, "RATE_LIMITED", 429, True),
        (False, "RATE_LIMITED", "RESOURCE_EXHAUSTED", True),
    ]
    for attempt in over:
        # GCRA: one refill every 60 / 3 s after the burst (Retry-After in whole seconds).
        assert attempt.retry_after_s is not None and 15 < attempt.retry_after_s <= 20, attempt
    # The other key has a bucket of its own.
    assert (await http_capabilities(gateway.url, {"Authorization": f"Bearer {other}"})).admitted
    assert (await grpc_capabilities(gateway.grpc_address, other)).admitted
