"""The session drivers (loadtest/sessions.py) against scripted streams: what each session
counts and records, with no network."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time

from loadtest.arrivals import SessionDraw
from loadtest.events import Audio, ContextDone, ContextOpened, Ended, Event
from loadtest.recorder import Recorder
from loadtest.scenario import Limits, Scenario
from loadtest.sessions import SessionContext, tts_session


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


class _Target:
    name = "scripted"

    def __init__(self, tts: _ScriptedTts) -> None:
        self._tts = tts

    async def open_tts(self, options: object) -> _ScriptedTts:
        return self._tts


def _context(target: object, warm_until: float = -math.inf, **tts: object) -> SessionContext:
    base = Scenario()
    s = Scenario(
        kind="tts",
        limits=Limits(step_timeout_s=5.0),
        tts=dataclasses.replace(base.tts, model="m", **tts),
    )
    now = time.monotonic()
    return SessionContext(s, target, Recorder(), [], warm_until, now + 30.0)  # type: ignore[arg-type]


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
