"""Reading a server's ``GetCapabilitiesResponse``: the model a request names, the audio it takes.

Shared by the gateway (its defaults for ``POST /v1/tts``, the format of ``POST /v1/stt``'s
decoded uploads, from what each adapter said) and the CLI (its requests fitted to the model,
from the gateway's ``/v1/capabilities``)."""

from __future__ import annotations

from collections.abc import Sequence

from voxwire.audio.formats import ENCODINGS
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
