"""POST /v1/stt with a model slower than the upload: the upload waits for it.

An upload goes to the adapter as fast as the adapter takes it, so its writes wait for the
model. With the sessions' write deadline (``[runner] write_timeout_s``, 10 s, sized for
real-time streams) an upload of more than about two minutes of continuous speech to
``stt_pocketsphinx`` (about 3x real time on it) failed with 503 BACKEND_UNAVAILABLE "took no
message for 10 s" on ``make run``'s stack. Here a gateway of its own with that deadline at
0.3 s, and the uploads' own (``upload_write_timeout_seconds``) at its default.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator

import aiohttp
import numpy as np
import pytest
import pytest_asyncio
import soundfile

from gateway.runner import RunnerLimits
from gateway.server import GatewayServer
from tests.gateway.conftest import InstrumentedEdge
from tests.helpers.edge import keyed_gateway
from tests.helpers.speech_fixtures import SPEECH_DIR
from tests.helpers.wavio import read_wav

pytestmark = pytest.mark.asyncio(loop_scope="session")

REPEATS = 80


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def tight(
    front: InstrumentedEdge, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[GatewayServer, dict[str, str]]]:
    async for gateway in keyed_gateway(
        front.adapter.address,
        tmp_path_factory.mktemp("slow-model"),
        "slow-model",
        runner=RunnerLimits(write_timeout_s=0.3),
    ):
        yield gateway


async def test_an_upload_waits_for_a_model_slower_than_its_body(tight):
    # 80 x 2.9 s of speech, 7.4 MB: the adapter's flow-control window fills within seconds,
    # and then a write waits for the model (before: 503 within 2-3 s). The whole upload
    # would take pocketsphinx over a minute here; 8 s of it still running is the proof, and
    # then the client leaves (which stops it: test_http_stt).
    server, auth = tight
    pcm, rate = read_wav(SPEECH_DIR / "call_me_back.wav")
    out = io.BytesIO()
    soundfile.write(out, np.tile(pcm, REPEATS), rate, format="WAV", subtype="PCM_16")
    headers = {**auth, "Content-Type": "audio/wav"}

    async def upload() -> tuple[int, dict]:
        async with aiohttp.ClientSession() as http:
            url = f"{server.url}/v1/stt?model=stt_pocketsphinx"
            async with http.post(url, data=out.getvalue(), headers=headers) as resp:
                return resp.status, await resp.json()

    task = asyncio.create_task(upload())
    try:
        done, _ = await asyncio.wait({task}, timeout=8)
        if done:
            status, body = task.result()
            assert status == 200, body  # (a machine fast enough to finish it: fine too)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
