"""What every edge session keeps whatever its kind: its timers, its drain, its edge timings.

``SttEdgeSession`` and ``TtsEdgeSession`` (gateway/stt/session.py, gateway/tts/session.py) are
the sans-I/O cores of the two WebSocket (and gRPC front) sessions. Their rules differ; these
parts do not, and were two copies (docs/design/edge.md, "Session states" and "Drain"):

- The idle timer, with its warning ``idle_warning_s`` before; when it runs from is each kind's
  own (``_idle_at``: STT never after the client's close, TTS never while it waits for audio).
- The maximum duration, with its warning ``duration_warning_s`` before; what happens at the end
  is each kind's own (STT hands over, TTS ends with a going-away).
- The drain: a ``GoingAway`` with a resume token, the session failed DRAINING at its end.
- The edge's own stage times (``charge``), merged over the upstream segments' timings.

A base class, not a member: the gateway holds thousands of idle sessions, and a second object
per session would cost its header and dict (BENCHMARKS.md, "Memory per idle WebSocket").
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from voxwire import errors
from voxwire.edge.v1 import session_pb2
from voxwire.timings import EDGE_KEYS, Clock, add_up
from voxwire.v1 import stream_pb2, timings_pb2


class TimerLimits(Protocol):
    """The limits the timers read (SttLimits, TtsLimits: frozen, so read-only here)."""

    @property
    def idle_timeout_s(self) -> float: ...
    @property
    def idle_warning_s(self) -> float: ...
    @property
    def max_session_s(self) -> float: ...
    @property
    def duration_warning_s(self) -> float: ...
    @property
    def drain_grace_s(self) -> float: ...


L = TypeVar("L", bound=TimerLimits)
# (token, expiry in seconds since the epoch) for what the session would resume with, its id and
# how many times it has resumed. Given them at each call, an issuer holds no reference to the
# session: one that did (a closure over it) made every session a reference cycle, freed only by
# the garbage collector's rare full collection with its connection's buffers.
TokenIssuer = Callable[[Any, str, int], tuple[str, float]]


class Due(enum.Enum):
    """What the session's own timers say at a moment (``EdgeSessionBase._timers``)."""

    NOTHING = enum.auto()
    DRAINED = enum.auto()  # the drain's grace has run out: fail DRAINING
    IDLE = enum.auto()  # no client message for idle_timeout_s: fail IDLE_TIMEOUT
    MAX_DURATION = enum.auto()  # the session reached max_session_s: the kind ends it its way


@dataclass(slots=True)
class TimerCheck:
    due: Due
    notices: list[stream_pb2.StreamNotice]


