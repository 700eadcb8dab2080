"""The session drivers (loadtest/sessions.py) against scripted streams: what each session
counts and records, with no network."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time

from loadtest.arrivals import SessionDraw
from loadtest.events import Audio, ContextDone, ContextOpened, Ended, Event, Result, Started
from loadtest.recorder import Recorder
from loadtest.scenario import Limits, Scenario
from loadtest.sessions import SessionContext, stt_session, tts_session
from loadtest.speech import SpeechFile


class _ScriptedTts:
    """A TTS stream that refuses the session at once, or answers each context with
    ``opened``, ``chunks`` audio chunks and ``done``."""

    def __init__(self, refuse: str = "", chunks: int = 3) -> None:
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._chunks = chunks
        if refuse:
            self._events.put_nowait(Ended(time.monotonic(), "RESOURCE_EXHAUSTED", refuse))

    async def open_context(self, context_id: str) -> None:
        pass

    async def append(self, context_id: str, text: str) -> None:
        pass

    async def close_context(self, context_id: str) -> None:
        now = time.monotonic()
        self._events.put_nowait(ContextOpened(now, context_id))
        for i in range(self._chunks):
            self._events.put_nowait(Audio(now, context_id, 100.0 * i, 100.0))
        self._events.put_nowait(ContextDone(now, context_id))

    async def finish(self) -> None:
        self._events.put_nowait(Ended(time.monotonic()))

    async def next_event(self) -> Event:
        return await self._events.get()

    def cancel(self) -> None:
        pass


class _ScriptedStt:
    """An STT stream that starts at once and, at the end, gives one final with ``text``."""

    def __init__(self, text: str) -> None:
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._events.put_nowait(Started(time.monotonic()))
        self._text, self._sent = text, 0

    async def send_audio(self, pcm: bytes) -> None:
        self._sent += 1

    async def finish(self) -> None:
        now = time.monotonic()
        self._events.put_nowait(Result(now, True, self._text, 100 * self._sent))
        self._events.put_nowait(Ended(now))

    async def next_event(self) -> Event:
        return await self._events.get()

    def cancel(self) -> None:
        pass


class _Target:
    name = "scripted"

    def __init__(self, tts: _ScriptedTts | None = None, stt: _ScriptedStt | None = None) -> None:
        self._tts, self._stt = tts, stt

    async def open_tts(self, options: object) -> _ScriptedTts | None:
        return self._tts

    async def open_stt(self, options: object) -> _ScriptedStt | None:
        return self._stt


# 0.3 s of 16 kHz audio (three 100 ms chunks) whose transcript is two words.
SPEECH = [SpeechFile("a.wav", bytes(2 * 4800), 16_000, "hello world")]


def _context(target: object, warm_until: float = -math.inf, **tts: object) -> SessionContext:
    base = Scenario()
    s = Scenario(
        kind="tts" if tts else "stt",
        limits=Limits(step_timeout_s=5.0),
        tts=dataclasses.replace(base.tts, model="m", **tts),
        stt=dataclasses.replace(base.stt, model="m", chunk_ms=100, wer=True),
    )
    now = time.monotonic()
    return SessionContext(s, target, Recorder(), SPEECH, warm_until, now + 30.0)  # type: ignore[arg-type]


async def test_a_refused_tts_session_sent_no_request() -> None:
    # The gateway refused the session (RATE_LIMITED) before it took any context: counted, its
    # text made tts.requests one higher than the requests the target ever took.
    ctx = _context(_Target(_ScriptedTts(refuse="RATE_LIMITED")))
    await tts_session(ctx, SessionDraw(0, "tts", 0.0, 0), time.monotonic())
    counters = ctx.recorder.counters
    assert counters["sessions.failed"] == 1 and counters["tts.requests"] == 0, counters
    assert dict(ctx.recorder.errors) == {"RESOURCE_EXHAUSTED/RATE_LIMITED": 1}


async def test_each_tts_context_the_target_took_is_one_request() -> None:
    ctx = _context(_Target(_ScriptedTts()), turns=2)
    await tts_session(ctx, SessionDraw(0, "tts", 0.0, 0), time.monotonic())
    counters = ctx.recorder.counters
    assert counters["sessions.ok"] == 1 and counters["tts.requests"] == 2, counters


async def test_word_error_rate_leaves_out_the_warm_up_as_the_latencies_do() -> None:
    # A session started in the warm-up had none of its latencies from before the warm-up's end
    # recorded (none of these, all due within it), but its words counted in the WER.
    draw = SessionDraw(0, "stt", 0.0, 0)
    warm = _context(_Target(stt=_ScriptedStt("hello world")), warm_until=time.monotonic() + 60)
    await stt_session(warm, draw, time.monotonic())
    assert warm.recorder.counters["sessions.ok"] == 1
    assert "stt.final" not in warm.recorder.total
    assert warm.recorder.counters["wer.words"] == 0, warm.recorder.counters
    # After the warm-up: its words count (one of two wrong).
    measured = _context(_Target(stt=_ScriptedStt("hello word")))
    await stt_session(measured, draw, time.monotonic())
    counters = measured.recorder.counters
    assert (counters["wer.words"], counters["wer.edits"]) == (2, 1), counters


async def test_every_tts_audio_chunk_received_is_counted_warm_up_included() -> None:
    # The denominator of the client's CPU per message, which is the whole run's CPU: as
    # stt.chunks counts every chunk sent, tts.chunks counts every chunk received.
    ctx = _context(_Target(_ScriptedTts(chunks=4)), warm_until=time.monotonic() + 60, turns=2)
    await tts_session(ctx, SessionDraw(0, "tts", 0.0, 0), time.monotonic())
    assert ctx.recorder.counters["tts.chunks"] == 8, ctx.recorder.counters
