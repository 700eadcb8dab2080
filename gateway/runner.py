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
import functools
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from gateway.let_go import forget_tracebacks
from gateway.ports import ClientPort
from voxwire import errors
from voxwire.outbox import Outbox, OutboxBroken

log = logging.getLogger(__name__)


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

    session_id: str

    def charge(self, stage: str, seconds: float) -> None: ...
    def fail(self, error: errors.VoxwireError) -> Any: ...
    def drain(self, grace_s: float | None = None, *, reconnect_now: bool = False) -> Any: ...
    def next_deadline(self) -> float: ...
    def on_time(self) -> Any: ...


S = TypeVar("S", bound=EdgeSession)
A = TypeVar("A")


class SessionRunner(abc.ABC, Generic[S, A]):
    def __init__(self, session: S, port: ClientPort, limits: RunnerLimits | None) -> None:
        self.session = session
        self._port = port
        self._limits = limits = limits or RunnerLimits()
        # The port's writer, not a method of the runner: the runner holds the outbox, and an
        # outbox holding the runner made each session a reference cycle (freed only by a full
        # collection of the garbage collector, with its connection's buffers).
        self._client_out: Outbox[str | bytes] = Outbox(
            functools.partial(_send, port),
            len,
            max_bytes=limits.max_unsent_bytes,
            high_water=limits.client_high_water,
            write_timeout=limits.write_timeout_s,
            on_sent=lambda s: session.charge("edge_send", s),
        )
        self._close_code: int | None = None
        # A session that ended well, its end flushed: the audio sent that a client playing it
        # at real time had still to play when the close began. Its connection is given that
        # long more to take what it was sent (the close handshake, the reset of a connection
        # still holding data); 0 for any other end.
        self.linger_s = 0.0
        # The session's deadlines and the port's keepalive run on one loop timer (no task of
        # their own, nor a second timer: about 0.5 KiB each on uvloop, and memory per idle
        # session counts, BENCHMARKS.md "Memory per idle WebSocket"); ``_timer_at`` is the
        # deadline it is set for (monotonic), infinite when none is.
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self._ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()

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

    def _upstream_timeout(self) -> float | None:
        """The deadline of an upstream call: none for a WebSocket session (its own deadlines
        end it); the gRPC front passes on what is left of its caller's."""
        return None

    # -- the run ---------------------------------------------------------------------------------

    async def run(self, first: A | None = None) -> int:
        """Serve the session until it closes; returns the close code sent (or the peer's)."""
        kind = type(self).__name__
        writer = asyncio.create_task(self._client_out.run(), name=f"{kind}-client-writer")
        reader = asyncio.create_task(self._read_client(), name=f"{kind}-client-reader")
        # Either task's end ends the session as ``_set_ended`` does: one future and two
        # callbacks, not asyncio.wait's waiter, callbacks and sets held for the session's life
        # (BENCHMARKS.md, "Memory per idle WebSocket").
        writer.add_done_callback(self._task_ended)
        reader.add_done_callback(self._task_ended)
        tasks = (writer, reader)
        self._port.start_keepalive(self._client_out.audio_left_s)
        try:
            if first is not None:
                self._execute(first)
                first = None  # held no longer than needed (memory per idle session)
            self._arm_timer()
            await self._ended
            failed = reader.exception() if reader.done() and not reader.cancelled() else None
            if failed is not None and not isinstance(failed, OSError) and self._close_code is None:
                # A defect, not the client's input (which the session refuses with a reason
                # of its own): said in the log with its traceback and to the client as
                # INTERNAL with close 1011, never a close with no event and no summary (the
                # gather below would have swallowed it).
                log.error("%s: reading the client failed", kind, exc_info=failed)
                internal = errors.InternalError("the gateway failed on a client message")
                self._execute(self.session.fail(internal))
                self._close_code = internal.ws_close_code
            exc = writer.exception() if writer.done() and not writer.cancelled() else None
            if isinstance(exc, errors.SlowConsumer):
                self._log_slow_consumer(exc)
                self._execute(self.session.fail(exc))
                self._close_code = exc.ws_close_code
            if self._close_code is not None and self._client_out.broken is None:
                # What was decided (the error event, the summary) goes out before the close,
                # within close_flush_s; a session that ended well has the time the audio still
                # to go takes to play added (a client may take it at playback pace) and one
                # write's deadline.
                flush_s = self._limits.close_flush_s
                ended_well = self._close_code == 1000 and self._client_out.closed  # decided
                if ended_well:
                    flush_s += self._client_out.audio_left_s() + self._limits.write_timeout_s
                flushed = False
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(flush_s):
                        await asyncio.shield(writer)
                        flushed = writer.exception() is None
                if ended_well:
                    if flushed:
                        self.linger_s = self._client_out.audio_left_s()
                    else:
                        self._unflushed(flush_s)
                # The port reads the client to its close itself (see AiohttpPort.close).
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
                await self._port.close(self._close_code, linger_s=self.linger_s)
            return self._close_code or 1006
        finally:
            self._port.stop_keepalive()
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._timer_at = -math.inf  # nothing re-arms it now
            self._stop_upstream()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for task in tasks:
                # A task's failure passed through this frame (the shield above): its traceback
                # holds the frame, which holds the task: a reference cycle per session.
                if not task.cancelled():
                    forget_tracebacks(task.exception())

    def drain(self, grace_s: float | None = None, *, reconnect_now: bool = False) -> None:
        """The gateway is shutting down: going_away now, the close at the end of the grace.
        ``reconnect_now``: the gateway paces its going_aways, the client need not jitter."""
        self._execute(self.session.drain(grace_s, reconnect_now=reconnect_now))

    def end(self, error: errors.VoxwireError) -> None:
        """End the session now with ``error`` (its event, then the close or the call's status)."""
        self._execute(self.session.fail(error))

    def _rearm(self) -> None:
        """Move the timer only when the session's next deadline came before the one it is set
        for. Most decisions move deadlines later (a client message pushes the idle deadline
        back): the timer then fires at the old one, finds nothing due and is set again, which
        costs one wake-up per idle period instead of one per frame. (The keepalive's deadline
        only ever moves later between two firings: a frame heard puts the next ping off.)"""
        if self.session.next_deadline() < self._timer_at:
            self._arm_timer()

    def _arm_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._timer_at == -math.inf:
            return  # the run has ended
        self._timer_at = at = min(self.session.next_deadline(), self._port.keepalive_at())
        if at != math.inf:
            delay = max(0.0, at - time.monotonic())
            self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        """The timer fired: run what is due (a due deadline's decisions), then set it for the
        next one."""
        self._timer = None
        self._timer_at = math.inf
        try:
            now = time.monotonic()
            if self.session.next_deadline() <= now:
                self._execute(self.session.on_time())
            if self._port.keepalive_at() <= now:
                self._port.keepalive_due(now)
        except Exception:
            # A bug, not a client's doing: end this session (1011), keep serving the others.
            log.exception("session timer failed")
            self._close_code = self._close_code or 1011
            self._set_ended()
            return
        if self._timer is None:
            self._arm_timer()

    def _close(self, code: int) -> None:
        """The session decided to close: flush the client outbox, then close with ``code``."""
        if self._close_code is None:
            self._close_code = code
            self._client_out.close()
            self._set_ended()

    def _client_gone(self, code: int) -> None:
        self._close_code = self._close_code or code or 1006
        # Nobody to flush to: the session's end does not wait close_flush_s for its writer
        # (the key's slot was held that long after the client closed).
        self._client_out.abandon("the client closed the connection")
        self._set_ended()

    def _task_ended(self, _task: asyncio.Task[None]) -> None:
        self._set_ended()

    def _set_ended(self) -> None:
        if not self._ended.done():
            self._ended.set_result(None)

    # -- the client side -------------------------------------------------------------------------

    def _put_client(self, item: str | bytes, audio_ms: int = 0) -> None:
        try:
            self._client_out.put(item, audio_ms)
        except errors.SlowConsumer as exc:
            if self._close_code is None:
                self._log_slow_consumer(exc)
                self._close_code = exc.ws_close_code
                self._set_ended()
        except OutboxBroken:
            self._set_ended()

    def _unflushed(self, flush_s: float) -> None:
        """A session that ended well could not give its client all it decided (the rest of
        its audio, the summary) within ``flush_s``: not a normal end (the gRPC front's status
        says so too, instead of OK over a cut stream)."""
        exc = errors.SlowConsumer(
            f"the client did not take the end of the session within {flush_s:.1f} s"
        )
        self._log_slow_consumer(exc)
        self._close_code = exc.ws_close_code

    def _log_slow_consumer(self, exc: errors.SlowConsumer) -> None:
        """One line for the operator: the session ends for a client that did not read."""
        log.warning("%s %s: SLOW_CONSUMER: %s", type(self).__name__, self.session.session_id, exc)


async def _send(port: ClientPort, item: str | bytes) -> None:
    if isinstance(item, str):
        await port.send_text(item)
    else:
        await port.send_bytes(item)
