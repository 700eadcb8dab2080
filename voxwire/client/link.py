"""ResumingLink: the connection loop both SDK sessions share (the I/O around their states).

One task per session runs connections one after another: open a WebSocket to the current URL,
write the session's first message (start or resume), read until the connection ends, and ask
the session what the end means: the session ended, failed (raise), or goes on (wait with
``voxwire.client.backoff``, move to the next URL, connect again). The session's own state
machine decides; this loop only moves bytes and time.

Writers (the application's ``send``, ``append``, ...) write under ``write_lock`` to ``live``,
the connection whose session message has arrived and whose replay is written: a write never
lands between a resume's first message and its replay. A write that fails is not retried here:
what it carried is already in the session's replay state, and the reader sees the connection
end.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

import aiohttp

from voxwire import errors
from voxwire.client.backoff import RetryBudget
from voxwire.client.connection import ConnectionLost, Credentials, Endpoints, open_socket
from voxwire.client.options import Resumed, SessionOptions
from voxwire.edge.v1 import session_pb2

log = logging.getLogger(__name__)

_CLOSE_TIMEOUT_S = 2.0


async def _close(ws: aiohttp.ClientWebSocketResponse) -> None:
    """The close handshake, at most _CLOSE_TIMEOUT_S; a connection that fails it is dropped."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(_CLOSE_TIMEOUT_S):
            await ws.close()


@dataclass(frozen=True, slots=True)
class Verdict:
    """How a connection ended, as the session reads it."""

    ended: bool = False
    failure: BaseException | None = None
    retry_after_s: float = 0.0
    hand_over: bool = False
    # The going_away asked for an immediate reconnect (the server paced the hand-overs).
    reconnect_now: bool = False
    # The server's error event that came before the end, if one did.
    refusal: errors.VoxwireError | None = None


class SessionClosed(Exception):
    """The session has ended (closed by the caller or by the server): nothing more goes out."""


