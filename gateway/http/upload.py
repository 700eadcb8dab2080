"""Turning an uploaded audio body into contract audio as it arrives (POST /v1/stt).

Two paths, both streaming (the file is never held whole in memory):

- Formats the contract carries as they are (raw PCM16 / f32 / G.711 with its format in the
  query string, ``audio/basic``, and WAV of those encodings): ``FrameSplitter`` cuts the body
  into whole frames; a WAV header is read first by ``voxwire.audio.wav.WavHeaderReader``. Pure,
  on the event loop, no copies beyond the frame remainder.
- Compressed or other containers (FLAC, Ogg Vorbis/Opus, MP3, WAV of other sample formats):
  libsndfile (the ``soundfile`` wheel) decodes in a child process of the gateway
  (gateway/http/decoder_child.py, at most ``max_decoders`` at once: a crash in a codec ends
  that upload alone), in a thread there reading the body through ``BodyPipe``, a file object
  that blocks its reader until the bytes it asks for have arrived. libsndfile seeks; the pipe
  keeps the head of the body (headers) and a window behind the reader, and answers SEEK_END
  from Content-Length. FLAC and WAV decode as the body arrives; Ogg and MP3 read their end
  before the first sample (to find the last page or an ID3v1 tag), so they start when the
  upload is complete (measured: docs/edge.md). Without a
  Content-Length a compressed upload is spooled first, to a temporary file, never to memory.
  The open reads only what has arrived (soundfile serializes every open of the process, so an
  open that waited for the network held up every other upload), and is tried again as the
  body grows; a body that is still opening past 2 MiB (an Ogg or MP3) goes to a temporary file.
"""

from __future__ import annotations

import io
import os
import tempfile
import threading
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from voxwire.audio.codecs import downmix, float32_to_int16
from voxwire.audio.formats import PROTO_ENCODINGS, SNDFILE_SUBTYPES, carried_rate
from voxwire.audio.resample import StreamResampler
from voxwire.errors import BodyTooLarge, InvalidAudio, MisalignedAudio

# Bytes kept behind the reader for libsndfile's backward seeks, and the head kept for its
# header re-reads; a seek further back than that is refused (InvalidAudio).
_WINDOW = 1024 * 1024
_HEAD = 256 * 1024
# While libsndfile opens a body, soundfile holds one lock for every open of the process
# (``SoundFile._sf_error_lock``, soundfile 0.14: libsndfile reports a failed open in a global),
# so an open must never wait for the network. It did: one upload whose open waited for bytes
# still to come held up every compressed upload of the gateway, and an MP3 over about 2 MiB
# (its open reads the end of the file, beyond the memory the pipe keeps) waited forever, its
# decoder thread with it; four such uploads and every compressed upload was 503 OVERLOADED.
# So an open reads only what has arrived, and is tried again, from the start, once the body
# has doubled (at least _FIRST_OPEN bytes) or ended. The bytes it may need are kept: in memory
# up to _OPEN_MEMORY, beyond that in a temporary file (an MP3 or Ogg opens once complete).
_FIRST_OPEN = 16 * 1024
_OPEN_MEMORY = 2 * _WINDOW


# libsndfile's frame count for a stream that does not declare its length (SF_COUNT_MAX: a
# FLAC whose STREAMINFO leaves total_samples 0, as streaming encoders do).
_UNKNOWN_FRAMES = 2**63 - 1


class AudioBudget:
    """The most audio one upload may hold (``max_upload_audio_seconds``), checked twice: against
    the length a header declares, before any audio goes to the model, and against the audio
    sent, as it goes (for a header that does not say, or lies). Bytes do not bound audio: FLAC
    of silence holds hours in a few megabytes. Pure; raises BodyTooLarge (413)."""

    def __init__(self, max_seconds: float) -> None:
        self.max_seconds = max_seconds
        self._left: float | None = None  # bytes still allowed, once the format is known

    def declared(self, seconds: float) -> None:
        """A header says the audio lasts ``seconds``."""
        if seconds > self.max_seconds:
            raise BodyTooLarge(
                f"the file declares {seconds:,.1f} s of audio; one upload holds at most "
                f"{self.max_seconds:,.0f} s (split it, or stream it over WS /v1/stt/stream)"
            )

    def start(self, bytes_per_second: int) -> None:
        """The audio sent is laid out at ``bytes_per_second``."""
        self._left = self.max_seconds * max(1, bytes_per_second)

    def sent(self, n: int) -> None:
        """``n`` more bytes of audio are about to go to the model."""
        assert self._left is not None, "start() first"
        self._left -= n
        if self._left < 0:
            raise BodyTooLarge(
                f"the audio passes the most one upload holds, {self.max_seconds:,.0f} s (split "
                "it, or stream it over WS /v1/stt/stream)"
            )