class EdgeSessionBase(Generic[L]):
    # How each kind words its duration warning (what happens at the end).
    _DURATION_WARNING = "the session reaches its maximum duration"

    def __init__(
        self,
        limits: L,
        *,
        session_id: str,
        issue_token: TokenIssuer,
        clock: Clock,
        transport_limits: session_pb2.EdgeLimits | None,
    ) -> None:
        self.limits = limits
        self.session_id = session_id
        # What the connection adds to ``session.limits`` (the WebSocket's ping and pong
        # timeout); None on a transport without them (the gRPC front). Shared, not copied.
        self._transport_limits = transport_limits
        self.resumes = 0
        self._issue_token = issue_token
        self._clock = clock
        self._started_at = clock()
        # The idle timer runs from here (each kind says what moves it on: ``_idle_at``).
        self._last_client_at = self._started_at
        self._warned_idle = False
        self._warned_duration = False
        self._drain_ends: float | None = None
        self.edge = {
            "edge_receive_us": 0,
            "edge_queue_us": 0,
            "edge_connect_us": 0,
            "edge_send_us": 0,
        }

    # -- limits --------------------------------------------------------------------------------

    def _with_transport(self, limits: session_pb2.EdgeLimits) -> session_pb2.EdgeLimits:
        """The session's limits as the client is told them, with the connection's own."""
        if self._transport_limits is not None:
            limits.MergeFrom(self._transport_limits)
        return limits

    # -- timers --------------------------------------------------------------------------------

    def _idle_at(self) -> float:
        raise NotImplementedError

    def _timer_deadline(self) -> float:
        """When the idle, duration or drain timer next needs looking at (monotonic s)."""
        limits = self.limits
        at = self._idle_at() - (0 if self._warned_idle else limits.idle_warning_s)
        end = self._started_at + limits.max_session_s
        at = min(at, end - (0 if self._warned_duration else limits.duration_warning_s))
        if self._drain_ends is not None:
            at = min(at, self._drain_ends)
        return at

    def _timers(self, now: float, *, may_end: bool = True) -> TimerCheck:
        """What the timers say at ``now``, in order: the drain's end, idleness (else its
        warning, once), the maximum duration (unless ``may_end`` is False: the session is
        ending already; else its warning, once). Warnings come back as notices for the
        client."""
        limits = self.limits
        notices: list[stream_pb2.StreamNotice] = []
        if self._drain_ends is not None and now >= self._drain_ends:
            return TimerCheck(Due.DRAINED, notices)
        idle_at = self._idle_at()
        if now >= idle_at:
            return TimerCheck(Due.IDLE, notices)
        if not self._warned_idle and now >= idle_at - limits.idle_warning_s:
            self._warned_idle = True
            notices.append(
                notice(
                    stream_pb2.StreamNotice.KIND_IDLE_WARNING,
                    idle_at - now,
                    "no message from the client: the session ends unless one arrives",
                )
            )
        end = self._started_at + limits.max_session_s
        if now >= end and may_end:
            return TimerCheck(Due.MAX_DURATION, notices)
        if not self._warned_duration and now >= end - limits.duration_warning_s:
            self._warned_duration = True
            notices.append(
                notice(
                    stream_pb2.StreamNotice.KIND_DURATION_WARNING,
                    end - now,
                    self._DURATION_WARNING,
                )
            )
        return TimerCheck(Due.NOTHING, notices)

    @staticmethod
    def _drained() -> errors.VoxwireError:
        return errors.Draining("the gateway is restarting: resume on another one")

    # -- drain ---------------------------------------------------------------------------------

    def _going_away(
        self,
        reason: str,
        resume_with: object,
        *,
        grace_s: float | None = None,
        reconnect_now: bool = False,
    ) -> session_pb2.GoingAway:
        token, _ = self._issue_token(resume_with, self.session_id, self.resumes)
        away = session_pb2.GoingAway(reason=reason, resume_token=token, reconnect_now=reconnect_now)
        if grace_s is not None:
            away.grace.FromMilliseconds(round(grace_s * 1000))
        return away

    def _begin_drain(
        self, grace_s: float | None, reconnect_now: bool, resume_with: object
    ) -> session_pb2.GoingAway:
        """The gateway is shutting down: the going-away for the client now; the session fails
        DRAINING at the end of the grace (``_timers``)."""
        grace_s = self.limits.drain_grace_s if grace_s is None else grace_s
        self._drain_ends = self._clock() + grace_s
        return self._going_away(
            "DRAINING", resume_with, grace_s=grace_s, reconnect_now=reconnect_now
        )

    # -- timings -------------------------------------------------------------------------------

    def charge(self, stage: str, seconds: float) -> None:
        """Edge time spent by the gateway for this session (``edge_receive``, ``edge_send``)."""
        if seconds > 0:
            self.edge[EDGE_KEYS[stage]] += round(seconds * 1e6)

    def _whole_timings(
        self, upstream: Iterable[timings_pb2.StageTimings]
    ) -> timings_pb2.StageTimings:
        """Every upstream segment's stages plus the edge's, and the session's wall time."""
        merged = add_up(upstream)
        for name, value in self.edge.items():
            setattr(merged, name, value)
        merged.total_us = round((self._clock() - self._started_at) * 1e6)
        return merged


def notice(
    kind: stream_pb2.StreamNotice.Kind.ValueType, remaining_s: float, text: str
) -> stream_pb2.StreamNotice:
    """A notice for the client, with the time left before what it warns of."""
    message = stream_pb2.StreamNotice(kind=kind, message=text)
    message.remaining.FromMilliseconds(max(0, round(remaining_s * 1000)))
    return message
