"""Edge messages as canonical proto3 JSON: the one implementation is ``voxwire.edge.messages``
(the SDK writes what the gateway reads)."""

from __future__ import annotations

from voxwire.edge.messages import MAX_DEPTH, decode, encode

__all__ = ["MAX_DEPTH", "decode", "encode"]
