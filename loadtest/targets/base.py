"""The target interface: what the session drivers need from anything they load.

A target is opened once per worker (channels, model discovery) and then opens streams. A stream
sends audio or text when the driver says, and yields typed events (loadtest.events), each
stamped with its receive time by the target's reader; ``Ended`` is always last and carries the
status, the voxwire error reason and the stage timings. Sends never wait for answers, so the
driver's schedule decides when input goes out. A new wire (the gateway's WebSocket) is a new
module with these two classes; nothing else changes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

from loadtest.events import Ended, Event, connect_failed
from voxwire.audio.codecs import Encoding
from voxwire.audio.formats import PROTO_ENCODINGS
from voxwire.v1 import audio_pb2


class TargetError(Exception):
    """The target cannot be used at all (unreachable at start, unknown model)."""


@dataclass(frozen=True, slots=True)
class SttOptions:
    model: str
    rate_hz: int
    interim_results: bool
    deadline_s: float  # for the whole call
    encoding: Encoding = Encoding.PCM_S16LE  # of the audio sent

    @property
    def audio_format(self) -> audio_pb2.AudioFormat:
        return audio_pb2.AudioFormat(
            encoding=PROTO_ENCODINGS[self.encoding], sample_rate_hz=self.rate_hz, channels=1
        )


@dataclass(frozen=True, slots=True)
class TtsOptions:
    model: str
    voice: str
    sample_rate_hz: int
    deadline_s: float
    encoding: Encoding = Encoding.PCM_S16LE  # of the audio asked for

    @property
    def audio_format(self) -> audio_pb2.AudioFormat:
        return audio_pb2.AudioFormat(
            encoding=PROTO_ENCODINGS[self.encoding], sample_rate_hz=self.sample_rate_hz
        )


class SttStream(Protocol):
    async def send_audio(self, pcm: bytes) -> None:
        """Send one chunk now. Raises nothing for a stream the server already ended (the end
        arrives as ``Ended``)."""

    async def finish(self) -> None:
        """No more audio: close the stream gracefully (pending audio becomes finals)."""

    async def next_event(self) -> Event:
        """The next event; ``Ended`` last. The caller bounds the wait (asyncio.timeout)."""

    def cancel(self) -> None:
        """Abandon the stream at once (idempotent)."""


class TtsStream(Protocol):
    async def open_context(self, context_id: str) -> None: ...

    async def append(self, context_id: str, text: str) -> None: ...

    async def close_context(self, context_id: str) -> None:
        """No more text for the context: its audio is finished, then ``ContextDone``."""

    async def finish(self) -> None:
        """No more contexts: the stream ends after the open ones (then ``Ended``)."""

    async def next_event(self) -> Event: ...

    def cancel(self) -> None: ...


class UnconnectedStream:
    """An STT or TTS stream whose connection could not be made: it sends nothing and ends at
    once with ``UNAVAILABLE/CONNECT_FAILED``, as a gRPC call to nothing listening does, so the
    session driver counts it as any failed session (not as an exception of the client's)."""

    def __init__(self) -> None:
        self._ended: Ended = connect_failed(time.monotonic())

    async def send_audio(self, pcm: bytes) -> None:
        pass

    async def open_context(self, context_id: str) -> None:
        pass

    async def append(self, context_id: str, text: str) -> None:
        pass

    async def close_context(self, context_id: str) -> None:
        pass

    async def finish(self) -> None:
        pass

    async def next_event(self) -> Event:
        return self._ended

    def cancel(self) -> None:
        pass


class Target(Protocol):
    name: str

    async def start(self) -> None:
        """Connect and discover what is needed. Raises TargetError."""

    async def close(self) -> None: ...

    async def open_stt(self, options: SttOptions) -> SttStream:
        """Open a stream and send its configuration (not waiting for an answer)."""

    async def open_tts(self, options: TtsOptions) -> TtsStream: ...
