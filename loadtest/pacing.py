"""Real-time pacing on an absolute schedule.

Message ``i`` of a stream is due at ``start + i * period`` on ``time.monotonic()``; the writer
sleeps until that instant, never for a fixed period after the last send, so errors do not
accumulate (a late wake-up delays one message, not all that follow). The due time is also the
message's *intended* time: latency is measured from it (docs/design/loadtest.md, "Coordinated
omission"). How late a wake-up was is the generator's own lag, recorded so a saturated
generator shows itself.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Schedule:
    start: float  # monotonic seconds of message 0
    period_s: float

    def due(self, index: int) -> float:
        return self.start + index * self.period_s

    def index_at(self, now: float) -> int:
        """The last message due at or before ``now`` (-1 before the start)."""
        if now < self.start:
            return -1
        return int((now - self.start) // self.period_s)


async def sleep_until(deadline: float) -> float:
    """Sleep until ``deadline`` (monotonic); return how late the wake-up was, in seconds
    (0 when the deadline had already passed: that lateness is the caller's, not the timer's)."""
    delay = deadline - time.monotonic()
    if delay <= 0:
        return 0.0
    await asyncio.sleep(delay)
    return max(0.0, time.monotonic() - deadline)
