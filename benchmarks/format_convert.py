"""What ``POST /v1/stt``'s raw-sample fitting costs per 100 ms chunk, against its floors.

    python -m benchmarks.format_convert

Four paths, interleaved over 9 rounds of 2,000 chunks, process CPU per chunk:

    floor: async iteration             the chunks iterated, nothing else
    _fitted, model takes it            gateway.http.stt._fitted passing 16 kHz PCM16 through
                                       (the reference adapter takes every format)
    floor: G.711 table + soxr + int16  8 kHz mu-law decoded, resampled to 16 kHz, to int16
    _fitted, 8 kHz mu-law -> 16 kHz    the gateway's conversion (voxwire.audio.convert) for a
                                       model that takes 16 kHz PCM16 only
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator

import numpy as np
import soxr

from gateway.http.stt import _fitted, _Upload
from gateway.http.upload import AudioBudget
from voxwire.audio.codecs import Encoding, PcmFormat, decode
from voxwire.v1 import audio_pb2, capabilities_pb2, transcription_pb2

N = 2000
PCM = np.random.default_rng(0).normal(0, 3000, 1600).astype("<i2").tobytes()  # 100 ms, 16 kHz
ULAW = np.random.default_rng(1).integers(0, 256, 800, dtype=np.uint8).tobytes()  # 100 ms, 8 kHz
TOY = capabilities_pb2.ModelCapabilities(
    name="toy",
    kind=capabilities_pb2.MODEL_KIND_STT,
    input_formats=[
        capabilities_pb2.FormatSupport(
            encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE, sample_rates_hz=[16000], max_channels=1
        )
    ],
)


async def chunks(chunk: bytes) -> AsyncIterator[bytes]:
    for _ in range(N):
        yield chunk


def cfg(encoding: int, rate: int) -> transcription_pb2.TranscriptionConfig:
    config = transcription_pb2.TranscriptionConfig()
    config.audio_format.encoding = encoding  # type: ignore[assignment]
    config.audio_format.sample_rate_hz = rate
    config.audio_format.channels = 1
    return config


async def floor(chunk: bytes) -> None:
    async for _ in chunks(chunk):
        pass


async def passthrough() -> None:
    upload = _Upload(AudioBudget(600), audio_pb2.AudioFormat(), model=None)
    async for _ in _fitted(chunks(PCM), cfg(audio_pb2.AUDIO_ENCODING_PCM_S16LE, 16000), upload):
        pass


async def convert() -> None:
    upload = _Upload(AudioBudget(600), audio_pb2.AudioFormat(), model=TOY)
    async for _ in _fitted(chunks(ULAW), cfg(audio_pb2.AUDIO_ENCODING_MULAW, 8000), upload):
        pass


async def convert_floor() -> None:
    stream = soxr.ResampleStream(8000, 16000, 1, dtype=np.float32, quality="HQ")
    fmt = PcmFormat(Encoding.MULAW, 8000)
    async for chunk in chunks(ULAW):
        (stream.resample_chunk(decode(chunk, fmt)) * 32768).astype("<i2").tobytes()


def main() -> None:
    paths = {
        "floor: async iteration": lambda: floor(PCM),
        "_fitted, model takes it": passthrough,
        "floor: G.711 table + soxr + int16": convert_floor,
        "_fitted, 8 kHz mu-law -> 16 kHz PCM16": convert,
    }
    res: dict[str, list[float]] = {k: [] for k in paths}
    for _ in range(9):
        for k, f in paths.items():
            t = time.process_time()
            asyncio.run(f())
            res[k].append((time.process_time() - t) / N * 1e6)
    for k, v in res.items():
        print(
            f"{k:42s} median {statistics.median(v):6.2f} us/chunk  range {min(v):.2f}-{max(v):.2f}"
        )


if __name__ == "__main__":
    main()
