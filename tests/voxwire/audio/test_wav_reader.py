"""voxwire.audio.wav.WavHeaderReader: where a WAV's samples start and end, fed in any pieces."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile

from voxwire.audio.wav import OtherWavFormat, WavHeaderReader
from voxwire.errors import InvalidAudio


def _wav(subtype: str, frames: int = 1600, rate: int = 16000, channels: int = 1) -> bytes:
    out = io.BytesIO()
    samples = np.zeros((frames, channels), dtype=np.float32)
    soundfile.write(out, samples, rate, format="WAV", subtype=subtype)
    return out.getvalue()


def _feed(data: bytes, piece: int) -> WavHeaderReader:
    reader = WavHeaderReader()
    for i in range(0, len(data), piece):
        if reader.feed(data[i : i + piece]) or reader.format is not None:
            break
    return reader


@pytest.mark.parametrize("piece", [1, 7, 44, 4096])
def test_a_carried_wav_gives_its_format_and_data_size(piece: int) -> None:
    data = _wav("PCM_16")
    reader = _feed(data, piece)
    assert reader.format is not None and reader.format.rate == 16000
    assert reader.data_bytes == 3200 and reader.data_end == len(data)


@pytest.mark.parametrize("piece", [1, 7, 44, 4096])
@pytest.mark.parametrize(
    ("subtype", "rate", "channels", "width"),
    [("PCM_24", 16000, 1, 3), ("PCM_16", 16000, 3, 6), ("PCM_16", 96000, 1, 2)],
)
def test_another_wav_is_refused_once_its_data_size_is_known(
    piece: int, subtype: str, rate: int, channels: int, width: int
) -> None:
    # OtherWavFormat came at the fmt chunk, before the data chunk's size was read: a caller
    # handing the file to libsndfile could not tell a body cut short (libsndfile shortens its
    # frame count without a word).
    data = _wav(subtype, frames=1600, rate=rate, channels=channels)
    with pytest.raises(OtherWavFormat):
        _feed(data, piece)
    reader = WavHeaderReader()
    with pytest.raises(OtherWavFormat):
        reader.feed(data)
    assert reader.data_bytes == 1600 * width
    assert reader.data_end == len(data)
    assert reader.buffered() == data  # every byte fed, for the other decoder


def test_another_wav_whose_header_has_no_data_chunk_goes_to_the_other_decoder() -> None:
    fmt_only = _wav("PCM_24")[:36]  # RIFF, WAVE, the fmt chunk: no data chunk header
    reader = WavHeaderReader(max_header_bytes=40)
    assert reader.feed(fmt_only) == b""
    with pytest.raises(OtherWavFormat):
        reader.feed(b"JUNK" + (100).to_bytes(4, "little") + bytes(100))
    assert reader.data_end is None


def test_malformed_headers_are_still_invalid_audio() -> None:
    with pytest.raises(InvalidAudio, match="no RIFF/WAVE"):
        WavHeaderReader().feed(b"not a wav file at all")


@pytest.mark.parametrize(
    ("declared", "data_bytes"),
    [
        (0, None),
        (0x7FFE_FFFF, 0x7FFE_FFFF),  # a length, however long
        (0x7FFF_0000, None),  # sndio's WAV_DATAMAX
        (0x8000_0000, None),  # arecord's 2 GiB
        (0xFFFF_FFFF, None),
    ],
)
def test_a_streaming_writers_placeholder_size_is_an_unknown_length(declared, data_bytes) -> None:
    data = bytearray(_wav("PCM_16"))
    data[40:44] = declared.to_bytes(4, "little")
    reader = _feed(bytes(data), 4096)
    assert reader.format is not None and reader.data_bytes == data_bytes
