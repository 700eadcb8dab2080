"""``voxwire transcribe``'s conversion of audio a model does not take (voxwire.cli.source's
``converted``): what comes out is the same sound in the asked format, whatever the chunking."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
import pytest

from voxwire.audio.codecs import Encoding, PcmFormat, decode, encode
from voxwire.cli.source import Source, converted


def _tone(rate: int, seconds: float, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def _source(data: bytes, encoding: str, rate: int, channels: int, chunk: int) -> Source:
    async def chunks() -> AsyncIterator[bytes]:
        for at in range(0, len(data), chunk):
            yield data[at : at + chunk]

    async def close() -> None:
        return None

    return Source("t", encoding, rate, channels, None, chunks(), close)


async def _all(source: Source) -> bytes:
    return b"".join([c async for c in source.chunks])


@pytest.mark.parametrize("chunk_frames", [1, 37, 800])
def test_stereo_mulaw_at_8k_becomes_mono_pcm16_at_16k(chunk_frames: int):
    left, right = _tone(8000, 1.0), np.zeros(8000, np.float32)
    stereo = np.stack([left, right], axis=1).reshape(-1)  # interleaved: the left channel sounds
    data = encode(stereo, Encoding.MULAW)
    source = _source(data, "mulaw", 8000, 2, chunk_frames * 2)
    out = converted(source, "pcm_s16le", 16000, 1)
    assert (out.encoding, out.rate, out.channels) == ("pcm_s16le", 16000, 1)
    samples = decode(asyncio.run(_all(out)), PcmFormat(Encoding.PCM_S16LE, 16000))
    assert abs(len(samples) - 16000) <= 2  # twice the frames, none lost at chunk edges
    spectrum = np.abs(np.fft.rfft(samples[2000:14000]))
    assert abs(np.argmax(spectrum) * 16000 / 12000 - 440) < 2  # the same tone
    rms = float(np.sqrt(np.mean(samples[2000:14000] ** 2)))
    assert abs(rms - 0.25 / np.sqrt(2)) < 0.01  # the mean of a 0.5 tone and silence


def test_channels_and_rate_kept_converts_the_encoding_only():
    tone = _tone(8000, 0.25)
    data = encode(tone, Encoding.ALAW)
    out = converted(_source(data, "alaw", 8000, 1, 160), "pcm_f32le", 8000, 1)
    samples = np.frombuffer(asyncio.run(_all(out)), "<f4")
    assert len(samples) == len(tone)
    assert np.max(np.abs(samples - tone)) < 0.02  # A-law's own error, no filter's delay