class FrameSplitter:
    """Cuts a byte stream into whole frames of ``frame_bytes`` (keeps the remainder)."""

    def __init__(self, frame_bytes: int) -> None:
        self._frame = frame_bytes
        self._rest = b""

    def feed(self, data: bytes) -> bytes:
        data = self._rest + data if self._rest else data
        cut = len(data) - len(data) % self._frame
        self._rest = data[cut:]
        return data[:cut]

    def finish(self) -> None:
        """Raises MisalignedAudio when the body ended in the middle of a frame."""
        if self._rest:
            raise MisalignedAudio(
                f"the audio ends with {len(self._rest)} bytes of an incomplete "
                f"{self._frame}-byte frame"
            )


class BodyPipe(io.RawIOBase):
    """A file object over an upload that is still arriving: ``read`` blocks (in the decoder's
    worker thread) until the bytes are there or the body ended. Written from the event loop.

    Memory: the first ``_HEAD`` bytes and a ``_WINDOW`` behind the furthest read; with no known
    length (``size`` None) the whole body goes to a temporary file instead.

    Until ``opened``, reads never wait (see ``_OPEN_MEMORY``): a read past what has arrived
    returns what there is and sets ``starved``, and the open is tried again after
    ``rewind`` and ``wait_for_more``; nothing is dropped meanwhile, and beyond
    ``_OPEN_MEMORY`` the body goes to a temporary file.
    """

    def __init__(self, size: int | None, on_room: Callable[[], None] | None = None) -> None:
        """``on_room`` is called (from the reader's thread) when the writer may put again."""
        super().__init__()
        self._size = size
        self._on_room = on_room
        self._cond = threading.Condition()
        self._head = bytearray()
        self._buf = bytearray()  # bytes from _buf_start on
        self._buf_start = 0
        self._received = 0
        self._pos = 0
        self._ended = False
        self._failed: str | None = None
        self.read_error: str | None = None
        self._spool = tempfile.TemporaryFile() if size is None else None
        self._opening = True
        self.starved = False  # an open read past what had arrived (or asked for an unknown end)
        self._tried_at = 0  # bytes received when the open was last tried

    # -- the writer side (event loop; never blocks) --------------------------------------------

    def put(self, data: bytes) -> None:
        with self._cond:
            if self._spool is not None:
                self._spool.seek(0, os.SEEK_END)
                self._spool.write(data)
            else:
                if len(self._head) < _HEAD:
                    self._head += data[: _HEAD - len(self._head)]
                self._buf += data
                if not self._opening:
                    self._trim()  # a reader ahead of the body (it skipped a chunk) keeps none
                elif len(self._buf) > _OPEN_MEMORY:
                    # Nothing has been dropped while opening (_buf_start is 0): all of it
                    # goes to disk, and the rest of the body after it.
                    self._spool = tempfile.TemporaryFile()
                    self._spool.write(self._buf)
                    self._buf = bytearray()
            self._received += len(data)
            self._cond.notify_all()

    def end(self, failure: str | None = None) -> None:
        with self._cond:
            self._ended = True
            self._failed = failure
            if self._spool is not None:
                self._size = self._received
            self._cond.notify_all()

    def exhausted(self) -> bool:
        """Whether the body ended whole (no failure) and the reader has read all of it: a
        decoder that fails now stopped at the body's end, not inside it."""
        with self._cond:
            return self._ended and self._failed is None and self._pos >= self._received

    @property
    def received(self) -> int:
        """Bytes of the body put so far."""
        with self._cond:
            return self._received

    def room(self) -> bool:
        """Whether the writer may put more now (the reader is not too far behind)."""
        with self._cond:
            return self._has_room()

    def _has_room(self) -> bool:
        # Under self._cond. On disk, or opening (the body goes to disk past _OPEN_MEMORY): no
        # bound; in memory, twice the window behind the reader.
        return self._spool is not None or self._opening or len(self._buf) < 2 * _WINDOW

    # -- the open (the decoder's thread) ---------------------------------------------------------

    def rewind(self) -> None:
        """Before an attempt to open: read from the start, not starved."""
        with self._cond:
            self._pos = 0
            self.starved = False
            self._tried_at = self._received

    def wait_for_more(self) -> None:
        """After a starved open (outside soundfile's lock): until the body has doubled since
        the attempt (at least ``_FIRST_OPEN`` bytes; once it goes to disk, an MP3 or an Ogg
        that reads its end, until it is complete) or ended. The feeder ends the pipe on every
        path, a failed or cancelled upload too, so this wait ends with the upload."""
        with self._cond:
            while not self._ended and (
                self._spool is not None or self._received < max(2 * self._tried_at, _FIRST_OPEN)
            ):
                self._cond.wait()

    def opened(self) -> None:
        """The open succeeded on what had arrived: reads wait for the body from now on, and
        what is behind the window is dropped."""
        with self._cond:
            self._opening = False
            self._trim()

    # -- the reader side (libsndfile, in a worker thread) --------------------------------------

    def __repr__(self) -> str:
        # libsndfile's errors name the file by its repr ("Error opening <...>: Format not
        # recognised."), and they reach the client.
        return "the upload"

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_END:
            with self._cond:
                if self._opening and self._size is None and not self._ended:
                    self.starved = True  # the end is not known yet: try again later
                while self._size is None and not self._ended and not self._opening:
                    self._cond.wait()
                offset += self._size if self._size is not None else self._received
        elif whence == os.SEEK_CUR:
            offset += self._pos
        self._pos = max(0, offset)
        return self._pos

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        # Never raises: this runs inside libsndfile's read callback (soundfile's vio_read, a
        # cffi callback), where an exception is printed to stderr as "Exception ignored" with
        # its traceback and read as 0 bytes anyway. A body that failed is reported by its
        # feeder (gateway/http/stt.py); a read outside the kept window is kept in
        # ``read_error`` for ``decode_blocks``.
        want = len(buffer)
        with self._cond:
            if self._opening:
                # Inside soundfile's lock: never wait (see _OPEN_MEMORY).
                if self._received < self._pos + want and not self._ended:
                    self.starved = True
            else:
                while self._received < self._pos + want and not self._ended:
                    self._cond.wait()
            if self._failed is not None:
                return 0
            try:
                data = self._slice(self._pos, min(self._received, self._pos + want))
            except OSError as exc:
                self.read_error = str(exc)
                return 0
            self._pos += len(data)
            if not self._opening:
                self._trim()
            room = self._has_room()
        buffer[: len(data)] = data
        if room and self._on_room is not None:
            self._on_room()
        return len(data)

    def _slice(self, start: int, end: int) -> bytes:
        if end <= start:
            return b""
        if self._spool is not None:
            self._spool.seek(start)
            return self._spool.read(end - start)
        if end <= len(self._head):
            return bytes(self._head[start:end])
        if start < self._buf_start:
            raise OSError(f"seek back to {start} is outside the kept window")
        return bytes(self._buf[start - self._buf_start : end - self._buf_start])

    def _trim(self) -> None:
        drop = self._pos - _WINDOW - self._buf_start
        if drop > 0 and self._spool is None:
            del self._buf[:drop]
            self._buf_start += drop

    def close(self) -> None:
        if self._spool is not None:
            self._spool.close()
        super().close()


