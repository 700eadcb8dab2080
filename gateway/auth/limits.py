"""Per-key session limits: concurrent sessions and new sessions per minute.

Sans-I/O: the clock is injected (``time.monotonic`` by default); nothing here sleeps or waits.

Concurrent sessions are counted per key id. ``SessionLimiter.admit`` returns a
``SessionPermit`` that holds one slot until ``release()``; releasing is idempotent, so the
gateway may release it on every ending path (``with``/``finally``, a close callback and an error
path) and the count still drops exactly once.

New sessions per minute use a token bucket, written as GCRA (the generic cell rate algorithm,
ITU-T I.371): a key with a limit of ``L`` per minute has a bucket of ``L`` sessions that refills
one session every ``60 / L`` seconds. So at most ``L`` sessions start at once, and then one
every ``60 / L`` seconds; over any 60 s window at most ``2 L`` start (a full bucket plus a
minute of refill). GCRA keeps one number per key (the theoretical arrival time, TAT), so memory
is O(1) per active key, and the delay until the next session is admitted is exact:
``retry_delay = TAT - (60 - 60 / L) - now``. A session admitted at ``now + retry_delay`` or later
passes (the HTTP ``Retry-After`` rounds it up to whole seconds: ``retry_after_header``).

At the concurrency limit no time can be promised (it depends on when other sessions end), so
the error carries ``concurrency_retry_delay``, a configured hint.

Requests that are not sessions (``GET /v1/capabilities``, gRPC ``GetCapabilities``) have a
bucket of their own per key, the same GCRA with no concurrency count (``CatalogLimiter``).

Memory: one ``_KeyState`` per key id with open sessions or an unrefilled bucket; the states of
idle keys with full buckets are dropped (they equal a fresh state) whenever the table has
doubled since the last sweep. Only authenticated key ids reach the limiter, so the table is
also bounded by the keys file.
"""

from __future__ import annotations

import datetime
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from voxwire.errors import RateLimited

WINDOW_S = 60.0


