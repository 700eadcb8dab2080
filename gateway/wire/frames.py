"""The binary TTS audio frame: the one implementation is ``voxwire.edge.frames`` (the SDK reads
what the gateway writes)."""

from __future__ import annotations

from voxwire.edge.frames import HEADER, HEADER_BYTES, VERSION, AudioFrame, pack, unpack

__all__ = ["HEADER", "HEADER_BYTES", "VERSION", "AudioFrame", "pack", "unpack"]
