"""WS /v1/stt/stream with a client far faster than the model: it is held back, and after its
close it waits for its results however long they take.

A client may send a recording as fast as the socket takes it, then its close (to transcribe a
file over the stream). ``stt_pocketsphinx`` takes about a third of real time here. On
``make run``'s stack, before: 116 s of speech and the close, sent at once, were closed 4008
IDLE_TIMEOUT 30 s later with a third of the results still to come (the gateway had read the
close at once, gRPC core having taken megabytes of the stream, and its idle timer ran after the
close); 232 s were closed 1013 BACKEND_UNAVAILABLE "the adapter stopped taking audio" after
19.5 s (a write waited 10 s for the adapter's window to reopen). Here a gateway of its own with
an idle timeout of 3 s, against the shared adapter.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import aiohttp
import numpy as np
import pytest
import pytest_asyncio

from gateway.server import GatewayServer
from gateway.stt.session import SttLimits
from tests.gateway.conftest import InstrumentedEdge
from tests.helpers.edge import keyed_gateway
from tests.helpers.speech_fixtures import SPEECH_DIR
from tests.helpers.wavio import read_wav

pytestmark = pytest.mark.asyncio(loop_scope="session")

QUERY = "model=stt_pocketsphinx&encoding=pcm_s16le&sample_rate=16000&word_timestamps=true"
REPEATS = 6  # 17.4 s of speech: about 6 s of pocketsphinx, twice the idle timeout
IDLE_S = 3.0


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def impatient(
    front: InstrumentedEdge, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[GatewayServer, dict[str, str]]]:
    async for gateway in keyed_gateway(
        front.adapter.address,
        tmp_path_factory.mktemp("fast-client"),
        "fast-client",
        stt=SttLimits(idle_timeout_s=IDLE_S, idle_warning_s=1.0),
    ):
        yield gateway


async def test_a_client_that_sends_all_then_closes_gets_every_result(impatient):
    server, auth = impatient
    pcm, rate = read_wav(SPEECH_DIR / "call_me_back.wav")
    # Each repeat followed by a second of silence: an endpoint, so a final, per repeat.
    piece = np.concatenate([pcm, np.zeros(rate, pcm.dtype)])
    audio = np.tile(piece, REPEATS).tobytes()
    step = rate // 10 * 2
    url = server.url.replace("http", "ws", 1) + f"/v1/stt/stream?{QUERY}"
    messages: list[dict] = []
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(url, headers=auth) as ws:

            async def read() -> None:
                async for msg in ws:
                    if msg.type is aiohttp.WSMsgType.TEXT:
                        messages.append(json.loads(msg.data))

            reader = asyncio.create_task(read())
            for pos in range(0, len(audio), step):
                await ws.send_bytes(audio[pos : pos + step])
            await ws.send_str(json.dumps({"close": {}}))
            async with asyncio.timeout(60):
                await reader
            code = ws.close_code
    errors = [m["error"] for m in messages if "error" in m]
    notices = [m["notice"] for m in messages if "notice" in m]
    assert not errors and not notices, (errors, notices)
    assert code == 1000 and "summary" in messages[-1]
    finals = [m["result"] for m in messages if m.get("result", {}).get("isFinal")]
    assert sum("call me back" in f["transcript"] for f in finals) >= REPEATS - 1, finals
    last_end = max((int(w["endMs"]) for f in finals for w in f.get("words", [])), default=0)
    assert last_end > (REPEATS - 1) * len(piece) * 1000 // rate, last_end
