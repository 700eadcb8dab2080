"""TwilioFork: both legs of a phone call transcribed live, from a forked Twilio media stream
(docs/design/telephony.md, "A forked call").

Twilio forks a call's audio to a WebSocket with ``<Start><Stream track="both_tracks">`` while
the call goes on (to a person, a queue, another bot): the caller (``inbound``) and what the
caller hears (``outbound``), and it takes nothing back. Agent assist, compliance and call
analytics run on such forks. In the server the fork's socket reaches:

    async def fork_socket(request):
        ws = aiohttp.web.WebSocketResponse()
        await ws.prepare(request)
        fork = await TwilioFork.accept(AiohttpSocket(ws), ["ws://gw:8080"], api_key=key,
                                       stt_model="stt_pocketsphinx")
        async for event in fork.events():
            if isinstance(event, TrackEvent) and is_final(event.event):
                show(event.track, event.stream_ms(event.event.start_ms), event.event.transcript)
        return ws

Each track Twilio names in ``start`` gets an STT session of its own, in the stream's format (no
conversion), opened together; every transcription event comes tagged with its track, and with
where the track began on the stream's clock, so that the two legs' words can be put in one
order. An asyncio adapter around ``twilio_messages``, like ``TwilioCall``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from voxwire import errors
from voxwire.client import twilio_messages as twilio
from voxwire.client.channel import EventChannel
from voxwire.client.options import SessionOptions
from voxwire.client.stt import TranscriptionEvent, TranscriptionSession
from voxwire.client.twilio_stream import (
    FrameBatch,
    StreamTasks,
    TrackGaps,
    TwilioSocket,
    close_quietly,
    read_start,
    track_batch,
    transcription_config,
)
from voxwire.v1 import transcription_pb2

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TrackEvent:
    """A transcription event of one track (``inbound``: the caller; ``outbound``: what the
    caller hears). Its offsets count from the track's first audio, which Twilio stamped
    ``track_start_ms`` on the stream's clock."""

    track: str
    event: TranscriptionEvent
    track_start_ms: int

    def stream_ms(self, offset_ms: int) -> int:
        """An offset of this track's results (``start_ms``, a word's ``end_ms``) on the
        stream's clock, the one both tracks share."""
        return self.track_start_ms + offset_ms


@dataclass(frozen=True, slots=True)
class TrackFailed:
    """One leg's session failed (a non-retryable error, or its reconnects spent) after
    ``at_ms`` of its audio; the other legs go on, and this track's later audio is counted in
    ``ForkEnded.untranscribed_ms``, not sent. When the last leg fails, the fork ends with its
    error instead (``events()`` raises it)."""

    track: str
    error: BaseException
    at_ms: int


@dataclass(frozen=True, slots=True)
class ForkEnded:
    """The last event: ``stop`` from Twilio, its socket closed, or ``hangup``. ``track_ms``:
    the audio each track sent (gaps filled with silence included); ``unknown_track_messages``:
    media of a track ``start`` did not name (counted, not transcribed; Twilio sends none);
    ``gaps``: each track's audio Twilio did not deliver (docs/design/telephony.md, "Gaps");
    ``untranscribed_ms``: the audio of each failed track after its ``TrackFailed``."""

    reason: str
    track_ms: dict[str, int]
    unknown_track_messages: int = 0
    gaps: dict[str, TrackGaps] = field(default_factory=dict)
    untranscribed_ms: dict[str, int] = field(default_factory=dict)


ForkEvent = TrackEvent | TrackFailed | twilio.Dtmf | twilio.Mark | twilio.Other | ForkEnded


@dataclass(eq=False, slots=True)
class _Track:
    name: str
    session: TranscriptionSession
    batch: FrameBatch
    failed: BaseException | None = None
    untranscribed_bytes: int = 0  # audio not sent because the track had failed

    @property
    def start_ms(self) -> int:
        """Twilio's timestamp of the track's first frame."""
        return self.batch.start_ms or 0


