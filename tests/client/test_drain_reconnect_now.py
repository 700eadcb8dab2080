"""The SDK (STT and TTS sessions) reconnects at once after a paced drain's going_away
(``reconnect_now``), and waits its backoff jitter after one that does not ask for it. Two
gateways of their own (one keys file, one token key: either takes the other's resume tokens) in
front of the session's adapter; the SDK given both URLs. The jitter is made its longest (3 s)
so the two cases cannot be confused: downtime under a second with the flag, at least the
jitter without it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from gateway.server import GatewayServer
from inference_adapter.server import AdapterServer
from tests.client.helpers import stt_config
from tests.helpers.edge import Edge, gateway_of_its_own
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


@contextlib.asynccontextmanager
async def _gateways(
    edge: Edge, adapter: AdapterServer, pace: float
) -> AsyncIterator[tuple[GatewayServer, list[str]]]:
    """A (drained, at ``pace``) and B; yields A and the SDK's URLs [A, B]."""
    async with (
        gateway_of_its_own(adapter.address, edge.auth, drain_pace_per_s=pace) as a,
        gateway_of_its_own(adapter.address, edge.auth) as b,
    ):
        yield a, [a.url.replace("http", "ws", 1), b.url.replace("http", "ws", 1)]


def _options() -> SessionOptions:
    return SessionOptions(backoff=Backoff(base_s=JITTER_S, cap_s=JITTER_S, max_elapsed_s=30.0))


async def _first_resumed(
    events: AsyncIterator[object], drain: Callable[[], Awaitable[None]]
) -> Resumed:
    """Drain, and the session's first Resumed event."""

    async def read() -> Resumed:
        async for event in events:
            if isinstance(event, Resumed):
                return event
        raise AssertionError("the session ended without resuming")

    reader = asyncio.create_task(read())
    await drain()
    return await asyncio.wait_for(reader, JITTER_S + 10)


async def _resume_after_drain(edge: Edge, adapter: AdapterServer, pace: float) -> Resumed:
    async with _gateways(edge, adapter, pace) as (a, urls):
        session = await TranscriptionSession.connect(
            urls, stt_config(model="bench_stt"), api_key=edge.key, options=_options()
        )
        await session.send(b"\0" * 3200)
        resumed = await _first_resumed(session.events(), lambda: a.drain(grace=2.0))
        await session.close()
        return resumed


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
    async with _gateways(edge, edge_adapter, 200.0) as (a, urls):
        session = await SynthesisSession.connect(urls, api_key=edge.key, options=_options())
        resumed = await _first_resumed(session.events(), lambda: a.drain(grace=2.0))
        await session.close()
    assert resumed.cause == "going_away", resumed
    assert resumed.downtime_s < 1.0, resumed
