"""The SDK's keepalive fits the idle timeout the gateway advertises in its session message:
an agent idle between turns keeps its session on a gateway whose idle timeout is shorter than
the SDK's default keepalive period (10 s)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from gateway.server import GatewayServer
from gateway.stt.session import SttLimits
from gateway.tts.session import TtsLimits
from inference_adapter.server import AdapterServer
from tests.client.helpers import stt_config
from tests.helpers.edge import keyed_gateway
from voxwire.client import SynthesisSession, TranscriptionSession
from voxwire.v1 import stream_pb2

pytestmark = pytest.mark.asyncio(loop_scope="session")

IDLE_S, WARNING_S = 2.0, 0.5  # the warning at 1.5 s of silence, the close at 2 s


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def impatient(
    edge_adapter: AdapterServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[GatewayServer, str]]:
    async for gateway, headers in keyed_gateway(
        edge_adapter.address,
        tmp_path_factory.mktemp("keepalive-fits"),
        "keepalive-fits",
        stt=SttLimits(idle_timeout_s=IDLE_S, idle_warning_s=WARNING_S),
        tts=TtsLimits(idle_timeout_s=IDLE_S, idle_warning_s=WARNING_S),
    ):
        yield gateway, headers["Authorization"].removeprefix("Bearer ")


async def test_an_idle_stt_session_outlives_a_short_idle_timeout(impatient):
    # The keepalive went every 10 s whatever the gateway said: IDLE_WARNING, then the
    # session closed IDLE_TIMEOUT, which no resume continues.
    gateway, key = impatient
    ws = gateway.url.replace("http", "ws", 1)
    stt = await TranscriptionSession.connect(ws, stt_config(model="bench_stt"), api_key=key)
    events: list[object] = []

    async def read() -> None:
        async for event in stt.events():
            events.append(event)

    reader = asyncio.create_task(read())
    await asyncio.sleep(2 * IDLE_S)  # idle, as an agent between turns
    await stt.send(bytes(3200))
    summary = await asyncio.wait_for(stt.close(), 20)
    await asyncio.wait_for(reader, 5)
    warnings = [
        e
        for e in events
        if isinstance(e, stream_pb2.StreamNotice)
        and e.kind == stream_pb2.StreamNotice.KIND_IDLE_WARNING
    ]
    assert not warnings, warnings
    assert summary.audio_ms == 100


async def test_an_idle_tts_session_outlives_a_short_idle_timeout(impatient):
    gateway, key = impatient
    ws = gateway.url.replace("http", "ws", 1)
    tts = await SynthesisSession.connect(ws, api_key=key, lead_ms=0)
    await asyncio.sleep(2 * IDLE_S)
    summary = await asyncio.wait_for(tts.close(), 20)
    assert summary.session_id
