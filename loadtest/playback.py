"""Playback of streamed TTS audio, simulated per context: when would a listener hear a gap?

Playback starts ``delay`` after the first chunk arrives (a jitter buffer; 0 by default) and
consumes audio in real time. Each chunk must have arrived by the time the audio before it has
finished playing; a chunk that arrives after that is an underrun: playback stalls from the
moment it ran dry until the chunk arrives, and everything after it shifts by the stall (the
listener hears the rest later, not skipped).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Playback:
    delay_s: float = 0.0
    due: float | None = None  # when the next chunk must be present (playback runs dry)
    underruns: int = 0
    stalled_s: float = 0.0
    chunks: int = 0

    def chunk(self, arrived: float, duration_s: float) -> float:
        """A chunk of ``duration_s`` arrived at ``arrived`` (monotonic s); returns the stall it
        caused (0 if it was in time)."""
        self.chunks += 1
        if self.due is None:
            self.due = arrived + self.delay_s + duration_s
            return 0.0
        stall = arrived - self.due
        if stall > 0:
            self.underruns += 1
            self.stalled_s += stall
            self.due = arrived
        self.due += duration_s
        return max(0.0, stall)
