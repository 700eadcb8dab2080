"""Which client audio formats the adapter accepts and produces (contract: audio.proto)."""

from __future__ import annotations

from collections.abc import Collection

from voxwire.audio.codecs import Encoding, PcmFormat
from voxwire.errors import UnsupportedEncoding, UnsupportedSampleRate, Violation
from voxwire.v1 import audio_pb2, capabilities_pb2

# Rates the server converts to and from every model's native rate (voxwire.audio.resample).
PCM_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
# ITU-T G.711 is defined at 8 kHz only.
G711_RATES = (8000,)

ENCODINGS: dict[audio_pb2.AudioEncoding.ValueType, Encoding] = {
    audio_pb2.AUDIO_ENCODING_PCM_S16LE: Encoding.PCM_S16LE,
    audio_pb2.AUDIO_ENCODING_PCM_F32LE: Encoding.PCM_F32LE,
    audio_pb2.AUDIO_ENCODING_MULAW: Encoding.MULAW,
    audio_pb2.AUDIO_ENCODING_ALAW: Encoding.ALAW,
}
PROTO_ENCODINGS = {enc: value for value, enc in ENCODINGS.items()}
# libsndfile's sample subtypes (soundfile's names) that are wire encodings: a file of them says
# its encoding (a 16-bit FLAC's samples are PCM_16 too: linear 16-bit, compressed); the rest
# (24-bit, Vorbis, MP3, ...) have none.
SNDFILE_SUBTYPES = {
    "PCM_16": Encoding.PCM_S16LE,
    "FLOAT": Encoding.PCM_F32LE,
    "ULAW": Encoding.MULAW,
    "ALAW": Encoding.ALAW,
}


def sample_bytes(encoding: audio_pb2.AudioEncoding.ValueType) -> int:
    """Bytes per sample of a contract encoding; PCM16's for one not set (its default)."""
    known = ENCODINGS.get(encoding)
    return known.bytes_per_sample if known is not None else 2


def rates_for(encoding: Encoding) -> tuple[int, ...]:
    return G711_RATES if encoding in (Encoding.MULAW, Encoding.ALAW) else PCM_RATES


# The lowest rate audio is decoded and resampled from (an upload, a file the CLI sends).
# Resampling up multiplies the audio by out/in, and a file's header declares its rate: a WAV
# header saying 1 Hz made 3,200 bytes of upload into 25.6 MB of 8 kHz PCM for the model
# (8,000x; 250-400 MiB of the gateway's memory while one block was resampled, found by the edge
# fuzzer). 4 kHz bounds the growth at 2x, and is below any rate speech is recorded at (G.711
# telephony is 8 kHz; 5,512 and 6,000 Hz are the lowest of old formats).
MIN_SOURCE_RATE_HZ = 4000


def carried_rate(rate: int, offered: Collection[int] = ()) -> int:
    """The PCM rate audio recorded at ``rate`` Hz is sent at: its own when the contract carries
    it, else the lowest carried rate above it (nothing of the signal is lost: 6 kHz goes as
    8 kHz), else the highest (96 kHz goes as 48 kHz). ``offered``: the rates the model takes
    (its capabilities' input formats; a server that does not resample, 16 kHz only), the
    contract's when empty.

    Raises UnsupportedSampleRate below ``MIN_SOURCE_RATE_HZ``."""
    rates = offered or PCM_RATES
    if rate in rates:
        return rate
    if rate < MIN_SOURCE_RATE_HZ:
        raise UnsupportedSampleRate(
            f"the audio's sample rate is {rate} Hz; audio is resampled from "
            f"{MIN_SOURCE_RATE_HZ} Hz up, not below"
        )
    return min((r for r in rates if r > rate), default=max(rates))


def offered_rate(
    model: capabilities_pb2.ModelCapabilities | None,
    encoding: audio_pb2.AudioEncoding.ValueType,
    usual: int,
    allowed: Collection[int] = (),
) -> int:
    """The rate to ask of TTS ``model`` for ``encoding`` when the caller named none:
    ``usual`` where the model offers it (or nothing is known of the model, or of that
    encoding), else its native rate, else the first it offers; of ``allowed`` only, when it is
    given (an output that takes only those), and ``usual`` when the model offers none of them.
    A server that resamples (the reference adapter) offers every rate; one that does not (16
    kHz only) refused the usual default with UNSUPPORTED_SAMPLE_RATE."""
    if model is None:
        return usual
    rates = [
        r
        for f in model.output_formats
        if f.encoding == encoding
        for r in f.sample_rates_hz
        if not allowed or r in allowed
    ]
    if not rates or usual in rates:
        return usual
    return model.native_sample_rate_hz if model.native_sample_rate_hz in rates else rates[0]


def resolve_format(fmt: audio_pb2.AudioFormat, field: str, *, max_channels: int) -> PcmFormat:
    """The PcmFormat of a client's AudioFormat.

    Raises UnsupportedEncoding, UnsupportedSampleRate (also for a bad channel count).
    """
    encoding = ENCODINGS.get(fmt.encoding)
    if encoding is None:
        known = fmt.encoding in audio_pb2.AudioEncoding.values()
        name = audio_pb2.AudioEncoding.Name(fmt.encoding) if known else str(int(fmt.encoding))
        raise UnsupportedEncoding(
            f"{field}.encoding {name} is not supported; use one of "
            + ", ".join(audio_pb2.AudioEncoding.Name(v) for v in ENCODINGS),
            violations=[Violation(f"{field}.encoding", "unsupported encoding")],
        )
    rates = rates_for(encoding)
    if fmt.sample_rate_hz not in rates:
        raise UnsupportedSampleRate(
            f"{field}.sample_rate_hz {fmt.sample_rate_hz} is not supported for "
            f"{encoding.value}; use one of {list(rates)}",
            violations=[Violation(f"{field}.sample_rate_hz", f"must be one of {list(rates)}")],
        )
    channels = fmt.channels or 1
    if channels > max_channels:
        raise UnsupportedSampleRate(
            f"{field}.channels {channels} is not supported; at most {max_channels}",
            violations=[Violation(f"{field}.channels", f"must be 1..{max_channels}")],
        )
    return PcmFormat(encoding, fmt.sample_rate_hz, channels)
