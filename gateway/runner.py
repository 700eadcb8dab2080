"""What both session runners share: the client side of a session.

A runner owns every task of its session and ends them on every path. This base holds the
client connection's half: the ordered client outbox (JSON text and binary frames, bounded, with
a write deadline: SLOW_CONSUMER beyond either), the timer that runs the session's deadlines,
the close, and the run loop. The STT and TTS runners add their upstream side and how a client
frame is read (``gateway/stt/runner.py``, ``gateway/tts/runner.py``).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import math
import time
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from gateway.ports import ClientPort
from voxwire import errors
from voxwire.outbox import Outbox, OutboxBroken


@dataclass(frozen=True, slots=True)
class RunnerLimits:
    max_unsent_bytes: int = 1024 * 1024
    client_high_water: int = 256 * 1024
    write_timeout_s: float = 10.0
    upstream_high_water: int = 256 * 1024
    upstream_max_bytes: int = 4 * 1024 * 1024
    close_flush_s: float = 2.0


class EdgeSession(Protocol):
    """What a runner needs of a sans-I/O edge session (STT or TTS)."""

    def charge(self, stage: str, seconds: float) -> None: ...
    def fail(self, error: errors.VoxwireError) -> Any: ...
    def drain(self, grace_s: float | None = None) -> Any: ...
    def next_deadline(self) -> float: ...
    def on_time(self) -> Any: ...


S = TypeVar("S", bound=EdgeSession)
A = TypeVar("A")


class SessionRunner(abc.ABC, Generic[S, A]):
    def __init__(self, session: S, port: ClientPort, limits: RunnerLimits | None) -> None:
        self.session = session
        self._port = port
        self._limits = limits = limits or RunnerLimits()
        self._client_out: Outbox[str | bytes] = Outbox(
            self._send,
            len,
            max_bytes=limits.max_unsent_bytes,
            high_water=limits.client_high_water,
            write_timeout=limits.write_timeout_s,
            on_sent=lambda s: session.charge("edge_send", s),
        )
        self._close_code: int | None = None
        self._wake = asyncio.Event()
        self._timer_at = -math.inf  # the deadline the timer sleeps until (monotonic)
        self._ended = asyncio.Event()

    # -- what a runner adds ----------------------------------------------------------------------

    @abc.abstractmethod
    def _execute(self, actions: A) -> None:
        """Carry out the session's decisions (synchronously: queue, open, cancel)."""

    @abc.abstractmethod
    async def _read_client(self) -> None:
        """Read client frames into the session until the session or the client ends."""

    @abc.abstractmethod
    def _stop_upstream(self) -> None:
        """Cancel every upstream call of the session."""

    # -- the run ---------------------------------------------------------------------------------

    async def run(self, first: A | None = None) -> int:
        """Serve the session until it closes; returns the close code sent (or the peer's)."""
        kind = type(self).__name__
        writer = asyncio.create_task(self._client_out.run(), name=f"{kind}-client-writer")
        reader = asyncio.create_task(self._read_client(), name=f"{kind}-client-reader")
        timer = asyncio.create_task(self._timer(), name=f"{kind}-timer")
        ended = asyncio.create_task(self._ended.wait(), name=f"{kind}-ended")
        tasks = {writer, reader, timer, ended}
        try:
            if first is not None:
                self._execute(first)
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            exc = writer.exception() if writer in done else None
            if isinstance(exc, errors.SlowConsumer):
                self._execute(self.session.fail(exc))
                self._close_code = exc.ws_close_code
            if self._close_code is not None:
                # What was decided (the error event, the summary) goes out before the close.
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(self._limits.close_flush_s):
                        await asyncio.shield(writer)
                await self._port.close(self._close_code)
            return self._close_code or 1006
        finally:
            self._stop_upstream()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def drain(self, grace_s: float | None = None) -> None:
        """The gateway is shutting down: going_away now, the close at the end of the grace."""
        self._execute(self.session.drain(grace_s))
        self._wake.set()

    def _rearm(self) -> None:
        """Wake the timer only when the session's next deadline came before the one it sleeps
        until. Most decisions move deadlines later (a client message pushes the idle deadline
        back): the timer then wakes at the old one, finds nothing due and sleeps again, which
        costs one wake-up per idle period instead of one per frame."""
        if self.session.next_deadline() < self._timer_at:
            self._wake.set()

    def _close(self, code: int) -> None:
        """The session decided to close: flush the client outbox, then close with ``code``."""
        if self._close_code is None:
            self._close_code = code
            self._client_out.close()
            self._ended.set()

    def _client_gone(self, code: int) -> None:
        self._close_code = self._close_code or code or 1006
        self._ended.set()

    # -- the client side -------------------------------------------------------------------------

    def _put_client(self, item: str | bytes) -> None:
        try:
            self._client_out.put(item)
        except errors.SlowConsumer as exc:
            if self._close_code is None:
                self._close_code = exc.ws_close_code
                self._ended.set()
        except OutboxBroken:
            self._ended.set()

    async def _send(self, item: str | bytes) -> None:
        if isinstance(item, str):
            await self._port.send_text(item)
        else:
            await self._port.send_bytes(item)

    async def _timer(self) -> None:
        """Runs the session's timers; woken early (``_rearm``) when a decision brings the next
        deadline forward (a drain, a TTS chunk due sooner)."""
        while True:
            self._wake.clear()
            self._timer_at = self.session.next_deadline()
            delay = self._timer_at - time.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
                continue
            self._execute(self.session.on_time())
            await asyncio.sleep(0)
