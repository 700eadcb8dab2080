"""A TTS context's failovers never go back to an adapter it already failed on while another
is left (docs/design/edge.md, "Upstream failover inside the gateway").

Three adapters that serve (their health says SERVING) but fail every context with a rich
BACKEND_UNAVAILABLE, as an adapter whose Triton replica died does while it waits for its health
to catch up. Such an end is the adapter's decision, not a transport failure, so the gateway's
pool keeps choosing it. A context then moves A -> B -> C: the failed adapters travel with the
reopened call. (When only the adapter of the last call was skipped, the third call went back
to A, the least loaded, and C was never tried.)

These adapters are small gRPC servers of the test's own: no real adapter can be made to fail a
context on purpose while it stays SERVING.
"""

from __future__ import annotations

import asyncio
import datetime
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest_asyncio
from grpc_health.v1 import health, health_pb2_grpc

from gateway.auth.keys import create_key
from gateway.config import GatewayConfig
from gateway.server import GatewayServer
from gateway.tts.session import TtsLimits
from tests.helpers.edge import auth_config
from voxwire import errors
from voxwire.v1 import synthesis_pb2_grpc


class _FailsEveryContext(synthesis_pb2_grpc.SynthesisServicer):
    def __init__(self, name: str, calls: list[str]) -> None:
        self.name = name
        self.calls = calls

    async def StreamingSynthesize(self, request_iterator: Any, context: Any) -> None:  # noqa: N802
        self.calls.append(self.name)
        error = errors.BackendUnavailable(f"adapter {self.name}: its model server is gone")
        details = ("grpc-status-details-bin", error.to_rpc_status().SerializeToString())
        await context.abort(error.code, error.message, trailing_metadata=(details,))


async def _adapter(name: str, calls: list[str]) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    synthesis_pb2_grpc.add_SynthesisServicer_to_server(_FailsEveryContext(name, calls), server)
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


@pytest_asyncio.fixture(loop_scope="session")
async def three(tmp_path: Path) -> AsyncIterator[tuple[GatewayServer, str, list[str], list[str]]]:
    calls: list[str] = []
    started = [await _adapter(name, calls) for name in "ABC"]
    key, _ = create_key(
        tmp_path / "keys.toml", name="order", now=datetime.datetime.now(datetime.UTC)
    )
    gateway = GatewayServer(
        GatewayConfig(
            listen="127.0.0.1:0",
            grpc_listen="",
            adapters=tuple(address for _, address in started),
            auth=auth_config(tmp_path / "keys.toml"),
            # No spare call opened ahead: this counts the calls each adapter gets.
            tts=TtsLimits(max_failovers=2, spare_call_max_age_s=0),
        )
    )
    try:
        await gateway.start()
        for _ in range(100):  # the pool's health watch sees every adapter serving
            if all(a.serving for a in gateway.pool.adapters):
                break
            await asyncio.sleep(0.05)
        names = {address: name for (_, address), name in zip(started, "ABC", strict=True)}
        order = [names[a.address] for a in gateway.pool.adapters]
        yield gateway, key, calls, order
    finally:
        await gateway.stop(grace=0.5)
        await asyncio.gather(*(server.stop(0) for server, _ in started))


async def test_a_context_fails_over_to_every_adapter_once_before_it_ends(three) -> None:
    gateway, key, calls, order = three
    assert order == ["A", "B", "C"]
    messages = []
    url = gateway.url.replace("http", "ws", 1) + "/v1/tts/stream"
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(url, headers={"Authorization": f"Bearer {key}"}) as ws,
    ):
        fmt = {"encoding": "AUDIO_ENCODING_PCM_S16LE", "sampleRateHz": 16000}
        await ws.send_str(json.dumps({"contextId": "c1", "open": {"outputFormat": fmt}}))
        await ws.send_str(json.dumps({"contextId": "c1", "append": {"text": "Hello there."}}))
        async with asyncio.timeout(20):
            async for msg in ws:
                message = json.loads(msg.data)
                messages.append(message)
                if "contextError" in message or "error" in message:
                    break
    (failed,) = [m["contextError"] for m in messages if "contextError" in m]
    assert failed["error"]["reason"] == "BACKEND_UNAVAILABLE", messages
    # Two failovers: three calls, each on an adapter the context had not failed on yet.
    assert calls == ["A", "B", "C"], calls
