"""Stage timings: accumulate where a stream's time goes, and render it for the wire.

A ``StageClock`` sums microseconds per stage on the monotonic clock. Sessions keep one for the
whole stream and one per utterance (STT) or context (TTS). The wire forms are the
``voxwire.v1.StageTimings`` message (in-band and in the ``-bin`` trailer) and an HTTP
Server-Timing header value (W3C Server Timing, ``name;dur=<ms>``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from voxwire.v1 import timings_pb2

Clock = Callable[[], float]

TIMINGS_TRAILER = "voxwire-timings-bin"
SERVER_TIMING_TRAILER = "server-timing"

# Stage name -> StageTimings field. The names are the Server-Timing metric names.
STAGES = {
    "receive": "receive_us",
    "decode": "decode_us",
    "triton": "triton_us",
    "compute": "compute_us",
    "encode": "encode_us",
    "send": "send_us",
}
# Stages an edge (the gateway) adds in front of the inference server; in Server-Timing only when
# set, so a direct client of the adapter sees exactly the adapter's stages.
EDGE_STAGES = {
    "edge-receive": "edge_receive_us",
    "edge-queue": "edge_queue_us",
    "edge-connect": "edge_connect_us",
    "edge-send": "edge_send_us",
}
# Stage -> StageTimings field, as the gateway's sessions name them when they charge time.
EDGE_KEYS = {field.removesuffix("_us"): field for field in EDGE_STAGES.values()}


@dataclass(slots=True)
class StageClock:
    """Running totals of one scope (a stream, an utterance, a TTS context)."""

    clock: Clock = time.monotonic
    started: float = field(default=-1.0)
    stages_us: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STAGES, 0))
    first_response_us: int | None = None
    first_input_at: float | None = None
    model_requests: int = 0
    model_responses: int = 0
    replica: str = ""

    def __post_init__(self) -> None:
        if self.started < 0:
            self.started = self.clock()

    def add(self, stage: str, seconds: float) -> None:
        self.stages_us[stage] += max(0, round(seconds * 1e6))

    def add_us(self, stage: str, micros: int) -> None:
        self.stages_us[stage] += max(0, micros)

    def mark_input(self, now: float) -> None:
        """The first input of the scope (audio or text) arrived at ``now``."""
        if self.first_input_at is None:
            self.first_input_at = now

    def mark_first_response(self, now: float) -> None:
        if self.first_response_us is None and self.first_input_at is not None:
            self.first_response_us = max(0, round((now - self.first_input_at) * 1e6))

    def to_proto(self, now: float | None = None) -> timings_pb2.StageTimings:
        end = self.clock() if now is None else now
        msg = timings_pb2.StageTimings(
            total_us=max(0, round((end - self.started) * 1e6)),
            model_requests=self.model_requests,
            model_responses=self.model_responses,
            replica=self.replica,
            **{STAGES[name]: us for name, us in self.stages_us.items()},
        )
        if self.first_response_us is not None:
            msg.first_response_us = self.first_response_us
        return msg


def server_timing(msg: timings_pb2.StageTimings) -> str:
    """Render as an HTTP Server-Timing value (durations in ms, W3C Server Timing section 3)."""
    parts = [f"{name};dur={getattr(msg, fld) / 1000:.3f}" for name, fld in STAGES.items()]
    parts += [
        f"{name};dur={getattr(msg, fld) / 1000:.3f}"
        for name, fld in EDGE_STAGES.items()
        if getattr(msg, fld)
    ]
    if msg.HasField("first_response_us"):
        parts.append(f"first;dur={msg.first_response_us / 1000:.3f}")
    parts.append(f"total;dur={msg.total_us / 1000:.3f}")
    return ", ".join(parts)


def trailers(msg: timings_pb2.StageTimings) -> tuple[tuple[str, str | bytes], ...]:
    """The two timing trailers every stream ends with."""
    return ((TIMINGS_TRAILER, msg.SerializeToString()), (SERVER_TIMING_TRAILER, server_timing(msg)))


def parse_server_timing(value: str) -> dict[str, float]:
    """Parse a Server-Timing value into {name: ms} (for clients and tests)."""
    out: dict[str, float] = {}
    for part in value.split(","):
        name, _, params = part.strip().partition(";")
        for param in params.split(";"):
            key, _, val = param.strip().partition("=")
            if key == "dur":
                out[name] = float(val)
    return out


def add_up(parts: Iterable[timings_pb2.StageTimings]) -> timings_pb2.StageTimings:
    """The breakdown of several scopes one after another (e.g. the upstream segments of an edge
    session across failovers): stage sums and counts add up, the first ``first`` counts, the
    last replica is kept. ``total_us`` is left for the caller (the scopes may overlap)."""
    out = timings_pb2.StageTimings()
    for part in parts:
        for fld in (*STAGES.values(), *EDGE_STAGES.values()):
            setattr(out, fld, getattr(out, fld) + getattr(part, fld))
        out.model_requests += part.model_requests
        out.model_responses += part.model_responses
        if part.HasField("first_response_us") and not out.HasField("first_response_us"):
            out.first_response_us = part.first_response_us
        if part.replica:
            out.replica = part.replica
    return out
