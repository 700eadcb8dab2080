"""Reading a server's ``GetCapabilitiesResponse``: the model a request names, the audio it takes.

Shared by the gateway (its defaults for ``POST /v1/tts``, the format of ``POST /v1/stt``'s
decoded uploads, from what each adapter said) and the CLI (its requests fitted to the model,
from the gateway's ``/v1/capabilities``)."""

from __future__ import annotations

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


def input_rates(
    model: capabilities_pb2.ModelCapabilities, encoding: audio_pb2.AudioEncoding.ValueType
) -> tuple[int, ...]:
    """The rates STT ``model`` takes ``encoding`` at, ascending (empty: none)."""
    return tuple(
        sorted(
            {r for f in model.input_formats if f.encoding == encoding for r in f.sample_rates_hz}
        )
    )


def most_channels(offered: capabilities_pb2.FormatSupport) -> int:
    """A format's channel count; 0 (not said) is one."""
    return int(offered.max_channels) or 1


def takes_input(
    model: capabilities_pb2.ModelCapabilities,
    encoding: audio_pb2.AudioEncoding.ValueType,
    rate: int,
    channels: int,
) -> bool:
    """Whether STT ``model`` says it takes audio of this format (a model that lists no input
    formats is taken at its word: anything)."""
    return not model.input_formats or any(
        f.encoding == encoding and rate in f.sample_rates_hz and channels <= most_channels(f)
        for f in model.input_formats
    )
