"""TTS flow control between the gateway and the adapter, through real eSpeak NG: a context longer
than the gateway reads ahead is paced end to end, and the adapter sees a consumer that reads.

Before (2026-12-01) the gateway's channels to the adapters let gRPC grow each call's HTTP/2
window by bandwidth-delay probing, to megabytes on loopback: the transport took megabytes of a
paced context's audio the gateway had not asked for (memory the session's bounds did not count),
and then, the window spent and reopened only after megabytes were read, the adapter's write
waited longer than its ``write_timeout`` and the context failed with SLOW_CONSUMER, minutes
into a long text. docs/design/edge.md, "Flow control".
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
import pytest_asyncio
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider

from gateway.wire.frames import unpack
from inference_adapter.config import AdapterConfig, Limits
from inference_adapter.server import AdapterServer
from inference_adapter.telemetry import Telemetry
from localstack.triton import TritonServer
from tests.gateway.conftest import Edge
from tests.helpers.edge import start_edge

pytestmark = pytest.mark.asyncio(loop_scope="session")

TEXT = "Hello from the voxwire gateway. This is a second sentence to speak. "
OPEN = {
    "contextId": "c1",
    "open": {
        "model": "tts_espeak",
        "outputFormat": {"encoding": "AUDIO_ENCODING_PCM_S16LE", "sampleRateHz": 22050},
    },
}
WRITE_TIMEOUT_S = 3.0


def places(adapter: AdapterServer) -> int:
    """The adapter's admission places held by eSpeak contexts."""
    return sum(r.per_model.get("tts_espeak", 0) for r in adapter.pool.replicas)


async def speak(ws: aiohttp.ClientWebSocketResponse, text: str) -> None:
    """Open context c1, give it ``text`` and close it: its audio follows."""
    await ws.send_str(json.dumps(OPEN))
    await ws.send_str(json.dumps({"contextId": "c1", "append": {"text": text}}))
    await ws.send_str(json.dumps({"contextId": "c1", "close": {}}))


@dataclass
class Stack:
    adapter: AdapterServer
    edge: Edge  # a gateway in front of ``adapter``
    metrics: InMemoryMetricReader

    def slow_consumers(self) -> int:
        data = self.metrics.get_metrics_data()
        if data is None:
            return 0
        return sum(
            int(point.value)
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == "voxwire.errors"
            for point in metric.data.data_points
            if point.attributes.get("reason") == "SLOW_CONSUMER"
        )


@pytest_asyncio.fixture(loop_scope="session")
async def stack(
    triton: TritonServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    """An adapter whose writes time out after 3 s (so a stalled write shows in seconds, not
    minutes) and a gateway in front of it."""
    metrics = InMemoryMetricReader()
    telemetry = Telemetry(
        AdapterConfig(),
        tracer_provider=TracerProvider(),
        meter_provider=MeterProvider(metric_readers=[metrics]),
    )
    adapter = AdapterServer(
        AdapterConfig(
            listen="127.0.0.1:0",
            triton_urls=(triton.grpc_url,),
            limits=Limits(write_timeout_seconds=WRITE_TIMEOUT_S),
        ),
        telemetry=telemetry,
    )
    await adapter.start()
    try:
        async for edge in start_edge(adapter, tmp_path_factory):
            yield Stack(adapter, edge, metrics)
    finally:
        await adapter.stop(grace=1.0)


async def test_a_paced_context_gives_back_its_place_when_synthesis_ends(
    edge: Edge, edge_adapter: AdapterServer
):
    # About 14 s of audio (630 KB): within the session's read-ahead, so the gateway takes it
    # all as eSpeak makes it, and the adapter's place comes back then, not seconds into
    # playback (read only its floor ahead, a 7 s context kept it until 1.95 s in).
    before = places(edge_adapter)
    async with aiohttp.ClientSession() as http:
        url = f"{edge.ws}/v1/tts/stream?lead_ms=300"
        async with http.ws_connect(url, headers=edge.headers) as ws:
            await speak(ws, TEXT * 4)
            first_at, freed_after_s = None, None
            while freed_after_s is None:
                msg = await ws.receive(timeout=5)
                if msg.type is aiohttp.WSMsgType.BINARY:
                    first_at = first_at or time.monotonic()
                    if places(edge_adapter) <= before:
                        freed_after_s = time.monotonic() - first_at
                    elif time.monotonic() - first_at > 4:
                        break
            await ws.send_str(json.dumps({"contextId": "c1", "cancel": {}}))
    assert freed_after_s is not None and freed_after_s < 4, "the place is held through playback"


async def test_a_context_longer_than_the_read_ahead_is_paced_end_to_end(stack: Stack):
    # About 12 minutes of audio (31 MB): past the session's 1 MiB read-ahead the gateway reads
    # the call only as playback goes, so synthesis waits for the listener, its writes never
    # wait long, and the context keeps its admission place.
    url = f"{stack.edge.ws}/v1/tts/stream?lead_ms=300"
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(url, headers=stack.edge.headers) as ws:
            await speak(ws, TEXT * 200)
            first_at, seqs, ahead = None, [], []
            end_at = time.monotonic() + 2 * WRITE_TIMEOUT_S + 3
            while time.monotonic() < end_at:
                msg = await ws.receive(timeout=5)
                if msg.type is aiohttp.WSMsgType.BINARY:
                    frame = unpack(msg.data)
                    now = time.monotonic()
                    first_at = first_at or now
                    seqs.append(frame.sequence_number)
                    ahead.append(frame.start_ms - (now - first_at) * 1000)
                else:
                    assert msg.type is aiohttp.WSMsgType.TEXT, msg
                    body = json.loads(msg.data)
                    assert "contextError" not in body and "error" not in body, body
            assert stack.slow_consumers() == 0
            assert places(stack.adapter) == 1  # still synthesizing: the rest waits for playback
            assert seqs == list(range(1, len(seqs) + 1)) and max(ahead) <= 300 + 150
            await ws.send_str(json.dumps({"contextId": "c1", "cancel": {}}))
            while True:
                msg = await ws.receive(timeout=5)
                if msg.type is aiohttp.WSMsgType.TEXT and "cancelled" in json.loads(msg.data):
                    break
    for _ in range(50):  # the cancel gives the place back
        if places(stack.adapter) == 0:
            break
        await asyncio.sleep(0.1)
    assert places(stack.adapter) == 0
    assert stack.slow_consumers() == 0
