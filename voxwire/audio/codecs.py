"""Pure, synchronous audio codecs: PCM16, float32 and G.711 (mu-law, A-law).

Everything here works on ``bytes`` and numpy arrays only: no I/O, no asyncio, no global
mutable state. The internal sample representation is float32 mono in [-1, 1]:

    wire bytes --decode(data, fmt)--> float32 mono --encode(samples, encoding)--> wire bytes

Errors::

    ValueError
     +-- AudioDecodeError   malformed wire audio or an unsupported PcmFormat
          +-- InvalidSamples   well-formed audio whose samples are not valid (NaN, infinity)

``encode`` raises plain ``ValueError``/``TypeError`` for bad arrays: those are programming
errors inside the process, not bad client input.

G.711 follows ITU-T Recommendation G.711 (11/88) "Pulse code modulation (PCM) of voice
frequencies" (Tables 1a/1b for A-law, 2a/2b for mu-law), using the segment algorithm of
Sun Microsystems' public-domain reference ``g711.c``, the code CPython's ``audioop`` uses, so
the output is bit-exact with ``audioop`` (the tests check all 65536 inputs). Mu-law quantises
the 14 most significant bits of a sample, A-law the 13 most significant bits.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

__all__ = [
    "AudioDecodeError",
    "Encoding",
    "InvalidSamples",
    "PcmFormat",
    "decode",
    "encode",
    "float32_to_int16",
    "int16_to_float32",
]

Float32Array = npt.NDArray[np.float32]
Int16Array = npt.NDArray[np.int16]


class AudioDecodeError(ValueError):
    """Wire audio is malformed, or its declared format is not supported."""


class InvalidSamples(AudioDecodeError):
    """Wire audio of the right length whose samples are not valid for the encoding."""


class Encoding(enum.Enum):
    """Sample encodings on the wire; values are the contract's lowercase names."""

    PCM_S16LE = "pcm_s16le"
    PCM_F32LE = "pcm_f32le"
    MULAW = "mulaw"
    ALAW = "alaw"

    @property
    def bytes_per_sample(self) -> int:
        return _BYTES_PER_SAMPLE[self]


_BYTES_PER_SAMPLE: Final[dict[Encoding, int]] = {
    Encoding.PCM_S16LE: 2,
    Encoding.PCM_F32LE: 4,
    Encoding.MULAW: 1,
    Encoding.ALAW: 1,
}

MAX_CHANNELS: Final = 2


@dataclass(frozen=True, slots=True)
class PcmFormat:
    """How a byte stream of audio is laid out: encoding, rate, interleaved channels.

    Raises:
        AudioDecodeError: ``sample_rate_hz`` is not a positive int, or ``channels`` is not
            in 1..2.
    """

    encoding: Encoding
    sample_rate_hz: int
    channels: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.encoding, Encoding):
            raise AudioDecodeError(f"encoding must be an Encoding, got {self.encoding!r}")
        if isinstance(self.sample_rate_hz, bool) or not isinstance(self.sample_rate_hz, int):
            raise AudioDecodeError(f"sample_rate_hz must be an int, got {self.sample_rate_hz!r}")
        if self.sample_rate_hz <= 0:
            raise AudioDecodeError(f"sample_rate_hz must be positive, got {self.sample_rate_hz}")
        if self.channels not in range(1, MAX_CHANNELS + 1):
            raise AudioDecodeError(f"channels must be 1..{MAX_CHANNELS}, got {self.channels}")

    @property
    def bytes_per_frame(self) -> int:
        """Bytes of one frame: one sample for each channel."""
        return self.encoding.bytes_per_sample * self.channels

    @property
    def bytes_per_second(self) -> int:
        return self.bytes_per_frame * self.sample_rate_hz

    def frames_in(self, nbytes: int) -> int:
        """Number of whole frames in ``nbytes`` bytes.

        Raises:
            AudioDecodeError: ``nbytes`` is negative or not a multiple of the frame size.
        """
        frames, rest = divmod(nbytes, self.bytes_per_frame)
        if nbytes < 0 or rest:
            raise AudioDecodeError(
                f"{nbytes} bytes is not a whole number of {self.encoding.value} frames "
                f"({self.bytes_per_frame} bytes each, {self.channels} channel(s))"
            )
        return frames

    def nbytes_for(self, frames: int) -> int:
        """Bytes taken by ``frames`` frames."""
        return frames * self.bytes_per_frame

    def duration_s(self, nbytes: int) -> float:
        """Duration of ``nbytes`` bytes of audio in seconds.

        Raises:
            AudioDecodeError: as ``frames_in``.
        """
        return self.frames_in(nbytes) / self.sample_rate_hz


