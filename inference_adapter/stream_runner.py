"""One runner for every streaming call (STT and TTS): it owns the stream's tasks and its end.

A service supplies a ``StreamBody`` (what the stream does); the runner supplies what every
stream needs and must get right once:

- the initial metadata goes out before anything else (with a deadline), so a status can always
  follow, even after a write that was cancelled or failed in flight (gRPC core refuses a status
  batch that carries initial metadata a second time, GRPC_CALL_ERROR_TOO_MANY_OPERATIONS, and
  the call would never end);
- every task of the stream is started with ``spawn`` and ended by the runner, whatever the
  ending; a task's failure is read (never "exception never retrieved") and fails the stream;
- the client reader (size check before parsing, parse errors are INVALID_MESSAGE), the outbox
  (byte cap and write deadline, SLOW_CONSUMER), the idle timer (a timer, never a cancelled read:
  a cancelled read leaves its receive posted in gRPC core, and later reads return EOF), the
  drain and the maximum duration;
- the one boundary where any failure becomes a status: every stream ends with one;
- the notices that warn of an end the client can still avoid (docs/contract.md, "Notices"):
  IDLE_WARNING ``idle_warning_seconds`` before the idle close, DURATION_WARNING
  ``duration_warning_seconds`` before the maximum duration, DRAINING when a drain begins.

How a stream ends:

    clean      body.serve returns -> flush the outbox -> OK + trailers
    failure    a task fails, idle, drain or too long -> seal the outbox -> body.stop (free the
               model side first) -> end every task but the writer -> flush 1 s -> status
    client     cancel, disconnect or deadline: the handler is cancelled -> body.stop -> end
               every task (no status: the call is gone)

``body.stop`` runs before any task is cancelled, because cancelling a task inside a grpc.aio
call operation cancels that call (an STT stream must write END to Triton first, or Triton keeps
the sequence slot until its idle timeout).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, Generic, Protocol, TypeVar

import grpc
from opentelemetry import trace

from inference_adapter.boundary import ClientReader, max_message_bytes, set_status
from inference_adapter.outbox import Outbox, WriteInterrupted
from inference_adapter.runtime import Runtime
from voxwire import errors
from voxwire.stream_write import DRAIN_S, drain_pause_s
from voxwire.v1 import stream_pb2, timings_pb2

log = logging.getLogger(__name__)

M = TypeVar("M")
M_contra = TypeVar("M_contra", contravariant=True)

# Deadline on sending the initial metadata (a client that opened a call and vanished).
OPEN_TIMEOUT_S = 5.0
# What is left of the outbox when a stream fails gets this long to reach the client.
FAILED_FLUSH_S = 1.0
# Bound on ending the stream's tasks once they are cancelled.
TASK_END_S = 1.0
# Bound on a client read in flight when the stream ended (it ends with the call, at once).
READ_END_S = 5.0


class StreamBody(Protocol[M_contra]):
    """What one kind of stream does; the runner calls these, in this order."""

    def busy(self) -> bool:
        """The client is waiting for the server (it may legitimately send nothing)."""
        ...

    async def serve(self, stream: StreamRunner[Any], first: M_contra | None) -> None:
        """The stream's main task, from its first message on. Returns when the stream is
        complete and every response is queued; raises what fails it."""
        ...

    async def wind_up(self) -> None:
        """The maximum duration is reached: finish what can be finished quickly."""
        ...

    async def stop(self) -> None:
        """The stream ends early (failure or client gone): free the model side, before any task
        is cancelled. Bounded; never raises."""
        ...

    def timings(self) -> timings_pb2.StageTimings: ...

    def notice(self, notice: stream_pb2.StreamNotice) -> Any | None:
        """The stream's response that carries ``notice``, or None when the body holds it (an
        STT stream sends nothing before ``started``)."""
        ...

    def release(self) -> None:
        """Give back what the stream holds (leases, model calls). Idempotent."""
        ...


class StreamRunner(Generic[M]):
    def __init__(
        self,
        rt: Runtime,
        context: grpc.aio.ServicerContext,
        parse: Callable[[bytes], M],
        *,
        service: str,
        span: trace.Span,
        on_send: Callable[[float], None],
        playback_ms: Callable[[Any], int] | None = None,
    ) -> None:
        limits = rt.config.limits
        self.rt = rt
        self.context = context
        self.service = service
        self.span = span
        self.tasks: set[asyncio.Task[Any]] = set()
        self.failure: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()
        # Callbacks that do not hold the runner: the runner holds the outbox and the reader, and
        # bound methods of it there made every stream a reference cycle, freed only by the
        # garbage collector's rare full collection (voxwire/gc_policy.py).
        self._activity = _Activity()
        self.outbox = Outbox(
            context,
            on_send,
            on_failure=functools.partial(_first_failure, self.failure),
            max_unread_bytes=limits.max_unread_response_bytes,
            write_timeout=limits.write_timeout_seconds,
            playback_ms=playback_ms,
        )
        self.reader: ClientReader[M] = ClientReader(
            context.read,
            parse,
            max_bytes=max_message_bytes(limits.max_chunk_bytes),
            on_message=self._activity.touch,
        )
        self._admitted = False

    # -- tasks ----------------------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Start a task of this stream. Its failure fails the stream; the runner ends it."""
        task = asyncio.create_task(coro, name=f"voxwire.{self.service}.{name}")
        self.tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            self.fail(exc)

    def fail(self, exc: BaseException) -> None:
        """Fail the stream (the first failure wins)."""
        _first_failure(self.failure, exc)

    async def end_tasks(self, *, keep: frozenset[asyncio.Task[Any]] = frozenset()) -> None:
        """Cancel every task of the stream but ``keep`` and wait for them to end (bounded)."""
        tasks = [t for t in self.tasks if t not in keep and t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=TASK_END_S)

    async def _end(self) -> None:
        """The stream's end: every task but one in a client read is cancelled and waited for;
        that one is let finish in the adapter's keeping (``ClientReader.close``), its read ends
        with the call, within ``READ_END_S``."""
        reading = self.reader.close()
        if reading is not None and not reading.done():
            self.tasks.discard(reading)
            self.rt.calls.adopt(reading, READ_END_S)
        await self.end_tasks()

    # -- the stream -----------------------------------------------------------------------------

    async def run(self, body: StreamBody[M]) -> None:
        """Run the stream to its end; it always ends with a status unless the client is gone.
        Raises CancelledError when the client cancelled, disconnected or hit its deadline."""
        error: errors.VoxwireError | None = None
        writer: asyncio.Task[Any] | None = None
        try:
            try:
                await self._open()
                writer = self.spawn(self.outbox.run(), "writer")
                self.spawn(self._idle_watch(body), "idle")
                self.spawn(self._drain_watch(body), "drain")
                main = self.spawn(self._main(body), "main")
                await self._supervise(body, main)
                await self.outbox.flush(self.rt.config.limits.idle_timeout_seconds, strict=True)
            except asyncio.CancelledError:
                self.outbox.seal()
                await self._stop(body)  # the client went away: free the model side now
                raise
            except Exception as exc:  # the one boundary: every failure becomes a status
                error = self._classify(exc)
            if error is not None:
                self.reader.dropping = True  # nothing the client sends from now is served
                self.outbox.seal()
                await self._stop(body)
                # The task whose read waits for the client keeps it (it drops what comes);
                # with none, one reads and drops (the stream held the client back).
                reading = self.reader.reading
                if reading is None and not self.reader.eof:
                    reading = self.spawn(self.reader.drop(), "drop")
                keep = {t for t in (writer, reading) if t is not None}
                await self.end_tasks(keep=frozenset(keep))
                await self.outbox.flush(FAILED_FLUSH_S)  # what was decided still reaches the client
                if reading is not None:
                    await self._client_drained(reading)
            set_status(self.context, error, body.timings())
        finally:
            try:
                await self._end()
            finally:
                # Even when a cancel lands in that wait (a client that cancels as soon as it has
                # the summary, as the gateway does): its tasks are cancelled already, and the
                # stream's count and model slot must be given back whatever happens.
                body.release()
                if self._admitted:
                    self.rt.leave()
                    self.rt.telemetry.active_streams.add(-1, {"service": self.service})

    async def _client_drained(self, reading: asyncio.Task[Any]) -> None:
        """Before a failed stream's status: let ``reading`` read and drop what the client still
        sends, up to its half-close, a pause in its messages or DRAIN_S (why and how long:
        voxwire.stream_write)."""
        begun = time.monotonic()
        ends = begun + DRAIN_S
        while not reading.done():
            now = time.monotonic()
            pause = drain_pause_s(self.reader.dropped_bytes)
            until = min(ends, max(begun, self._activity.at) + pause)
            if now >= until:
                return  # the task is ended with the others (``run``'s finally)
            await asyncio.wait({reading}, timeout=until - now)

    async def _open(self) -> None:
        """Send the initial metadata. Raises SlowConsumer when it is not taken in time, or what
        gRPC raises when the client is gone."""
        try:
            async with asyncio.timeout(OPEN_TIMEOUT_S):
                await self.context.send_initial_metadata(())
        except TimeoutError as exc:
            raise errors.SlowConsumer(
                f"the client took no response headers within {OPEN_TIMEOUT_S:g} s"
            ) from exc

    async def _stop(self, body: StreamBody[M]) -> None:
        """``body.stop``, which must not keep the stream from ending: a failure in it is
        logged (the status still goes out); only a cancellation of this task goes on."""
        try:
            await body.stop()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            log.error("%s stream: stopping the model side was cancelled", self.service)
        except Exception:
            log.exception("%s stream: stopping the model side failed", self.service)

    async def _main(self, body: StreamBody[M]) -> None:
        # Read the first message before refusing a stream (e.g. DRAINING): a grpcio aio client
        # whose write races the server's status reports INTERNAL instead (grpc/grpc#36066).
        first = await self.reader.next()
        self.rt.admit()
        self._admitted = True
        self.rt.telemetry.active_streams.add(1, {"service": self.service})
        await body.serve(self, first)

    async def _supervise(self, body: StreamBody[M], main: asyncio.Task[None]) -> None:
        limits = self.rt.config.limits
        deadline = time.monotonic() + limits.max_stream_seconds
        warn = _warning(limits.duration_warning_seconds, limits.max_stream_seconds)
        waiting: set[asyncio.Future[Any]] = {main, self.failure}
        while True:
            now = time.monotonic()
            until = deadline - warn - now if warn else deadline - now
            done, _ = await asyncio.wait(
                waiting, timeout=max(0.0, until), return_when=asyncio.FIRST_COMPLETED
            )
            if self.failure.done():
                raise self.failure.result()
            if main in done:
                main.result()
                return
            if done:
                continue
            if warn:
                remaining = deadline - time.monotonic()
                self.notify(
                    body,
                    stream_pb2.StreamNotice.KIND_DURATION_WARNING,
                    remaining,
                    "the stream reaches max_stream_duration and ends with STREAM_TOO_LONG",
                )
                warn = 0.0
                continue
            await body.wind_up()
            raise errors.StreamTooLong(
                f"stream reached max_stream_duration {limits.max_stream_seconds:g} s"
            )

    def notify(
        self,
        body: StreamBody[M],
        kind: stream_pb2.StreamNotice.Kind.ValueType,
        remaining_s: float,
        text: str,
    ) -> None:
        """Queue a StreamNotice for the client."""
        notice = stream_pb2.StreamNotice(kind=kind, message=text)
        notice.remaining.FromMilliseconds(max(0, round(remaining_s * 1000)))
        response = body.notice(notice)
        if response is not None:
            self.outbox.put(response)

    async def _idle_watch(self, body: StreamBody[M]) -> None:
        """Idle is time the server waits for a client message while the client waits for
        nothing: a timer over the reads, never a deadline on one (see the module docstring)."""
        limits = self.rt.config.limits
        timeout = limits.idle_timeout_seconds
        warn = _warning(limits.idle_warning_seconds, timeout)
        warned_for = -1.0  # the idle period (its start) already warned of
        while True:
            now = time.monotonic()
            if self.reader.waiting_since is None or body.busy():
                # Nobody reads (the stream holds back, e.g. STT backpressure), or the client
                # waits for the server (audio being synthesized): the idle time starts anew.
                self._activity.at = now
            remaining = self._activity.at + timeout - now
            if remaining <= 0:
                raise errors.IdleTimeout(f"no message for {timeout:g} s; send audio or KeepAlive")
            if warn and remaining <= warn and warned_for != self._activity.at:
                warned_for = self._activity.at
                self.notify(
                    body,
                    stream_pb2.StreamNotice.KIND_IDLE_WARNING,
                    remaining,
                    "no message from the client: the stream ends with IDLE_TIMEOUT unless one "
                    "(KeepAlive counts) arrives",
                )
            until_warning = remaining - warn if warn and warned_for != self._activity.at else 0.0
            await asyncio.sleep(min(until_warning or remaining, timeout / 4))

    async def _drain_watch(self, body: StreamBody[M]) -> None:
        grace = await self.rt.wait_drain_started()
        if not self._admitted:
            # Not admitted yet, it never will be (admission refuses it DRAINING): the refusal
            # alone, not first a notice telling it to finish within the grace.
            raise await self.rt.wait_drain_expired()
        self.notify(
            body,
            stream_pb2.StreamNotice.KIND_DRAINING,
            grace,
            "the server is shutting down: finish within the remaining time, or continue on a "
            "new stream",
        )
        raise await self.rt.wait_drain_expired()

    def _classify(self, exc: BaseException) -> errors.VoxwireError:
        """The client-facing form of a failure, logged once and never with a client's input
        as a traceback (a malformed message is the client's error, not a server fault)."""
        if isinstance(exc, errors.VoxwireError):
            error = exc
            # The client's mistakes and the stream's limits are the client's business (a log
            # line per bad message would be a flood anyone can cause); the server's own
            # failures are worth a warning, busy and draining are expected.
            level = logging.DEBUG
            if isinstance(exc, errors.ServerError):
                expected = isinstance(exc, errors.Overloaded | errors.Draining)
                level = logging.INFO if expected else logging.WARNING
            log.log(level, "%s stream failed: %s %s", self.service, error.reason, error.message)
        elif isinstance(exc, WriteInterrupted | grpc.aio.BaseError):
            # A gRPC operation failed under us: the client went away (its handler is being
            # cancelled too), nobody will read this status.
            log.info("%s stream: the call failed under the stream (%r)", self.service, exc)
            error = errors.InternalError("a response could not be written")
        else:
            log.error("unexpected error in a %s stream", self.service, exc_info=exc)
            error = errors.InternalError(f"internal error ({type(exc).__name__})")
        self.rt.telemetry.errors.add(1, {"service": self.service, "reason": error.reason})
        self.span.set_attribute("voxwire.error.reason", error.reason)
        return error


def _warning(before_s: float, limit_s: float) -> float:
    """How long before a limit its warning goes out; 0 (never) when it is not shorter than the
    limit itself (a warning at the start would say nothing)."""
    return before_s if 0 < before_s < limit_s else 0.0


class _Activity:
    """When the client was last active (monotonic s): the idle timer counts from it."""

    __slots__ = ("at",)

    def __init__(self) -> None:
        self.at = time.monotonic()

    def touch(self) -> None:
        self.at = time.monotonic()


def _first_failure(failure: asyncio.Future[BaseException], exc: BaseException) -> None:
    """Fail the stream with ``exc`` unless it failed already (the first failure wins)."""
    if not failure.done():
        failure.set_result(exc)
