"""``voxwire transcribe -``: audio on stdin, raw (its format from ``--encoding`` and ``--rate``)
or a WAV stream (its format from its header).

Raw bytes say nothing of their format, and a guess is worse than an error: mu-law taken as
16-bit PCM is noise that the model turns into words. So raw stdin needs ``--encoding`` and
``--rate`` (``--channels`` defaults to 1). The first bytes are looked at before that: a WAV
header gives the format (flags, if given, must agree with it); the header of another
container (FLAC, Ogg, MP3, ...) is refused with a pointer to the FILE argument, where
libsndfile reads it. Empty stdin is a session with no audio.

A WAV stream that ends before its data chunk's declared size was cut short: what arrived is
sent (less a sample frame the cut split), and the command says so after printing what was
heard, status 1, as for a file. A WAV of unknown length (a producer writing to a pipe) ends
where it ends: a split sample frame at its end is dropped. Raw stdin that ends inside a sample
frame is refused: its format flags may be wrong (mu-law taken as 16-bit PCM).
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator

from voxwire.cli.common import CliError
from voxwire.cli.source import FRAME_MS, SAMPLE_BYTES, Source, check_format_flags
from voxwire.cli.stdin_stream import StdinStream
from voxwire.cli.wav_header import WavFormat, is_wav, read_wav_header

NAME = "stdin"
SNIFF_BYTES = 12
RAW_NEEDS = (
    "raw audio on stdin needs its format: --encoding and --rate (for example --encoding mulaw "
    "--rate 8000); a WAV stream on stdin needs neither"
)


async def open_stdin(args: argparse.Namespace) -> Source:
    """Raises CliError (status 2: the format is missing, or not one stdin can carry)."""
    stream = await StdinStream.open()
    try:
        fmt, wav = await _format(stream, args)
    except BaseException:
        await stream.close()
        raise
    ending = _Ending()
    return Source(
        name=NAME,
        encoding=fmt.encoding,
        rate=fmt.rate,
        channels=fmt.channels,
        seconds=None,
        chunks=_chunks(stream, fmt, wav, ending),
        close=stream.close,
        stopped_early=lambda: ending.cut,
    )


class _Ending:
    """How the chunks ended: ``cut`` says why before the audio the WAV header declares."""

    cut: str | None = None


async def _format(stream: StdinStream, args: argparse.Namespace) -> tuple[WavFormat, bool]:
    """The format, and whether it came from a WAV header."""
    raw_flags = args.encoding is not None and args.rate is not None
    if not raw_flags and stream.is_terminal:
        raise CliError(RAW_NEEDS, status=2)  # rather than wait for typing to be sniffed
    head = await stream.read_exactly(SNIFF_BYTES)
    stream.unread(head)
    if is_wav(head):
        fmt = await read_wav_header(stream.read, stream.unread, f"{NAME} (WAV)")
        _check_flags(fmt, args)
        return fmt, True
    container = _container(head)
    if container is not None:
        raise CliError(
            f"{NAME} holds {container}: save it to a file and give its path as FILE (libsndfile "
            "seeks in it: not a pipe); "
            "stdin takes a WAV stream, or raw audio with --encoding and --rate",
            status=2,
        )
    if not raw_flags:
        raise CliError(RAW_NEEDS, status=2)
    return WavFormat(args.encoding, args.rate, args.channels or 1, None), False


def _check_flags(fmt: WavFormat, args: argparse.Namespace) -> None:
    own = {"--encoding": fmt.encoding, "--rate": fmt.rate, "--channels": fmt.channels}
    advice = "leave the format flags out for a WAV stream"
    check_format_flags(args, f"{NAME} is a WAV of {fmt.describe()}", own, advice)


def _container(head: bytes) -> str | None:
    """The audio container that ``head`` opens, if one (other than WAV) is recognised. Only
    signatures that raw audio cannot plausibly start with: no bare MP3 frame sync (0xFFEx),
    which is common in mu-law and PCM."""
    if head[:4] in (b"RIFX", b"RF64") and head[8:12] == b"WAVE":
        return "a big-endian or RF64 WAV"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "AIFF"
    signatures = {b"fLaC": "FLAC", b"OggS": "Ogg", b"ID3": "MP3", b".snd": "Sun AU", b"caff": "CAF"}
    for signature, container in signatures.items():
        if head.startswith(signature):
            return container
    return None


async def _chunks(
    stream: StdinStream, fmt: WavFormat, wav: bool, ending: _Ending
) -> AsyncIterator[bytes]:
    """At most ``FRAME_MS`` of audio per chunk, as soon as it is read (no waiting for a whole
    frame: a live source is not delayed), always whole sample frames. Raises CliError for raw
    audio that ends inside a sample frame."""
    width = SAMPLE_BYTES[fmt.encoding] * fmt.channels
    step = fmt.rate * FRAME_MS // 1000 * width
    left = fmt.data_bytes
    pending = b""
    while left is None or left > 0:
        size = step - len(pending)  # pending is less than one sample frame
        data = await stream.read(size if left is None else min(size, left))
        if not data:
            break
        if left is not None:
            left -= len(data)
        pending += data
        whole = len(pending) - len(pending) % width
        if whole:
            yield pending[:whole]
            pending = pending[whole:]
    if left:  # the WAV header's data size was not reached: the stream was cut
        assert fmt.data_bytes is not None
        sent = (fmt.data_bytes - left - len(pending)) // width / fmt.rate
        ending.cut = (
            f"{NAME} (WAV) ended {sent:.2f} s in, before the "
            f"{fmt.data_bytes // width / fmt.rate:.2f} s its header declares: the stream was "
            "cut short; what was heard before that is above"
        )
    elif pending and not wav:
        raise CliError(f"{NAME} ended inside a sample frame ({len(pending)} stray bytes)")