def _open(pipe: BodyPipe) -> Any:
    """libsndfile's open on what has arrived of the body, again each time it read past it
    (``BodyPipe.starved``), until it opened or failed on bytes that were there. Raises
    InvalidAudio."""
    import soundfile

    while True:
        pipe.rewind()
        try:
            sound = soundfile.SoundFile(pipe)
        except (soundfile.LibsndfileError, RuntimeError, OSError) as exc:
            if not pipe.starved:
                raise InvalidAudio(f"cannot decode the audio: {pipe.read_error or exc}") from None
        else:
            if not pipe.starved:
                pipe.opened()
                return sound
            sound.close()  # opened on a part of what it read: not to be trusted
        pipe.wait_for_more()


@dataclass(frozen=True, slots=True)
class DecodedFormat:
    """What a decoder sends (mono PCM16 at ``rate``), and what the file says of its own audio:
    its rate, channels and, when libsndfile's subtype is one the contract carries, its
    encoding (a ``voxwire.v1.AudioEncoding``; 0 for FLAC of 24 bits, Vorbis, MP3, ...)."""

    rate: int
    source_rate: int
    source_channels: int
    source_encoding: int = 0


@dataclass(slots=True)
class DecodeReport:
    """What ``decode_blocks`` found out besides the audio (set before its generator ends)."""

    # The body ended before the frames its header declares (a FLAC stream cut short): what
    # was decoded up to the cut went out, and the upload is reported truncated.
    truncated: bool = False


