"""Helpers of the auth tests: a manual clock, a signer, shared constants."""

from __future__ import annotations

import datetime

from gateway.auth.limits import KeyLimits
from gateway.auth.tokens import TokenSigner

DEFAULTS = KeyLimits(max_concurrent_sessions=3, max_new_sessions_per_minute=30)
CREATED = datetime.datetime(2025, 5, 1, 12, 0, tzinfo=datetime.UTC)
APP = "https://app.example"
SECRETS = {"k1": b"\x01" * 32, "k2": b"\x02" * 32}


class ManualClock:
    """A clock the test moves by hand (the modules take their clock as a parameter)."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def signer(current: str = "k1", secrets: dict[str, bytes] | None = None) -> TokenSigner:
    return TokenSigner(SECRETS if secrets is None else secrets, current)