@dataclass(frozen=True, slots=True)
class KeyLimits:
    """The limits of one API key (from its keys-file entry or the configured defaults)."""

    max_concurrent_sessions: int
    max_new_sessions_per_minute: int

    def __post_init__(self) -> None:
        for name in ("max_concurrent_sessions", "max_new_sessions_per_minute"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")


class _KeyState:
    __slots__ = ("active", "tat")

    def __init__(self) -> None:
        self.active = 0  # sessions holding a permit
        self.tat = -math.inf  # GCRA theoretical arrival time (clock seconds)


class SessionPermit:
    """One admitted session's slot; ``release()`` frees it (once, however often it is called)."""

    __slots__ = ("_limiter", "_state", "key_id", "released")

    def __init__(self, limiter: SessionLimiter, key_id: str, state: _KeyState) -> None:
        self._limiter = limiter
        self._state = state
        self.key_id = key_id
        self.released = False

    def release(self) -> None:
        """Free the slot. Idempotent: only the first call counts."""
        if self.released:
            return
        self.released = True
        self._state.active -= 1
        self._limiter._released(self.key_id, self._state)

    def __enter__(self) -> SessionPermit:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


class SessionLimiter:
    """Per-key admission: concurrent sessions and new sessions per minute (a token bucket)."""

    def __init__(
        self,
        *,
        concurrency_retry_delay: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if concurrency_retry_delay <= 0:
            raise ValueError("concurrency_retry_delay must be positive")
        self._states: dict[str, _KeyState] = {}
        self._concurrency_retry_delay = concurrency_retry_delay
        self._clock = clock
        self._sweep_at = 64  # sweep idle states when the table reaches this size

    def admit(self, key_id: str, limits: KeyLimits, *, new_session: bool = True) -> SessionPermit:
        """Admit one session of ``key_id``; the returned permit must be released when it ends.

        ``new_session=False`` (a resume of a session that already counted) takes a concurrent
        slot but no per-minute slot, so that the clients of a draining gateway can all resume
        at once. Nothing is consumed when the session is refused.

        Raises:
            RateLimited: the key is at ``max_concurrent_sessions`` (retry delay: the configured
                hint) or out of new sessions this minute (retry delay: exact, from the bucket).
        """
        now = self._clock()
        state = self._states.get(key_id)
        if state is None:
            state = self._new_state(key_id, now)
        self._check_concurrency(key_id, state, limits)
        if new_session:
            self._take_new(key_id, state, limits, now)
        state.active += 1
        return SessionPermit(self, key_id, state)

    def check(self, key_id: str, limits: KeyLimits) -> None:
        """Raises the RateLimited that ``admit`` would raise for a new session of ``key_id``
        now, taking nothing: for a refusal before a request's body is sent (an HTTP client's
        ``Expect: 100-continue``), whose request is admitted for real once it comes."""
        state = self._states.get(key_id)
        if state is None:
            return  # no session open and a full bucket
        self._check_concurrency(key_id, state, limits)
        self._check_bucket(key_id, state, limits, self._clock())

    def _check_concurrency(self, key_id: str, state: _KeyState, limits: KeyLimits) -> None:
        if state.active >= limits.max_concurrent_sessions:
            raise RateLimited(
                f"key {key_id} has {state.active} open sessions, "
                f"its limit is {limits.max_concurrent_sessions}",
                retry_delay=_delta(self._concurrency_retry_delay),
            )

    def count_new(self, permit: SessionPermit, limits: KeyLimits) -> None:
        """Count a session admitted with ``new_session=False`` as new after all (a WebSocket
        is admitted at its upgrade, before its first message says whether it resumes).

        Raises RateLimited (exact retry delay) when the key is out of new sessions this minute;
        the permit is still held then (release it)."""
        self._take_new(permit.key_id, permit._state, limits, self._clock())

    def _take_new(self, key_id: str, state: _KeyState, limits: KeyLimits, now: float) -> None:
        self._check_bucket(key_id, state, limits, now)
        state.tat = _bucket_taken(state.tat, limits.max_new_sessions_per_minute, now)

    @staticmethod
    def _check_bucket(key_id: str, state: _KeyState, limits: KeyLimits, now: float) -> None:
        per_minute = limits.max_new_sessions_per_minute
        wait = _bucket_wait(state.tat, per_minute, now)
        if wait > 0:
            raise RateLimited(
                f"key {key_id} started {per_minute} sessions within the last minute",
                retry_delay=_delta(wait),
            )

    def active_sessions(self, key_id: str) -> int:
        """How many permits of ``key_id`` are held now."""
        state = self._states.get(key_id)
        return state.active if state is not None else 0

    def tracked_keys(self) -> int:
        """How many key states are held (for metrics and the memory bound's test)."""
        return len(self._states)

    def _new_state(self, key_id: str, now: float) -> _KeyState:
        if len(self._states) >= self._sweep_at:
            self._sweep(now)
            self._sweep_at = max(64, 2 * len(self._states))
        state = _KeyState()
        self._states[key_id] = state
        return state

    def _sweep(self, now: float) -> None:
        idle = [k for k, s in self._states.items() if s.active == 0 and s.tat <= now]
        for key_id in idle:
            del self._states[key_id]

    def _released(self, key_id: str, state: _KeyState) -> None:
        # A state that is idle with a full bucket is the same as no state: drop it now.
        if state.active == 0 and state.tat <= self._clock():
            if self._states.get(key_id) is state:
                del self._states[key_id]


class CatalogLimiter:
    """Per-key rate of the requests that are not sessions: ``GET /v1/capabilities`` and the
    gRPC front's ``GetCapabilities``. One GCRA bucket per key, as for new sessions, of
    ``max(floor_per_minute, the key's max_new_sessions_per_minute)`` requests a minute.

    Why a bucket of its own rather than the session limiter's: such a request holds nothing
    (no concurrent slot to release), and taking one of the key's new sessions for it would
    halve what a client that asks before each session may start. Why at least the key's
    session rate: a client that asks once per session then never meets this limit before its
    session limit, whatever its key allows; the floor (600 a minute by default) leaves room
    for keys with small session limits and for a client's retries. Each request still reaches
    an adapter, which is why there is a limit at all.

    Memory: one number per key with an unrefilled bucket; a full bucket's entry is dropped
    when the table has doubled since the last sweep (it equals a fresh one). Only
    authenticated key ids reach it, so the keys file bounds the table too.
    """

    def __init__(
        self, *, floor_per_minute: int = 600, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if floor_per_minute < 1:
            raise ValueError("floor_per_minute must be positive")
        self._floor = floor_per_minute
        self._clock = clock
        self._tats: dict[str, float] = {}  # key id -> GCRA theoretical arrival time
        self._sweep_at = 64

    def per_minute(self, limits: KeyLimits) -> int:
        """How many catalog requests a minute a key with ``limits`` may make."""
        return max(self._floor, limits.max_new_sessions_per_minute)

    def admit(self, key_id: str, limits: KeyLimits) -> None:
        """Count one catalog request of ``key_id``; nothing is counted when it is refused.

        Raises:
            RateLimited: the key made ``per_minute(limits)`` within the last minute (retry
                delay: exact, from the bucket).
        """
        now = self._clock()
        per_minute = self.per_minute(limits)
        tat = self._tats.get(key_id, -math.inf)
        wait = _bucket_wait(tat, per_minute, now)
        if wait > 0:
            raise RateLimited(
                f"key {key_id} asked for capabilities {per_minute} times within the last minute",
                retry_delay=_delta(wait),
            )
        if key_id not in self._tats and len(self._tats) >= self._sweep_at:
            self._tats = {k: t for k, t in self._tats.items() if t > now}
            self._sweep_at = max(64, 2 * len(self._tats))
        self._tats[key_id] = _bucket_taken(tat, per_minute, now)

    def tracked_keys(self) -> int:
        """How many key states are held (for the memory bound's test)."""
        return len(self._tats)


def _bucket_wait(tat: float, per_minute: int, now: float) -> float:
    """GCRA: seconds until a bucket of ``per_minute`` at ``tat`` holds one (<= 0: now)."""
    interval = WINDOW_S / per_minute
    tolerance = WINDOW_S - interval  # a full bucket: ``per_minute`` at once
    return tat - tolerance - now


def _bucket_taken(tat: float, per_minute: int, now: float) -> float:
    """GCRA: the theoretical arrival time once one is taken at ``now``."""
    return max(tat, now) + WINDOW_S / per_minute


def retry_after_header(delay: datetime.timedelta) -> str:
    """The HTTP ``Retry-After`` value (RFC 9110 10.2.3: whole seconds) for a retry delay.

    Rounds up, so a client that waits that long is admitted; at least 1.
    """
    return str(max(1, math.ceil(delay.total_seconds())))


def _delta(seconds: float) -> datetime.timedelta:
    # Round up to the microsecond so that waiting exactly this long is enough.
    return datetime.timedelta(microseconds=math.ceil(seconds * 1_000_000))
