"""How a message goes on a gRPC call's wire, where some are serialized before the call sees
them: the one serializer of such calls (the adapter's responses and its Triton requests, the
conformance kit's streams, which send raw bytes on purpose)."""

from __future__ import annotations

from typing import Any

# The gRPC option that keeps a call's HTTP/2 receive window at gRPC's fixed 64 KiB, for every
# channel and server of the project. Left on, bandwidth-delay probing grows it to megabytes:
# the receiver's gRPC core then takes megabytes of a call's messages its application has not
# read, past the application's own backpressure (an adapter held 5.9 MiB of a fast client's
# audio, the gateway's TTS read-ahead lost megabytes to it), and a window reopened only after
# megabytes are read makes the sender's writes wait past their deadlines
# (docs/design/edge.md, "Flow control"; docs/contract.md, backpressure).
FIXED_WINDOW: tuple[str, int] = ("grpc.http2.bdp_probe", 0)


def serialized(message: Any) -> bytes:
    """``message`` as it goes on the wire: a protobuf message serialized, bytes as they are."""
    return message if isinstance(message, bytes) else message.SerializeToString()
