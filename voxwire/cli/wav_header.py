"""The header of a WAV stream on stdin, read up to the first byte of its audio.

A WAV on stdin cannot be handed to libsndfile, which seeks; but a WAV whose samples the
gateway takes as they are (16-bit PCM, 32-bit float, mu-law, A-law, one or two channels at a
rate of the contract) needs no decoding at all: its header gives the format, and the data chunk
is sent as raw audio of that format. The header is read by the gateway's own incremental reader
(``voxwire.audio.wav.WavHeaderReader``: the same rules for both). Other WAVs are refused: as a
FILE argument libsndfile converts them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable

from voxwire.audio.wav import OtherWavFormat, WavHeaderReader
from voxwire.cli.common import CliError
from voxwire.errors import InvalidAudio

_READ_BYTES = 4096


@dataclasses.dataclass(frozen=True)
class WavFormat:
    encoding: str
    rate: int
    channels: int
    data_bytes: int | None  # None: to the end of the stream

    def describe(self) -> str:
        return f"{self.encoding} at {self.rate} Hz, {self.channels} channel(s)"


def is_wav(head: bytes) -> bool:
    return head[:4] == b"RIFF" and head[8:12] == b"WAVE"


async def read_wav_header(
    read: Callable[[int], Awaitable[bytes]], unread: Callable[[bytes], None], name: str
) -> WavFormat:
    """Read the RIFF header and every chunk up to the data's first byte (what is read past it
    goes back with ``unread``).

    Raises CliError: status 2 for a WAV the stream cannot carry (another sample format, more
    than 2 channels, another rate), 1 for a header that is cut short or broken."""
    reader = WavHeaderReader()
    while reader.format is None:
        data = await read(_READ_BYTES)
        if not data:
            raise CliError(f"{name}: the WAV ends before its data chunk")
        try:
            rest = reader.feed(data)
        except OtherWavFormat as exc:
            raise CliError(
                f"{name}: {exc.message}; give the file as FILE (libsndfile converts it)",
                status=2,
            ) from None
        except InvalidAudio as exc:
            raise CliError(f"{name}: {exc.message}") from None
    if rest:
        unread(rest)
    fmt = reader.format
    return WavFormat(fmt.encoding.value, fmt.rate, fmt.channels, reader.data_bytes)
