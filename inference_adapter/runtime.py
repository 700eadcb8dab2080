"""What every servicer shares: configuration, replicas, telemetry and the drain state."""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field

from inference_adapter.config import AdapterConfig
from inference_adapter.telemetry import Telemetry
from inference_adapter.triton.reaper import CallReaper
from inference_adapter.triton.replicas import ReplicaPool
from voxwire.errors import Draining


@dataclass(eq=False)
class Runtime:
    config: AdapterConfig
    pool: ReplicaPool
    telemetry: Telemetry
    # Set when a drain starts: new streams are refused.
    draining: bool = False
    # Set when a drain starts, with the time (monotonic) its grace ends: open streams get a
    # StreamNotice DRAINING.
    drain_started: asyncio.Event = field(default_factory=asyncio.Event)
    drain_ends_at: float = 0.0
    # Set when the drain's grace is over: open streams end with DRAINING.
    drain_expired: asyncio.Event = field(default_factory=asyncio.Event)
    # Model calls still ending after their stream stopped wanting them (TTS drains).
    calls: CallReaper = field(default_factory=CallReaper)
    active_streams: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.idle.set()

    def new_session_id(self) -> str:
        return secrets.token_hex(8)

    @staticmethod
    def new_sequence_id() -> int:
        """A Triton sequence id; random 63-bit, so several adapters can share a Triton."""
        return secrets.randbits(63) | 1

    def admit(self) -> None:
        """Count a new stream in. Raises Draining once a drain has begun."""
        if self.draining:
            raise Draining("server is draining; retry on another instance")
        self.active_streams += 1
        self.idle.clear()

    def leave(self) -> None:
        self.active_streams -= 1
        if self.active_streams == 0:
            self.idle.set()

    def start_drain(self, grace_s: float) -> None:
        """Refuse new streams from now on; open ones have ``grace_s`` to finish."""
        self.draining = True
        self.drain_ends_at = time.monotonic() + grace_s
        self.drain_started.set()

    async def wait_drain_started(self) -> float:
        """Wait for a drain to begin; returns the seconds left of its grace."""
        await self.drain_started.wait()
        return max(0.0, self.drain_ends_at - time.monotonic())

    async def wait_drain_expired(self) -> Draining:
        await self.drain_expired.wait()
        return Draining("server drain grace period is over; retry on another instance")
