"""Reading a server's ``GetCapabilitiesResponse``: the model a request names.

Shared by the gateway (its defaults for ``POST /v1/tts``, from what each adapter said) and the
CLI (its requests fitted to the model, from the gateway's ``/v1/capabilities``)."""

from __future__ import annotations

from voxwire.v1 import capabilities_pb2


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
