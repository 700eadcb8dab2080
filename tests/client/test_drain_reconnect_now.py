"""The SDK (STT and TTS sessions) reconnects at once after a paced drain's going_away
(``reconnect_now``), and waits its backoff jitter after one that does not ask for it. Two
gateways of their own (one keys file, one token key: either takes the other's resume tokens) in
front of the session's adapter; the SDK given both URLs. The jitter is made its longest (3 s)
so the two cases cannot be confused: downtime under a second with the flag, at least the
jitter without it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from gateway.config import GatewayConfig
from gateway.server import GatewayServer
from inference_adapter.server import AdapterServer
from tests.client.helpers import stt_config
from tests.helpers.edge import Edge
from voxwire.client import (
    Backoff,
    Resumed,
    SessionOptions,
    SynthesisSession,
    TranscriptionSession,
)
from voxwire.client import backoff as backoff_module

pytestmark = pytest.mark.asyncio(loop_scope="session")

JITTER_S = 3.0


class _LongestJitter:
    """Every jittered delay at the top of its range."""

    def uniform(self, low: float, high: float) -> float:
        return high


async def _servers(edge: Edge, adapter: AdapterServer, pace: float) -> AsyncIterator[GatewayServer]:
    for drain_pace in (pace, 200.0):  # A (drained), then B
        server = GatewayServer(
            GatewayConfig(
                listen="127.0.0.1:0",
                grpc_listen="",
                adapters=(adapter.address,),
                auth=edge.auth,
                drain_pace_per_s=drain_pace,
            )
        )
        await server.start()
        yield server


async def _resume_after_drain(edge: Edge, adapter: AdapterServer, pace: float) -> Resumed:
    servers = [s async for s in _servers(edge, adapter, pace)]
    a, b = servers
    try:
        options = SessionOptions(
            backoff=Backoff(base_s=JITTER_S, cap_s=JITTER_S, max_elapsed_s=30.0)
        )
        session = await TranscriptionSession.connect(
            [a.url.replace("http", "ws", 1), b.url.replace("http", "ws", 1)],
            stt_config(model="bench_stt"),
            api_key=edge.key,
            options=options,
        )
        resumed: list[Resumed] = []

        async def read() -> None:
            async for event in session.events():
                if isinstance(event, Resumed):
                    resumed.append(event)
                    return

        reader = asyncio.create_task(read())
        await session.send(b"\0" * 3200)
        await a.drain(grace=2.0)
        await asyncio.wait_for(reader, JITTER_S + 10)
        await session.close()
        return resumed[0]
    finally:
        for server in servers:
            await server.stop(grace=0.0)


async def test_after_a_paced_drain_the_sdk_reconnects_without_its_jitter(
    edge: Edge, edge_adapter: AdapterServer, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(backoff_module, "_RNG", _LongestJitter())
    resumed = await _resume_after_drain(edge, edge_adapter, pace=200.0)
    assert resumed.cause == "going_away", resumed
    assert resumed.downtime_s < 1.0, resumed


async def test_after_a_drain_that_sends_every_going_away_at_once_the_sdk_jitters(
    edge: Edge, edge_adapter: AdapterServer, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(backoff_module, "_RNG", _LongestJitter())
    resumed = await _resume_after_drain(edge, edge_adapter, pace=0.0)
    assert resumed.cause == "going_away", resumed
    assert resumed.downtime_s >= JITTER_S * 0.95, resumed


async def test_a_tts_session_reconnects_at_once_after_a_paced_drain_too(
    edge: Edge, edge_adapter: AdapterServer, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(backoff_module, "_RNG", _LongestJitter())
    servers = [s async for s in _servers(edge, edge_adapter, 200.0)]
    a, b = servers
    try:
        session = await SynthesisSession.connect(
            [a.url.replace("http", "ws", 1), b.url.replace("http", "ws", 1)],
            api_key=edge.key,
            options=SessionOptions(
                backoff=Backoff(base_s=JITTER_S, cap_s=JITTER_S, max_elapsed_s=30.0)
            ),
        )
        resumed: list[Resumed] = []

        async def read() -> None:
            async for event in session.events():
                if isinstance(event, Resumed):
                    resumed.append(event)
                    return

        reader = asyncio.create_task(read())
        await a.drain(grace=2.0)
        await asyncio.wait_for(reader, JITTER_S + 10)
        await session.close()
    finally:
        for server in servers:
            await server.stop(grace=0.0)
    assert resumed[0].cause == "going_away", resumed
    assert resumed[0].downtime_s < 1.0, resumed
