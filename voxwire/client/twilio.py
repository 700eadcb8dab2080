"""TwilioCall: a phone call from Twilio Media Streams on voxwire, with barge-in that knows
what the caller heard (docs/design/telephony.md).

In the server Twilio opens its media WebSocket to (``<Connect><Stream url=...>``):

    async def media_socket(request):
        ws = aiohttp.web.WebSocketResponse()
        await ws.prepare(request)
        call = await TwilioCall.accept(AiohttpSocket(ws), ["ws://gw:8080"], api_key=key,
                                       stt_model="stt_pocketsphinx", tts_model="tts_espeak")
        async for event in call.events():
            if isinstance(event, TranscriptResult) and event.is_final:
                await call.say(answer(event.transcript))
            elif isinstance(event, ReplyInterrupted):
                remember_what_was_heard(event.heard)
        return ws

The caller's audio goes to STT in the call's own format (8 kHz G.711, no conversion); each
``say`` is a TTS context in that format whose audio goes to Twilio as it comes, each chunk
followed by a mark. When the caller starts speaking over a reply (``speechStarted``), the call
sends Twilio ``clear``, truncates the context where Twilio's marks say playback was, and
reports the words heard. An asyncio adapter around ``twilio_messages`` and ``PlayoutLedger``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Coroutine, Sequence
from dataclasses import dataclass, field

from voxwire import errors
from voxwire.client import twilio_messages as twilio
from voxwire.client.channel import EventChannel
from voxwire.client.link import SessionClosed
from voxwire.client.options import SessionOptions
from voxwire.client.playout import PlayoutLedger
from voxwire.client.stt import TranscriptionEvent, TranscriptionSession
from voxwire.client.tts import SynthesisContext, SynthesisSession, SynthesisSessionEvent
from voxwire.client.tts_state import SynthesizedAudio
from voxwire.client.twilio_stream import (
    AiohttpSocket,  # noqa: F401 (the call's socket: its users import it from here)
    StreamTasks,
    TrackGaps,
    TwilioSocket,
    audio_format,
    close_quietly,
    read_start,
    track_batch,
    transcription_config,
)
from voxwire.edge.v1 import session_pb2, tts_pb2
from voxwire.v1 import synthesis_pb2, transcription_pb2

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReplyPlayed:
    """Twilio played the whole reply (its last mark echoed)."""

    context_id: str
    played_ms: int


@dataclass(frozen=True, slots=True)
class ReplyInterrupted:
    """The reply was cut (barge-in or ``interrupt``): ``played_ms`` of it had played, and
    ``heard`` are its words whose audio ended by then (the rule of ``Truncated.heard``)."""

    context_id: str
    played_ms: int
    heard: tuple[synthesis_pb2.WordTimestamp, ...]


@dataclass(frozen=True, slots=True)
class ReplyFailed:
    context_id: str
    error: BaseException


@dataclass(frozen=True, slots=True)
class CallEnded:
    """The last event: ``stop`` from Twilio, its socket closed, or ``hangup``.
    ``inbound_ms``: the caller's audio sent to STT, gaps filled with silence included;
    ``inbound_gaps``: the audio Twilio did not deliver (docs/design/telephony.md, "Gaps")."""

    reason: str
    inbound_ms: int
    other_track_messages: int = 0
    inbound_gaps: TrackGaps = field(default_factory=TrackGaps)


ReplyOutcome = ReplyPlayed | ReplyInterrupted | ReplyFailed
# TTS session events: its notices and Resumed (the summary is not passed on).
CallEvent = (
    TranscriptionEvent
    | SynthesisSessionEvent
    | ReplyOutcome
    | twilio.Dtmf
    | twilio.Mark
    | twilio.Other
    | CallEnded
)


@dataclass(slots=True)
class Reply:
    """One reply (``say`` or ``open_reply``): ``append`` text as it comes (an LLM's tokens),
    ``close`` when it is all there; await ``outcome()`` for how it ended."""

    context_id: str
    context: SynthesisContext | None  # None: asked for after the call ended, never spoken
    _done: asyncio.Future[ReplyOutcome] = field(repr=False)
    synthesized: bool = False  # its context has ended: all its audio came
    stopped: bool = False  # interrupted: audio that still comes is dropped
    end_ms: int = 0  # the end of the audio sent to Twilio, in the context's timeline

    async def append(self, text: str) -> None:
        """More of the reply's text. After a barge-in the text is dropped: the caller is
        speaking, and what an LLM still streams for this reply must not be said."""
        if self.context is not None:
            await self._unless_stopped(self.context.append(text))

    async def close(self) -> None:
        """The reply's text is complete: the rest is spoken."""
        if self.context is not None:
            await self._unless_stopped(self.context.close())

    async def _unless_stopped(self, op: Coroutine[object, object, None]) -> None:
        if self.stopped or self._done.done():
            op.close()  # never awaited: nothing is sent
            return
        try:
            await op
        except errors.VoxwireError:
            if not self.stopped:  # a barge-in while it was sent ended the context
                raise

    async def outcome(self) -> ReplyOutcome:
        return await asyncio.shield(self._done)


def _interrupted(reply: Reply, played_ms: int) -> ReplyInterrupted:
    heard = reply.context.heard(played_ms) if reply.context is not None else ()
    return ReplyInterrupted(reply.context_id, played_ms, tuple(heard))


class TwilioCall:
    """Use ``await TwilioCall.accept(...)``."""

    def __init__(
        self,
        socket: TwilioSocket,
        start: twilio.Start,
        stt: TranscriptionSession,
        tts: SynthesisSession,
        tts_config: synthesis_pb2.SynthesisContextConfig,
        *,
        barge_in: bool,
        max_events: int,
        inbound_batch_ms: int = 20,
        max_gap_fill_ms: int = 5000,
    ) -> None:
        self.socket = socket
        self.start = start
        self.stt = stt
        self.tts = tts
        self._tts_config = tts_config
        self.barge_in = barge_in
        self._ledger = PlayoutLedger()
        self._events: EventChannel[CallEvent] = EventChannel(max_events)
        self._replies: dict[str, Reply] = {}
        # A media message and its mark, and a clear, go out whole and in order.
        self._send_lock = asyncio.Lock()
        self._tasks = StreamTasks(self._failed)
        self._other_tracks = 0
        # The caller's audio, to STT.
        self._inbound = track_batch(start, inbound_batch_ms, max_gap_fill_ms)
        self._ended = False
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    async def accept(
        cls,
        socket: TwilioSocket,
        urls: Sequence[str] | str,
        *,
        api_key: str | None = None,
        stt_model: str,
        tts_model: str,
        voice: str = "",
        language: str = "",
        stt_config: transcription_pb2.TranscriptionConfig | None = None,
        lead_ms: int | None = None,
        barge_in: bool = True,
        inbound_batch_ms: int = 20,
        max_gap_fill_ms: int = 5000,
        start_timeout_s: float = 10.0,
        options: SessionOptions | None = None,
    ) -> TwilioCall:
        """Read Twilio's ``connected`` and ``start``, open the STT and TTS sessions in the
        call's format, and start relaying. ``stt_config``: its fields beyond the audio format
        and model (interim results, endpointing, ...); ``lead_ms``: how far a reply's audio may
        run ahead of playback (the gateway's default: 1 s), what a barge-in discards at most;
        ``inbound_batch_ms``: the caller's audio goes to STT in messages this long (Twilio's
        20 ms frames as they come by default; 100 holds 2.6-2.9 times the calls on the
        benchmark model, 60 against 21 on one VM and 75 against 29 on another, at up to 80 ms
        more latency: BENCHMARKS.md, "Phone calls" and "Resampling with low latency");
        ``max_gap_fill_ms``: audio Twilio did not deliver (a jump in its timestamps) goes to
        STT as silence, up to this much a gap, so offsets stay on the call's clock (0: none;
        ``CallEnded.inbound_gaps`` counts them either way).

        Raises TimeoutError (no ``start``), SessionClosed (the stream ended before it),
        InvalidMessage, UnsupportedEncoding (a media
        format other than 8 kHz mono G.711), or the sessions' errors."""
        event = await read_start(socket, start_timeout_s)
        config = transcription_config(event, stt_model, language, stt_config)
        tts_config = synthesis_pb2.SynthesisContextConfig(
            model=tts_model,
            voice=voice,
            language=language,
            word_timestamps=True,
            output_format=audio_format(event),
        )
        stt = await TranscriptionSession.connect(urls, config, api_key=api_key, options=options)
        try:
            tts = await SynthesisSession.connect(
                urls, api_key=api_key, lead_ms=lead_ms, options=options
            )
        except BaseException:
            await stt.abort()
            raise
        opts = options or SessionOptions()
        call = cls(
            socket,
            event,
            stt,
            tts,
            tts_config,
            barge_in=barge_in,
            max_events=opts.max_events,
            inbound_batch_ms=inbound_batch_ms,
            max_gap_fill_ms=max_gap_fill_ms,
        )
        call._reader = call._tasks.spawn(call._read_twilio())
        call._tasks.spawn(call._read_stt())
        call._tasks.spawn(call._read_tts_session())
        return call

    def events(self) -> AsyncIterator[CallEvent]:
        """Transcription events, reply outcomes, Twilio's DTMF and foreign marks; CallEnded
        last. Raises the error that ended the call."""
        return self._events

    async def open_reply(self, context_id: str = "") -> Reply:
        """A reply whose text comes in pieces (``Reply.append``, then ``Reply.close``); it is
        spoken after whatever is still playing, as its text arrives."""
        context_id = context_id or f"reply-{uuid.uuid4().hex[:12]}"
        if self._ended:
            return self._unspoken(context_id)
        context = await self.tts.open(context_id, self._tts_config)
        if self._ended:  # the call ended while the context opened
            with contextlib.suppress(errors.VoxwireError, SessionClosed, TimeoutError):
                await context.cancel()
            return self._unspoken(context_id)
        reply = Reply(context_id, context, asyncio.get_running_loop().create_future())
        self._replies[context_id] = reply
        self._tasks.spawn(self._pump(reply))
        return reply

    @staticmethod
    def _unspoken(context_id: str) -> Reply:
        """A reply asked for after the call ended (the caller's last words come after Twilio's
        ``stop``, and an agent answers them): nothing is sent, and its outcome is settled at
        once, interrupted at 0 ms. It was synthesized and written to the closed stream, its
        outcome never settled (or the call failed with the socket's error)."""
        done: asyncio.Future[ReplyOutcome] = asyncio.get_running_loop().create_future()
        done.set_result(ReplyInterrupted(context_id, 0, ()))
        return Reply(context_id, None, done, stopped=True)

    async def say(self, text: str, context_id: str = "") -> Reply:
        """Speak ``text`` after whatever is still playing; returns once it is sent."""
        reply = await self.open_reply(context_id)
        await reply.append(text)
        await reply.close()
        return reply

    async def interrupt(self) -> list[ReplyInterrupted]:
        """Stop every reply now: Twilio drops what it has not played (``clear``), the contexts
        are truncated where playback was. Returns what each reply had played."""
        async with self._send_lock:
            # Not those another interrupt is stopping: their positions are that one's.
            stopping = [r for r in self._replies.values() if not r.stopped]
            if not stopping:
                return []
            positions = self._ledger.clear(time.monotonic())
            for reply in stopping:
                reply.stopped = True
            with contextlib.suppress(ConnectionError):  # the caller hung up: nothing plays
                await self.socket.send_text(twilio.clear(self.start.stream_sid))
        outcomes = []
        for reply in stopping:
            played = positions.get(reply.context_id, reply.end_ms)
            with contextlib.suppress(errors.VoxwireError):  # a context that failed meanwhile
                assert reply.context is not None  # only spoken replies are in _replies
                await reply.context.truncate(played)
            outcome = _interrupted(reply, played)
            if self._settle(reply, outcome):
                outcomes.append(outcome)
        for outcome in outcomes:
            await self._events.put(outcome)
        return outcomes

    async def hangup(self) -> None:
        """End the call from this side (the sessions close; Twilio's socket is the caller's)."""
        await self._end("hangup")

    # -- tasks -----------------------------------------------------------------------------

    def _failed(self, exc: BaseException) -> None:
        log.warning("twilio call %s: %r", self.start.call_sid, exc)
        self._ended = True
        self._events.close(exc)
        self._tasks.stop(self.stt, self.tts)  # the sessions end with the call

    async def _read_twilio(self) -> None:
        while (text := await self.socket.receive_text()) is not None:
            event = twilio.parse(text)
            if isinstance(event, twilio.Media):
                if event.track == "inbound":
                    if (message := self._inbound.add(event.audio, event.timestamp_ms)) is not None:
                        await self.stt.send(message)
                else:
                    self._other_tracks += 1
            elif isinstance(event, twilio.Mark):
                await self._echo(event)
            elif isinstance(event, twilio.Stop):
                break
            elif isinstance(event, (twilio.Dtmf, twilio.Other)):
                await self._events.put(event)
        if (rest := self._inbound.rest()) is not None:
            await self.stt.send(rest)  # the caller's last words
        await self._end("stop" if text is not None else "socket closed")

    async def _echo(self, mark: twilio.Mark) -> None:
        echo = self._ledger.echoed(mark.name, time.monotonic())
        if not echo.ours:
            await self._events.put(mark)
            return
        for context_id, _end in echo.played:
            await self._maybe_played(context_id)

    async def _maybe_played(self, context_id: str) -> None:
        reply = self._replies.get(context_id)
        if (
            reply is None
            or reply.stopped  # its interrupt settles it
            or not reply.synthesized
            or self._ledger.unplayed(context_id)
        ):
            return
        outcome = ReplyPlayed(context_id, reply.end_ms)
        if self._settle(reply, outcome):
            await self._events.put(outcome)

    def _settle(self, reply: Reply, outcome: ReplyOutcome) -> bool:
        if reply._done.done():
            return False
        reply._done.set_result(outcome)
        self._replies.pop(reply.context_id, None)
        return True

    async def _read_stt(self) -> None:
        async for event in self.stt.events():
            if self.barge_in and isinstance(event, transcription_pb2.SpeechStarted):
                await self.interrupt()  # the replies in flight, played or still to come
            await self._events.put(event)

    async def _read_tts_session(self) -> None:
        # The TTS session's own events (notices, Resumed) are the call's too; its summary is
        # not (the call ends with CallEnded).
        async for event in self.tts.events():
            if not isinstance(event, session_pb2.SessionSummary):
                await self._events.put(event)

    async def _pump(self, reply: Reply) -> None:
        assert reply.context is not None
        try:
            async for event in reply.context:
                if isinstance(event, SynthesizedAudio):
                    await self._forward(reply, event)
                elif isinstance(event, (tts_pb2.Truncated, synthesis_pb2.ContextCancelled)):
                    break
        except errors.VoxwireError as exc:
            if self._settle(reply, ReplyFailed(reply.context_id, exc)):
                await self._events.put(ReplyFailed(reply.context_id, exc))
            return
        reply.synthesized = True
        await self._maybe_played(reply.context_id)

    async def _forward(self, reply: Reply, chunk: SynthesizedAudio) -> None:
        async with self._send_lock:
            if reply.stopped:
                return  # cut by a barge-in: Twilio must never play it
            name = self._ledger.sent(
                reply.context_id, chunk.start_ms, chunk.duration_ms, time.monotonic()
            )
            reply.end_ms = chunk.start_ms + chunk.duration_ms
            try:
                await self.socket.send_text(twilio.media(self.start.stream_sid, chunk.audio))
                await self.socket.send_text(twilio.mark(self.start.stream_sid, name))
            except ConnectionError:
                # The caller hung up: the reader sees the socket end and ends the call, which
                # settles this reply where playout was. The call failed with the socket's
                # error before, and its last events and CallEnded never came.
                reply.stopped = True

    async def _end(self, reason: str) -> None:
        if self._ended:
            return
        self._ended = True
        # Replies still in flight stop where Twilio's playout was (the caller is gone).
        now = time.monotonic()
        for reply in list(self._replies.values()):
            reply.stopped = True
            position = self._ledger.position(reply.context_id, now)
            played = reply.end_ms if position is None else position
            outcome = _interrupted(reply, played)
            if self._settle(reply, outcome):
                await self._events.put(outcome)
            with contextlib.suppress(errors.VoxwireError, SessionClosed, TimeoutError):
                assert reply.context is not None
                await reply.context.cancel()
        # The caller's last words still come: close STT and let its reader finish.
        for session in (self.stt, self.tts):
            await close_quietly(session)
        if self._reader is not None and self._reader is not asyncio.current_task():
            self._reader.cancel()  # hangup: Twilio's socket is no longer read
        await self._tasks.wait_others(5.0)
        inbound = self._inbound
        await self._events.put(
            CallEnded(reason, inbound.total_ms, self._other_tracks, inbound.gaps)
        )
        self._events.close()
