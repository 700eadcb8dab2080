"""ContextConverter: one TTS context's upstream responses with their audio in the format the
client asked, when the model does not make it (a server that does not resample, 16 kHz PCM16
only, and a phone bridge's 8 kHz mu-law: docs/edge.md, ``WS /v1/tts/stream``).

Each chunk keeps its sequence number and its place on the timeline (``start_ms``,
``duration_ms``), only its bytes are converted: so the session's pacing, flush acks, failover
and resume, which all count in chunks and milliseconds, see the contract's chunks. The resampler
(``voxwire.audio.resample``, low latency) holds back the last 4-13 ms of its output (its filter
looks that far ahead), so a chunk waits here until the output that covers it has come, that is
until the next chunk: while one does, the responses behind it (word timestamps, a flush ack,
``done``) wait behind it, in order. A flush ack or ``done`` means no audio follows before it:
the resampler gives up what it holds, every chunk waiting goes, and the audio after starts a
resampler of its own (a flush is where the client may wait for the audio's end, a turn's).
"""

from __future__ import annotations

from collections import deque

from voxwire.audio.codecs import PcmFormat
from voxwire.audio.convert import FormatConverter
from voxwire.v1 import synthesis_pb2

Response = synthesis_pb2.StreamingSynthesizeResponse

# Responses that keep their place behind the audio before them; the rest (opened, notices,
# errors) concern the call, and pass at once.
ORDERED = frozenset({"audio", "words", "flush_ack", "done"})
_ENDS_AUDIO = frozenset({"flush_ack", "done"})


class ContextConverter:
    """``made`` audio (the model's format) as ``asked``: ``feed`` each ``ORDERED`` response,
    get back those ready, in order."""

    __slots__ = ("_asked", "_converter", "_held", "_in_frames", "_made", "_out", "_out_frames")

    def __init__(self, made: PcmFormat, asked: PcmFormat) -> None:
        self._made, self._asked = made, asked
        self._converter = FormatConverter(made, asked)
        # Responses waiting, each audio chunk with the asked frames (counted from the current
        # resampler's start) its end is at: floor, so the resampler's rounding falls to the
        # last chunk before a flush, which takes what remains.
        self._held: deque[tuple[Response, int]] = deque()
        self._out = bytearray()  # converted audio not yet given to a chunk
        self._in_frames = 0  # the model's frames fed to the current resampler
        self._out_frames = 0  # asked frames given to chunks from it

    @property
    def made(self) -> PcmFormat:
        return self._made

    @property
    def held(self) -> int:
        """Responses waiting for the resampler's output."""
        return len(self._held)

    def fresh(self) -> ContextConverter:
        """A converter of the same formats with nothing held (a failover's new call)."""
        return ContextConverter(self._made, self._asked)

    def feed(self, resp: Response) -> list[Response]:
        """``resp`` and what it lets go, in order.

        Raises AudioDecodeError: a chunk is not whole frames of the model's format."""
        kind = resp.WhichOneof("response")
        if kind == "audio":
            self._out += self._converter.convert(resp.audio.audio)
            self._in_frames += len(resp.audio.audio) // self._made.bytes_per_frame
            rates = self._asked.sample_rate_hz, self._made.sample_rate_hz
            self._held.append((resp, self._in_frames * rates[0] // rates[1]))
            return self._ready()
        self._held.append((resp, -1))
        if kind not in _ENDS_AUDIO:
            return self._ready()
        self._out += self._converter.flush()
        # All the audio is out of the resampler: the last chunk waiting ends where it ends,
        # however it rounded.
        for i in range(len(self._held) - 1, -1, -1):
            if self._held[i][1] >= 0:
                self._held[i] = (self._held[i][0], self._out_frames + self._frames_out())
                break
        ready = self._ready()
        self._converter = FormatConverter(self._made, self._asked)
        self._in_frames = self._out_frames = 0
        return ready

    def _frames_out(self) -> int:
        """Asked frames converted and not yet given to a chunk."""
        return len(self._out) // self._asked.bytes_per_frame

    def _ready(self) -> list[Response]:
        ready: list[Response] = []
        held, frame = self._held, self._asked.bytes_per_frame
        while held:
            resp, end = held[0]
            if end >= 0:
                take = (end - self._out_frames) * frame
                if len(self._out) < take:
                    break
                resp.audio.audio = bytes(self._out[:take])
                del self._out[:take]
                self._out_frames += take // frame
            ready.append(resp)
            held.popleft()
        return ready
