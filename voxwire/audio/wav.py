"""WAV for streams: a header for audio of unknown length, and an incremental header reader.

Shared by the gateway (``POST /v1/stt`` reads an upload's header as it arrives; ``POST /v1/tts``
writes the streaming header) and the CLI (a WAV stream on stdin).

Writing: RIFF/WAVE with the RIFF and data sizes set to 0xFFFFFFFF, the convention for a WAV
whose length is not known when its header goes out (what ffmpeg and sox write to pipes);
players read to the end of the stream. Format tags from the RIFF WAVE specification
(Microsoft, "Multimedia Programming Interface and Data Specifications 1.0"): 1 PCM, 3 IEEE
float, 6 A-law, 7 mu-law (ITU-T G.711).

Reading (``WavHeaderReader``): a pure, incremental parser fed the upload as it arrives. It
reads RIFF/WAVE, the ``fmt `` chunk and skips other chunks up to ``data``; the samples are the
data chunk's size (``data_bytes``; chunks after it, such as LIST, are not audio), or the rest of
the body when the size is unknown (0, or 0x7FFF0000 and up: the placeholders streaming writers
leave, ``_PLACEHOLDER``). It holds at
most ``max_header_bytes`` (a header is small; a hostile upload must not make it buffer).
Anything malformed raises InvalidAudio naming what was wrong; a well-formed WAV that is not
passed on as it is (other sample formats, more than two channels, a rate the contract does not
carry, RF64) raises ``OtherWavFormat``, and libsndfile decodes it. Except for RF64 it is raised
once the data chunk's header has been read, so ``data_end`` says where the samples end and the
caller can tell a body cut short (libsndfile shortens its frame count without a word).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from voxwire.audio.codecs import Encoding
from voxwire.audio.formats import rates_for
from voxwire.errors import InvalidAudio

FORMAT_TAGS = {Encoding.PCM_S16LE: 1, Encoding.PCM_F32LE: 3, Encoding.ALAW: 6, Encoding.MULAW: 7}
_BITS = {Encoding.PCM_S16LE: 16, Encoding.PCM_F32LE: 32, Encoding.ALAW: 8, Encoding.MULAW: 8}
_UNKNOWN = 0xFFFFFFFF
# A data size from here up is a writer's placeholder, not a length: a recorder writing to a
# pipe cannot patch its header at the end, and declares about the most a WAV can hold
# (arecord's capture: 2 GiB; sndio's WAV_DATAMAX: 0x7fff0000; streaming_header here:
# 0xFFFFFFFF). Read as lengths, 16 kHz mono declared 18.6 hours, and an upload of a live
# recording was refused 413 before any audio was heard. A WAV that truly holds that much is
# over the gateway's upload limit anyway; on the CLI's stdin its chunks after the data (LIST
# tags) would be read as audio, the same as for any stream of unknown length.
_PLACEHOLDER = 0x7FFF0000
_EXTENSIBLE = 0xFFFE


def streaming_header(encoding: Encoding, rate: int, channels: int = 1) -> bytes:
    """A 44-byte (PCM) or 46-byte (others: cbSize) header with unknown sizes."""
    bits = _BITS[encoding]
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", FORMAT_TAGS[encoding], channels, rate, rate * block, block, bits)
    if encoding is not Encoding.PCM_S16LE:
        fmt += struct.pack("<H", 0)  # cbSize: non-PCM formats carry the extension size
    return (
        b"RIFF"
        + struct.pack("<I", _UNKNOWN)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"data"
        + struct.pack("<I", _UNKNOWN)
    )


class OtherWavFormat(InvalidAudio):
    """A well-formed WAV whose samples the contract does not carry as they are (24-bit PCM,
    8-bit unsigned, three channels, 96 kHz, RF64, ...): a decoder (libsndfile) can still read
    it, downmixing and resampling."""


@dataclass(frozen=True, slots=True)
class WavFormat:
    encoding: Encoding
    rate: int
    channels: int


class WavHeaderReader:
    """Feed bytes until ``format`` is set; ``feed`` then returns the first sample bytes."""

    def __init__(self, max_header_bytes: int = 64 * 1024) -> None:
        self._buf = bytearray()
        self._max = max_header_bytes
        self.format: WavFormat | None = None
        # The data chunk's size in bytes, once it is read; None when the header leaves it
        # unknown (the samples then run to the end of the body).
        self.data_bytes: int | None = None
        # Where the data chunk's samples start in the stream (bytes fed before them).
        self.data_offset: int | None = None
        # A fmt that another decoder must read: raised once the data chunk's size is known
        # (or the header ends without one), so the caller can tell a body cut short.
        self._other: OtherWavFormat | None = None

    def buffered(self) -> bytes:
        """What was fed and not yet returned (the header so far)."""
        return bytes(self._buf)

    def feed(self, data: bytes) -> bytes:
        """Returns sample bytes once the header is complete (b"" before). Raises InvalidAudio."""
        if self.format is not None:
            return data
        self._buf += data
        if len(self._buf) >= 12 and self._buf[:4] == b"RF64" and self._buf[8:12] == b"WAVE":
            raise OtherWavFormat("RF64 WAV (64-bit sizes)")
        if len(self._buf) >= 12 and (self._buf[:4] != b"RIFF" or self._buf[8:12] != b"WAVE"):
            raise InvalidAudio("not a WAV file (no RIFF/WAVE header)")
        pos = 12
        fmt: WavFormat | None = None
        while len(self._buf) >= pos + 8:
            chunk_id = bytes(self._buf[pos : pos + 4])
            (size,) = struct.unpack_from("<I", self._buf, pos + 4)
            body = pos + 8
            if chunk_id == b"data":
                self.data_bytes = None if size == 0 or size >= _PLACEHOLDER else size
                self.data_offset = body
                if self._other is not None:
                    raise self._other
                if fmt is None:
                    raise InvalidAudio("WAV data chunk before its fmt chunk")
                self.format = fmt
                rest = bytes(self._buf[body:])
                self._buf.clear()
                return rest
            if len(self._buf) < body + size:
                break
            if chunk_id == b"fmt ":
                try:
                    fmt = self._fmt(bytes(self._buf[body : body + size]))
                except OtherWavFormat as exc:
                    # Kept without its traceback, whose frames hold this reader (a cycle).
                    self._other = exc.with_traceback(None)
            pos = body + size + (size & 1)  # chunks are word-aligned
        if len(self._buf) > self._max:
            if self._other is not None:  # the other decoder may know this header better
                # Raised without this reader or this frame keeping it (its traceback holds
                # both: a reference cycle).
                other, self._other = self._other, None
                try:
                    raise other
                finally:
                    del other
            raise InvalidAudio(f"WAV header longer than {self._max} bytes (no data chunk)")
        return b""

    @property
    def data_end(self) -> int | None:
        """Where the data chunk ends in the stream, when the header says (None: unknown)."""
        if self.data_offset is None or self.data_bytes is None:
            return None
        return self.data_offset + self.data_bytes

    def _fmt(self, body: bytes) -> WavFormat:
        if len(body) < 16:
            raise InvalidAudio(f"WAV fmt chunk of {len(body)} bytes (at least 16)")
        tag, channels, rate, _, block, bits = struct.unpack_from("<HHIIHH", body)
        if tag == _EXTENSIBLE and len(body) >= 26:
            (tag,) = struct.unpack_from("<H", body, 24)  # the SubFormat GUID's first two bytes
        by_tag = {
            (1, 16): Encoding.PCM_S16LE,
            (3, 32): Encoding.PCM_F32LE,
            (6, 8): Encoding.ALAW,
            (7, 8): Encoding.MULAW,
        }
        encoding = by_tag.get((tag, bits))
        if encoding is None:
            raise OtherWavFormat(
                f"WAV format tag {tag} with {bits}-bit samples is not supported; use 16-bit "
                "PCM, 32-bit float, A-law or mu-law"
            )
        if channels < 1 or rate <= 0 or block != channels * bits // 8:
            raise InvalidAudio(
                f"inconsistent WAV fmt: {channels} channels, {rate} Hz, block {block}"
            )
        if channels > 2:
            raise OtherWavFormat(f"WAV of {channels} channels (at most 2)")
        rates = rates_for(encoding)
        if rate not in rates:
            # Name the rate and the ones that go, so the user can convert to one of them.
            raise OtherWavFormat(
                f"WAV at {rate} Hz: {encoding.name} is carried at "
                f"{', '.join(str(r) for r in rates)} Hz"
            )
        return WavFormat(encoding, rate, channels)
