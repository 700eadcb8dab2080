"""Audio the kit sends: bundled speech, a tone, silence, NaN or infinite floats, in any contract
format.

``data/speech.wav`` is 2.0 s of synthetic speech ("i would like to pay my bill", CMU Flite,
16 kHz mono PCM16; the same file as tests/fixtures/speech/pay_bill.wav). A real recognizer
hears words in it; a toy energy detector hears one burst. A model that hears nothing in it (a
keypad decoder, a wake word model) conforms all the same: ``--speech FILE`` gives the kit audio
of the server's own choosing (``load_speech``) wherever a case sends speech.
"""

from __future__ import annotations

import functools
import io
import wave
from importlib import resources
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soundfile
import soxr

from voxwire.audio.codecs import Encoding, encode
from voxwire.audio.wav import streaming_header
from voxwire.conformance.catalog import Format
from voxwire.v1 import audio_pb2

SPEECH_RATE = 16000
# Sources of samples that are not numbers (casefile.AUDIO_SOURCES lists every source).
_NOT_NUMBERS = {"nan": np.nan, "inf": np.inf}
# "head" ends inside the speech (1.2 s of 2.0 s), so an utterance is open at that point.
HEAD_FRACTION = 0.6
_ENCODINGS: dict[int, Encoding] = {
    audio_pb2.AUDIO_ENCODING_PCM_S16LE: Encoding.PCM_S16LE,
    audio_pb2.AUDIO_ENCODING_PCM_F32LE: Encoding.PCM_F32LE,
    audio_pb2.AUDIO_ENCODING_MULAW: Encoding.MULAW,
    audio_pb2.AUDIO_ENCODING_ALAW: Encoding.ALAW,
}
Samples = npt.NDArray[np.float32]


@functools.cache
def speech() -> Samples:
    """The bundled speech, float32 mono at 16 kHz."""
    path = resources.files("voxwire.conformance") / "data" / "speech.wav"
    with resources.as_file(path) as real, wave.open(str(real), "rb") as wav:
        data = wav.readframes(wav.getnframes())
    return (np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0).astype(np.float32)


# What a case that got no result at all says (the model may not hear the kit's speech).
NOT_HEARD = (
    'if the model does not recognise the kit\'s speech (2 s of "i would like to pay my bill"), '
    "run the kit with --speech FILE.wav: audio it does recognise"
)


def load_speech(path: Path) -> Samples:
    """A WAV file of 16-bit PCM (any rate, mono or stereo) as the kit's speech: float32 mono
    at 16 kHz. Its speech should span 60 % of its length, where "head" ends (a finalize there
    has an utterance open). Raises ValueError saying what is wrong with the file."""
    try:
        with wave.open(str(path), "rb") as wav:
            width, channels, rate = wav.getsampwidth(), wav.getnchannels(), wav.getframerate()
            data = wav.readframes(wav.getnframes())
    except (OSError, EOFError, wave.Error) as exc:
        raise ValueError(f"{path}: not a readable WAV file ({exc})") from None
    if width != 2:
        raise ValueError(f"{path}: {8 * width}-bit samples, the kit reads 16-bit PCM WAV")
    x = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
    x = x.reshape(-1, channels).mean(axis=1, dtype=np.float32) if channels > 1 else x
    if not x.size:
        raise ValueError(f"{path}: no audio")
    if rate != SPEECH_RATE:
        x = soxr.resample(x, rate, SPEECH_RATE).astype(np.float32)
    return x


def source_samples(
    source: str, ms: int | None, part: str, own_speech: Samples | None = None
) -> Samples:
    """Mono float32 samples at 16 kHz (``own_speech``: the ``--speech`` audio, used for
    "speech"). Raises ValueError for an unknown source or part."""
    if source == "speech":
        x = speech() if own_speech is None else own_speech
        cut = int(len(x) * HEAD_FRACTION)
        if part == "head":
            x = x[:cut]
        elif part == "tail":
            x = x[cut:]
        elif part != "all":
            raise ValueError(f"part must be head, tail or all, not {part!r}")
        return x[: ms * SPEECH_RATE // 1000] if ms else x
    n = (ms if ms is not None else 500) * SPEECH_RATE // 1000
    if source == "tone":
        t = np.arange(n, dtype=np.float32) / SPEECH_RATE
        return (0.3 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)
    if source in ("silence", *_NOT_NUMBERS):
        return np.zeros(n, dtype=np.float32)
    raise ValueError(f"unknown audio source {source!r}")


# A file sent on the stream as if it were raw samples (an audio step's "file",
# casefile.AUDIO_FILES): what a client that forgets to decode sends. libsndfile (the soundfile
# wheel) writes FLAC and Ogg Vorbis.
_SOUNDFILE_FORMATS = {"flac": ("FLAC", "PCM_16"), "ogg": ("OGG", "VORBIS")}


def render(
    source: str,
    fmt: Format,
    *,
    ms: int | None = None,
    part: str = "all",
    own_speech: Samples | None = None,
    file: str | None = None,
) -> bytes:
    """``source`` as wire bytes in ``fmt``; with ``file``, as that kind of file instead: a
    WAV (a streaming header naming ``fmt``, then the bytes), or FLAC or Ogg Vorbis of the same
    samples at ``fmt``'s rate. Raises ValueError (also: NaN or infinity in a format that has
    neither, i.e. anything but PCM_F32LE)."""
    x = source_samples(source, ms, part, own_speech)
    if fmt.rate != SPEECH_RATE:
        x = soxr.resample(x, SPEECH_RATE, fmt.rate).astype(np.float32)
    if file in _SOUNDFILE_FORMATS:
        out = io.BytesIO()
        kind, subtype = _SOUNDFILE_FORMATS[file]
        frames = np.repeat(x[:, None], max(1, fmt.channels), axis=1)
        soundfile.write(out, frames, fmt.rate, subtype=subtype, format=kind)
        return out.getvalue()
    if file is not None and file != "wav":
        raise ValueError(f"unknown file kind {file!r}")
    if fmt.channels > 1:
        x = np.repeat(x, fmt.channels)
    if source in _NOT_NUMBERS:
        if fmt.encoding != audio_pb2.AUDIO_ENCODING_PCM_F32LE:
            raise ValueError(f"{source} samples exist only in PCM_F32LE")
        return np.full(x.size, _NOT_NUMBERS[source], dtype="<f4").tobytes()
    encoding = _ENCODINGS.get(fmt.encoding)
    if encoding is None:
        return np.zeros(x.size, dtype="<i2").tobytes()  # an encoding the kit cannot make
    header = b"" if file is None else streaming_header(encoding, fmt.rate, fmt.channels)
    return header + encode(x, encoding)


def chunked(data: bytes, fmt: Format, chunk_ms: int, max_bytes: int = 0) -> list[bytes]:
    """``data`` cut into messages of ``chunk_ms`` (whole frames each), none over ``max_bytes``
    (the server's max_chunk_bytes; 0: no limit)."""
    size = max(1, fmt.rate * chunk_ms // 1000) * fmt.bytes_per_frame
    if max_bytes:
        size = min(size, max(1, max_bytes // fmt.bytes_per_frame) * fmt.bytes_per_frame)
    return [data[i : i + size] for i in range(0, len(data), size)]
