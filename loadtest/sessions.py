"""Session drivers: one STT or TTS session against a target, paced, measured.

The writer sends on the pacing schedule and never waits for answers; a reader task takes every
event as the target delivers it and feeds the session's measurements (loadtest.measure). Every
wait is bounded: each event by ``step_timeout_s``, the whole session by the run's hard stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from loadtest.arrivals import SessionDraw
from loadtest.events import (
    Audio,
    ContextDone,
    ContextFailed,
    ContextOpened,
    Ended,
    Event,
    Notice,
    Started,
)
from loadtest.measure import SttMeasure, TtsContextMeasure, setup_latency
from loadtest.pacing import Schedule, sleep_until
from loadtest.playback import Playback
from loadtest.recorder import Recorder
from loadtest.scenario import Scenario
from loadtest.speech import SpeechFile, chunk_audio, session_audio
from loadtest.targets.base import SttOptions, SttStream, Target, TtsOptions, TtsStream
from loadtest.wer import edit_distance, normalize_words
from voxwire.audio.codecs import Encoding

log = logging.getLogger(__name__)


@dataclass(slots=True)
class SessionContext:
    scenario: Scenario
    target: Target
    recorder: Recorder
    speech: list[SpeechFile]
    warm_until: float  # monotonic
    hard_stop: float  # monotonic
    active: int = 0


async def _events(
    stream: SttStream | TtsStream, timeout_s: float, on_event: Callable[[Event], None]
) -> Ended:
    """Read events until ``Ended``; a silent stream becomes ``Ended(TIMEOUT)``."""
    while True:
        try:
            async with asyncio.timeout(timeout_s):
                event = await stream.next_event()
        except TimeoutError:
            return Ended(time.monotonic(), "TIMEOUT", "NO_EVENT")
        on_event(event)
        if isinstance(event, Ended):
            return event


def _finish(
    ctx: SessionContext,
    kind: str,
    ended: Ended,
    failed_contexts: int = 0,
    rejected_since: float | None = None,
) -> None:
    """Count the session: ok only if the stream ended OK and no TTS context failed (a failed
    context's error is recorded where it happened). ``rejected_since``: the intended start of a
    session the target ended before it started (None otherwise, or inside the warm-up): how
    long the target took to reject it is ``session.rejected``."""
    rec = ctx.recorder
    of = mixed_kind(ctx, kind)
    if ended.stages_us:
        rec.stages(ended.stages_us, of)
    if ended.ok and not failed_contexts:
        rec.count("sessions.ok")
    else:
        rec.count("sessions.failed")
        if not ended.ok:
            rec.error(ended.status, ended.reason, of, ended.message)
            if ended.retry_delay_ms is not None:
                rec.count("sessions.retry_info")
            if rejected_since is not None:
                rec.record("session.rejected", ended.at - rejected_since)


def mixed_kind(ctx: SessionContext, kind: str) -> str | None:
    """The session's kind where a mixed run records its stages and errors per kind too."""
    return kind if ctx.scenario.kind == "mixed" else None


def _rejected_since(started: bool, intended_start: float, warm_until: float) -> float | None:
    return None if started or intended_start < warm_until else intended_start


async def _until(event: asyncio.Event, reader: asyncio.Task[Ended], timeout_s: float) -> bool:
    """Wait for ``event`` (True), or the reader's end or the timeout (False)."""
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({waiter, reader}, timeout=timeout_s, return_when="FIRST_COMPLETED")
    finally:
        waiter.cancel()
    return event.is_set()


async def stt_session(ctx: SessionContext, draw: SessionDraw, intended_start: float) -> None:
    s, rec = ctx.scenario, ctx.recorder
    spec = s.stt
    files = spec.length.files if spec.length.distribution == "files" else 0
    audio = session_audio(ctx.speech, draw.first_file, files, draw.length_s)
    chunks = chunk_audio(audio.pcm, audio.rate_hz, spec.chunk_ms, audio.encoding)
    options = SttOptions(
        spec.model,
        audio.rate_hz,
        spec.interim_results,
        max(1.0, ctx.hard_stop - time.monotonic()),
        audio.encoding,
    )
    measure = SttMeasure(rec, intended_start, spec.chunk_ms, ctx.warm_until)
    started = asyncio.Event()
    started_at: list[float] = []

    def on_event(event: Event) -> None:
        if isinstance(event, Notice):
            rec.count(f"notices.{event.kind}")
        measure.on_event(event)
        if isinstance(event, Started) and not started.is_set():
            started_at.append(event.at)
            started.set()

    stream = await _opened(ctx.target.open_stt(options), s.limits.step_timeout_s)
    reader = asyncio.create_task(_events(stream, s.limits.step_timeout_s, on_event))
    try:
        start = intended_start
        if spec.await_started:
            if not await _until(started, reader, s.limits.step_timeout_s):
                stream.cancel()
            start = started_at[0] if started_at else intended_start
        schedule = Schedule(start, spec.chunk_ms / 1000.0)
        for i, chunk in enumerate(chunks):
            late = await sleep_until(schedule.due(i))
            if reader.done():
                break
            rec.record("generator.lag", late)
            measure.sent(schedule.due(i), time.monotonic())
            rec.count("stt.chunks")
            await stream.send_audio(chunk)
        if not reader.done():
            await stream.finish()
        ended = await reader
    finally:
        reader.cancel()
        stream.cancel()
        # An echo answers every chunk: what it did not answer before the session ended (or was
        # cut) is counted, so stt.message's count plus this is stt.chunks (nothing silently
        # missing from the latency figures).
        if ctx.scenario.target.kind == "echo" and (missing := measure.unanswered()):
            rec.count("stt.unanswered", missing)
    _finish(
        ctx,
        "stt",
        ended,
        rejected_since=_rejected_since(bool(started_at), intended_start, ctx.warm_until),
    )
    # WER only where the target transcribes (an echo returns no results), and only for a
    # session that starts after the warm-up, as session.setup: the warm-up's inputs are
    # measured by no metric, so its words (decoded on a cold target) must not count either.
    if (
        spec.wer
        and audio.reference is not None
        and ended.ok
        and measure.first_result
        and intended_start >= ctx.warm_until
    ):
        reference = normalize_words(audio.reference)
        rec.count("wer.words", len(reference))
        rec.count("wer.edits", edit_distance(reference, normalize_words(" ".join(measure.finals))))


async def tts_session(ctx: SessionContext, draw: SessionDraw, intended_start: float) -> None:
    s, rec = ctx.scenario, ctx.recorder
    spec = s.tts
    options = TtsOptions(
        spec.model,
        spec.voice,
        spec.sample_rate_hz,
        max(1.0, ctx.hard_stop - time.monotonic()),
        Encoding(spec.encoding),
    )
    contexts: dict[str, TtsContextMeasure] = {}
    finished: dict[str, asyncio.Event] = {}
    opened: list[float] = []
    taken: set[str] = set()

    def on_event(event: Event) -> None:
        if isinstance(event, Notice):
            rec.count(f"notices.{event.kind}")
            return
        context = getattr(event, "context_id", None)
        if isinstance(event, ContextOpened | Audio | ContextDone) and context in contexts:
            if context not in taken:
                # A request counts once the target takes it up (its context opened, or audio
                # or done for it): a session or context refused before that (RATE_LIMITED,
                # OVERLOADED) was counted as a request the target never served.
                taken.add(context)
                rec.count("tts.requests")
        if isinstance(event, Audio):
            # Every chunk received, the warm-up's too (as stt.chunks counts every chunk sent):
            # the messages the client's CPU, the whole run's, is divided by.
            rec.count("tts.chunks")
        if isinstance(event, ContextOpened):
            if not opened:
                opened.append(event.at)
                setup_latency(rec, event, intended_start, ctx.warm_until)
            return
        if context in contexts:
            contexts[context].on_event(event)
            if isinstance(event, ContextDone | ContextFailed):
                finished[context].set()

    stream = await _opened(ctx.target.open_tts(options), s.limits.step_timeout_s)
    reader = asyncio.create_task(_events(stream, s.limits.step_timeout_s, on_event))
    try:
        due = intended_start
        for turn in range(spec.turns):
            cid = f"t{turn}"
            if turn and spec.turn_gap_s:
                await sleep_until(due)
            contexts[cid] = TtsContextMeasure(
                rec, due, Playback(spec.playout_delay_ms / 1000), ctx.warm_until
            )
            finished[cid] = asyncio.Event()
            await stream.open_context(cid)
            await stream.append(cid, spec.texts[(draw.index + turn) % len(spec.texts)])
            await stream.close_context(cid)
            if not await _until(finished[cid], reader, s.limits.step_timeout_s):
                break
            if contexts[cid].failed_reason:
                rec.error(
                    "CONTEXT",
                    contexts[cid].failed_reason,
                    mixed_kind(ctx, "tts"),
                    contexts[cid].failed_message,
                )
            # The next turn: the listener has heard this one out (closed loop within a session).
            due = time.monotonic() + spec.turn_gap_s
        await stream.finish()
        ended = await reader
    finally:
        reader.cancel()
        stream.cancel()
    _finish(
        ctx,
        "tts",
        ended,
        sum(1 for c in contexts.values() if c.failed_reason),
        _rejected_since(bool(opened), intended_start, ctx.warm_until),
    )


T = TypeVar("T")


class _OpenTimedOut(Exception):
    """The target took the connection but did not open the stream within one step's wait."""


async def _opened(opening: Awaitable[T], step_s: float) -> T:
    """The target's stream, opened within ``step_s`` (a target that accepts the connection and
    never answers held every session to the run's hard stop, counted CUT/MAX_DURATION: a run
    that measured nothing exited 0)."""
    try:
        async with asyncio.timeout(step_s):
            return await opening
    except TimeoutError:
        raise _OpenTimedOut from None


async def run_session(ctx: SessionContext, draw: SessionDraw, intended_start: float) -> None:
    """One session, bounded by the hard stop; its failures are recorded, never raised."""
    rec = ctx.recorder
    rec.count("sessions.started")
    ctx.active += 1
    body: Callable[[], Awaitable[None]] = (
        (lambda: stt_session(ctx, draw, intended_start))
        if draw.kind == "stt"
        else (lambda: tts_session(ctx, draw, intended_start))
    )
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout_at(loop.time() + ctx.hard_stop - time.monotonic()):
            await body()
    except _OpenTimedOut:
        rec.count("sessions.failed")
        rec.error("TIMEOUT", "OPEN", mixed_kind(ctx, draw.kind))
    except TimeoutError:
        rec.count("sessions.cut")
        rec.error("CUT", "MAX_DURATION", mixed_kind(ctx, draw.kind))
    except asyncio.CancelledError:
        # The worker was stopped (Ctrl-C, SIGTERM): the session is cut, not lost from the count.
        rec.count("sessions.cut")
        rec.error("CUT", "INTERRUPTED", mixed_kind(ctx, draw.kind))
        raise
    except Exception as exc:  # a target fault must not end the run: count it
        rec.count("sessions.failed")
        rec.error("CLIENT_ERROR", type(exc).__name__, mixed_kind(ctx, draw.kind))
        if rec.errors[f"CLIENT_ERROR/{type(exc).__name__}"] == 1:
            log.warning("session failed in the client", exc_info=exc)
    finally:
        ctx.active -= 1


async def cancel_all(tasks: set[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.gather(*tasks, return_exceptions=True)
