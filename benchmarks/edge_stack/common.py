"""What every candidate server and the load client share: routes' constants, the per-WebSocket
session a gateway would hold, and the probes that record what the handlers saw.

The handlers of each stack are thin: the work they are measured on (flooding a socket,
producing SSE, consuming an upload) is the same code here, given the stack's own send/receive.
"""

from __future__ import annotations

import asyncio
import collections
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from benchmarks.echo_server import ECHO_METHOD

FRAME_BYTES = 3200  # 100 ms of 16 kHz PCM16
FRAME = bytes(range(256)) * (FRAME_BYTES // 256) + bytes(FRAME_BYTES % 256)
TOKEN = "bench-token"  # the bearer token /idle accepts
FLOOD_SECONDS = 15.0  # a /flood or /events producer stops after this long ...
FLOOD_CAP_BYTES = 256 << 20  # ... or once send() has accepted this much
EVENTS_CAP_BYTES = 16 << 20  # /events stops here (the client reads it all at the end)
EVENT_PAD = b"x" * 4000
SINK_HOLD_S = 5.0  # /sink and /upload?hold=1 do not read for this long
MAX_MESSAGE_BYTES = 1 << 20


@dataclass(slots=True)
class GatewaySession:
    """The state a gateway keeps per authenticated WebSocket before its first audio: what the
    idle-memory figure includes besides the stack's own connection (ids, principal, the
    session's state, counters, an empty bounded outbox). No gRPC stream: the gateway opens one
    when the session starts, and ``/idle?grpc=1`` measures that separately."""

    session_id: str
    tenant: str
    key_id: str
    scopes: frozenset[str]
    remote: str
    opened_at: float
    last_seen: float
    state: str = "AWAITING_CONFIG"
    config: dict[str, Any] | None = None
    frames_in: int = 0
    bytes_in: int = 0
    frames_out: int = 0
    outbox: collections.deque[bytes] = field(default_factory=lambda: collections.deque(maxlen=64))

    def seen(self, data: bytes | str) -> None:
        self.frames_in += 1
        self.bytes_in += len(data)
        self.last_seen = time.monotonic()


def authenticate(authorization: str | None, remote: str) -> GatewaySession | None:
    """The session for a valid ``Authorization: Bearer`` header, None otherwise."""
    if authorization != f"Bearer {TOKEN}":
        return None
    now = time.monotonic()
    scopes = frozenset({"stt", "tts"})
    return GatewaySession(uuid.uuid4().hex, "tenant-a", "key-1", scopes, remote, now, now)


class SendProbe:
    """How a producer's sends went: bytes accepted by send(), the longest single send, and
    whether one is awaiting now (a send that waits while the peer reads nothing is real
    backpressure; one that never waits lets buffers grow)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.started = time.monotonic()
        self.bytes = 0
        self.sends = 0
        self.longest_s = 0.0
        self.pending_since: float | None = None
        self.ended = ""

    async def send(self, send: Callable[[bytes], Awaitable[object]], data: bytes) -> None:
        began = self.pending_since = time.monotonic()
        await send(data)
        self.pending_since = None
        self.longest_s = max(self.longest_s, time.monotonic() - began)
        self.bytes += len(data)
        self.sends += 1

    def snapshot(self) -> dict[str, Any]:
        now = time.monotonic()
        pending = 0.0 if self.pending_since is None else now - self.pending_since
        return {
            "bytes": self.bytes,
            "sends": self.sends,
            "longest_s": max(self.longest_s, pending),
            "pending_s": pending,
            "elapsed_s": now - self.started,
            "ended": self.ended,
        }


class ReadProbe:
    """How a handler read a request body: bytes and reads so far, the largest read."""

    def __init__(self) -> None:
        self.bytes = self.reads = self.largest = 0

    def snapshot(self) -> dict[str, Any]:
        return {"bytes": self.bytes, "reads": self.reads, "largest": self.largest}


@dataclass
class Probes:
    flood: SendProbe = field(default_factory=SendProbe)
    events: SendProbe = field(default_factory=SendProbe)
    upload: ReadProbe = field(default_factory=ReadProbe)
    sessions: dict[str, GatewaySession] = field(default_factory=dict)

    def snapshot(self) -> dict[str, Any]:
        return {
            "flood": self.flood.snapshot(),
            "events": self.events.snapshot(),
            "upload": self.upload.snapshot(),
            "sessions": len(self.sessions),
        }


async def flood(send: Callable[[bytes], Awaitable[object]], probe: SendProbe) -> None:
    """Send FRAME as fast as ``send`` lets us, until the cap, the time limit or an error."""
    probe.reset()
    deadline = probe.started + FLOOD_SECONDS
    try:
        while probe.bytes < FLOOD_CAP_BYTES and time.monotonic() < deadline:
            await probe.send(send, FRAME)
            if probe.sends % 16 == 0:
                # Lets /stats be served even where send never suspends; it drains nothing.
                await asyncio.sleep(0)
        probe.ended = "cap" if probe.bytes >= FLOOD_CAP_BYTES else "time"
    except Exception as exc:  # the peer went away: how each stack says so differs
        probe.ended = f"closed ({type(exc).__name__})"


async def sse_events(probe: SendProbe) -> AsyncIterator[bytes]:
    """Server-sent events (~4 KiB each) up to EVENTS_CAP_BYTES; the time suspended at each
    ``yield`` is the time the stack took to accept the previous one."""
    probe.reset()
    number = 0
    while probe.bytes < EVENTS_CAP_BYTES:
        event = b"id: %d\ndata: %s\n\n" % (number, EVENT_PAD)
        began = probe.pending_since = time.monotonic()
        yield event
        probe.pending_since = None
        probe.longest_s = max(probe.longest_s, time.monotonic() - began)
        probe.bytes += len(event)
        probe.sends += 1
        number += 1
    probe.ended = "cap"


async def consume(chunks: AsyncIterator[bytes], probe: ReadProbe, hold: bool) -> dict[str, Any]:
    """Read a request body chunk by chunk, keeping none of it (as a gateway streaming it to the
    model would); with ``hold``, first wait SINK_HOLD_S without reading."""
    probe.bytes = probe.reads = probe.largest = 0
    if hold:
        await asyncio.sleep(SINK_HOLD_S)
    async for chunk in chunks:
        probe.bytes += len(chunk)
        probe.reads += 1
        probe.largest = max(probe.largest, len(chunk))
    return probe.snapshot()


class UpstreamRelay:
    """One WebSocket's grpc.aio bidi stream to the echo upstream: ``write`` a frame's bytes up;
    every message the upstream sends comes back out through ``send``. Raw bytes, no parsing."""

    def __init__(self, channel: Any, send: Callable[[bytes], Awaitable[object]]) -> None:
        self.call = channel.stream_stream(ECHO_METHOD)()  # no (de)serializers: raw bytes
        self.downstream = asyncio.get_running_loop().create_task(self._pump(send))

    async def _pump(self, send: Callable[[bytes], Awaitable[object]]) -> None:
        async for message in self.call:
            await send(message)

    async def write(self, frame: bytes) -> None:
        await self.call.write(frame)

    async def finish(self) -> None:
        """Half-close upward and wait for the echo to end. Raises TimeoutError after 5 s."""
        await self.call.done_writing()
        await asyncio.wait_for(self.downstream, 5.0)

    def cancel(self) -> None:
        self.downstream.cancel()
        self.call.cancel()
