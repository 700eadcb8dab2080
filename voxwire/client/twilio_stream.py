"""What every consumer of a Twilio media stream does the same way: the socket it reads, the
``start`` it waits for, the STT configuration in the stream's own format, and the batching of
Twilio's 20 ms frames into STT messages (docs/design/telephony.md). ``TwilioCall`` (an agent on
a bidirectional stream) and ``TwilioFork`` (both legs of a forked call transcribed) build on it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

from voxwire import errors
from voxwire.client import twilio_messages as twilio
from voxwire.client.link import ResumingLink, SessionClosed
from voxwire.client.stt import TranscriptionSession
from voxwire.client.tts import SynthesisSession
from voxwire.v1 import audio_pb2, transcription_pb2


class TwilioSocket(Protocol):
    """The media WebSocket Twilio opened (Starlette's WebSocket has this shape; aiohttp's
    through ``AiohttpSocket``). ``receive_text`` returns None once the socket has closed;
    ``send_text`` raises ConnectionError once it is closing (the caller hung up)."""

    async def receive_text(self) -> str | None: ...

    async def send_text(self, data: str) -> None: ...


class AiohttpSocket:
    """An aiohttp ``WebSocketResponse`` as a TwilioSocket."""

    def __init__(self, ws: aiohttp.web.WebSocketResponse) -> None:
        self._ws = ws

    async def receive_text(self) -> str | None:
        msg = await self._ws.receive()
        if msg.type is aiohttp.WSMsgType.TEXT:
            return str(msg.data)
        if msg.type is aiohttp.WSMsgType.BINARY:
            raise errors.InvalidMessage("Twilio message: a binary frame (Twilio sends JSON text)")
        return None  # closing, closed or error: the call is over

    async def send_text(self, data: str) -> None:
        # aiohttp raises ClientConnectionResetError, a ConnectionResetError: as promised.
        await self._ws.send_str(data)


async def read_start(socket: TwilioSocket, timeout_s: float) -> twilio.Start:
    """Twilio's ``start`` (after ``connected``), its media format checked. Raises TimeoutError
    (none within ``timeout_s``), SessionClosed (the stream ended first: a ``stop``, or the
    socket closed, as when the caller hangs up at once), InvalidMessage (a malformed message),
    UnsupportedEncoding (a format other than 8 kHz mono G.711)."""
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                text = await socket.receive_text()
                if text is None:
                    # A hang-up, not bad input: it was InvalidMessage, with a traceback.
                    raise SessionClosed("Twilio's socket closed before its 'start'")
                event = twilio.parse(text)
                if isinstance(event, twilio.Start):
                    break
                if isinstance(event, twilio.Stop):
                    # The stream is over: the socket was held for the whole timeout before.
                    raise SessionClosed("Twilio's stream stopped before its 'start'")
    except TimeoutError:
        # asyncio's own has no words: the example's log said only "Error handling request".
        raise TimeoutError(f"no 'start' from Twilio within {timeout_s:g} s") from None
    if event.sample_rate_hz != twilio.RATE_HZ or event.channels != 1:
        raise errors.UnsupportedEncoding(
            f"Twilio stream's media format: {event.sample_rate_hz} Hz, "
            f"{event.channels} channels; the bridge takes 8000 Hz mono"
        )
    return event


def audio_format(start: twilio.Start) -> audio_pb2.AudioFormat:
    return audio_pb2.AudioFormat(
        encoding=start.encoding, sample_rate_hz=start.sample_rate_hz, channels=1
    )


def transcription_config(
    start: twilio.Start,
    stt_model: str,
    language: str = "",
    stt_config: transcription_pb2.TranscriptionConfig | None = None,
) -> transcription_pb2.TranscriptionConfig:
    """``stt_config`` (interim results, endpointing, ...) with the model and the stream's own
    format: the audio goes to STT as Twilio sends it, no conversion."""
    config = transcription_pb2.TranscriptionConfig()
    if stt_config is not None:
        config.CopyFrom(stt_config)
    config.model = stt_model
    config.audio_format.CopyFrom(audio_format(start))
    if language:
        config.language = language
    return config


@dataclass(frozen=True, slots=True)
class TrackGaps:
    """Audio of one track that Twilio never delivered: jumps in its media timestamps (Twilio
    discards audio when the socket does not keep up, its warning 31930)."""

    count: int = 0
    filled_ms: int = 0  # sent to STT as silence: the track's offsets stay on Twilio's clock
    unfilled_ms: int = 0  # past ``max_fill_ms`` of one gap: later offsets are this much early


_BYTES_PER_MS = twilio.RATE_HZ // 1000  # 8 kHz G.711: a byte a sample
# A timestamp this far ahead of the audio received is a gap; less is rounding (Twilio stamps
# whole milliseconds).
GAP_MIN_MS = 10
_GAP_MIN_BYTES = GAP_MIN_MS * _BYTES_PER_MS


class FrameBatch:
    """One track's 20 ms frames gathered into STT messages of ``batch_ms``, on Twilio's clock:
    where a frame's timestamp is ahead of the audio received so far, the missing time is sent as
    ``silence`` first (at most ``max_fill_ms`` a gap), so the transcript's offsets still say
    where in the call a word was, and the gap is counted in ``gaps``."""

    def __init__(
        self,
        batch_ms: int,
        silence: bytes = twilio.SILENCE[audio_pb2.AUDIO_ENCODING_MULAW],
        max_fill_ms: int = 5000,
    ) -> None:
        self._batch_bytes = max(1, batch_ms) * _BYTES_PER_MS
        self._silence = silence
        self._max_fill_bytes = max_fill_ms * _BYTES_PER_MS
        self._pending = bytearray()
        self._gap_count = 0
        self._filled_bytes = 0
        self._unfilled_bytes = 0
        self.total_bytes = 0  # sent or pending, filled silence included
        self.start_ms: int | None = None  # Twilio's timestamp of the track's first frame

    def add(self, audio: bytes, timestamp_ms: int | None = None) -> bytes | None:
        """The message to send now, if ``audio`` (stamped ``timestamp_ms`` by Twilio, None
        if not known) completes one."""
        if timestamp_ms is not None:
            if self.start_ms is None:
                self.start_ms = timestamp_ms
            else:
                self._fill(timestamp_ms - self.start_ms)
        self.total_bytes += len(audio)
        if not self._pending and len(audio) >= self._batch_bytes:
            return audio  # a whole message: no copy
        self._pending += audio
        return self._take() if len(self._pending) >= self._batch_bytes else None

    def _fill(self, at_ms: int) -> None:
        """Silence for the time before ``at_ms`` (into the track) that no audio covered."""
        missing = at_ms * _BYTES_PER_MS - self.total_bytes - self._unfilled_bytes
        if missing < _GAP_MIN_BYTES:
            return  # in step, or behind (a repeated timestamp is sent as it came)
        fill = min(missing, self._max_fill_bytes)
        self._pending += self._silence * fill
        self.total_bytes += fill
        self._gap_count += 1
        self._filled_bytes += fill
        self._unfilled_bytes += missing - fill

    @property
    def gaps(self) -> TrackGaps:
        return TrackGaps(
            self._gap_count,
            self._filled_bytes // _BYTES_PER_MS,
            self._unfilled_bytes // _BYTES_PER_MS,
        )

    def rest(self) -> bytes | None:
        """What is left at the end of the stream (the speaker's last words)."""
        return self._take() if self._pending else None

    def _take(self) -> bytes:
        message = bytes(self._pending)
        self._pending.clear()
        return message

    @property
    def total_ms(self) -> int:
        return self.total_bytes // _BYTES_PER_MS


def track_batch(start: twilio.Start, batch_ms: int, max_gap_fill_ms: int) -> FrameBatch:
    """A track's FrameBatch, its gaps filled with the silence of the stream's encoding."""
    return FrameBatch(batch_ms, twilio.SILENCE[start.encoding], max_gap_fill_ms)


class StreamTasks:
    """The tasks of one consumer of a Twilio stream, all owned here: the first that fails
    calls ``on_failure`` (which ends the consumer and ``stop``s the rest)."""

    def __init__(self, on_failure: Callable[[BaseException], None]) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self._on_failure = on_failure
        self._aborting: asyncio.Future[Any] | None = None

    def spawn(self, coro: Coroutine[object, object, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or (exc := task.exception()) is None:
            return
        self._on_failure(exc)

    def stop(self, *sessions: ResumingLink) -> None:
        """After a failure: cancel every task but the current one, and abort ``sessions``
        (held here until it ends: nothing else waits on it, and the loop keeps only weak
        references to tasks)."""
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        self._aborting = asyncio.gather(*(s.abort() for s in sessions))

    async def wait_others(self, timeout_s: float) -> None:
        """Wait for every task but the current one to end, at most ``timeout_s``."""
        others = [t for t in self._tasks if t is not asyncio.current_task()]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await asyncio.gather(*others, return_exceptions=True)


async def close_quietly(session: TranscriptionSession | SynthesisSession) -> None:
    """Close ``session`` at the end of the stream; one that failed or is gone already is left
    as it is (the consumer ends either way)."""
    with contextlib.suppress(errors.VoxwireError, SessionClosed, TimeoutError):
        await session.close()
