"""What ``voxwire transcribe`` sends: audio in a wire format, as frames of about 100 ms."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable

from voxwire.cli.common import CliError

FRAME_MS = 100
# Bytes per sample of each wire encoding (voxwire.audio.codecs.Encoding names).
SAMPLE_BYTES = {"pcm_s16le": 2, "pcm_f32le": 4, "mulaw": 1, "alaw": 1}


@dataclasses.dataclass
class Source:
    """Audio to send: what it is called in messages, its format, its chunks (whole sample
    frames, at most ``FRAME_MS`` each), and ``close`` to release what it holds, whether or
    not the chunks were read to the end. ``seconds`` None: not known (stdin).

    ``stopped_early`` says, once the chunks have ended, why they ended before the audio the
    source declared (a file that cannot be decoded past a point), or None."""

    name: str
    encoding: str
    rate: int
    channels: int
    seconds: float | None
    chunks: AsyncIterator[bytes]
    close: Callable[[], Awaitable[None]]
    stopped_early: Callable[[], str | None] = lambda: None


def check_format_flags(
    args: argparse.Namespace, what: str, own: dict[str, object], advice: str
) -> None:
    """``--encoding``, ``--rate`` and ``--channels`` are for raw audio: given for audio that
    carries its own format (``what``, its values in ``own``, None where it has no wire
    name), each must agree with it. A usage error (status 2) otherwise: the audio's own format
    is what would be sent, and a flag that says otherwise was meant for other audio."""
    given = {"--encoding": args.encoding, "--rate": args.rate, "--channels": args.channels}
    for flag, value in given.items():
        if value is not None and value != own[flag]:
            raise CliError(f"{what}, but {flag} says {value}: {advice}", status=2)


# The encodings ``resampled`` converts (G.711 audio is sent at its own 8 kHz).
_DTYPES = {"pcm_s16le": "int16", "pcm_f32le": "float32"}


def resampled(source: Source, rate: int) -> Source:
    """``source`` converted to ``rate`` as it is read (soxr's streaming resampler, HQ: one
    filter state across chunks, so their boundaries do not click), for a model that does
    not take the audio's own rate. PCM only."""
    import numpy as np
    import soxr

    dtype = np.dtype(_DTYPES[source.encoding])
    channels = source.channels
    stream = soxr.ResampleStream(source.rate, rate, channels, dtype=dtype, quality="HQ")

    async def chunks() -> AsyncIterator[bytes]:
        async for chunk in source.chunks:
            out = stream.resample_chunk(np.frombuffer(chunk, dtype).reshape(-1, channels))
            if out.size:
                yield out.tobytes()
        tail = stream.resample_chunk(np.zeros((0, channels), dtype), last=True)
        if tail.size:
            yield tail.tobytes()

    return dataclasses.replace(source, rate=rate, chunks=chunks())


def can_resample(source: Source) -> bool:
    return source.encoding in _DTYPES