class ResumingLink(abc.ABC):
    # Whether the first session message makes ``connect`` return. A kind whose config is
    # judged after it (STT: the model takes it or the gateway answers with the error) says
    # False and calls ``session_ready`` when the config is taken.
    ready_on_session = True

    def __init__(
        self,
        endpoints: Endpoints,
        credentials: Credentials,
        options: SessionOptions,
    ) -> None:
        self.options = options
        self._endpoints = endpoints
        self._credentials = credentials
        self.live: aiohttp.ClientWebSocketResponse | None = None
        self.write_lock = asyncio.Lock()
        # Set on every change a waiting writer may care about (live, acks, the end).
        self.changed = asyncio.Event()
        self.failure: BaseException | None = None
        self.finished = False
        self.url = ""
        self._first_up: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._was_up = False  # a session message has come (a reconnect is a resume)
        self._last_write = time.monotonic()
        self._lost_at: float | None = None
        self._began = 0.0  # when the session's loop started (connect was called)
        self._attempts = 0
        self._cause = ""  # why the last connection or attempt ended
        # The error event that ended the last attempt, if one did (a RATE_LIMITED refusal).
        self._refusal: errors.VoxwireError | None = None
        # Why the session's connection was lost: what a Resumed reports, not the failed
        # attempts (a gateway that is down too) that came between.
        self._lost_cause = ""
        self._task: asyncio.Task[None] | None = None
        # Closes of connections left for another gateway (going_away), finishing in the
        # background while the session resumes elsewhere (_connection).
        self._closing: set[asyncio.Task[None]] = set()

    # -- what each session kind provides -------------------------------------------------------

    @abc.abstractmethod
    def _first_message(self) -> str:
        """The JSON to write when a connection opens (start, or the resume)."""

    @abc.abstractmethod
    async def _on_message(
        self, ws: aiohttp.ClientWebSocketResponse, msg: aiohttp.WSMessage
    ) -> Verdict | None:
        """One text or binary message of ``ws``; a verdict ends this connection. On the
        session message, call ``replay_and_go_live``."""

    @abc.abstractmethod
    def _connection_lost(self, close_code: int | None) -> Verdict:
        """What the end of a connection means (``close_code`` None: no close frame came)."""

    @abc.abstractmethod
    def _keepalive_message(self) -> str: ...

    @abc.abstractmethod
    def _finish(self, error: BaseException | None) -> None:
        """The session is over (``error`` None: it ended normally): end the event streams."""

    # -- life ----------------------------------------------------------------------------------

    async def _start(self) -> None:
        """Run the loop; return when the first session is up. Raises the session's failure.

        Cancelled (``asyncio.wait_for(connect(...), 2)``, a caller that gave up), it aborts the
        loop: the caller never gets the session, so nothing else could ever end it, and it
        would hold a gateway session (one of the key's concurrent ones) until the loop ends."""
        self._task = asyncio.create_task(self._run(), name="voxwire-session")
        try:
            await asyncio.wait([self._first_up, self._task], return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            await self.abort()
            raise
        if self.failure is not None:
            raise self.failure
        if not self._first_up.done():
            raise SessionClosed("the session ended before it started")

    async def abort(self) -> None:
        """Drop the connection at once, without a close (the gateway cancels the stream)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._end(SessionClosed("the session was aborted"))

    async def wait_finished(self, timeout_s: float) -> None:
        """Wait for the loop to end. Raises TimeoutError after ``timeout_s``."""
        if self._task is not None:
            async with asyncio.timeout(timeout_s):
                await asyncio.shield(self._task)

    def raise_if_over(self) -> None:
        """Raises the session's failure, or SessionClosed once it has ended."""
        if self.failure is not None:
            raise self.failure
        if self.finished:
            raise SessionClosed("the session has ended")

    async def wait_until(self, ready: Callable[[], bool]) -> None:
        """Wait until a connection is live and ``ready()`` holds (no deadline of its own: the
        caller sets one). Raises the session's failure, or SessionClosed."""
        while True:
            self.changed.clear()
            self.raise_if_over()
            if self.live is not None and ready():
                return
            await self.changed.wait()

    async def write(self, data: str | bytes) -> None:
        """Write on the live connection (hold ``write_lock``); nothing when there is none."""
        ws = self.live
        if ws is None:
            return
        try:
            if isinstance(data, bytes):
                await ws.send_bytes(data)
            else:
                await ws.send_str(data)
            self._last_write = time.monotonic()
        except (ConnectionError, aiohttp.ClientError):
            pass  # the reader sees the connection end; the replay state holds what was sent

    async def replay_and_go_live(
        self, ws: aiohttp.ClientWebSocketResponse, replay: Callable[[], Sequence[str | bytes]]
    ) -> Resumed | None:
        """The session is up on ``ws``: write what ``replay()`` returns (made under the lock,
        so no control slips between it and the writers) before any other writer, then let
        writers in. Returns the resume to report, if connections were lost before."""
        async with self.write_lock:
            self.live = ws
            for item in replay():
                await self.write(item)
        self.changed.set()
        if not self.ready_on_session:
            return None  # up once the config is taken: ``session_ready``
        return self._came_back()

    def _came_back(self) -> Resumed | None:
        """The connection serves the session: the reconnect budget starts afresh, and a resume
        after lost connections is reported."""
        resumed = None
        if self._lost_at is not None:
            resumed = Resumed(
                url=self.url,
                downtime_s=time.monotonic() - self._lost_at,
                attempts=self._attempts,
                cause=self._lost_cause or self._cause,
            )
        self._lost_at = None
        self._lost_cause = ""
        self._attempts = 0
        self._was_up = True
        if not self._first_up.done():
            self._first_up.set_result(None)  # ``connect`` returns
        return resumed

    def session_ready(self) -> Resumed | None:
        """For a kind whose config is judged after the session message (``ready_on_session``
        False): this connection's config was taken. Until then a connection is not up: a
        refusal of the config (OVERLOADED, say) counts against the reconnect budget, which a
        session message alone reset at every attempt, so ``connect`` retried for as long as
        the model stayed full, reporting a resume each time for a session never started."""
        return self._came_back()

    # -- the loop ------------------------------------------------------------------------------

    async def _run(self) -> None:
        self._began = time.monotonic()
        budget = RetryBudget(self.options.backoff)
        keepalive = asyncio.create_task(self._keepalive(), name="voxwire-keepalive")
        error: BaseException | None = None
        try:
            async with aiohttp.ClientSession() as http, self._background_closes():
                verdict = await self._connection(http)
                while not verdict.ended:
                    if verdict.failure is not None:
                        raise verdict.failure
                    if self._lost_at is None:  # a connect that failed before any session
                        # The caller has waited since ``connect``: the spent budget's "in N s"
                        # counts from there, not from the end of the first attempt.
                        self._lost_at = self._began
                        self._lost_cause = self._cause
                    if self._attempts == 0:
                        budget.reset()
                    wait = budget.next_delay(time.monotonic(), verdict.retry_after_s)
                    if wait is None:
                        # A session that never came up was not "taken back": say what it was.
                        what = (
                            "no gateway took the session back"
                            if self._was_up
                            else "no gateway could be reached"
                        )
                        raise _spent(
                            what,
                            f"({budget.attempt} attempt{'' if budget.attempt == 1 else 's'} in "
                            f"{time.monotonic() - self._lost_at:.1f} s; last: {self._cause})",
                            self._refusal,
                        )
                    if verdict.reconnect_now:
                        # The gateway sent its going_aways paced: the spreading is done, and
                        # a jitter here would only add to this session's downtime.
                        wait = 0.0
                    log.info("session lost (%s): reconnecting in %.3f s", self._cause, wait)
                    await asyncio.sleep(wait)
                    self._endpoints.advance()
                    verdict = await self._connection(http)
        except asyncio.CancelledError:
            error = SessionClosed("the session was aborted")
            raise
        except Exception as exc:
            error = exc
        finally:
            keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keepalive
            self._end(error)

    @contextlib.asynccontextmanager
    async def _background_closes(self) -> AsyncIterator[None]:
        """Closes left running by hand-overs end before the HTTP session that holds their
        connections: each within _CLOSE_TIMEOUT_S, or at once when the loop is aborted."""
        try:
            yield
        except asyncio.CancelledError:
            for closing in self._closing:
                closing.cancel()
            raise
        finally:
            if self._closing:
                await asyncio.gather(*self._closing, return_exceptions=True)

    def _end(self, error: BaseException | None) -> None:
        if self.finished:
            return
        self.finished = True
        self.live = None
        if error is not None and not isinstance(error, SessionClosed):
            self.failure = error
        if not self._first_up.done():
            self._first_up.set_result(None)
        self._finish(error)
        self.changed.set()

    async def _connection(self, http: aiohttp.ClientSession) -> Verdict:
        self.url = self._endpoints.current
        self._attempts += 1
        self._refusal = None
        try:
            ws = await open_socket(
                http,
                self.url,
                self._credentials,
                timeout_s=self.options.connect_timeout_s,
                heartbeat_s=self.options.heartbeat_s,
            )
        except ConnectionLost as exc:
            self._cause = str(exc)
            return self._connection_lost(None)
        verdict: Verdict | None = None
        closed_by_us = False
        try:
            await ws.send_str(self._first_message())
            deadline = time.monotonic() + self.options.connect_timeout_s
            while verdict is None:
                wait = None if self.live is ws else max(0.0, deadline - time.monotonic())
                msg = await ws.receive(timeout=wait)
                if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                    verdict = await self._on_message(ws, msg)
                else:
                    break
        except TimeoutError:
            self._cause = f"no session from {self.url} in {self.options.connect_timeout_s} s"
        except (ConnectionError, aiohttp.ClientError) as exc:
            self._cause = f"{type(exc).__name__}: {exc}"
        finally:
            lost_now = self._lost_at is None  # this connection was the session's
            if lost_now:
                # Downtime counts from here (Resumed); a session never up counts from connect.
                self._lost_at = time.monotonic() if self._was_up else self._began
            async with self.write_lock:
                self.live = None
            self.changed.set()
            if not ws.closed:
                closed_by_us = True
                if verdict is not None and verdict.hand_over:
                    # going_away: the close frame goes out at once (the gateway ends the
                    # session's upstream on it) but its answer is not waited for before the
                    # next gateway is dialled: nothing more from this one counts. A draining
                    # gateway answers in 2-4 ms when it is not busy, 20-125 ms with 100
                    # sessions moving at once on 2 cores, and never when it hangs or the path
                    # back breaks, which held the resume for the whole close timeout (2 s;
                    # tests/client/test_stt_resume.py; BENCHMARKS.md, "Resume after a gateway
                    # restart").
                    closing = asyncio.create_task(_close(ws), name="voxwire-close")
                    self._closing.add(closing)
                    closing.add_done_callback(self._closing.discard)
                else:
                    await _close(ws)
        if verdict is not None and (verdict.ended or verdict.failure is not None):
            return verdict
        code = None if closed_by_us else ws.close_code
        if verdict is not None and verdict.hand_over:
            self._cause = "going_away"
        elif not closed_by_us:
            self._cause = f"close {ws.close_code}"
        lost = self._connection_lost(code)
        if (refusal := lost.refusal) is not None:
            # "close 1013 after OVERLOADED: ..."
            self._cause += f" after {refusal.reason}: {refusal}"
            self._refusal = refusal
        if lost_now:
            self._lost_cause = self._cause
        return lost

    def _advertised_limits(self) -> session_pb2.EdgeLimits | None:
        """The limits of the last session message, if one came."""
        return None

    def _keepalive_period(self) -> float:
        """The option's period, or less when the gateway said it warns (and then closes) a
        session sooner: with a fixed 10 s an idle session on a gateway whose idle timeout is
        8 s was closed IDLE_TIMEOUT, which no resume continues."""
        period = self.options.keepalive_s
        limits = self._advertised_limits()
        if period <= 0 or limits is None or not limits.HasField("idle_timeout"):
            return period
        quiet_s = limits.idle_timeout.ToTimedelta().total_seconds()
        if limits.HasField("idle_warning"):
            warned_s = quiet_s - limits.idle_warning.ToTimedelta().total_seconds()
            quiet_s = warned_s if warned_s > 0 else quiet_s
        return min(period, quiet_s / 2) if quiet_s > 0 else period

    async def _keepalive(self) -> None:
        if self.options.keepalive_s <= 0:
            return
        while True:
            period = self._keepalive_period()
            idle = time.monotonic() - self._last_write
            if idle < period:
                wait = period - idle
                if self._advertised_limits() is None:
                    wait = min(wait, 0.5)  # the session message may bring a shorter period
                await asyncio.sleep(wait)
                continue
            async with self.write_lock:
                if self.live is not None:
                    await self.write(self._keepalive_message())
            self._last_write = time.monotonic()


def _spent(what: str, detail: str, refusal: errors.VoxwireError | None) -> errors.VoxwireError:
    """The error of a reconnect budget spent: BackendUnavailable (no gateway took the session),
    except when the last attempt was refused for the key's own limits (RATE_LIMITED). That is
    not the service being down, and a caller who handles it (waits, sheds load) must be able
    to tell by class, not by parsing the message."""
    if isinstance(refusal, errors.RateLimited):
        return errors.RateLimited(
            f"the key's limits refused the session {detail}", retry_delay=refusal.retry_delay
        )
    if isinstance(refusal, errors.Overloaded):
        # The gateway was reached and the model was full: not "no gateway could be reached".
        return errors.Overloaded(
            f"the service was at capacity at every attempt {detail}",
            retry_delay=refusal.retry_delay,
        )
    return errors.BackendUnavailable(f"{what} {detail}")
