"""The TTS socket opens the next context's upstream call ahead when a context ends
(gateway/tts/runner.py, "Spare call"; BENCHMARKS.md "TTS turns"): a voice agent's next turn takes
it instead of paying a call's set-up, a spare is cancelled at its maximum age and then not taken,
and the session's end cancels the last one.
Counted where the calls land: the instrumented adapter records every call that reaches it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio

from gateway.server import GatewayServer
from gateway.tts.session import TtsLimits
from tests.helpers.edge import auth_config, roomy_key, running_gateway
from tests.helpers.front import InstrumentedEdge

pytestmark = pytest.mark.asyncio(loop_scope="session")

SYNTHESIZE = "/voxwire.v1.Synthesis/StreamingSynthesize"
FORMAT = {"encoding": "AUDIO_ENCODING_PCM_S16LE", "sampleRateHz": 16000}


def synthesis_calls(front: InstrumentedEdge) -> int:
    return sum(c.method == SYNTHESIZE for c in front.recorder.contract_calls())


async def calls_after(front: InstrumentedEdge, since: int, expected: int) -> int:
    """The Synthesis calls the adapter got since ``since``, once they are ``expected`` or 2 s
    passed (a spare's call reaches the adapter a moment after the context's done)."""
    for _ in range(40):
        if synthesis_calls(front) - since >= expected:
            break
        await asyncio.sleep(0.05)
    return synthesis_calls(front) - since


async def turn(ws: aiohttp.ClientWebSocketResponse, cid: str) -> int:
    """Open, append, close; the context's audio frames once it is done."""
    for message in (
        {"contextId": cid, "open": {"model": "bench_tts", "outputFormat": FORMAT}},
        {"contextId": cid, "append": {"text": "Hello there."}},
        {"contextId": cid, "close": {}},
    ):
        await ws.send_str(json.dumps(message))
    frames = 0
    async with asyncio.timeout(20):
        async for msg in ws:
            if msg.type is aiohttp.WSMsgType.BINARY:
                frames += 1
                continue
            event = json.loads(msg.data)
            assert "error" not in event and "contextError" not in event, event
            if "done" in event and event["contextId"] == cid:
                return frames
    raise AssertionError(f"the socket ended before {cid} was done")


def finished_tts_streams(front: InstrumentedEdge) -> int:
    return sum(s.name == "voxwire.tts.stream" for s in front.adapter_spans.get_finished_spans())


async def test_the_next_turn_takes_the_call_opened_ahead(front: InstrumentedEdge) -> None:
    calls, ended = synthesis_calls(front), finished_tts_streams(front)
    url = f"{front.ws}/v1/tts/stream?audio=binary&lead_ms=0"
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(url, headers={"Authorization": f"Bearer {front.key}"}) as ws,
    ):
        assert await turn(ws, "t1") > 0
        assert await calls_after(front, calls, 2) == 2  # the turn's call, the next one ahead
        assert await turn(ws, "t2") > 0
        assert await calls_after(front, calls, 3) == 3  # t2 took the spare; one new, ahead
        assert await turn(ws, "t3") > 0
        assert await calls_after(front, calls, 4) == 4
        await ws.send_str(json.dumps({"closeSession": {}}))
        async with asyncio.timeout(10):
            async for _ in ws:
                pass
    # Every stream of the session ends at the adapter, the unused spare too (cancelled at the
    # session's end, not left to the adapter's 30 s idle timeout).
    for _ in range(100):
        if finished_tts_streams(front) - ended >= 4:
            break
        await asyncio.sleep(0.05)  # spans end as the adapter's handlers return
    assert finished_tts_streams(front) - ended == 4
    assert all(a.active == 0 for a in front.gateway.pool.adapters)


@pytest_asyncio.fixture(loop_scope="session")
async def short_lived(front: InstrumentedEdge) -> AsyncIterator[tuple[GatewayServer, str]]:
    keys = front.keys_file.parent / "spare-keys.toml"
    key = roomy_key(keys, "spare")
    async for server in running_gateway(
        front.adapter.address, auth_config(keys), tts=TtsLimits(spare_call_max_age_s=0.05)
    ):
        yield server, key


async def test_a_spare_past_its_age_is_not_taken(
    front: InstrumentedEdge, short_lived: tuple[GatewayServer, str]
) -> None:
    gateway, key = short_lived
    calls, ended = synthesis_calls(front), finished_tts_streams(front)
    url = gateway.url.replace("http", "ws", 1) + "/v1/tts/stream?audio=binary&lead_ms=0"
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(url, headers={"Authorization": f"Bearer {key}"}) as ws,
    ):
        assert await turn(ws, "t1") > 0
        assert await calls_after(front, calls, 2) == 2
        # The spare is cancelled at its age, the session still open: t1's stream and the
        # spare's end at the adapter (not at its idle timeout, 30 s, as an IDLE_TIMEOUT).
        for _ in range(100):
            if finished_tts_streams(front) - ended >= 2:
                break
            await asyncio.sleep(0.05)
        assert finished_tts_streams(front) - ended == 2
        assert await turn(ws, "t2") > 0
        # Not taken (cancelled already): a call of its own for t2, and a new one ahead.
        assert await calls_after(front, calls, 4) == 4
