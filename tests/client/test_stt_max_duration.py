"""An STT session through the gateway's maximum session duration, with the SDK: the gateway
says goingAway(STREAM_TOO_LONG), finalizes the audio it has, closes 4009, and the SDK goes on
in a new session from the ack of those finals (docs/design/edge.md, the lifecycle table)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from gateway.server import GatewayServer
from gateway.stt.session import SttLimits
from inference_adapter.server import AdapterServer
from tests.client.helpers import Run, collect, fixture_pcm, stream, stt_config
from tests.helpers.edge import keyed_gateway
from tests.helpers.speech_fixtures import TRANSCRIPTS
from tests.helpers.wer import word_error_rate
from voxwire.client import TranscriptionSession

pytestmark = pytest.mark.asyncio(loop_scope="session")

FIXTURE = "two_sentences_gap.wav"  # the second sentence 4.3 to 5.9 s
MAX_S = 5.0


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def short_lived(
    edge_adapter: AdapterServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[GatewayServer, str]]:
    async for gateway, headers in keyed_gateway(
        edge_adapter.address,
        tmp_path_factory.mktemp("max-duration"),
        "max-duration",
        stt=SttLimits(max_session_s=MAX_S, duration_warning_s=1.0),
    ):
        yield gateway, headers["Authorization"].removeprefix("Bearer ")


async def test_the_hand_over_at_the_maximum_duration_keeps_the_gateways_finals(short_lived):
    # The SDK handed over at the goingAway itself: the gateway's finals of the pending audio
    # were thrown away, and the new session was replayed everything from the last ack (5.6 s
    # in a review) and decoded it again, changing words.
    gateway, key = short_lived
    audio, rate = fixture_pcm(FIXTURE)
    run = Run()
    async with asyncio.timeout(40):
        session = await TranscriptionSession.connect(
            gateway.url.replace("http", "ws", 1), stt_config(rate), api_key=key
        )
        reader = asyncio.create_task(collect(session, run))
        await stream(session, audio, rate, realtime=True)
        run.summary = await session.close()
        await reader
    [resumed] = run.resumes
    print(f"max duration hand-over: {resumed}, words {run.words}")
    # Finalized on the old connection: what is replayed is only what came after the
    # gateway's going_away (its half-close ends the upstream; audio after it is the client's).
    assert resumed.replayed_ms < 1500, resumed
    ids = [f.utterance_id for f in run.finals]
    assert len(ids) == len(set(ids)), ids
    ends = 0
    for final in run.finals:  # monotonic, no overlap across the hand-over
        assert final.start_ms >= ends, (final.start_ms, ends)
        ends = final.end_ms
    assert word_error_rate(TRANSCRIPTS[FIXTURE], " ".join(run.words)) <= 0.4, run.words
    assert run.summary is not None and run.summary.resumes == 1