# --- PCM16 <-> float32 -------------------------------------------------------------------
# Scale by 2**15 both ways: exact in float32 (a power of two), so int16 -> float32 -> int16
# is the identity and full scale negative maps to exactly -1.0.
_INT16_SCALE: Final = np.float32(32768.0)
_INV_INT16_SCALE: Final = np.float32(1.0 / 32768.0)


def int16_to_float32(samples: Int16Array) -> Float32Array:
    """Convert int16 samples to float32 in [-1, 1) (x / 32768). Returns a new array."""
    out = samples.astype(np.float32)
    out *= _INV_INT16_SCALE
    return out


def downmix(frames: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Mono from ``frames`` (frames x channels, float32, as libsndfile reads them): the mean
    of the channels, in float32 so that nothing overflows; one channel as it is."""
    return frames.mean(axis=1, dtype=np.float32) if frames.shape[1] > 1 else frames[:, 0]


def float32_to_int16(samples: npt.NDArray[np.floating[Any]]) -> Int16Array:
    """Convert float samples to int16: scale by 32768, round half to even, clip.

    Values outside [-1, 1) saturate at -32768 / 32767 (resampler overshoot near full scale
    would otherwise wrap around). NaN is not checked here; ``encode`` checks it.
    """
    scaled = np.multiply(samples, _INT16_SCALE, dtype=np.float32)
    np.rint(scaled, out=scaled)
    np.clip(scaled, -32768.0, 32767.0, out=scaled)
    return scaled.astype(np.int16)


# --- G.711 tables --------------------------------------------------------------------------
# Built once at import, vectorised over every input, from the reference segment algorithm.
# Encoding is then one 65536-entry lookup indexed by the int16 bit pattern, decoding one
# 256-entry lookup: no per-sample Python.

# Segment end points (inclusive) of the magnitude, G.711 Table 1 / Table 2 as in g711.c.
_MULAW_SEG_END: Final = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])
_ALAW_SEG_END: Final = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])
_MULAW_BIAS: Final = 0x84  # 132 = 33 << 2: mu-law encodes |x| + 33 in the 14-bit domain
_MULAW_CLIP: Final = 8159  # largest 14-bit magnitude before the bias pushes it off segment 7


def _all_int16() -> npt.NDArray[np.int32]:
    # Index i of a 65536 table is the uint16 bit pattern of the int16 sample.
    return np.arange(1 << 16, dtype=np.uint16).view(np.int16).astype(np.int32)


def _mulaw_encode_table() -> npt.NDArray[np.uint8]:
    pcm = _all_int16() >> 2  # G.711 mu-law works on 14-bit samples (floor shift, like g711.c)
    negative = pcm < 0
    magnitude = np.minimum(np.where(negative, -pcm, pcm), _MULAW_CLIP) + (_MULAW_BIAS >> 2)
    seg = np.searchsorted(_MULAW_SEG_END, magnitude, side="left")  # first end >= magnitude
    mantissa = (magnitude >> np.minimum(seg + 1, 8)) & 0xF
    code = np.where(seg >= 8, 0x7F, (np.minimum(seg, 7) << 4) | mantissa)
    # Mu-law transmits every bit inverted; the sign bit is 1 for positive samples.
    table: npt.NDArray[np.uint8] = (code ^ np.where(negative, 0x7F, 0xFF)).astype(np.uint8)
    return table


def _alaw_encode_table() -> npt.NDArray[np.uint8]:
    pcm = _all_int16() >> 3  # G.711 A-law works on 13-bit samples
    negative = pcm < 0
    magnitude = np.where(negative, -pcm - 1, pcm)  # one's complement: A-law has no -0
    seg = np.searchsorted(_ALAW_SEG_END, magnitude, side="left")
    shift = np.where(seg < 2, 1, np.minimum(seg, 8))  # segments 0 and 1 share one step size
    code = np.where(seg >= 8, 0x7F, (np.minimum(seg, 7) << 4) | ((magnitude >> shift) & 0xF))
    # A-law inverts the even bits (0x55); the sign bit is 1 for positive samples.
    table: npt.NDArray[np.uint8] = (code ^ np.where(negative, 0x55, 0xD5)).astype(np.uint8)
    return table


def _mulaw_decode_table() -> Int16Array:
    code = ~np.arange(256, dtype=np.int32) & 0xFF
    seg = (code >> 4) & 0x7
    # Reconstruct at the middle of the decision interval, in the 16-bit domain.
    magnitude = ((((code & 0xF) << 3) + _MULAW_BIAS) << seg) - _MULAW_BIAS
    return np.where(code & 0x80, -magnitude, magnitude).astype(np.int16)


def _alaw_decode_table() -> Int16Array:
    code = np.arange(256, dtype=np.int32) ^ 0x55
    seg = (code >> 4) & 0x7
    base = ((code & 0xF) << 4) + np.where(seg == 0, 8, 0x108)
    magnitude = np.where(seg > 1, base << np.maximum(seg - 1, 0), base)
    return np.where(code & 0x80, magnitude, -magnitude).astype(np.int16)


MULAW_ENCODE_TABLE: Final = _mulaw_encode_table()
ALAW_ENCODE_TABLE: Final = _alaw_encode_table()
MULAW_DECODE_TABLE: Final = _mulaw_decode_table()
ALAW_DECODE_TABLE: Final = _alaw_decode_table()
for _table in (MULAW_ENCODE_TABLE, ALAW_ENCODE_TABLE, MULAW_DECODE_TABLE, ALAW_DECODE_TABLE):
    _table.flags.writeable = False

# Decoding straight to float32 saves a conversion per chunk.
_DECODE_TO_FLOAT: Final[dict[Encoding, Float32Array]] = {
    Encoding.MULAW: int16_to_float32(MULAW_DECODE_TABLE),
    Encoding.ALAW: int16_to_float32(ALAW_DECODE_TABLE),
}
_ENCODE_FROM_INT16: Final[dict[Encoding, npt.NDArray[np.uint8]]] = {
    Encoding.MULAW: MULAW_ENCODE_TABLE,
    Encoding.ALAW: ALAW_ENCODE_TABLE,
}


# --- public codec API ---------------------------------------------------------------------
def decode(data: bytes | bytearray | memoryview, fmt: PcmFormat) -> Float32Array:
    """Decode wire audio to float32 mono in [-1, 1]; stereo is downmixed by the mean.

    Returns a new, writable, C-contiguous array (empty for empty input). Float32 input
    outside [-1, 1] is clipped.

    Raises:
        AudioDecodeError: the length is not a multiple of ``fmt.bytes_per_frame`` (for
            example odd-length PCM16).
        InvalidSamples: float32 input holds NaN or infinity.
    """
    frames = fmt.frames_in(len(data))
    encoding = fmt.encoding
    if encoding is Encoding.PCM_S16LE:
        samples = int16_to_float32(np.frombuffer(data, dtype="<i2"))
    elif encoding is Encoding.PCM_F32LE:
        raw = np.frombuffer(data, dtype="<f4")
        if not np.isfinite(raw).all():
            raise InvalidSamples("float32 audio contains NaN or infinity")
        samples = np.clip(raw, -1.0, 1.0).astype(np.float32, copy=False)
    else:
        samples = _DECODE_TO_FLOAT[encoding][np.frombuffer(data, dtype=np.uint8)]
    if fmt.channels == 1:
        return samples
    # Mean of interleaved channels; exact for two PCM16 channels (sum fits in 17 bits).
    downmixed: Float32Array = samples.reshape(frames, fmt.channels).mean(axis=1, dtype=np.float32)
    return downmixed


def encode(samples: npt.NDArray[np.floating[Any]], encoding: Encoding) -> bytes:
    """Encode float mono samples in [-1, 1] to wire bytes; out-of-range values saturate.

    PCM16 rounds half to even after scaling by 32768; G.711 encodes that PCM16 value.

    Raises:
        TypeError: ``samples`` is not a floating-point numpy array.
        ValueError: ``samples`` is not one-dimensional, or holds NaN or infinity.
    """
    if not isinstance(samples, np.ndarray) or not np.issubdtype(samples.dtype, np.floating):
        raise TypeError(f"samples must be a float numpy array, got {type(samples).__name__}")
    if samples.ndim != 1:
        raise ValueError(f"samples must be mono (1-D), got shape {samples.shape}")
    if not np.isfinite(samples).all():
        raise ValueError("samples contain NaN or infinity")
    if encoding is Encoding.PCM_F32LE:
        clipped = np.clip(samples, -1.0, 1.0).astype("<f4", copy=False)
        return clipped.tobytes()
    pcm = float32_to_int16(samples)
    if encoding is Encoding.PCM_S16LE:
        return pcm.astype("<i2", copy=False).tobytes()
    return _ENCODE_FROM_INT16[encoding][pcm.view(np.uint16)].tobytes()
