"""How a message goes on a gRPC call's wire, where some are serialized before the call sees
them: the one serializer of such calls (the adapter's responses and its Triton requests, the
conformance kit's streams, which send raw bytes on purpose)."""

from __future__ import annotations

from typing import Any


def serialized(message: Any) -> bytes:
    """``message`` as it goes on the wire: a protobuf message serialized, bytes as they are."""
    return message if isinstance(message, bytes) else message.SerializeToString()
