"""What the gateway's capabilities say of the model a command uses, so that its request fits
the model: ``voxwire transcribe`` asks interim results only of a model that makes them and
resamples audio to a rate it takes; ``voxwire speak`` asks for a rate it offers. A server that
does not resample (an ML engineer's own, 16 kHz only) refused the commands' defaults."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from voxwire.cli.common import urls

if TYPE_CHECKING:
    from voxwire.v1.capabilities_pb2 import ModelCapabilities

# How long the capabilities are waited for (out of the connect timeout) before the command
# goes on without them.
CAPABILITIES_WAIT_S = 2.0


async def model_capabilities(
    args: argparse.Namespace, key: str, kind: str, name: str
) -> ModelCapabilities | None:
    """Model ``name`` of ``kind`` ("stt" or "tts"; "" names the default of its kind) as the
    gateway describes it; None when the capabilities cannot be had within
    ``CAPABILITIES_WAIT_S`` (the session's own answer then says what is wrong) or name no such
    model."""
    from voxwire.capabilities import find_model
    from voxwire.client import fetch_capabilities
    from voxwire.v1 import capabilities_pb2

    wanted = capabilities_pb2.MODEL_KIND_STT if kind == "stt" else capabilities_pb2.MODEL_KIND_TTS
    try:
        reply = await fetch_capabilities(
            urls(args)[0], key, timeout_s=min(args.connect_timeout, CAPABILITIES_WAIT_S)
        )
    except Exception:  # unreachable, refused: the connect that follows reports it
        return None
    return find_model(reply, wanted, name)
