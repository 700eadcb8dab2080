"""Audio for the adapter: pure codecs (PCM16, f32, G.711) and the streaming resampler."""

from __future__ import annotations

from voxwire.audio.codecs import (
    AudioDecodeError,
    Encoding,
    InvalidSamples,
    PcmFormat,
    decode,
    encode,
    float32_to_int16,
    int16_to_float32,
)
from voxwire.audio.resample import StreamResampler

__all__ = [
    "AudioDecodeError",
    "Encoding",
    "InvalidSamples",
    "PcmFormat",
    "StreamResampler",
    "decode",
    "encode",
    "float32_to_int16",
    "int16_to_float32",
]
