"""What a session runner needs from a client connection, whatever the HTTP stack.

The WebSocket adapter of the chosen stack implements ``ClientPort`` in a few lines (feed,
collect, flush, as websockets' sans-I/O design puts it); the runners never see the stack.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs ~5 µs per frame
class Frame:
    """One client message: text (a JSON message) or binary (audio); None data = closed."""

    text: str | bytes | None = None  # bytes: a WebSocket text frame, UTF-8 not yet checked
    data: bytes | None = None
    # Set when the connection ended; ``close_code`` is the peer's code (1006: no close frame).
    closed: bool = False
    close_code: int = 0
    # Set when the stack refused the frame itself (e.g. text that is not UTF-8, RFC 6455 8.1):
    # the reason, and the close code the protocol requires.
    protocol_error: str = ""
    protocol_close_code: int = 0


class ClientPort(Protocol):
    async def receive(self) -> Frame:
        """The next frame (a closed Frame at the end; never raises for a closed peer)."""
        ...

    async def send_text(self, text: str) -> None:
        """Raises ConnectionError when the peer is gone."""
        ...

    async def send_bytes(self, data: bytes) -> None:
        """Raises ConnectionError when the peer is gone."""
        ...

    async def close(self, code: int, reason: str = "", linger_s: float = 0.0) -> None:
        """Close (idempotent); ``reason`` at most 123 bytes (RFC 6455 5.5.1). ``linger_s``:
        how long the client may take before it can answer the close, over the usual wait (the
        audio ahead of the close that a client playing it at real time has still to play)."""
        ...

    def start_keepalive(self, audio_ahead_s: Callable[[], float]) -> None:
        """Keep the connection alive from now on, if the transport has a keepalive of its own
        to run (a WebSocket's pings; gRPC keeps its own). ``audio_ahead_s``: the audio sent
        that a client playing it at real time has still to play, which a ping sent now comes
        after (gateway/keepalive.py)."""
        ...

    def keepalive_at(self) -> float:
        """When the keepalive next has something to decide (monotonic; infinite when it has
        none): the runner's one timer calls ``keepalive_due`` then (a loop timer is about 0.5
        KiB on uvloop, and the gateway holds thousands of idle sessions)."""
        ...

    def keepalive_due(self, now: float) -> None:
        """The keepalive's time came: ping, or reset a connection whose pong is late."""
        ...

    def stop_keepalive(self) -> None:
        """The runner is done with the connection: its keepalive stops."""
        ...