class TwilioFork:
    """Use ``await TwilioFork.accept(...)``."""

    def __init__(
        self,
        socket: TwilioSocket,
        start: twilio.Start,
        sessions: dict[str, TranscriptionSession],
        *,
        max_events: int,
        batch_ms: int,
        max_gap_fill_ms: int = 5000,
        isolate_legs: bool = True,
    ) -> None:
        self.socket = socket
        self.start = start
        self._tracks = {
            name: _Track(name, session, track_batch(start, batch_ms, max_gap_fill_ms))
            for name, session in sessions.items()
        }
        self._events: EventChannel[ForkEvent] = EventChannel(max_events)
        self._tasks = StreamTasks(self._failed)
        self._unknown = 0
        self._isolate = isolate_legs
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
        language: str = "",
        stt_config: transcription_pb2.TranscriptionConfig | None = None,
        batch_ms: int = 20,
        max_gap_fill_ms: int = 5000,
        isolate_legs: bool = True,
        start_timeout_s: float = 10.0,
        options: SessionOptions | None = None,
    ) -> TwilioFork:
        """Read Twilio's ``start``, open an STT session per track it names (in the stream's
        format; ``stt_config``: fields beyond the format and model), and start relaying.
        ``batch_ms``: each track's audio goes to STT in messages this long (Twilio's 20 ms
        frames as they come by default); ``max_gap_fill_ms``: audio Twilio did not deliver on a
        track goes to STT as silence, up to this much a gap, so the track stays on the stream's
        clock (0: none; ``ForkEnded.gaps`` counts them either way); ``isolate_legs``: a leg
        whose session fails once the fork is live ends with ``TrackFailed`` and the others go
        on (False: the fork ends with the error).

        Raises TimeoutError (no ``start``), SessionClosed (the stream ended before it),
        InvalidMessage, UnsupportedEncoding (a media format
        other than 8 kHz mono G.711), or the sessions' errors (then none is left open)."""
        start = await read_start(socket, start_timeout_s)
        config = transcription_config(start, stt_model, language, stt_config)
        names = list(dict.fromkeys(start.tracks)) or ["inbound"]
        connecting = [
            asyncio.ensure_future(
                TranscriptionSession.connect(urls, config, api_key=api_key, options=options)
            )
            for _ in names
        ]
        try:
            sessions = await asyncio.gather(*connecting)
        except BaseException:
            # One failed (or accept was cancelled): none of the others may stay open.
            for task in connecting:
                task.cancel()
            opened = await asyncio.gather(*connecting, return_exceptions=True)
            await asyncio.gather(
                *(s.abort() for s in opened if isinstance(s, TranscriptionSession))
            )
            raise
        opts = options or SessionOptions()
        fork = cls(
            socket,
            start,
            dict(zip(names, sessions, strict=True)),
            max_events=opts.max_events,
            batch_ms=batch_ms,
            max_gap_fill_ms=max_gap_fill_ms,
            isolate_legs=isolate_legs,
        )
        fork._reader = fork._tasks.spawn(fork._read_twilio())
        for track in fork._tracks.values():
            fork._tasks.spawn(fork._read_stt(track))
        return fork

    @property
    def tracks(self) -> tuple[str, ...]:
        return tuple(self._tracks)

    def events(self) -> AsyncIterator[ForkEvent]:
        """Each track's transcription events (``TrackEvent``), Twilio's DTMF, marks and
        other events; ForkEnded last. Raises the error that ended the fork."""
        return self._events

    async def hangup(self) -> None:
        """Stop transcribing (the sessions close, their last finals still come); Twilio's
        socket is the caller's to close."""
        await self._end("hangup")

    # -- tasks -----------------------------------------------------------------------------

    def _failed(self, exc: BaseException) -> None:
        log.warning("twilio fork %s: %r", self.start.call_sid, exc)
        self._ended = True
        self._events.close(exc)
        self._tasks.stop(*(t.session for t in self._tracks.values()))

    async def _read_twilio(self) -> None:
        while (text := await self.socket.receive_text()) is not None:
            event = twilio.parse(text)
            if isinstance(event, twilio.Media):
                track = self._tracks.get(event.track)
                if track is None:
                    self._unknown += 1
                    continue
                if track.failed is not None:
                    track.untranscribed_bytes += len(event.audio)
                    continue
                if (message := track.batch.add(event.audio, event.timestamp_ms)) is not None:
                    await self._send(track, message)
            elif isinstance(event, twilio.Stop):
                break
            elif isinstance(event, (twilio.Dtmf, twilio.Mark, twilio.Other)):
                await self._events.put(event)
        for track in self._tracks.values():
            if track.failed is None and (rest := track.batch.rest()) is not None:
                await self._send(track, rest)  # the speaker's last words
        await self._end("stop" if text is not None else "socket closed")

    async def _send(self, track: _Track, audio: bytes) -> None:
        try:
            await track.session.send(audio)
        except errors.VoxwireError as exc:
            if not await self._leg_failed(track, exc):
                raise
            track.untranscribed_bytes += len(audio)

    async def _read_stt(self, track: _Track) -> None:
        try:
            async for event in track.session.events():
                await self._events.put(TrackEvent(track.name, event, track.start_ms))
        except errors.VoxwireError as exc:
            if not await self._leg_failed(track, exc):
                raise

    async def _leg_failed(self, track: _Track, exc: errors.VoxwireError) -> bool:
        """Whether the fork goes on without ``track`` (its failure seen by its reader or by a
        send, whichever first; once). The last leg's failure is the fork's."""
        if track.failed is not None:
            return True
        track.failed = exc
        if not self._isolate or all(t.failed is not None for t in self._tracks.values()):
            return False
        # What the track had gathered but not sent is not transcribed either.
        track.untranscribed_bytes += len(track.batch.rest() or b"")
        log.warning("twilio fork %s: track %s failed: %r", self.start.call_sid, track.name, exc)
        await self._events.put(TrackFailed(track.name, exc, track.batch.total_ms))
        return True

    async def _end(self, reason: str) -> None:
        if self._ended:
            return
        self._ended = True
        # Each track's last words still come: close the sessions, let their readers finish.
        await asyncio.gather(*(close_quietly(t.session) for t in self._tracks.values()))
        if self._reader is not None and self._reader is not asyncio.current_task():
            self._reader.cancel()  # hangup: Twilio's socket is no longer read
        await self._tasks.wait_others(5.0)
        track_ms = {name: t.batch.total_ms for name, t in self._tracks.items()}
        gaps = {name: t.batch.gaps for name, t in self._tracks.items()}
        untranscribed = {
            name: t.untranscribed_bytes * 1000 // twilio.RATE_HZ
            for name, t in self._tracks.items()
            if t.failed is not None
        }
        await self._events.put(ForkEnded(reason, track_ms, self._unknown, gaps, untranscribed))
        self._events.close()
