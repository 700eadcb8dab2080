"""The binary TTS audio frame (docs/edge.md, "Binary audio frames").

A 12-byte header in network byte order, then the audio in the context's output format:

    offset  size  field
    0       1     version (1)
    1       1     flags (0, reserved)
    2       2     context handle (ContextOpened.handle)
    4       4     sequence number (AudioChunk.sequence_number)
    8       4     start_ms (AudioChunk.start_ms)
    12      ...   audio; its duration follows from its length and the format

Browsers read it with a DataView (big-endian is DataView's default).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

VERSION = 1
HEADER = struct.Struct(">BBHII")
HEADER_BYTES = HEADER.size  # 12


@dataclass(frozen=True, slots=True)
class AudioFrame:
    handle: int
    sequence_number: int
    start_ms: int
    audio: bytes


def pack(handle: int, sequence_number: int, start_ms: int, audio: bytes) -> bytes:
    """Raises struct.error when a field does not fit its width."""
    return HEADER.pack(VERSION, 0, handle, sequence_number, start_ms) + audio


def unpack(frame: bytes) -> AudioFrame:
    """Raises ValueError for a frame too short or of another version."""
    if len(frame) < HEADER_BYTES:
        raise ValueError(f"audio frame of {len(frame)} bytes is shorter than its header")
    version, _flags, handle, sequence, start_ms = HEADER.unpack_from(frame)
    if version != VERSION:
        raise ValueError(f"audio frame version {version}; this reader knows {VERSION}")
    return AudioFrame(handle, sequence, start_ms, frame[HEADER_BYTES:])
