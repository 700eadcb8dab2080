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
    """``source`` as ``encoding`` at ``rate`` with ``channels``, converted as it is read
    (``voxwire.audio.convert``: decoded, mixed down, resampled, encoded), for a model that
    does not take the audio's own format (a server that does not resample, 16 kHz PCM16 mono
    only)."""
    from voxwire.audio.codecs import Encoding, PcmFormat
    from voxwire.audio.convert import FormatConverter

    converter = FormatConverter(
        PcmFormat(Encoding(source.encoding), source.rate, source.channels),
        PcmFormat(Encoding(encoding), rate, channels),
    )

    async def chunks() -> AsyncIterator[bytes]:
        async for chunk in source.chunks:
            if out := converter.convert(chunk):
                yield out
        if tail := converter.flush():
            yield tail

    return dataclasses.replace(
        source, encoding=encoding, rate=rate, channels=channels, chunks=chunks()
    )
