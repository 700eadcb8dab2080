"""When the audio a stream has written would have played at real time.

A TTS client may take audio at playback pace (a player, or an edge relaying to one through
socket buffers that hold minutes of it), so its window can stay shut while it plays what it
holds. A write's deadline counts from this clock when it is ahead (docs/contract.md, "Limits
and timeouts"): the adapter's outbox and the gateway's ``POST /v1/tts`` writes keep one each.
"""

from __future__ import annotations


class PlaybackClock:
    __slots__ = ("_until",)

    def __init__(self) -> None:
        self._until = 0.0  # monotonic time when the audio written so far has played

    def wrote(self, audio_ms: int, now: float) -> None:
        """``audio_ms`` of audio was written at ``now``: it plays after what was written before,
        or from ``now`` after a gap (a listener's playback restarts where it stopped)."""
        self._until = max(self._until, now) + audio_ms / 1000

    def ahead(self, now: float) -> float:
        """Seconds of the audio written still to play at ``now`` (0 once all of it has)."""
        left = self._until - now
        return left if left > 0 else 0.0
