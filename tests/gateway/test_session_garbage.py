"""A WebSocket session that ends leaves no reference cycle: its memory (the session, the runner,
aiohttp's request, protocol and buffers) goes back when it ends, by reference counting.

The servers collect cyclic garbage rarely (``voxwire/gc_policy.py``: the young generation every
10,000 allocations, full collections rarer still), so every session had been a cycle held until
a full collection: 469 of 600 sessions dropped by their clients were still in memory 8 s later,
and the edge fuzzer's disconnect family took the gateway's RSS from 240 to 435 MB. The cycles:
the resume-token issuer closed over its session, the client outbox held the runner's bound
method, stopped upstream tasks stayed listed with their tracebacks, and failures (a client's
bad frame, a lost connection, aiohttp's own on its WebSocketResponse) kept tracebacks whose
frames held what held them. The adapter's streams were cycles too (its outbox held the
runner's and the body's bound methods, a context's stopped tasks stayed listed).
"""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import Iterator

import aiohttp
import pytest

from tests.gateway.conftest import Edge
from tests.helpers.front import wait_until

pytestmark = pytest.mark.asyncio(loop_scope="session")

STT = "/v1/stt/stream?model=bench_stt&encoding=pcm_s16le&sample_rate=16000"
TTS = "/v1/tts/stream?lead_ms=0"
OPEN = {
    "contextId": "c",
    "open": {
        "model": "bench_tts",
        "outputFormat": {"encoding": "AUDIO_ENCODING_PCM_S16LE", "sampleRateHz": 16000},
    },
}
# Objects of the gateway's sessions and of their connections, and of the adapter's streams
# behind them (the tests run it in-process).
WATCHED = {
    "inference_adapter.stream_runner.StreamRunner",
    "inference_adapter.stt.service.TranscriptionStream",
    "inference_adapter.tts.service.SynthesisStream",
    "inference_adapter.outbox.Outbox",
    "gateway.stt.session.SttEdgeSession",
    "gateway.tts.session.TtsEdgeSession",
    "gateway.stt.runner.SttRunner",
    "gateway.tts.runner.TtsRunner",
    "voxwire.outbox.Outbox",
    "gateway.aiohttp_port.AiohttpPort",
    "aiohttp.web_ws.WebSocketResponse",
    "aiohttp.web_protocol.RequestHandler",
    "aiohttp.web_request.Request",
}


def _name(o: object) -> str:
    return f"{type(o).__module__}.{type(o).__qualname__}"


async def _stt(edge: Edge, end: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{edge.ws}{STT}", headers=edge.headers) as ws:
            for _ in range(3):
                await ws.send_bytes(bytes(3200))
            if end == "drop":
                await ws.receive(timeout=10)  # the session message: the upstream is opening
                ws._response.connection.transport.abort()  # type: ignore[union-attr]
                return
            await ws.send_str('{"close": {}}' if end == "close" else "not json")
            async for _ in ws:
                pass


async def _tts(edge: Edge, end: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{edge.ws}{TTS}", headers=edge.headers) as ws:
            await ws.send_str(json.dumps(OPEN))
            await ws.send_str(json.dumps({"contextId": "c", "append": {"text": "Hello there."}}))
            if end == "drop":
                await ws.send_str(json.dumps({"contextId": "c", "flush": {"flushId": "f"}}))
                while (await ws.receive(timeout=10)).type is not aiohttp.WSMsgType.BINARY:
                    pass  # until audio flows
                ws._response.connection.transport.abort()  # type: ignore[union-attr]
                return
            await ws.send_str(json.dumps({"contextId": "c", "close": {}}))
            await ws.send_str('{"closeSession": {}}')
            async for _ in ws:
                pass


def _watched_now() -> set[int]:
    return {id(o) for o in gc.get_objects() if _name(o) in WATCHED}


def _cyclic_garbage(before: set[int]) -> Iterator[str]:
    """The names of the watched types among what a full collection finds unreachable, but
    those that were alive before the test (another module's, ended while it ran)."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        yield from (
            name for o in gc.garbage if (name := _name(o)) in WATCHED and id(o) not in before
        )
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


@pytest.mark.parametrize("end", ["close", "drop", "bad frame"])
async def test_an_ended_session_leaves_no_reference_cycle(edge: Edge, end: str):
    gc.collect()
    gc.disable()
    before = _watched_now()
    try:
        await _stt(edge, end)
        await _tts(edge, "close" if end == "bad frame" else end)
        assert await wait_until(lambda: len(edge.server.registry) == 0, 10.0)
        await asyncio.sleep(0.3)  # the runners' last callbacks
        left = sorted(_cyclic_garbage(before))
    finally:
        gc.enable()
    assert left == [], left
