"""Helpers of the SDK tests: configs, fixture audio, collecting a session's events."""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from gateway.auth.keys import create_key
from tests.helpers.edge import Edge
from tests.helpers.speech_fixtures import SPEECH_DIR, TRANSCRIPTS
from tests.helpers.wavio import read_wav
from tests.helpers.wer import word_error_rate
from voxwire import errors
from voxwire.client import Resumed, TranscriptionEvent, TranscriptionSession, token_fetcher
from voxwire.edge.v1 import session_pb2
from voxwire.v1 import audio_pb2, transcription_pb2

FRAME_MS = 100


def stt_config(
    rate: int = 16000, model: str = "stt_pocketsphinx"
) -> transcription_pb2.TranscriptionConfig:
    return transcription_pb2.TranscriptionConfig(
        model=model,
        audio_format=audio_pb2.AudioFormat(
            encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE, sample_rate_hz=rate
        ),
        interim_results=True,
        word_timestamps=True,
    )


def fixture_pcm(name: str) -> tuple[bytes, int]:
    pcm, rate = read_wav(SPEECH_DIR / name)
    return pcm.tobytes(), rate


@dataclass
class Run:
    """What one session produced, in order."""

    events: list[TranscriptionEvent] = field(default_factory=list)
    summary: session_pb2.SessionSummary | None = None

    @property
    def finals(self) -> list[transcription_pb2.TranscriptResult]:
        return [
            e
            for e in self.events
            if isinstance(e, transcription_pb2.TranscriptResult) and e.is_final
        ]

    @property
    def words(self) -> list[str]:
        return " ".join(f.transcript for f in self.finals).split()

    @property
    def resumes(self) -> list[Resumed]:
        return [e for e in self.events if isinstance(e, Resumed)]


async def collect(session: TranscriptionSession, run: Run) -> None:
    async for event in session.events():
        run.events.append(event)


async def stream(
    session: TranscriptionSession,
    audio: bytes,
    rate: int,
    *,
    realtime: bool,
    after_chunk: Callable[[int], Awaitable[None]] | None = None,
) -> None:
    """Send ``audio`` in 100 ms frames, at real time (paced on the monotonic clock) or as fast
    as the session takes them; ``after_chunk(bytes sent)`` runs after each, and real time
    resumes after whatever it waited for."""
    step = rate * 2 * FRAME_MS // 1000
    due = time.monotonic()
    for pos in range(0, len(audio), step):
        if realtime:
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            due += FRAME_MS / 1000
        await session.send(audio[pos : pos + step])
        if after_chunk is not None:
            paused = time.monotonic()
            await after_chunk(min(pos + step, len(audio)))
            due += time.monotonic() - paused


ORIGIN = "https://app.example"


async def key_with_origin(edge: Edge, origin: str) -> str:
    """A new key that allows browser tokens from ``origin``, once the gateway has reloaded the
    keys file (it looks every 2 s)."""
    key, _ = await asyncio.to_thread(
        create_key,
        edge.keys_file,
        name="browser",
        now=datetime.datetime.now(datetime.UTC),
        allowed_origins=(origin,),
    )
    fetch = token_fetcher(edge.ws, key, origin=origin)
    async with asyncio.timeout(10):
        while True:
            try:
                await fetch()
                return key
            except errors.Unauthenticated:
                await asyncio.sleep(0.2)


def assert_heard(words: list[str] | str, fixture: str) -> None:
    """The fixture's text, give or take two words. These tests check the transport, not the
    model, whose accuracy tests/inference_adapter/test_transcription.py holds to its own
    bound; a transport that loses or garbles audio loses more than two words."""
    text = words if isinstance(words, str) else " ".join(words)
    assert word_error_rate(TRANSCRIPTS[fixture], text) <= 0.3, (text, TRANSCRIPTS[fixture])
