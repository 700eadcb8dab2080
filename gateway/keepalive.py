"""The WebSocket keepalive's rule: when to ping, and when a missing pong means the peer is gone.

A ping (RFC 6455 5.5.2) goes out once nothing has come from the client for ``interval_s``; the
client must answer it (5.5.3). The pong is late ``pong_timeout_s`` after the client could have
read the ping, and a ping written behind audio reaches a client that reads its socket at
playback pace (a player) only once that audio has played: so its deadline counts from then,
``audio_ahead_s`` later, as a client write's deadline does (docs/contract.md, "Limits and
timeouts"). aiohttp's own heartbeat counted it from the write, and closed such a player as
dead: a TTS client reading at playback pace with ``lead_ms=0`` lost its connection about 25 s
into a long text, whose audio it was playing at real time all along (the "keepalive kills"
of ../shared/reference/voice-apis.md). Any frame from the client, a pong or not, shows it is
there.

Pure: the clock is passed in. ``gateway/aiohttp_port.py`` sends the pings and resets the
connection; the session runner's one timer calls it at ``next_at`` (gateway/runner.py).
"""

from __future__ import annotations

import enum


class Due(enum.Enum):
    NOTHING = enum.auto()
    PING = enum.auto()  # send a ping now
    GONE = enum.auto()  # the pong is late: the client is gone


class Keepalive:
    __slots__ = ("interval_s", "pong_timeout_s", "_heard_at", "_pong_due", "pinged_ahead_s")

    def __init__(self, interval_s: float, now: float, pong_timeout_s: float | None = None) -> None:
        self.interval_s = interval_s
        self.pong_timeout_s = interval_s / 2 if pong_timeout_s is None else pong_timeout_s
        self._heard_at = now
        self._pong_due: float | None = None  # set while a ping waits for its pong
        self.pinged_ahead_s = 0.0  # the audio that was ahead of the last ping (for the log)

    def heard(self, now: float) -> None:
        """A frame came from the client (a pong among them)."""
        self._heard_at = now
        self._pong_due = None

    def next_at(self) -> float:
        """When ``on_time`` has something to decide (the caller's timer may fire earlier)."""
        if self._pong_due is not None:
            return self._pong_due
        return self._heard_at + self.interval_s

    def on_time(self, now: float, audio_ahead_s: float) -> Due:
        """What to do at ``now``; ``audio_ahead_s``: the audio written to the client that it has
        still to play at real time (a ping written now comes after it)."""
        if self._pong_due is not None:
            return Due.GONE if now >= self._pong_due else Due.NOTHING
        if now < self._heard_at + self.interval_s:
            return Due.NOTHING
        self.pinged_ahead_s = audio_ahead_s
        self._pong_due = now + audio_ahead_s + self.pong_timeout_s
        return Due.PING
