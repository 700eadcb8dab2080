"""voxwire.client.TranscriptionSession against the real gateway, adapter and Triton."""

from __future__ import annotations

import asyncio

import pytest

from tests.client.helpers import Run, collect, fixture_pcm, stream, stt_config
from tests.helpers.edge import Edge
from tests.helpers.speech_fixtures import TRANSCRIPTS
from voxwire.client import TranscriptionSession
from voxwire.v1 import transcription_pb2

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_a_file_is_transcribed_through_the_sdk(edge: Edge):
    audio, rate = fixture_pcm("call_me_back.wav")
    run = Run()
    async with asyncio.timeout(30):
        session = await TranscriptionSession.connect(edge.ws, stt_config(rate), api_key=edge.key)
        reader = asyncio.create_task(collect(session, run))
        await stream(session, audio, rate, realtime=False)
        summary = await session.close()
        await reader
    assert run.words == TRANSCRIPTS["call_me_back.wav"].split()
    assert run.events[0].__class__ is transcription_pb2.TranscriptionStarted
    assert run.events[-1] == summary
    assert summary.audio_ms == len(audio) * 1000 // (rate * 2)
    assert session.ack.finalized_through_ms > 0
    assert session.state.window.held_bytes <= len(audio)
