"""Settings shared by the SDK's sessions, and the event that reports a resume."""

from __future__ import annotations

from dataclasses import dataclass, field

from voxwire.client.backoff import Backoff


@dataclass(frozen=True, slots=True)
class SessionOptions:
    """Timeouts and bounds of an SDK session (every wait has one)."""

    backoff: Backoff = field(default_factory=Backoff)
    # Opening a WebSocket and getting the session message.
    connect_timeout_s: float = 10.0
    # WebSocket pings (RFC 6455 5.5.2); no pong within half of it ends the connection, and the
    # session resumes. None: rely on the server's pings.
    heartbeat_s: float | None = 10.0
    # A keepAlive goes out when nothing else was sent for this long, or for half the time the
    # gateway's session message says it waits before its idle warning, if that is shorter
    # (the gateway ends a session idle for 30 s by default); 0 turns it off.
    keepalive_s: float = 10.0
    # How long one ``send`` may wait for the connection or for room in the replay window
    # before it raises TimeoutError.
    send_timeout_s: float = 60.0
    # How long ``close`` waits for the summary.
    close_timeout_s: float = 30.0
    # Unacknowledged STT audio held for a resume (the gateway's replay window, if smaller,
    # wins): ``send`` waits when it is full. Below the gateway's window, the SDK forces finals
    # of its own so that the window empties (docs/design/edge.md, "The SDK's side").
    max_replay_ms: int = 60_000
    # Events held for a caller that does not read them; beyond it the socket is not read.
    max_events: int = 10_000


@dataclass(frozen=True, slots=True)
class Resumed:
    """The session continued on a new connection (an event of both session kinds)."""

    url: str
    # From the moment the SDK saw the connection end (a close, a reset, or going_away) to the
    # resumed session. A path that goes silent without either is seen only when its pings go
    # unanswered (heartbeat_s, then half of it for the pong): that detection time comes
    # before this, and is not in it.
    downtime_s: float
    # Connection attempts it took (1: the first one worked).
    attempts: int
    # What ended the connection before: "going_away", "close 1006", ...
    cause: str
    # STT: audio replayed from the ack.
    replayed_ms: int = 0
