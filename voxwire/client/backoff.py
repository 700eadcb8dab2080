"""Reconnect delays: exponential backoff with full jitter that honours the server's retry delay.

"Full jitter" (AWS Architecture Blog, "Exponential Backoff And Jitter", 2015): the n-th retry
sleeps ``uniform(0, min(cap, base * 2**n))``. Clients that lost the same server at the same
moment (a gateway restart drops all its sessions at once) then spread their reconnects over the
whole window instead of arriving in waves. A delay the server asked for (``retryAfterMs`` of an
error event: RATE_LIMITED, OVERLOADED, BACKEND_UNAVAILABLE) is a floor: the jittered delay is
never shorter.

The budget is bounded twice: at most ``max_attempts`` reconnects in a row without a session
coming up, and no attempt that would start after ``max_elapsed_s`` from the first failure. A
session that comes up again resets both. Pure: the random source and the clock are passed in.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """Reconnect policy of an SDK session. Raises ValueError for a non-positive setting."""

    base_s: float = 0.1
    cap_s: float = 5.0
    max_attempts: int = 8
    max_elapsed_s: float = 30.0

    def __post_init__(self) -> None:
        if self.base_s <= 0 or self.cap_s < self.base_s:
            raise ValueError("backoff: need 0 < base_s <= cap_s")
        if self.max_attempts < 1 or self.max_elapsed_s <= 0:
            raise ValueError("backoff: max_attempts and max_elapsed_s must be positive")

    def delay(
        self, attempt: int, retry_after_s: float = 0.0, rng: random.Random | None = None
    ) -> float:
        """Seconds to wait before reconnect ``attempt`` (0 for the first after a failure)."""
        ceiling = min(self.cap_s, self.base_s * 2 ** min(attempt, 62))
        jittered = (rng or _RNG).uniform(0.0, ceiling)
        return max(jittered, retry_after_s)


_RNG = random.Random()


class RetryBudget:
    """The attempts left after a failure; ``reset`` when a session is up again."""

    def __init__(self, policy: Backoff, *, rng: random.Random | None = None) -> None:
        self.policy = policy
        self._rng = rng
        self.attempt = 0
        self._since: float | None = None

    def reset(self) -> None:
        self.attempt = 0
        self._since = None

    def next_delay(self, now: float, retry_after_s: float = 0.0) -> float | None:
        """The wait before the next attempt, or None when the budget is spent (the attempt
        would be one too many, or would start after ``max_elapsed_s``)."""
        if self._since is None:
            self._since = now
        if self.attempt >= self.policy.max_attempts:
            return None
        wait = self.policy.delay(self.attempt, retry_after_s, self._rng)
        if now + wait - self._since > self.policy.max_elapsed_s:
            return None
        self.attempt += 1
        return wait
