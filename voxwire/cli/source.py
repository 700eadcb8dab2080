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


def converted(source: Source, encoding: str, rate: int, channels: int) -> Source:
    """``source`` as ``encoding`` at ``rate`` with ``channels``, converted as it is read, for
    a model that does not take the audio's own format (a server that does not resample, 16 kHz
    PCM16 mono only). Each chunk is decoded to float (G.711 through its tables), mixed down to
    mono when fewer channels are asked (the mean), resampled with soxr's streaming resampler
    (HQ: one filter state across chunks, so their boundaries do not click) and encoded."""
    import numpy as np
    import soxr

    from voxwire.audio.codecs import Encoding, PcmFormat, decode, encode

    # Decoded as one channel, every sample is decoded alone: the interleaved frames stay.
    samples = PcmFormat(Encoding(source.encoding), source.rate, 1)
    wire = Encoding(encoding)
    mix = channels < source.channels
    stream = (
        soxr.ResampleStream(source.rate, rate, channels, dtype=np.float32, quality="HQ")
        if rate != source.rate
        else None
    )

    def convert(chunk: bytes, last: bool = False) -> bytes:
        frames = decode(chunk, samples).reshape(-1, source.channels)
        if mix:
            frames = frames.mean(axis=1, dtype=np.float32, keepdims=True)
        if stream is not None:
            frames = stream.resample_chunk(frames, last=last)
        return encode(frames.reshape(-1), wire) if frames.size else b""

    async def chunks() -> AsyncIterator[bytes]:
        async for chunk in source.chunks:
            if out := convert(chunk):
                yield out
        if stream is not None and (tail := convert(b"", last=True)):
            yield tail

    return dataclasses.replace(
        source, encoding=encoding, rate=rate, channels=channels, chunks=chunks()
    )
