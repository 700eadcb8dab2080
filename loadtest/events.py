"""What a target reports while a stream runs: typed events, each stamped when it was received.

Every event carries ``at``, the ``time.monotonic()`` reading taken as the message was read off
the wire (in the target's own reader), so the session's measurements never include the time
the event waited in the tool. ``Ended`` is always the last event of a stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from voxwire.v1 import stream_pb2


@dataclass(frozen=True, slots=True)
class Started:
    """STT: the server has the configuration (voxwire ``started``, Triton's START answered)."""

    at: float


@dataclass(frozen=True, slots=True)
class Result:
    """STT: an interim or final result covering audio up to ``end_ms`` of the stream."""

    at: float
    is_final: bool
    text: str
    end_ms: int


@dataclass(frozen=True, slots=True)
class Ack:
    """A response that answers audio message ``index`` (0-based) itself (the echo floor)."""

    at: float
    index: int


@dataclass(frozen=True, slots=True)
class ContextOpened:
    at: float
    context_id: str


@dataclass(frozen=True, slots=True)
class Audio:
    """TTS: one audio chunk of a context, ``duration_ms`` long, starting at ``start_ms``."""

    at: float
    context_id: str
    start_ms: float
    duration_ms: float


@dataclass(frozen=True, slots=True)
class ContextDone:
    at: float
    context_id: str


@dataclass(frozen=True, slots=True)
class ContextFailed:
    """TTS: one context ended with an error; the stream goes on."""

    at: float
    context_id: str
    reason: str
    message: str = ""


@dataclass(frozen=True, slots=True)
class Notice:
    """A voxwire StreamNotice: something that is not an error (a failover, a timeout's warning,
    a drain, input that does not look like its declared format); ``kind`` without its
    ``KIND_`` prefix, ``context_id`` set for a TTS context's."""

    at: float
    kind: str
    context_id: str = ""


def notice_kind(value: stream_pb2.StreamNotice.Kind.ValueType) -> str:
    """A ``StreamNotice.Kind`` by name without its prefix (``FAILOVER``); a kind this build
    does not know by its number."""
    try:
        return stream_pb2.StreamNotice.Kind.Name(value).removeprefix("KIND_")
    except ValueError:
        return str(value)


@dataclass(frozen=True, slots=True)
class Ended:
    """The stream is over: its status (gRPC code name, ``OK`` on success), the voxwire error
    reason if any, the stage timings of the ``voxwire-timings-bin`` trailer in µs (empty when
    the target has none), and the retry delay a retryable refusal carried (``RetryInfo``, in
    ms; None without one), and the error's message (human-readable: what the run reports as
    an example of its error key)."""

    at: float
    status: str = "OK"
    reason: str = ""
    stages_us: dict[str, int] = field(default_factory=dict)
    retry_delay_ms: int | None = None
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "OK"


Event = (
    Started | Result | Ack | ContextOpened | Audio | ContextDone | ContextFailed | Notice | Ended
)

# The reason of a stream that never reached the target (nothing listening, the connection
# refused, a name that does not resolve), whichever its wire: gRPC's status for it is
# UNAVAILABLE, and a WebSocket target ends such a stream the same way, so that one cause is
# one error key (``UNAVAILABLE/CONNECT_FAILED``) when targets are compared.
CONNECT_FAILED = "CONNECT_FAILED"


def connect_failed(at: float) -> Ended:
    """The end of a stream that could not connect."""
    return Ended(at, "UNAVAILABLE", CONNECT_FAILED)
