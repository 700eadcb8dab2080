"""Reading a server's ``GetCapabilitiesResponse``: the model a request names, the audio it takes.

Shared by the gateway (its defaults for ``POST /v1/tts``, the format of ``POST /v1/stt``'s
decoded uploads, from what each adapter said) and the CLI (its requests fitted to the model,
from the gateway's ``/v1/capabilities``)."""

from __future__ import annotations

from collections.abc import Sequence

from voxwire.audio.formats import ENCODINGS, carried_rate
from voxwire.v1 import audio_pb2, capabilities_pb2


def find_model(
    reply: capabilities_pb2.GetCapabilitiesResponse,
    kind: capabilities_pb2.ModelKind.ValueType,
    name: str,
) -> capabilities_pb2.ModelCapabilities | None:
    """Model ``name`` of ``kind`` (the default of its kind for ""), or None."""
    for model in reply.models:
        if model.kind == kind and (model.name == name if name else model.is_default):
            return model
    return None


def rates_of(
    formats: Sequence[capabilities_pb2.FormatSupport], encoding: audio_pb2.AudioEncoding.ValueType
) -> tuple[int, ...]:
    """The rates ``formats`` (a model's input or output formats) offer ``encoding`` at,
    ascending (empty: none)."""
    return tuple(sorted({r for f in formats if f.encoding == encoding for r in f.sample_rates_hz}))


def most_channels(offered: capabilities_pb2.FormatSupport) -> int:
    """A format's channel count; 0 (not said) is one."""
    return int(offered.max_channels) or 1


def offers(
    formats: Sequence[capabilities_pb2.FormatSupport],
    encoding: audio_pb2.AudioEncoding.ValueType,
    rate: int,
    channels: int = 1,
) -> bool:
    """Whether ``formats`` (a model's input or output formats) include this one; a model that
    lists none is taken at its word: anything."""
    return not formats or any(
        f.encoding == encoding and rate in f.sample_rates_hz and channels <= most_channels(f)
        for f in formats
    )


def takes_input(
    model: capabilities_pb2.ModelCapabilities,
    encoding: audio_pb2.AudioEncoding.ValueType,
    rate: int,
    channels: int,
) -> bool:
    """Whether STT ``model`` says it takes audio of this format."""
    return offers(model.input_formats, encoding, rate, channels)


def nearest(
    formats: Sequence[capabilities_pb2.FormatSupport], encoding: audio_pb2.AudioEncoding.ValueType
) -> capabilities_pb2.FormatSupport | None:
    """The format to use of ``formats`` when they do not offer the one wanted (in
    ``encoding``): ``encoding``'s own if offered at some rate, else PCM16's, else the first of
    an encoding the contract carries; None when there is none (the rate is then the caller's
    to choose among its ``sample_rates_hz``: ``voxwire.audio.formats.carried_rate``)."""
    pcm16 = audio_pb2.AUDIO_ENCODING_PCM_S16LE
    return min(
        (f for f in formats if f.sample_rates_hz and f.encoding in ENCODINGS),
        key=lambda f: (f.encoding != encoding, f.encoding != pcm16),
        default=None,
    )


def fitted_input(
    model: capabilities_pb2.ModelCapabilities | None,
    encoding: audio_pb2.AudioEncoding.ValueType,
    rate: int,
    channels: int,
) -> audio_pb2.AudioFormat | None:
    """The format to send STT ``model`` audio of this format in: None when it takes it as it
    is (or nothing is known of it, or it offers nothing the contract carries: its refusal then
    says what it takes). Else the nearest it takes (``nearest``: the audio's own encoding if
    offered, else PCM16, else the first carried), at the rate ``carried_rate`` picks of that
    format's (the audio's own, else the lowest above, else the highest) and the audio's
    channels or as many as it takes. One rule for the gateway's sockets and uploads and the
    CLI (a server that does not resample, 16 kHz PCM16 mono only, refused a browser's 48 kHz).

    Raises UnsupportedSampleRate below ``voxwire.audio.formats.MIN_SOURCE_RATE_HZ``."""
    return None if model is None else _fitted(model.input_formats, encoding, rate, channels)


def fitted_output(
    model: capabilities_pb2.ModelCapabilities | None,
    encoding: audio_pb2.AudioEncoding.ValueType,
    rate: int,
) -> audio_pb2.AudioFormat | None:
    """The format to ask TTS ``model`` for when audio of this format is wanted and it does not
    make it (mono): the nearest it makes (the encoding wanted if offered, else PCM16, else the
    first carried; of that format's rates, ``carried_rate``'s choice), to be converted. None:
    it makes it (or nothing is known of it, or it offers nothing the contract carries: its
    refusal then says what it makes). A server that does not resample (16 kHz PCM16 only)
    refused a telephony client's 8 kHz mu-law and 24 kHz."""
    return None if model is None else _fitted(model.output_formats, encoding, rate, 1)


def _fitted(
    formats: Sequence[capabilities_pb2.FormatSupport],
    encoding: audio_pb2.AudioEncoding.ValueType,
    rate: int,
    channels: int,
) -> audio_pb2.AudioFormat | None:
    """The nearest of ``formats`` to this one (None: they offer it, or nothing carried)."""
    if offers(formats, encoding, rate, channels):
        return None
    best = nearest(formats, encoding)
    if best is None:
        return None
    return audio_pb2.AudioFormat(
        encoding=best.encoding,
        sample_rate_hz=carried_rate(rate, sorted(best.sample_rates_hz)),
        channels=min(max(1, channels), most_channels(best)),
    )
