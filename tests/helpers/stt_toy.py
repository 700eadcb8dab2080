"""A toy STT upstream and a settable clock for the property tests of the STT sessions (the
gateway's ``SttEdgeSession`` alone, and with the SDK's ``SttClientState`` across connections).

``ToyUpstream`` is a fake of one adapter stream, written for those tests and named so: it
remembers what it was sent, answers in order, makes a final of everything it has received when
told to (or when a finalize asks; in whole 40 ms steps), acks finalizes and updates, and ends
with a summary after ``close``. A final's transcript is the CRC-32 of the very audio bytes it
covers, so a test can check the words against the audio the client sent at those offsets:
audio replayed twice, skipped or shifted makes a different transcript.
"""

from __future__ import annotations

import zlib

from gateway.stt.session import SttLimits
from voxwire.v1 import transcription_pb2

Request = transcription_pb2.StreamingTranscribeRequest
Response = transcription_pb2.StreamingTranscribeResponse
BYTES_PER_MS = 32  # 16 kHz PCM16 mono
# The gateway's limits in the property tests: a small window, so that runs reach it.
LIMITS = SttLimits(
    max_frame_bytes=8192,
    idle_timeout_s=10.0,
    idle_warning_s=2.0,
    max_session_s=60.0,
    duration_warning_s=5.0,
    replay_window_ms=1000,
    force_final_margin_ms=300,
    max_failovers=2,
    drain_grace_s=3.0,
)
# The toy decodes in 40 ms steps: a final (and a finalize's ack) ends at the last whole step, so
# up to 39 ms stay unacknowledged after it, as with a real model's frames.
STEP_MS = 40


def words(audio: bytes) -> str:
    """What the toy "hears" in ``audio``."""
    return f"crc{zlib.crc32(audio):08x}"


class ToyUpstream:
    """A fake of the adapter's stream (the tests' own): it remembers what it was sent."""

    def __init__(self, config: transcription_pb2.TranscriptionConfig) -> None:
        assert config.HasField("audio_format")
        self.base_ms = config.stream_offset_ms
        self.next_index = config.first_utterance_index
        self.audio = bytearray()
        self.final_through = self.base_ms  # the end of its last final
        self.started = False
        self.closed = False
        self.ended = False
        self.pending: list[Request] = []  # finalizes and updates not answered yet

    @property
    def position_ms(self) -> int:
        return self.base_ms + len(self.audio) // BYTES_PER_MS

    def write(self, request: Request) -> None:
        assert not self.closed, f"a request after close: {request}"
        kind = request.WhichOneof("request")
        if kind == "audio":
            self.audio += request.audio
        elif kind in ("finalize", "update_config"):
            self.pending.append(request)
        elif kind == "close":
            self.closed = True
        else:
            assert kind == "keep_alive", kind

    def final(self) -> Response | None:
        """A final result of the audio since the last one (None when there is none)."""
        start, end = self.final_through, self.position_ms // STEP_MS * STEP_MS
        if end <= start:
            return None
        heard = bytes(
            self.audio[(start - self.base_ms) * BYTES_PER_MS : (end - self.base_ms) * BYTES_PER_MS]
        )
        result = transcription_pb2.TranscriptResult(
            utterance_id=f"u{self.next_index}",
            is_final=True,
            transcript=words(heard),
            start_ms=start,
            end_ms=end,
        )
        self.next_index += 1
        self.final_through = end
        return Response(result=result)

    def answer(self) -> list[Response]:
        """The oldest finalize or update, answered (a finalize makes its final first)."""
        if not self.pending:
            return []
        request = self.pending.pop(0)
        if request.WhichOneof("request") == "finalize":
            out = [r for r in (self.final(),) if r is not None]
            ack = transcription_pb2.FinalizeAck(
                finalize_id=request.finalize.finalize_id, audio_ms=self.final_through
            )
            return [*out, Response(finalize_ack=ack)]
        update = transcription_pb2.UpdateConfigAck(
            update_id=request.update_config.update_id, accepted=True
        )
        return [Response(update_config_ack=update)]