def decode_blocks(
    pipe: BodyPipe,
    block_frames: int = 1600,
    report: DecodeReport | None = None,
    budget: AudioBudget | None = None,
    rates: Collection[int] = (),
) -> Iterator[tuple[DecodedFormat, bytes]]:
    """Decode with libsndfile (worker thread): mono PCM16 blocks at a contract rate, one of
    ``rates`` when given (those the model takes: ``carried_rate``).

    ``budget``: a length the file declares is checked against it once opened (BodyTooLarge
    before the first block); not an MP3's, which libsndfile estimates from the first frame's
    bit rate (a VBR file's may be far off), nor a FLAC's that declares none.

    A decoder error once the whole body has been read, short of the frames the header
    declares, is a file cut short (libFLAC loses sync in the last, incomplete frame): the
    blocks decoded before it stand, and ``report.truncated`` is set, as for a WAV whose data
    chunk is cut (``gateway/http/stt.py``). Raises InvalidAudio when libsndfile cannot read the
    body, or fails inside it (corrupt audio)."""
    import soundfile  # the libsndfile binding; imported here so it loads only when needed

    sound = _open(pipe)
    with sound:
        rate = sound.samplerate
        out_rate = carried_rate(rate, rates)
        subtype = SNDFILE_SUBTYPES.get(sound.subtype)
        source = PROTO_ENCODINGS[subtype] if subtype is not None else 0  # 0: unspecified
        if budget is not None and sound.format != "MP3" and 0 < sound.frames < _UNKNOWN_FRAMES:
            budget.declared(sound.frames / rate)
        resampler = StreamResampler(rate, out_rate, latency="bulk")  # an upload: the cheapest
        fmt = DecodedFormat(out_rate, rate, sound.channels, source)
        decoded = 0
        try:
            # float32 whatever the source: libsndfile scales integer samples into [-1, 1), but
            # does not scale float samples to integers unless told (SFC_SET_SCALE_FLOAT_INT_READ,
            # off by default), so reading float WAV, AIFF or FLAC-labelled float as int16 gave
            # -1, 0 and 1: silence. int16 goes through float32 and back exactly (x / 32768).
            for block in sound.blocks(blocksize=block_frames, dtype="float32", always_2d=True):
                if not np.isfinite(block).all():
                    raise InvalidAudio("the audio has NaN or infinite samples")
                decoded += len(block)
                mono = downmix(block)
                if not resampler.is_passthrough:
                    mono = resampler.process(mono)
                yield fmt, float32_to_int16(mono).astype("<i2").tobytes()
        except (soundfile.LibsndfileError, RuntimeError, OSError) as exc:
            if not (report is not None and 0 < decoded < sound.frames and pipe.exhausted()):
                raise InvalidAudio(f"the audio is corrupt: {pipe.read_error or exc}") from None
            report.truncated = True
        if pipe.read_error is not None:
            raise InvalidAudio(f"cannot decode the audio: {pipe.read_error}")
        if not resampler.is_passthrough:
            yield fmt, float32_to_int16(resampler.flush()).astype("<i2").tobytes()
